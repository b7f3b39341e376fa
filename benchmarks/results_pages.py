"""Fill the measured tables of docs/results/*.md from the files kept under benchmarks/results/.

    python benchmarks/results_pages.py            # rewrite every generated block in docs/results/
    python benchmarks/results_pages.py --check    # exit 1 when a committed page differs from its sources

A page is hand-written prose around generated blocks; a block is the text between

    <!-- results: KIND SOURCE -->
    <!-- /results -->

and is replaced by the table KIND renders from SOURCE (a path under benchmarks/results/), preceded by the
command that produced it and the date it was kept (``SOURCES``). Kinds: ``runs`` (one row per run of a
``ferd compare`` report, from its ``comparison.json``), ``deltas`` (each arm minus ``ferd``, paired by seed, from
the same file) and ``bench`` (``ferd bench`` JSON files in a folder). Deterministic: the same files give the same
bytes; ``tests/unit/test_docs.py`` checks that the committed pages are current.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGES = ROOT / "docs" / "results"
BLOCK = re.compile(r"(<!-- results: (\w+) (\S+) -->\n).*?(<!-- /results -->)", re.S)
# figures the pages show, copied from where benchmarks/ draws them (MkDocs serves only docs/)
COPIES = {PAGES / "budget.png": RESULTS / "tier2-budget" / "budget.png"}
ATTACKS = (("clean", "clean"), ("fgsm", "FGSM"), ("pgd20", "PGD-20"), ("cw", "CW∞"), ("aa", "AA"))


@dataclass(frozen=True)
class Source:
    """How a folder under benchmarks/results/ was produced, and when it was kept (its last commit's date)."""

    command: str
    date: str
    note: str = ""


_TIER2 = ("one arm at a time (`--method/--student/--seed`), two side by side on a 2-core AMD EPYC machine; "
          "`ferd compare --preset {preset} --out benchmarks/results/{name} --report-only --partial` rebuilds the "
          "report")
SOURCES = {
    "compare-cifar10-x3": Source("ferd compare --preset compare-cifar10-cpu-x3 --out runs/compare-cifar10-x3 "
                                 "--jobs 2 --threads 1", "2026-11-30",
                                 _TIER2.format(preset="compare-cifar10-cpu-x3", name="compare-cifar10-x3")),
    "compare-cifar10-x4": Source("ferd compare --preset compare-cifar10-cpu-x4 --out runs/compare-cifar10-x4 "
                                 "--jobs 2 --threads 1", "2026-11-30",
                                 _TIER2.format(preset="compare-cifar10-cpu-x4", name="compare-cifar10-x4")),
    "compare-cifar10-x6": Source("ferd compare --preset compare-cifar10-cpu-x6 --out runs/compare-cifar10-x6 "
                                 "--jobs 2 --threads 1", "2026-11-30",
                                 _TIER2.format(preset="compare-cifar10-cpu-x6", name="compare-cifar10-x6")),
    "bench-plan": Source("ferd bench --preset PRESET --threads 1 --iterations 3 --repeats 3 -S … --out FILE",
                         "2026-12-05", "the settings each file records are in the table; the full `-S` list "
                         "(the tier-2 shapes: WRN-16-2 teacher, cnn-32 student, batches of 64) was not kept"),
}


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _header(name: str) -> str:
    source = SOURCES[name]
    note = f"; {source.note}" if source.note else ""
    return f"`{source.command}` (kept in `benchmarks/results/{name}` on {source.date}{note}).\n"


def _comparison(name: str) -> dict:
    return json.loads((RESULTS / name / "comparison.json").read_text(encoding="utf-8"))


def render_runs(name: str) -> str:
    """One row per run: average / worst-class accuracy under each attack, PGD-20 NSD, wall time."""
    runs = _comparison(name)["runs"]
    keys = sorted(runs, key=lambda k: (k.split(".")[0] != "ferd", k))
    attacks = [(key, label) for key, label in ATTACKS if any(f"student.{key}.avg" in r for r in runs.values())]
    head = ["arm", "student", "seed", *(label for _, label in attacks), "PGD-20 NSD", "time"]
    lines = [_header(name), "Average / worst-class accuracy in %; time is the run's `run.seconds` (training and "
             "evaluation).\n", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in keys:
        arm, student, seed = key.split(".", 2)
        m = runs[key]
        cells = [arm, student, seed.removeprefix("seed="),
                 *(f"{_pct(m[f'student.{a}.avg'])} / {_pct(m[f'student.{a}.worst'])}" for a, _ in attacks),
                 f"{m['student.pgd20.nsd']:.2f}", f"{m['run.seconds'] / 60:.0f} min"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_deltas(name: str) -> str:
    """Each arm minus ``ferd``, paired by seed, with the report's 95 % t interval, in points."""
    metrics = _comparison(name)["metrics"]
    arms = sorted({k.rsplit(".", 2)[0] for k in metrics if ".delta_" in k})
    cols = (("delta_pgd20_worst", "Δ worst PGD-20"), ("delta_pgd20_avg", "Δ avg PGD-20"),
            ("delta_clean_avg", "Δ avg clean"))
    lines = [_header(name), "Each arm minus `ferd`, paired by seed, points, 95 % t interval.\n",
             "| arm | " + " | ".join(f"{label} [95 %]" for _, label in cols) + " |", "|---|" + "---|" * len(cols)]
    for arm in arms:
        cells = []
        for key, _ in cols:
            mean, low, high = (100 * metrics[f"{arm}.{key}.{s}"] for s in ("mean", "low", "high"))
            cells.append(f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]")
        lines.append(f"| {arm.replace('.', ' (') + ')'} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_bench(name: str) -> str:
    """One row per ``ferd bench`` JSON file: settings, iteration times, ratios to the bare passes."""
    head = ["file", "preset", "teacher → student", "batch gen / stu", "threads", "generator it. (ratio)",
            "student it. (ratio)", "epoch", "220 paper epochs"]
    lines = [_header(name), "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for path in sorted((RESULTS / name).glob("*.json")):
        b = json.loads(path.read_text(encoding="utf-8"))
        cells = [f"`{path.name}`", b["preset"], f"{b['teacher']} → {b['student']}",
                 f"{b['batch']['generator']} / {b['batch']['student']}", str(b["threads"]),
                 f"{1000 * b['generator_iteration_s']:.0f} ms ({b['generator_ratio']:.2f})",
                 f"{1000 * b['student_iteration_s']:.0f} ms ({b['student_ratio']:.2f})",
                 f"{b['epoch_s']:.0f} s", f"{b['paper_220_epochs_h']:.1f} h"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


RENDERERS = {"runs": render_runs, "deltas": render_deltas, "bench": render_bench}


def render_page(text: str, page: str = "page") -> str:
    """The page with every generated block rendered afresh from its source."""
    def block(match: re.Match) -> str:
        opening, kind, name, closing = match.groups()
        if kind not in RENDERERS:
            raise ValueError(f"{page}: unknown results block kind {kind!r}; expected one of {sorted(RENDERERS)}")
        if name not in SOURCES:
            raise ValueError(f"{page}: results block source {name!r} has no entry in SOURCES")
        return opening + RENDERERS[kind](name) + closing

    return BLOCK.sub(block, text)


def pages() -> list[Path]:
    return sorted(PAGES.glob("*.md"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed pages; write nothing")
    args = parser.parse_args(argv)
    stale = []
    for path in pages():
        text = path.read_text(encoding="utf-8")
        new = render_page(text, str(path))
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    for dest, src in COPIES.items():
        if not dest.exists() or dest.read_bytes() != src.read_bytes():
            stale.append(dest)
            if not args.check:
                dest.write_bytes(src.read_bytes())
    if args.check and stale:
        print("out of date (run python benchmarks/results_pages.py): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
