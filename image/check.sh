#!/usr/bin/env bash
# image/check.sh: check the image that image/build.sh last built (build/image.json).
#
#   image/check.sh            # after make image
#
# Runs it by its pinned reference (`ferd --version`, `ferd stage --help`); checks the user (uid 1000,
# HOME and the working directory writable), the OCI labels and FERD_GIT_COMMIT against the revision;
# checks that the build's CA bundle (FERD_BUILD_CA, else PIP_CERT) is in no layer: not in /run/secrets,
# not in pip's configuration, not in the image's history, and (podman, as root) none of the bundle's
# certificates that the image's own trust store lacks is in any layer's files; and, where a Python
# with the docker SDK is at hand (FERD_CHECK_PYTHON, default .venv/bin/python), runs the reference
# through podman's Docker-compatible API as the docker SDK (and so KFP's DockerRunner) does.
# Exit status: 0 all passed, 1 a check failed, 2 bad input.
set -euo pipefail

PROG=image/check.sh
die() { local code=$1; shift; printf '%s: %s\n' "$PROG" "$*" >&2; exit "$code"; }
[[ $# -eq 0 ]] || die 2 "no arguments expected (it checks the image in build/image.json)"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$(dirname "$HERE")"
[[ -f build/image.json ]] || die 2 "build/image.json is missing: run make image first"
export CONTAINERS_CONF=${CONTAINERS_CONF:-$HERE/containers.conf}

field() { python3 -c 'import json, sys; print(json.load(open("build/image.json"))[sys.argv[1]])' "$1"; }
ENGINE=$(field engine); REF=$(field ref); REVISION=$(field revision); IMAGE=$(field image)
VERSION=$(python3 -c 'import json; print(json.load(open("build/image.json")).get("version") or "")')
[[ -n $VERSION ]] || VERSION=${IMAGE##*:}  # a record without its version: the tag
CA=${FERD_BUILD_CA:-${PIP_CERT:-}}

failed=0
ok() { printf 'ok   %s\n' "$*"; }
bad() { printf 'FAIL %s\n' "$*"; failed=1; }
check() {  # check DESCRIPTION EXPECTED ACTUAL
    if [[ $2 == "$3" ]]; then ok "$1: $3"; else bad "$1: expected '$2', got '$3'"; fi
}
run() { "$ENGINE" run --rm "$@"; }

check "run $REF --version" "ferd $VERSION" "$(run "$REF" --version 2>&1)"
if out=$(run "$REF" stage --help 2>&1); then ok "run $REF stage --help"; else bad "run $REF stage --help: $(tail -n 1 <<<"$out")"; fi

# shellcheck disable=SC2016  # expanded by the shell inside the image
inside=$(run --entrypoint sh "$REF" -c 'id -u; echo "$HOME"; pwd; touch "$HOME/.w" ./.w && echo writable;
    ls -A /run/secrets 2>/dev/null | wc -l; echo "${PIP_CERT-}"; pip config list 2>/dev/null | grep -ci cert; echo "$FERD_GIT_COMMIT"' 2>&1) \
    || bad "the shell inside the image: $inside"
mapfile -t got <<<"$inside"
check "user id" 1000 "${got[0]:-}"
check "HOME" /home/ferd "${got[1]:-}"
check "HOME and working directory ${got[2]:-} writable" writable "${got[3]:-}"
check "files in /run/secrets" 0 "${got[4]:-}"
check "PIP_CERT in the image" "" "${got[5]:-}"
check "cert settings in pip config list" 0 "${got[6]:-}"
check "FERD_GIT_COMMIT" "$REVISION" "${got[7]:-}"

label() { "$ENGINE" image inspect --format "{{index .Config.Labels \"org.opencontainers.image.$1\"}}" "$REF"; }
check "label revision" "$REVISION" "$(label revision)"
check "label version" "$VERSION" "$(label version)"
created=$(label created)
if [[ $created =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T ]]; then ok "label created: $created"; else bad "label created: '$created'"; fi

# --- the CA bundle in no layer -------------------------------------------------------------------------
if [[ -z $CA ]]; then
    ok "CA bundle: none was given to the build (FERD_BUILD_CA, PIP_CERT unset): nothing to look for"
else
    history=$("$ENGINE" history --no-trunc --format '{{.CreatedBy}}' "$REF")
    if grep -qF -e "$CA" -e "BEGIN CERTIFICATE" <<<"$history"; then bad "the image's history names $CA or holds a certificate"
    else ok "the image's history neither names $CA nor holds a certificate"; fi
    if [[ $ENGINE == podman && $(id -u) == 0 ]]; then
        work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
        run --entrypoint cat "$REF" /etc/ssl/certs/ca-certificates.crt >"$work/image.pem" 2>/dev/null || : >"$work/image.pem"
        # one line (the 4th base64 line) of each certificate of the bundle that the image's trust store lacks
        awk '/BEGIN CERT/ { n = 0; next } /END CERT/ { next } { if (++n == 4) print }' "$CA" | sort -u \
            | grep -vxF -f "$work/image.pem" >"$work/extra" || true
        if [[ ! -s $work/extra ]]; then
            ok "CA bundle: every certificate of $CA is in the image's own trust store (nothing extra to look for)"
        else
            dirs=$("$ENGINE" image inspect --format '{{.GraphDriver.Data.UpperDir}}:{{.GraphDriver.Data.LowerDir}}' "$REF")
            n=0; hit=""
            IFS=: read -ra layers <<<"$dirs"
            for d in "${layers[@]}"; do
                [[ -d $d ]] || continue
                n=$((n + 1))
                if grep -rlF -f "$work/extra" "$d" >"$work/hits" 2>/dev/null; then hit="$hit $(head -n 1 "$work/hits")"; fi
            done
            if [[ -n $hit ]]; then bad "a certificate of $CA that Debian's trust store lacks is in a layer:$hit"
            else ok "none of the $(wc -l <"$work/extra") certificate(s) of $CA that the image's trust store lacks is in its $n layers"; fi
        fi
    else
        ok "CA bundle: the layer scan needs podman as root (skipped)"
    fi
fi

# --- the pinned reference through the Docker-compatible API (docker SDK, KFP's DockerRunner) --------
PY=${FERD_CHECK_PYTHON:-.venv/bin/python}
if [[ $ENGINE == podman && -x $PY ]] && "$PY" -c 'import docker' 2>/dev/null; then
    sock=$(mktemp -u /tmp/ferd-check-podman.XXXXXX.sock)
    podman system service --time=0 "unix://$sock" >/dev/null 2>&1 &
    svc=$!
    for _ in $(seq 50); do [[ -S $sock ]] && break; sleep 0.2; done
    sdk=$("$PY" -c 'import docker, sys
c = docker.DockerClient(base_url="unix://" + sys.argv[1])
print(c.containers.run(sys.argv[2], ["--version"], remove=True).decode().strip())' "$sock" "$REF" 2>&1 | tail -n 1) || true
    kill "$svc" 2>/dev/null || true
    wait "$svc" 2>/dev/null || true
    rm -f "$sock"
    check "docker SDK containers.run($REF) via podman's API" "ferd $VERSION" "$sdk"
else
    ok "docker SDK check skipped (needs podman and a Python with the docker package: FERD_CHECK_PYTHON)"
fi

if [[ $failed == 0 ]]; then echo "all checks passed"; else echo "some checks FAILED" >&2; exit 1; fi
