"""Fill the measured tables of docs/results/*.md from the files kept under benchmarks/results/.

    python benchmarks/results_pages.py            # rewrite every generated block in docs/results/
    python benchmarks/results_pages.py --check    # exit 1 when a committed page differs from its sources

A page is hand-written prose around generated blocks; a block is the text between

    <!-- results: KIND SOURCE -->
    <!-- /results -->

and is replaced by the table KIND renders from SOURCE (a path under benchmarks/results/), preceded by the
command that produced it and the date it was kept (``SOURCES``). Kinds: ``runs`` (one row per run of a
``ferd compare`` report, from its ``comparison.json``), ``deltas`` (each arm minus ``ferd``, paired by seed, from
the same file), ``verdicts``, ``switches`` and ``per_class`` (the fairness claims, the presets' fairness switches
the rule of ``benchmarks/fairness.py`` chooses, and the classes reweighting moves, from the same file and the
compare preset the source names), ``bench`` (``ferd bench`` JSON files in a folder), ``table`` (``SOURCE:TABLE``, a
table of a ``record.json``) and ``figures`` (the single figures of a ``record.json``). A ``record.json`` is a
measurement whose report was not kept, transcribed from the log that recorded it: its command, date, machine, the
commit it was transcribed from, and its numbers as text, exactly as recorded. Deterministic: the same files give
the same bytes; ``tests/unit/test_docs.py`` checks that the committed pages are current, and that every measured
number on a page (``unsourced``) is among the numbers of that page's sources.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGES = ROOT / "docs" / "results"
DOCS = ROOT / "docs"
BLOCK = re.compile(r"(<!-- results: (\w+) ([\w.-]+)(?::([\w.-]+))? -->\n).*?(<!-- /results -->)", re.S)
# figures the pages show, copied from where benchmarks/ draws them (MkDocs serves only docs/)
COPIES = {PAGES / "budget.png": RESULTS / "tier2-budget" / "budget.png",
          PAGES / "tier2-fairness-pgd20.png": RESULTS / "compare-cifar10-x6" / "per_class_pgd20.png"}
ATTACKS = (("clean", "clean"), ("fgsm", "FGSM"), ("pgd20", "PGD-20"), ("cw", "CW∞"), ("aa", "AA"))


@dataclass(frozen=True)
class Source:
    """How a folder under benchmarks/results/ was produced, and when it was kept (the day its latest run was kept,
    written here by hand: the kept files record no date); ``preset``: the compare preset of a ``ferd compare``
    report."""

    command: str
    date: str
    note: str = ""
    preset: str = ""
    teacher_eval: str = ""  # a kept `ferd evaluate` of the comparison's teacher (its per-class figures)

    @classmethod
    def record(cls, name: str) -> "Source":
        """The command, date and machine of a transcribed measurement (``benchmarks/results/NAME/record.json``)."""
        r = _record(name)
        settings = f"; {r['settings']}" if r.get("settings") else ""
        return cls(r["command"], r["recorded"], f"recorded on {r['machine']}{settings}")


_TIER2 = ("one arm at a time (`--method/--student/--seed`), two side by side on a 2-core AMD EPYC machine; "
          "`ferd compare --preset {preset} --out benchmarks/results/{name} --report-only --partial` rebuilds the "
          "report")
# measurements transcribed from the logs that recorded them (benchmarks/results/NAME/record.json)
RECORDS = ("embedded-run", "embedded-run-epyc", "make-run-vs-ferd-run", "compare-rounds", "storage-embedded",
           "student-defaults", "fae-mask", "utae-target", "utae-cache", "bench-embedded", "ddp-scaling",
           "compare-cpu", "compare-cpu-budget", "compare-cifar10", "teacher-eval", "image-build",
           "architecture-check", "byo-teacher-trial", "tier2-budget-intervals")
SOURCES = {
    "compare-cifar10-x3": Source("ferd compare --preset compare-cifar10-cpu-x3 --out runs/compare-cifar10-x3 "
                                 "--jobs 2 --threads 1", "2026-11-30",
                                 _TIER2.format(preset="compare-cifar10-cpu-x3", name="compare-cifar10-x3"),
                                 "compare-cifar10-cpu-x3"),
    "compare-cifar10-x4": Source("ferd compare --preset compare-cifar10-cpu-x4 --out runs/compare-cifar10-x4 "
                                 "--jobs 2 --threads 1", "2026-11-30",
                                 _TIER2.format(preset="compare-cifar10-cpu-x4", name="compare-cifar10-x4"),
                                 "compare-cifar10-cpu-x4"),
    "compare-cifar10-x6": Source("benchmarks/tier2_fairness.sh runs/compare-cifar10-x6 "
                                 "benchmarks/results/compare-cifar10-x6", "2026-12-06",
                                 "each run `ferd compare --preset compare-cifar10-cpu-x6 --method M --student cnn-32 "
                                 "--seed S --threads 1`, kept as it finished; `ferd`, `fast` and "
                                 "`ferd-no-reweighting` at seeds 0-1 two side by side on a 2-core AVX-512 machine, the "
                                 "others one at a time on a 2-core AVX2 one; `ferd compare --preset "
                                 "compare-cifar10-cpu-x6 --out benchmarks/results/compare-cifar10-x6 --report-only "
                                 "--partial` rebuilds the report", "compare-cifar10-cpu-x6", "teacher-cifar10"),
    "teacher-cifar10": Source("OMP_NUM_THREADS=1 ferd evaluate --teacher ../shared/models/wrn-16-2_cifar10_linf."
                              "safetensors --teacher-arch wrn-16-2 --dataset cifar10 --data-root ../shared/data "
                              "--attacks clean,pgd20 --out runs/teacher-eval-10k", "2026-12-05",
                              "all 10,000 test images, one thread; its metrics.json, per_class.csv and settings.json"),
    "tier2-budget": Source("python benchmarks/budget_curve.py benchmarks/results/compare-cifar10-x3 "
                           "benchmarks/results/compare-cifar10-x4 benchmarks/results/compare-cifar10-x6 "
                           "--out benchmarks/results/tier2-budget", "2026-11-30", "the figure docs/results/budget.png"),
    "bench-plan": Source("ferd bench --preset PRESET --threads 1 --iterations 3 --repeats 3 -S … --out FILE",
                         "2026-12-05", "the settings each file records are in the table; the full `-S` list "
                         "(the tier-2 shapes: WRN-16-2 teacher, cnn-32 student, batches of 64) was not kept"),
}


RECORD_FIELDS = {"command": str, "recorded": str, "machine": str, "transcribed_from": dict}


def _record(name: str) -> dict:
    """A transcribed measurement, its required fields checked."""
    path = RESULTS / name / "record.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    for field, kind in RECORD_FIELDS.items():
        if not isinstance(record.get(field), kind):
            raise ValueError(f"{path}: field {field!r} missing or not a {kind.__name__}")
    if not re.fullmatch(r"[0-9a-f]{7,40}", str(record["transcribed_from"].get("commit", ""))):
        raise ValueError(f"{path}: field 'transcribed_from.commit' must name the commit whose log it transcribes")
    if not record.get("tables") and not record.get("figures"):
        raise ValueError(f"{path}: no 'tables' and no 'figures': a record holds numbers")
    return record


SOURCES.update({name: Source.record(name) for name in RECORDS})


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _header(name: str) -> str:
    source = SOURCES[name]
    note = f"; {source.note}" if source.note else ""
    if name in RECORDS:
        return f"`{source.command}` ({source.date}, {source.note}; `benchmarks/results/{name}/record.json`).\n"
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
                 *(f"{_pct(m[f'student.{a}.avg'])} / {_pct(m[f'student.{a}.worst'])}" if f"student.{a}.avg" in m
                   else "—" for a, _ in attacks),  # — : an attack the preset runs on other seeds (attack_seeds)
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
        cells = [_fairness().points(tuple(math.nan if metrics[f"{arm}.{key}.{s}"] is None  # null: one seed
                                          else metrics[f"{arm}.{key}.{s}"] for s in ("mean", "low", "high")))
                 for key, _ in cols]
        lines.append(f"| {arm.replace('.', ' (') + ')'} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fairness():
    """benchmarks/fairness.py (benchmarks/ is no package: imported by its path, once)."""
    if "fairness" not in sys.modules:
        spec = importlib.util.spec_from_file_location("fairness", Path(__file__).with_name("fairness.py"))
        sys.modules["fairness"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["fairness"])
    return sys.modules["fairness"]


def _fairness_block(name: str, kind: str) -> str:
    """A block of ``benchmarks/fairness.py`` (its ``KIND_table``: verdicts, switches, per_class) on the report of a
    source that names its compare preset."""
    if not SOURCES[name].preset:
        raise ValueError(f"results block {kind} {name}: its source names no compare preset")
    table = f"{kind}_table"
    fairness, path = _fairness(), f"benchmarks/results/{name}/comparison.json"
    cc = fairness.compare_preset(SOURCES[name].preset)
    if table != "per_class_table":
        return "\n".join([_header(name), *getattr(fairness, table)(_comparison(name), cc, path)]) + "\n"
    teacher = SOURCES[name].teacher_eval
    kept = RESULTS / teacher if teacher else None
    lines = fairness.per_class_table(RESULTS / name, _comparison(name), cc, path, kept)
    return "\n".join([_header(name), *lines]) + "\n"


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


def render_table(name: str, table: str) -> str:
    """One table of a transcribed measurement, its cells as recorded."""
    tables = _record(name)["tables"]
    if table not in tables:
        raise ValueError(f"benchmarks/results/{name}/record.json: no table {table!r}; expected one of {sorted(tables)}")
    t = tables[table]
    lines = [_header(name), "| " + " | ".join(t["columns"]) + " |", "|" + "---|" * len(t["columns"])]
    lines += ["| " + " | ".join(row) + " |" for row in t["rows"]]
    return "\n".join(lines) + "\n"


def render_figures(name: str) -> str:
    """The single figures of a transcribed measurement, as recorded."""
    lines = [_header(name), "| measured | value |", "|---|---|"]
    lines += [f"| {what} | {value} |" for what, value in _record(name)["figures"]]
    return "\n".join(lines) + "\n"


def render_evaluation(name: str) -> str:
    """A kept ``ferd evaluate``: per model and attack, average / worst class / NSD and every class's accuracy."""
    folder = RESULTS / name
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    rows = list(csv.DictReader((folder / "per_class.csv").open(encoding="utf-8")))
    pairs = list(dict.fromkeys((r["model"], r["attack"]) for r in rows))
    classes = [r["class_name"] for r in rows if (r["model"], r["attack"]) == pairs[0]]
    labels = dict(ATTACKS)
    head = ["model", "attack", "avg", "worst", "NSD", *classes]
    lines = [_header(name), "Accuracies in %.\n", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, attack in pairs:
        accs = [_pct(float(r["accuracy"])) for r in rows if (r["model"], r["attack"]) == (model, attack)]
        cells = [model, labels.get(attack, attack), _pct(metrics[f"{model}.{attack}.avg"]),
                 _pct(metrics[f"{model}.{attack}.worst"]), f"{metrics[f'{model}.{attack}.nsd']:.3f}", *accs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


RENDERERS = {"runs": render_runs, "deltas": render_deltas, "bench": render_bench, "figures": render_figures,
             "evaluation": render_evaluation,
             **{kind: (lambda name, k=kind: _fairness_block(name, k))
                for kind in ("verdicts", "switches", "per_class")}}
PART_RENDERERS = {"table": render_table}  # kinds that name a part of their source: SOURCE:PART


def render_page(text: str, page: str = "page") -> str:
    """The page with every generated block rendered afresh from its source."""
    def block(match: re.Match) -> str:
        opening, kind, name, part, closing = match.groups()
        if kind not in RENDERERS and kind not in PART_RENDERERS:
            raise ValueError(f"{page}: unknown results block kind {kind!r}; "
                             f"expected one of {sorted([*RENDERERS, *PART_RENDERERS])}")
        if name not in SOURCES:
            raise ValueError(f"{page}: results block source {name!r} has no entry in SOURCES")
        if (kind in PART_RENDERERS) != (part is not None):
            raise ValueError(f"{page}: results block {kind} {name}: "
                             + ("expected SOURCE:PART" if kind in PART_RENDERERS else "expected SOURCE alone"))
        body = PART_RENDERERS[kind](name, part) if part is not None else RENDERERS[kind](name)
        return opening + body + closing

    return BLOCK.sub(block, text)


def pages() -> list[Path]:
    """Every docs page: a results block may stand on any of them."""
    return sorted(DOCS.rglob("*.md"))


# What a page quotes as a measurement: every decimal number and every percentage outside code, link targets,
# HTML comments and generated blocks. A results page may quote only the numbers of its own blocks' sources; any
# other page those of the results pages it links to, the configuration reference's (settings, generated from the
# schema) and the few constants below.
QUOTED = re.compile(r"(?<![\w.])(\d+(?:\.\d+)? ?%|\d+\.\d+(?:e-?\d+)?)")
_NOT_PROSE = re.compile(r"```.*?```|`[^`\n]*`|\]\([^)]*\)|<!--.*?-->", re.S)
_SOURCE_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e-?\d+)?")
_NOT_NUMBERS = {"history.json", "params.json"}  # per-epoch losses and settings: thousands of numbers, none quoted
CONFIGURATION = DOCS / "configuration.md"
CONSTANTS = {  # page: {number as quoted: why it is no measurement}
    "evaluation.md": {"10 %": "Worst-10 %, a metric's name", "0.1": "⌈0.1·C⌉, its definition"},
    "faults.md": {"0.5": "the memory bound a test asserts (0.5 GiB)", "95 %": "the collapse warning's threshold"},
    "methods.md": {"95 %": "the confidence level of the intervals", "5.1": "the paper's section §5.1",
                   "9.1": "the paper's appendix A.9.1", "0.001": "RSLAD's and the authors' random start",
                   "0.02": "the generator's initialisation N(0, 0.02)", "0.8333333333333": "5/6 as a setting",
                   "0.1666666666667": "1/6 as a setting"},
    "multi-gpu.md": {"7.5e-5": "a test's tolerance", "8.2e-7": "a test's tolerance", "99 %": "a test's bound"},
    "concepts.md": {"1.05": "a test's bound"},
    "contributing.md": {"3.11": "the Python version required"},
    "kubeflow.md": {"3.11": "the image's Python version", "4.3": "podman's version"},
    "dvc.md": {"127.0": "an address (127.0.0.1)", "0.1": "an address (127.0.0.1)"},
}


def quoted(text: str) -> list[str]:
    """The decimal numbers and percentages a page's prose quotes, as written (``12.3`` or ``45 %``)."""
    prose = _NOT_PROSE.sub(" ", BLOCK.sub(" ", text))
    return [re.sub(r" ?%$", " %", q) for q in QUOTED.findall(prose)]


def _key(number: str) -> str:
    return number.removesuffix(" %")


def source_numbers(name: str) -> set[str]:
    """Every number in a source's files as written, and each decimal rounded to 0-3 places (as a fraction and as a
    percentage): a page may round, and quote a fraction in %."""
    numbers: set[str] = set()
    for path in sorted((RESULTS / name).rglob("*")):
        if path.suffix not in {".json", ".csv", ".md"} or path.name in _NOT_NUMBERS:
            continue
        for token in _SOURCE_NUMBER.findall(path.read_text(encoding="utf-8")):
            numbers.add(token)
            if not token.isdigit():
                value = float(token)
                numbers.update(f"{value:.{d}f}" for d in range(4))
                numbers.update(f"{100 * value:.{d}f}" for d in range(3))
    return numbers


def block_sources(text: str) -> set[str]:
    return {match.group(3) for match in BLOCK.finditer(text)}


def unsourced(path: Path, text: str | None = None) -> list[str]:
    """The numbers ``path`` (a docs page; ``text`` in place of its contents) quotes that come from no source."""
    if path == CONFIGURATION:
        return []  # generated from the schema: settings, not measurements
    text = path.read_text(encoding="utf-8") if text is None else text
    names = block_sources(text)
    allowed: set[str] = set(CONSTANTS.get(path.name, {}) if path.parent == DOCS else {})
    if path.parent == DOCS:
        allowed |= set(_SOURCE_NUMBER.findall(_NOT_PROSE.sub(" ", CONFIGURATION.read_text(encoding="utf-8"))))
        for target in re.findall(r"\]\((results/[\w.-]+\.md)(?:#[^)]*)?\)", text):
            if (DOCS / target).exists():
                names |= block_sources((DOCS / target).read_text(encoding="utf-8"))
    for name in sorted(names & set(SOURCES)):
        allowed |= source_numbers(name)
    return [q for q in quoted(text) if q not in allowed and _key(q) not in allowed]


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
