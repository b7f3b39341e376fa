"""Tier 2's budget curve: how each method's student grows with the student iterations it is given,
read from comparisons kept in the repository (``benchmarks/keep_comparison.py``) — one point per run,
a line through the mean of each budget. Writes ``budget.png`` (clean and PGD-20 average accuracy,
worst-class PGD-20 accuracy and PGD-20 NSD against the total student iterations, epochs × ``distill.iterations``,
read from each run's ``params.json``) and ``budget.csv`` (one row per run)::

    .venv/bin/python benchmarks/budget_curve.py benchmarks/results/compare-cifar10-x3 \\
        benchmarks/results/compare-cifar10-x4 benchmarks/results/compare-cifar10-x6 --out benchmarks/results/tier2-budget
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections import defaultdict
from pathlib import Path
from statistics import fmean

from ferd.core.checkpoint import atomic_write_bytes

PANELS = (("student.clean.avg", "clean accuracy (%)", 100), ("student.pgd20.avg", "PGD-20 accuracy (%)", 100),
          ("student.pgd20.worst", "worst-class PGD-20 accuracy (%)", 100), ("student.pgd20.nsd", "PGD-20 NSD", 1))
CLEAN_BAR = 45.0  # issue 16's tier-2 bar for clean accuracy (%)


def collect(comparisons: list[Path]) -> list[dict[str, object]]:
    """One row per finished run (a ``metrics.json``) of each comparison: method, student, seed, budget, metrics."""
    rows = []
    for out in comparisons:
        for metrics in sorted(out.glob("runs/*/*/seed=*/metrics.json")):
            run = metrics.parent
            arm = json.loads((run / "arm.json").read_text())
            params = json.loads((run / "params.json").read_text())
            m = json.loads(metrics.read_text())
            rows.append({"comparison": out.name, "method": arm["method"], "student": arm["student"], "seed": arm["seed"],
                         "epochs": params["epochs"], "distill_iterations": params["distill"]["iterations"],
                         "student_iterations": params["epochs"] * params["distill"]["iterations"],
                         **{key: m[key] for key, _, _ in PANELS}, "run_minutes": round(m["run.seconds"] / 60, 1)})
    return rows


def plot(rows: list[dict[str, object]]) -> bytes:
    """The four panels as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.6))
    by_method: dict[str, list[dict[str, object]]] = defaultdict(list)
    for r in rows:
        by_method[f"{r['method']} ({r['student']})"].append(r)
    for (label, runs), colour in zip(sorted(by_method.items()), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        budgets = sorted({int(r["student_iterations"]) for r in runs})
        for ax, (key, name, scale) in zip(axes, PANELS):
            ax.scatter([r["student_iterations"] for r in runs], [scale * float(r[key]) for r in runs],
                       color=colour, s=14, alpha=0.6)
            means = [scale * fmean(float(r[key]) for r in runs if r["student_iterations"] == b) for b in budgets]
            ax.plot(budgets, means, color=colour, marker="o", label=label)
            ax.set(xlabel="student iterations (epochs × iterations)", ylabel=name)
    axes[0].axhline(CLEAN_BAR, color="k", ls="--", lw=0.8, label=f"{CLEAN_BAR:.0f} % clean")
    axes[0].legend(fontsize=7)
    fig.suptitle("tier 2 (CIFAR-10, WRN-16-2 teacher): one point per seed, lines through the means", fontsize=9)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("comparisons", type=Path, nargs="+", help="kept comparisons (benchmarks/results/<preset>)")
    p.add_argument("--out", type=Path, required=True, help="folder for budget.png and budget.csv")
    args = p.parse_args(argv)
    for out in args.comparisons:
        if not (out / "runs").is_dir():
            print(f"comparisons: {out} holds no comparison (expected {out / 'runs'})", file=sys.stderr)
            return 2
    rows = collect(args.comparisons)
    if not rows:
        print("comparisons: no finished run (no runs/*/*/seed=*/metrics.json)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    table = io.StringIO()
    w = csv.DictWriter(table, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(args.out / "budget.csv", table.getvalue().encode())
    atomic_write_bytes(args.out / "budget.png", plot(rows))
    print(f"{len(rows)} runs of {len(args.comparisons)} comparisons → {args.out / 'budget.png'}, {args.out / 'budget.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
