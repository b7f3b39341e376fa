#!/usr/bin/env bash
# image/publish.sh: build, push and (optionally) sign the release image.
#
#   podman login ghcr.io                      # or docker login: once, with push rights
#   image/publish.sh ghcr.io/ferd/ferd        # tag: the version in pyproject.toml
#   image/publish.sh ghcr.io/ferd/ferd:0.1.0
#
# Builds with image/build.sh on the standard base (python:3.11-slim-bookworm, pulled fresh; no
# fallback to a local base), from a clean checkout (FERD_ALLOW_DIRTY=1 to override), pushes the
# image, signs the pushed digest with cosign when COSIGN_KEY is set (cosign must then be installed;
# COSIGN_PASSWORD as cosign reads it), and prints the pushed reference pinned by digest,
# REGISTRY/REPO@sha256:…, as the only line on stdout (progress goes to stderr). The other settings
# of image/build.sh apply (FERD_ENGINE, FERD_BUILD_CA, FERD_PIP_CACHE, CONTAINERS_CONF).
# Exit status: 0 published, 1 failed, 2 bad input.
set -euo pipefail

PROG=image/publish.sh
STANDARD_BASE=docker.io/library/python:3.11-slim-bookworm
die() { local code=$1; shift; printf '%s: %s\n' "$PROG" "$*" >&2; exit "$code"; }
say() { printf '==> %s\n' "$*" >&2; }

case "${1:-}" in
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    "") die 2 "usage: $PROG REGISTRY/REPO[:TAG] (e.g. ghcr.io/ferd/ferd:0.1.0)" ;;
esac
[[ $# -eq 1 ]] || die 2 "one argument expected: REGISTRY/REPO[:TAG]"
TARGET=$1

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$(dirname "$HERE")"

# REGISTRY/REPO[:TAG]: the first component must name a registry (a dot, a port or localhost)
[[ $TARGET =~ ^([a-z0-9.-]+(:[0-9]+)?)/([a-z0-9._/-]+)(:([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?$ ]] \
    || die 2 "'$TARGET' is not REGISTRY/REPO[:TAG] in lower case (e.g. ghcr.io/ferd/ferd:0.1.0)"
REGISTRY=${BASH_REMATCH[1]}
REPO=$REGISTRY/${BASH_REMATCH[3]}
TAG=${BASH_REMATCH[5]}
[[ $REGISTRY == *.* || $REGISTRY == *:* || $REGISTRY == localhost ]] \
    || die 2 "'$REGISTRY' is not a registry host (e.g. ghcr.io, docker.io, registry.example.com:5000)"
[[ $REPO != */ && $REPO != *//* ]] || die 2 "'$TARGET': empty path component"
if [[ -z $TAG ]]; then
    TAG=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])' 2>/dev/null \
          || sed -n 's/^version *= *"\([^"]*\)".*/\1/p' pyproject.toml | head -n 1)
    [[ -n $TAG ]] || die 2 "no tag given and none in pyproject.toml"
fi
IMAGE=$REPO:$TAG

if [[ -n ${COSIGN_KEY:-} ]]; then
    command -v cosign >/dev/null 2>&1 || die 2 "COSIGN_KEY is set but cosign is not installed (install it, or unset COSIGN_KEY to publish unsigned)"
fi
if [[ ${FERD_ALLOW_DIRTY:-0} != 1 ]] && [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    die 1 "the checkout has uncommitted changes: the image would not match its revision label (commit, or FERD_ALLOW_DIRTY=1)"
fi

say "building $IMAGE on $STANDARD_BASE"
FERD_BASE=$STANDARD_BASE FERD_PULL_BASE=1 FERD_IMAGE_TAG=$IMAGE bash "$HERE/build.sh" >&2 \
    || die 1 "the build failed (see build/image-build.log)"

field() { python3 -c 'import json, sys; print(json.load(open("build/image.json"))[sys.argv[1]])' "$1"; }
ENGINE=$(field engine)
REVISION=$(field revision)
[[ $(field image) == "$IMAGE" && $(field base) == "$STANDARD_BASE" ]] || die 1 "build/image.json does not describe $IMAGE on $STANDARD_BASE"
export CONTAINERS_CONF=${CONTAINERS_CONF:-$HERE/containers.conf}

say "pushing $IMAGE with $ENGINE"
digestfile=$(mktemp)
trap 'rm -f "$digestfile"' EXIT
if [[ $ENGINE == podman ]]; then
    podman push --digestfile "$digestfile" "$IMAGE" >&2 || die 1 "podman push $IMAGE failed (podman login $REGISTRY?)"
    DIGEST=$(tr -d '[:space:]' <"$digestfile")
else
    docker push "$IMAGE" >&2 || die 1 "docker push $IMAGE failed (docker login $REGISTRY?)"
    DIGEST=$(docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$IMAGE" \
             | sed -n "s#^${REPO}@##p" | head -n 1)
fi
[[ $DIGEST =~ ^sha256:[0-9a-f]{64}$ ]] || die 1 "could not read the pushed digest of $IMAGE (got '$DIGEST')"
REF=$REPO@$DIGEST

if [[ -n ${COSIGN_KEY:-} ]]; then
    say "signing $REF with cosign"
    cosign sign --yes --key "$COSIGN_KEY" -a "org.opencontainers.image.revision=$REVISION" "$REF" >&2 \
        || die 1 "cosign sign $REF failed"
else
    say "not signed (set COSIGN_KEY, with cosign installed, to sign)"
fi

# the build record names what the registry holds too: `ferd pipeline compile --image-from-build` compiles that
# (pushed_ref); `ref` stays the local image, which runs here (the engine may keep it under another digest)
python3 - "$REF" "$DIGEST" <<'PY' || die 1 "could not record $REF in build/image.json"
import json, os, sys
record = json.load(open("build/image.json"))
record.update(pushed_ref=sys.argv[1], pushed_digest=sys.argv[2])
with open("build/.image.json.publish", "w") as f:
    json.dump(record, f, indent=2)
    f.write("\n")
os.replace("build/.image.json.publish", "build/image.json")
PY

say "published $IMAGE (revision $REVISION); build/image.json names it as pushed_ref"
printf '%s\n' "$REF"
