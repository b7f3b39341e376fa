#!/usr/bin/env bash
# image/build.sh (what `make image` runs): build the repository's Dockerfile into a local image.
#
#   image/build.sh            # or: make image
#
# Engine: podman or docker, whichever works (podman when both); when neither works and this is a
# root shell with apt-get, podman is installed from the OS packages. podman runs with
# image/containers.conf (runc, explicit ulimits) unless CONTAINERS_CONF is set.
#
# Environment (all optional):
#   FERD_ENGINE      podman | docker: use that one (it must work)
#   FERD_BASE        default: python:3.11-slim-bookworm, pulled (a local Debian base when the pull
#                    fails); local: a Debian bookworm base made with mmdebstrap from the mirror apt
#                    uses, imported once as localhost/ferd-base:bookworm; or any image reference
#                    (used as it is, pulled when missing or with FERD_PULL_BASE=1; no fallback)
#   FERD_BUILD_CA    an extra CA bundle for pip inside the build (a TLS-inspecting proxy), passed as
#                    the build secret `ca`, never stored in the image; default: $PIP_CERT if set
#   FERD_PIP_CACHE   the host's pip cache, bound into the build with podman (default ~/.cache/pip)
#   FERD_IMAGE_TAG   the local name:tag (default localhost/ferd:<version of pyproject.toml>)
#   FERD_DEBIAN_MIRROR  the Debian mirror for the local base (default: the one apt uses)
#
# Prints the build time, the image size and its digest; writes build/image.json (engine, image,
# id, digest, ref: a reference pinned by digest that `podman run` and the docker SDK accept,
# size_bytes, build_seconds, revision, version, base). Exit status: 0 built, 1 failed, 2 bad input.
set -euo pipefail

PROG=image/build.sh
DEFAULT_BASE=docker.io/library/python:3.11-slim-bookworm
LOCAL_BASE=localhost/ferd-base:bookworm
PACKAGES=(podman buildah runc fuse-overlayfs uidmap mmdebstrap)

die() { local code=$1; shift; printf '%s: %s\n' "$PROG" "$*" >&2; exit "$code"; }
say() { printf '==> %s\n' "$*"; }
now_ms() { date +%s%3N; }

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

case "${1:-}" in
    "") ;;
    -h|--help) usage; exit 0 ;;
    *) die 2 "unexpected argument '$1' (no arguments; settings come from FERD_* variables, see --help)" ;;
esac

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
cd "$ROOT"

for f in Dockerfile pyproject.toml README.md constraints.txt ferd; do
    [[ -e $f ]] || die 2 "$ROOT/$f is missing (the image is built from Dockerfile, pyproject.toml, README.md, constraints.txt and ferd/)"
done

ENGINE=${FERD_ENGINE:-}
case "$ENGINE" in ""|podman|docker) ;; *) die 2 "FERD_ENGINE must be podman or docker, not '$ENGINE'" ;; esac

BASE_CHOICE=${FERD_BASE:-default}
[[ $BASE_CHOICE =~ ^[A-Za-z0-9][A-Za-z0-9._/:@-]*$ ]] || die 2 "FERD_BASE must be default, local or an image reference, not '$BASE_CHOICE'"

CA=${FERD_BUILD_CA:-${PIP_CERT:-}}
if [[ -n $CA ]]; then
    [[ -f $CA && -r $CA ]] || die 2 "the CA bundle '$CA' (FERD_BUILD_CA or PIP_CERT) is not a readable file"
    CA=$(cd "$(dirname "$CA")" && pwd)/$(basename "$CA")
fi

PIP_CACHE=${FERD_PIP_CACHE:-${HOME:-/root}/.cache/pip}
mkdir -p "$PIP_CACHE" 2>/dev/null || die 2 "cannot create the pip cache folder '$PIP_CACHE' (FERD_PIP_CACHE)"
PIP_CACHE=$(cd "$PIP_CACHE" && pwd)

VERSION=$(python3 -c 'import sys, tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])' 2>/dev/null \
          || sed -n 's/^version *= *"\([^"]*\)".*/\1/p' pyproject.toml | head -n 1)
[[ $VERSION =~ ^[A-Za-z0-9][A-Za-z0-9._+-]*$ ]] || die 2 "cannot read the version from pyproject.toml"
[[ -z ${FERD_IMAGE:-} || ${FERD_IMAGE} == *@sha256:* ]] \
    || die 2 "FERD_IMAGE names the pinned image ferd compiles and runs (REF@sha256:…); the local name:tag to build is FERD_IMAGE_TAG"
IMAGE=${FERD_IMAGE_TAG:-localhost/ferd:$VERSION}
[[ $IMAGE =~ ^[a-z0-9][a-z0-9._/:-]*:[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]] || die 2 "FERD_IMAGE_TAG must be name:tag in lower case, not '$IMAGE'"

REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
# what goes into the image differs from HEAD (changed or untracked files): the revision says so, and so does
# every stage manifest the image writes (FERD_GIT_COMMIT)
if [[ $REVISION != unknown && -n $(git status --porcelain -- ferd pyproject.toml README.md constraints.txt Dockerfile 2>/dev/null) ]]; then
    REVISION=$REVISION-dirty
fi
CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)

mkdir -p build
T0=$(now_ms)

# --- the engine -------------------------------------------------------------------------------------
export CONTAINERS_CONF=${CONTAINERS_CONF:-$HERE/containers.conf}

podman_works() {
    command -v podman >/dev/null 2>&1 || return 1
    timeout 60 podman info >/dev/null 2>&1
}
docker_works() {
    command -v docker >/dev/null 2>&1 && timeout 30 docker info >/dev/null 2>&1
}
as_root_with_apt() { [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; }
apt_install() {
    local log=build/apt-install.log
    say "installing ${*} (apt-get; log: $log)"
    if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"; } >"$log" 2>&1; then
        die 1 "apt-get install ${*} failed: $(grep -v '^\s*$' "$log" | tail -n 1)"
    fi
}

if [[ -z $ENGINE ]]; then
    if podman_works; then ENGINE=podman
    elif docker_works; then ENGINE=docker
    elif as_root_with_apt; then
        apt_install "${PACKAGES[@]}"
        podman_works || die 1 "podman was installed, but 'podman info' fails (CONTAINERS_CONF=$CONTAINERS_CONF)"
        ENGINE=podman
    else
        die 1 "no working podman or docker, and cannot install podman (needs root and apt-get): install podman or start a Docker engine"
    fi
elif [[ $ENGINE == podman ]]; then
    podman_works || die 1 "FERD_ENGINE=podman, but 'podman info' fails (CONTAINERS_CONF=$CONTAINERS_CONF)"
else
    docker_works || die 1 "FERD_ENGINE=docker, but 'docker info' fails (no Docker engine)"
fi
say "engine: $ENGINE ($($ENGINE --version 2>/dev/null | head -n 1))"

image_exists() {
    if [[ $ENGINE == podman ]]; then podman image exists "$1"; else docker image inspect "$1" >/dev/null 2>&1; fi
}
try_pull() {  # prints the last error line on failure
    local out
    if out=$(timeout "${FERD_PULL_TIMEOUT:-600}" "$ENGINE" pull -q "$1" 2>&1); then return 0; fi
    printf '%s\n' "$out" | grep -v '^\s*$' | tail -n 1
    return 1
}

# --- the base ---------------------------------------------------------------------------------------
debian_mirror() {
    if [[ -n ${FERD_DEBIAN_MIRROR:-} ]]; then echo "$FERD_DEBIAN_MIRROR"; return; fi
    local m=""
    if command -v apt-get >/dev/null 2>&1; then
        # shellcheck disable=SC2016  # $(REPO_URI) is apt's field, not the shell's
        m=$(apt-get indextargets --format '$(REPO_URI)' 'Release: bookworm' 'Target-Of: deb' 2>/dev/null | head -n 1 || true)
    fi
    echo "${m:-http://deb.debian.org/debian}"
}
make_local_base() {
    if image_exists "$LOCAL_BASE"; then say "base: $LOCAL_BASE (exists)"; return; fi
    if ! command -v mmdebstrap >/dev/null 2>&1; then
        as_root_with_apt || die 1 "mmdebstrap is needed for the local base (FERD_BASE=local) and cannot be installed (needs root and apt-get)"
        apt_install mmdebstrap
    fi
    local mirror tar t
    mirror=$(debian_mirror)
    t=$(now_ms)
    tar=$(mktemp "$ROOT/build/ferd-base.XXXXXX.tar")
    # shellcheck disable=SC2064  # expand now: the file to remove is known here
    trap "rm -f '$tar'" EXIT
    say "base: making $LOCAL_BASE with mmdebstrap from $mirror"
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$tar" "$mirror" || die 1 "mmdebstrap failed (mirror $mirror; set FERD_DEBIAN_MIRROR to another one)"
    local out
    out=$("$ENGINE" import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' "$tar" "$LOCAL_BASE" 2>&1) || die 1 "$ENGINE import of the base failed: $(tail -n 1 <<<"$out")"
    rm -f "$tar"
    trap - EXIT
    say "base: $LOCAL_BASE made in $(( ($(now_ms) - t) / 1000 )) s"
}

case "$BASE_CHOICE" in
    local) make_local_base; BASE=$LOCAL_BASE ;;
    default)
        if image_exists "$DEFAULT_BASE"; then
            BASE=$DEFAULT_BASE; say "base: $BASE (exists)"
        elif err=$(try_pull "$DEFAULT_BASE"); then
            BASE=$DEFAULT_BASE; say "base: $BASE (pulled)"
        else
            printf '%s: cannot pull %s (%s); using a local Debian base instead (FERD_BASE=local)\n' \
                "$PROG" "$DEFAULT_BASE" "$err" >&2
            make_local_base; BASE=$LOCAL_BASE
        fi ;;
    *)
        BASE=$BASE_CHOICE
        if [[ ${FERD_PULL_BASE:-0} == 1 ]] || ! image_exists "$BASE"; then
            err=$(try_pull "$BASE") || die 1 "cannot pull the base $BASE: $err"
            say "base: $BASE (pulled)"
        else
            say "base: $BASE (exists)"
        fi ;;
esac

# --- the build --------------------------------------------------------------------------------------
args=(build --file Dockerfile --tag "$IMAGE"
      --build-arg "BASE=$BASE" --build-arg "REVISION=$REVISION"
      --build-arg "CREATED=$CREATED" --build-arg "VERSION=$VERSION"
      # the same labels again on the command line: podman 4.3 (buildah 1.28) keys its layer cache on an
      # instruction's text, not on the build arguments in it, and would otherwise hand back the last
      # image built with other REVISION/CREATED values (stale labels and FERD_GIT_COMMIT); a label
      # given here makes it commit the final image from this build's settings (the layers stay cached)
      --label "org.opencontainers.image.revision=$REVISION" --label "org.opencontainers.image.created=$CREATED"
      --label "org.opencontainers.image.version=$VERSION")
[[ -n $CA ]] && args+=(--secret "id=ca,src=$CA")
if [[ $ENGINE == podman ]]; then
    args+=(--layers -v "$PIP_CACHE:/root/.cache/pip")   # the Dockerfile's cache mount, bound to the host's cache
else
    export DOCKER_BUILDKIT=1                               # secrets and cache mounts need BuildKit
fi
say "building $IMAGE (revision $REVISION${CA:+, CA bundle $CA as build secret}; log: build/image-build.log)"
TB=$(now_ms)
if ! "$ENGINE" "${args[@]}" . 2>&1 | tee build/image-build.log; then
    die 1 "$ENGINE build failed: $(grep -v '^\s*$' build/image-build.log | tail -n 1)"
fi

# --- what was built ---------------------------------------------------------------------------------
inspect() { "$ENGINE" image inspect --format "$1" "$IMAGE"; }
ID=$(inspect '{{.Id}}'); ID=sha256:${ID#sha256:}
SIZE=$(inspect '{{.Size}}')
REPO=$IMAGE
[[ ${IMAGE##*/} == *:* ]] && REPO=${IMAGE%:*}
if [[ $ENGINE == podman ]]; then
    DIGEST=$(inspect '{{.Digest}}')
else
    DIGEST=$(inspect '{{range .RepoDigests}}{{println .}}{{end}}' | sed -n 's/.*@//p' | head -n 1)
fi
if [[ $DIGEST == sha256:* ]]; then REF=$REPO@$DIGEST; else DIGEST=""; REF=$ID; fi

# the pinned reference must run the image
got=$("$ENGINE" run --rm "$REF" --version 2>&1) || die 1 "the image was built, but '$ENGINE run --rm $REF --version' failed: $(tail -n 1 <<<"$got")"
[[ $got == *"$VERSION"* ]] || die 1 "'$ENGINE run --rm $REF --version' printed '$got', not version $VERSION"

T1=$(now_ms)
SECONDS_TOTAL=$(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.1f", (b - a) / 1000 }')
SECONDS_BUILD=$(awk -v a="$TB" -v b="$T1" 'BEGIN { printf "%.1f", (b - a) / 1000 }')

json_str() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }
tmp=$(mktemp build/.image.json.XXXXXX)
{
    printf '{\n'
    printf '  "engine": %s,\n' "$(json_str "$ENGINE")"
    printf '  "image": %s,\n' "$(json_str "$IMAGE")"
    printf '  "id": %s,\n' "$(json_str "$ID")"
    printf '  "digest": %s,\n' "$(json_str "$DIGEST")"
    printf '  "ref": %s,\n' "$(json_str "$REF")"
    printf '  "size_bytes": %s,\n' "$SIZE"
    printf '  "build_seconds": %s,\n' "$SECONDS_TOTAL"
    printf '  "revision": %s,\n' "$(json_str "$REVISION")"
    printf '  "version": %s,\n' "$(json_str "$VERSION")"
    printf '  "base": %s\n' "$(json_str "$BASE")"
    printf '}\n'
} >"$tmp"
chmod 644 "$tmp"
mv -f "$tmp" build/image.json

say "built $IMAGE with $ENGINE on $BASE"
say "time:   ${SECONDS_TOTAL} s in all (the image build ${SECONDS_BUILD} s)"
say "size:   $(numfmt --to=iec-i --suffix=B "$SIZE" 2>/dev/null || echo "$SIZE bytes") ($SIZE bytes)"
say "digest: ${DIGEST:-none (docker keeps no digest for an unpushed image)}"
say "ref:    $REF ($got)"
say "wrote build/image.json"
