#!/usr/bin/env bash
# Tier 2 at 6x (params/compare-cifar10-cpu-x6.yaml), five seeds of five arms, one run at a time on one
# thread; each finished run is kept in benchmarks/results/compare-cifar10-x6 as soon as it finishes.
# Resumable: a kept run is skipped, an unfinished one continues from its checkpoint under RUNS. Run it
# from the checkout whose code the runs should use (a worktree, so edits elsewhere do not touch it):
#   benchmarks/tier2_fairness.sh [RUNS] [KEEP]        # defaults: runs/compare-cifar10-x6, benchmarks/results/...
# Order: the new arms' seeds 0-1 first (paired with the kept ferd/fast seeds 0-1), then seed by seed.
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs/compare-cifar10-x6}
KEEP=${2:-benchmarks/results/compare-cifar10-x6}
PY=${PYTHON:-.venv/bin/python}
PRESET=compare-cifar10-cpu-x6
# the AVX2 pins (docs/reproducibility.md): a seed gives the same bytes on any x86-64 machine, whichever runs it
export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
mkdir -p "$(dirname "$RUNS")"
ORDER="ferd-no-uni:0 ferd-no-fae:0 ferd-no-uni:1 ferd-no-fae:1"
for s in 2 3 4; do
  for m in ferd fast ferd-no-reweighting ferd-no-uni ferd-no-fae; do ORDER="$ORDER $m:$s"; done
done
for arm in $ORDER; do
  m=${arm%%:*}; s=${arm##*:}
  if [ -f "$KEEP/runs/$m/cnn-32/seed=$s/metrics.json" ]; then continue; fi
  echo "$(date -Is) start $m seed $s"
  if ! "$PY" -m ferd.cli compare --preset "$PRESET" --out "$RUNS" --method "$m" --student cnn-32 \
        --seed "$s" --threads 1 --no-progress >> "$RUNS.$m-$s.log" 2>&1; then
    echo "$(date -Is) FAILED $m seed $s (log $RUNS.$m-$s.log)"; exit 1
  fi
  "$PY" benchmarks/keep_comparison.py "$RUNS" "$KEEP"
  echo "$(date -Is) kept $m seed $s"
done
echo "$(date -Is) all 25 runs kept"
