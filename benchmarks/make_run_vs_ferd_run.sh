#!/bin/bash
# The DVC path of `make run` (ferd warm -- dvc repro && dvc metrics show) against `ferd run` of the same parameters, timed in
# turn, each from a fresh clone of this repository's HEAD with the venv of this checkout (README "What the
# stage split costs"). Run on an otherwise idle machine from the repository root:
#   bash benchmarks/make_run_vs_ferd_run.sh AB BA AB > benchmarks/results/make_run_vs_ferd_run.txt
# Each argument is one pair in its order (A = make run, B = ferd run); prints one line per run.
set -euo pipefail
REPO=$(pwd) BIN=$(pwd)/.venv/bin WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "# $(git -C "$REPO" log --oneline -1 | cut -c1-60), $(date -u +%FT%TZ)"
clone() { git clone -q "$REPO" "$WORK/$1" && cd "$WORK/$1"; }
A() { clone "A$1"; /usr/bin/time -f "make-run pair $1: %e s wall" -o /dev/stdout env PATH="$BIN:$PATH" PYTHONPATH="$WORK/A$1" bash -c \
      'ferd warm -- dvc repro > make-run.log 2>&1 && dvc metrics show >> make-run.log 2>&1'; cd "$REPO"; }
B() { clone "B$1"; /usr/bin/time -f "ferd-run pair $1: %e s wall" -o /dev/stdout env PYTHONPATH="$WORK/B$1" "$BIN/ferd" run \
      --params params/embedded.yaml --out runs/embedded --no-progress > ferd-run.log 2>&1; cd "$REPO"; }
n=0
for pair in "$@"; do
  n=$((n + 1))
  case $pair in
    AB) A $n; B $n;;
    BA) B $n; A $n;;
    *) echo "pair $n: expected AB or BA, got $pair" >&2; exit 2;;
  esac
done
