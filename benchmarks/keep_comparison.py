"""Keep a comparison's results in the repository: the report and, per run, what the report is built
from (metrics, per-class accuracies) and what says where it came from (arm, parameters, result
record, synthesis history) — no weights, pools or predictions. Runs and checkpoints stay in
``runs/``; these few kilobytes per run are what the README's comparison tables quote, and
``ferd compare --report-only [--partial] --out <dest>`` rebuilds the report from them::

    .venv/bin/python benchmarks/keep_comparison.py runs/compare-cifar10-x4 benchmarks/results/compare-cifar10-x4
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

KEPT = {"metrics.json", "per_class.csv", "arm.json", "params.json", "result.json", "history.json",
        "model_card.json", "comparison.md", "comparison.csv", "comparison.json"}


def kept_files(out: Path) -> list[Path]:
    """The files to keep under a comparison's output directory, relative to it: of finished runs only (those
    with a ``metrics.json``; an unfinished run resumes from its checkpoint, which is not kept), and not a
    run's checkpoint, its own copy of the teacher (the comparison's ``teacher/model_card.json`` names it) nor a
    run set aside as stale (``.stale/``)."""
    unfinished = [run for run in out.glob("runs/*/*/seed=*") if not (run / "metrics.json").is_file()]
    return sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and p.name in KEPT
                  and not {"checkpoint", ".stale"} & set(p.relative_to(out).parts)
                  and not (p.parent.name == "teacher" and p.parent.parent != out)
                  and not any(run in p.parents for run in unfinished))


def _run_dir(rel: Path) -> Path | None:
    """The run folder (``runs/<method>/<student>/seed=<s>``) a kept file belongs to, None for the report's."""
    return Path(*rel.parts[:4]) if len(rel.parts) > 4 and rel.parts[0] == "runs" else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="the comparison's output directory (ferd compare --out)")
    p.add_argument("dest", type=Path, help="where to keep its results, e.g. benchmarks/results/<preset>")
    args = p.parse_args(argv)
    if not (args.out / "runs").is_dir():
        print(f"out: {args.out} holds no comparison (expected {args.out / 'runs'})", file=sys.stderr)
        return 2
    files = kept_files(args.out)
    for run in sorted({r for r in map(_run_dir, files) if r is not None}):  # a run is kept whole, never merged
        shutil.rmtree(args.dest / run, ignore_errors=True)
    for rel in files:
        (args.dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(args.out / rel, args.dest / rel)
    print(f"kept {len(files)} files of {args.out} in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
