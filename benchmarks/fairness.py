"""Robust fairness, decided: what tier 2 at 6× (``compare-cifar10-cpu-x6``) supports about FERD's fairness, and the
values it sets for the paper presets' fairness switches.

Each claim is read from one arm's paired difference to the reference ``ferd`` in worst-class PGD-20 accuracy
(``<arm>.<student>.delta_pgd20_worst`` of the report's ``comparison.json``: mean and 95 % t interval over the
seeds both ran, n − 1 degrees of freedom; :func:`ferd.compare.stats.paired_interval`). The arm lacks what the
claim credits, so the claim is **confirmed** when the whole interval is below 0 (the arm's worst class is worse
than ``ferd``'s beyond noise), **refuted** when it is above 0, and otherwise **not separated** at the arm's seeds.

A verdict holds at equal clean accuracy only where the mean paired clean difference is within ±3 points; the page
says so beside a verdict that does not (Fast's students have more clean accuracy than FERD's).

The rule (:func:`fairness_switches`, the one place it is decided): a switch takes the value its ablation arm runs
with only where that arm is better on worst-class PGD-20 beyond noise (the claim refuted) without paying for it in
clean accuracy (the lower end of the paired clean difference's interval at most 3 points below ``ferd``'s: a
one-sided non-inferiority margin, stricter than the mean, because a departure from the paper must not rest on a mean
whose interval reaches −8 points), only once the arm has every seed of the preset, and only one switch at a time
(two flips together would ship a combination no arm ran: refused, naming the arm to add). Everywhere else it keeps
the paper's value (the schema default, ``ferd/settings/config.py``). The measurement's reference arm pins the
paper's values (``compare-cifar10-cpu``'s ``set``), so setting the paper presets to the chosen values leaves the
measurement, and the decision read from it, as they are.
An interval needs two seeds whose differences vary: with one seed, or identical differences (accuracies move in
steps of 1/N), the t interval is degenerate and the claim is not separated.
The paper presets (:data:`PAPER_PRESETS`) must carry the chosen values (``tests/unit/test_fairness_decision.py``);
``paper-as-printed`` is not one of them: it keeps the paper's text whatever this measures.

This is the project's decision about its shipped presets from one kept measurement, not something ``ferd
compare`` does for a user: it lives beside the results pages that show it (``benchmarks/results_pages.py``).
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent) not in sys.path:  # benchmarks/ is no package: its sibling module by name
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from kept_evaluations import class_accuracies, number, teacher_accuracies, teacher_checkpoint  # noqa: E402

PRESET = "compare-cifar10-cpu-x6"  # the measurement the switches are decided on
CLEAN_POINTS = 0.03  # equal clean accuracy: within ±3 points (the mean); kept for a flip: the interval's low end
# the presets a user runs to reproduce the paper: their fairness switches are what the rule chooses
PAPER_PRESETS = ("cifar10-resnet18", "cifar100-resnet18", "cifar10-mobilenetv2", "tiny-imagenet-preactresnet18",
                 "compare-gpu")
PAGE = "docs/results/tier2-fairness.md"  # where the presets' comments send a reader
ATTACKS = {"clean": "clean", "fgsm": "FGSM", "pgd20": "PGD-20", "cw": "CW∞", "aa": "AutoAttack"}
Interval = tuple[float, float, float]  # mean, low, high (low and high NaN with one seed)


@dataclass(frozen=True)
class Claim:
    """What an arm, lacking one thing ``ferd`` has, tests; ``switch``: the setting that arm turns off."""

    arm: str
    says: str
    switch: str | None = None


CLAIMS = (Claim("fast", "FERD is fairer than Fast"),
          Claim("ferd-no-reweighting", "reweighting helps the worst class", "synthesis.reweighting.enabled"),
          Claim("ferd-no-uni", "L_uni helps", "synthesis.lambda_uni"),
          Claim("ferd-no-fae", "FAEs help", "synthesis.lambda_adv"))


@dataclass(frozen=True)
class Verdict:
    """One claim at the seeds its arm has: Δ (arm − ``ferd``) worst-class PGD-20 and clean accuracy."""

    claim: Claim
    seeds: int  # seeds both the arm and ferd finished
    of: int  # the preset's seeds
    worst: Interval
    clean: Interval

    @property
    def outcome(self) -> str:
        """``confirmed``, ``refuted`` or ``not separated`` (no interval: fewer than 2 seeds, or no spread between
        them, where the t interval is degenerate)."""
        _, low, high = self.worst
        if self.seeds < 2 or no_interval(low, high):
            return "not separated"
        return "confirmed" if high < 0 else "refuted" if low > 0 else "not separated"

    @property
    def clean_kept(self) -> bool:
        """The arm's clean accuracy is not lower than ``ferd``'s by more than :data:`CLEAN_POINTS` at 95 %: the low
        end of the Δ clean interval (the mean where there is no interval), compared in points to 6 decimals, so
        exactly 3 points is kept. The switch rule's condition."""
        mean, low, high = self.clean
        return round(100 * (mean if no_interval(low, high) else low), 6) >= -100 * CLEAN_POINTS

    @property
    def clean_equal(self) -> bool:
        """The mean clean difference is within ±:data:`CLEAN_POINTS` either way (what the verdicts table shows:
        a claim holds at equal clean accuracy only then)."""
        return abs(round(100 * self.clean[0], 6)) <= 100 * CLEAN_POINTS

    def words(self) -> str:
        """The verdict as the page states it; a separated one says when it is not at equal clean accuracy."""
        if self.outcome == "not separated":
            return f"**not separated at {self.seeds} seed{'' if self.seeds == 1 else 's'}**"
        unequal = "" if self.clean_equal else f", not at equal clean accuracy (Δ clean {100 * self.clean[0]:+.2f})"
        return f"**{self.outcome}** at {self.seeds} seeds{unequal}"


def no_interval(low: float, high: float) -> bool:
    """No interval to read: none given (one seed), or one of no width (differences tied across seeds, within
    :data:`ferd.compare.stats.SAME`)."""
    from ferd.compare.stats import SAME

    return math.isnan(low) or math.isnan(high) or math.isclose(low, high, abs_tol=SAME)


def points(value: Interval) -> str:
    """Δ in points with its interval, ``+1.23 [-0.45, +2.91]`` (left out with one seed or no spread)."""
    mean, low, high = (100 * v for v in value)
    if math.isnan(mean):
        return "—"
    return f"{mean:+.2f}" + (" (no interval)" if no_interval(low, high) else f" [{low:+.2f}, {high:+.2f}]")


def seeds_kept(comparison: dict, source: str, cc=None) -> dict[tuple[str, str], set[int]]:
    """(method, student) → the seeds of the runs the report holds (``runs``: ``method.student.seed=N``); with the
    compare preset ``cc``, a run that is not one of its arms is refused."""
    runs = comparison.get("runs")
    if not isinstance(runs, dict):
        raise ValueError(f"{source}: runs: expected an object of runs keyed method.student.seed=N")
    kept: dict[tuple[str, str], set[int]] = {}
    for key in runs:
        match = re.fullmatch(r"([\w.-]+)\.([\w-]+)\.seed=(\d+)", key)
        if not match:
            raise ValueError(f"{source}: runs: key {key!r} is not method.student.seed=N")
        if cc is not None and (match[1] not in cc.methods or match[2] not in cc.students or
                               int(match[3]) not in cc.seeds):
            raise ValueError(f"{source}: runs: {key!r} is no run of the preset (methods {sorted(cc.methods)}, "
                             f"students {cc.students}, seeds {cc.seeds})")
        kept.setdefault((match[1], match[2]), set()).add(int(match[3]))
    return kept


def compare_preset(preset: str = PRESET):
    """The compare preset (:class:`ferd.compare.config.CompareConfig`), with one student: the claims read one."""
    from ferd.compare.config import load_compare

    cc = load_compare(preset)
    if len(cc.students) != 1:
        raise ValueError(f"{preset}: {len(cc.students)} students; the fairness verdicts read one")
    return cc


def _interval(metrics: dict, key: str, paired: int, source: str) -> Interval:
    """``key``'s mean, low and high, checked: a finite mean; with one seed no interval, else one that holds the
    mean (or none at all, as a report gives when the differences do not vary)."""
    mean, low, high = (number(source, f"metrics.{key}.{s}", metrics.get(f"{key}.{s}"), s != "mean")
                       for s in ("mean", "low", "high"))
    bounds = [x for x in (low, high) if not math.isnan(x)]
    if not math.isfinite(mean) or (paired < 2 and bounds) or len(bounds) == 1 or (
            bounds and not (math.isfinite(low) and math.isfinite(high) and low <= mean <= high)):
        raise ValueError(f"{source}: metrics.{key}: expected a finite mean and, over {paired} paired seeds, "
                         f"{'no interval' if paired < 2 else 'an interval low ≤ mean ≤ high, or none'}; got "
                         f"[{mean}, {low}, {high}]")
    return mean, low, high


def verdicts(comparison: dict, cc, source: str = "comparison.json") -> list[Verdict]:
    """Each claim of :data:`CLAIMS` as far as ``comparison`` (a ``comparison.json``, read as untrusted) supports it."""
    metrics = comparison.get("metrics")
    if not isinstance(metrics, dict):
        raise ValueError(f"{source}: metrics: expected an object of flat keys")
    student, kept = cc.students[0], seeds_kept(comparison, source, cc)
    out = []
    for claim in CLAIMS:
        paired = len(kept.get((claim.arm, student), set()) & kept.get((cc.reference, student), set()))
        values = {}
        for what in ("pgd20_worst", "clean_avg"):
            key = f"{claim.arm}.{student}.delta_{what}"
            if paired:
                values[what] = _interval(metrics, key, paired, source)
            else:
                values[what] = (math.nan,) * 3
        out.append(Verdict(claim, paired, len(cc.seeds), values["pgd20_worst"], values["clean_avg"]))
    return out


def setting(cfg: Any, key: str) -> Any:
    """The value of a dotted key of a :class:`ferd.settings.config.FerdConfig`."""
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _flat(cfg: Any) -> dict[str, Any]:
    from ferd.core.params_io import dotted

    return dotted(cfg.model_dump(mode="json"))


@dataclass(frozen=True)
class Choice:
    """A fairness switch: the paper's value, the value its ablation arm runs with, and the one the rule chose."""

    verdict: Verdict
    paper: Any
    ablation: Any
    value: Any

    def why(self) -> str:
        """The reason, with the numbers it rests on."""
        v = self.verdict
        numbers = f"Δ worst PGD-20 {points(v.worst)}, Δ clean {points(v.clean)}"
        if self.value != self.paper:
            return f"measured best: `{v.claim.arm}` is better on the worst class and keeps clean accuracy ({numbers})"
        if v.outcome == "confirmed" and round(100 * v.clean[0], 6) <= 100 * CLEAN_POINTS:
            return f"the paper's value, measured best ({numbers})"
        if v.outcome == "confirmed":
            return f"the paper's value: better on the worst class, though `{v.claim.arm}` has more clean accuracy " \
                   f"({numbers})"
        if v.outcome == "refuted" and v.clean_kept:
            return f"the paper's value until all {v.of} seeds are in: `{v.claim.arm}` is better on the worst class " \
                   f"at {v.seeds} ({numbers})"
        if v.outcome == "refuted":
            return f"the paper's value: `{v.claim.arm}` is better on the worst class but may lose more than " \
                   f"{100 * CLEAN_POINTS:g} points of clean accuracy ({numbers})"
        return f"the paper's value: nothing separates at {v.seeds} of {v.of} seeds ({numbers})"


def fairness_switches(comparison: dict, cc=None, source: str = "comparison.json") -> dict[str, Choice]:
    """The rule: per fairness switch (``synthesis.*`` key), the value the paper presets should carry, decided from
    ``comparison`` (the report of ``cc``, :data:`PRESET` by default; see the module docstring)."""
    from ferd.compare.config import Arm, run_config
    from ferd.settings.config import FerdConfig

    cc = cc or compare_preset()
    student, seed = cc.students[0], cc.seeds[0]
    reference = _flat(run_config(cc, Arm(cc.reference, student, seed)))
    choices = {}
    for v in verdicts(comparison, cc, source):
        if v.claim.switch is None:
            continue
        if v.claim.arm not in cc.methods:
            raise ValueError(f"the compare preset has no arm {v.claim.arm!r} (the one without "
                             f"{v.claim.switch}); it has {sorted(cc.methods)}")
        arm = _flat(run_config(cc, Arm(v.claim.arm, student, seed)))
        differs = sorted(k for k in set(arm) | set(reference) if arm.get(k) != reference.get(k) and k != "seed")
        if differs != [v.claim.switch]:
            raise ValueError(f"arm {v.claim.arm!r}: expected it to differ from {cc.reference!r} in "
                             f"{v.claim.switch} only, it differs in {differs}")
        paper, ablation = setting(FerdConfig(), v.claim.switch), arm[v.claim.switch]
        value = ablation if v.outcome == "refuted" and v.clean_kept and v.seeds == v.of else paper
        choices[v.claim.switch] = Choice(v, paper, ablation, value)
    flipped = [c for c in choices.values() if c.value != c.paper]
    if len(flipped) > 1:
        arms = " and ".join(f"`{c.verdict.claim.arm}`" for c in flipped)
        raise ValueError(f"the rule departs from the paper in {', '.join(c.verdict.claim.switch for c in flipped)} "
                         f"at once, a combination no arm ran ({arms} each change one): add an arm with all of them "
                         "to the compare preset and decide on its seeds")
    return choices


def preset_switches(preset: str | Path, switches: list[str]) -> dict[str, Any]:
    """The values a preset (a params preset, or a compare preset's reference arm) runs ``switches`` with."""
    from ferd.compare.config import Arm, run_config
    from ferd.plan.presets import find_preset
    from ferd.plan.resolve import load_config

    path = Path(preset) if Path(preset).suffix else find_preset(str(preset))
    if path is None:
        raise ValueError(f"preset {preset!r}: no such preset under ferd/params")
    if Path(path).name.startswith("compare-"):
        cc = compare_preset(str(path))
        cfg = run_config(cc, Arm(cc.reference, cc.students[0], cc.seeds[0]))
    else:
        cfg = load_config(path)
    return {key: setting(cfg, key) for key in switches}


def preset_mismatches(choices: dict[str, Choice], presets: tuple[str | Path, ...] = PAPER_PRESETS) -> list[str]:
    """``preset: key = value, the rule chooses value`` for every switch a preset sets otherwise than the rule."""
    wrong = []
    for preset in presets:
        for key, value in preset_switches(preset, list(choices)).items():
            if value != choices[key].value:
                wrong.append(f"{preset}: {key} = {value!r}, the rule chooses {choices[key].value!r}")
    return wrong


# The page's blocks (benchmarks/results_pages.py: kinds verdicts, switches, per_class); ``folder`` holds the
# report ``comparison`` of the compare preset ``cc``.

def _value(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else f"{value:g}" \
        if isinstance(value, float) else str(value)


def kept_line(comparison: dict, cc, source: str) -> str:
    """How many of the preset's runs the report holds, and each arm's seeds."""
    kept, student = seeds_kept(comparison, source, cc), cc.students[0]
    n, of = sum(len(kept.get((m, student), ())) for m in cc.methods), len(cc.methods) * len(cc.seeds)
    arms = ", ".join(f"`{m}` {len(kept.get((m, student), ()))}" for m in cc.methods)
    if n == of:
        return f"All {of} runs kept: {len(cc.seeds)} seeds for each of the {len(cc.methods)} arms."
    return (f"**Partial**: {n} of {of} runs kept; each verdict is at the seeds its arm has (of {len(cc.seeds)}): "
            f"{arms}.")


def verdicts_table(comparison: dict, cc, source: str) -> list[str]:
    lines = [kept_line(comparison, cc, source), "",
             f"Δ: the arm minus `{cc.reference}`, paired by seed, in points, with the 95 % t interval (n − 1 "
             "degrees of freedom). A claim is confirmed when the interval of Δ worst-class PGD-20 is below 0, refuted "
             f"when above 0 (no interval with one seed, or when the differences do not vary); equal clean: the mean Δ "
             f"clean within ±{100 * CLEAN_POINTS:g} points (a verdict that is not says so).", "",
             "| claim | arm | seeds | Δ worst-class PGD-20 [95 %] | Δ clean [95 %] | equal clean | verdict |",
             "|---|---|---|---|---|---|---|"]
    for v in verdicts(comparison, cc, source):
        equal = "—" if math.isnan(v.clean[0]) else "yes" if v.clean_equal else "no"
        lines.append(f"| {v.claim.says} | `{v.claim.arm}` | {v.seeds} of {v.of} | {points(v.worst)} | "
                     f"{points(v.clean)} | {equal} | {v.words()} |")
    return lines


def switches_table(comparison: dict, cc, source: str) -> list[str]:
    choices = fairness_switches(comparison, cc, source)
    lines = ["| switch | the paper's value | without it | chosen | why |", "|---|---|---|---|---|"]
    for key, c in choices.items():
        lines.append(f"| `{key}` | {_value(c.paper)} | {_value(c.ablation)} (`{c.verdict.claim.arm}`) | "
                     f"**{_value(c.value)}** | {c.why()} |")
    wrong = preset_mismatches(choices)
    presets = ", ".join(f"`{p}`" for p in PAPER_PRESETS)
    lines += ["", f"The paper presets ({presets}) run with the chosen values"
              + (f", except: {'; '.join(wrong)}." if wrong else " (`tests/unit/test_fairness_decision.py` checks it).")]
    return lines


def _per_class(comparison: dict, student: str, source: str) -> dict:
    """comparison.json's ``per_class`` of a student, its shapes checked."""
    data = comparison.get("per_class", {}).get(student) if isinstance(comparison.get("per_class"), dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list) or not data["classes"]:
        raise ValueError(f"{source}: per_class.{student}: expected an object with a list of classes")
    n, where = len(data["classes"]), f"per_class.{student}"
    if not all(isinstance(c, str) for c in data["classes"]) or not isinstance(data.get("attack"), str):
        raise ValueError(f"{source}: {where}: expected class names and an attack name")
    for name, values in [("teacher", data.get("teacher") or [0.0] * n),
                         *((f"pool_share.{m}", v) for m, v in (data.get("pool_share") or {}).items())]:
        if not isinstance(values, list) or len(values) != n:
            raise ValueError(f"{source}: {where}.{name}: expected {n} numbers")
        [number(source, f"{where}.{name}", x) for x in values]
    for m, rows in (data.get("delta") or {}).items():
        if not isinstance(rows, list) or len(rows) not in (0, n) or not all(
                isinstance(r, list) and len(r) == 3 for r in rows):
            raise ValueError(f"{source}: {where}.delta.{m}: expected {n} [mean, low, high]")
        [number(source, f"{where}.delta.{m}", x, nullable=i > 0) for r in rows for i, x in enumerate(r)]
    return data


def per_class_table(folder: Path, comparison: dict, cc, source: str, teacher_eval: Path | None = None) -> list[str]:
    """Which classes reweighting moves: ``ferd``'s per-class accuracy and pool share, and the arm without
    reweighting minus ``ferd`` per class; the teacher's per-class accuracy beside them, from the report or (when
    the comparison did not evaluate the teacher) from ``teacher_eval``, a kept ``ferd evaluate`` of that teacher
    (:func:`teacher_accuracies`)."""
    student, ref = cc.students[0], cc.reference
    arm = next(c.arm for c in CLAIMS if c.switch == "synthesis.reweighting.enabled")
    data = _per_class(comparison, student, source)
    classes, attack, teacher = data["classes"], data["attack"], data.get("teacher")
    if not teacher and teacher_eval is not None:
        teacher = teacher_accuracies(teacher_eval, attack, classes, teacher_checkpoint(cc, folder))
    kept = seeds_kept(comparison, source, cc)
    ref_seeds = kept.get((ref, student), set())
    acc = class_accuracies(folder, ref, student, ref_seeds, attack, classes)
    share = (data.get("pool_share") or {}).get(ref)
    delta = (data.get("delta") or {}).get(arm) or []
    paired = len(ref_seeds & kept.get((arm, student), set()))
    order = sorted(range(len(classes)), key=lambda c: (teacher[c] if teacher else acc[c], c))
    head = ["class", *(["teacher"] if teacher else []), f"`{ref}` ({len(ref_seeds)} seeds)", f"pool share `{ref}`",
            f"`{arm}` − `{ref}` [95 %] ({paired} seeds)", "reweighting"]
    weakest = "the teacher" if teacher else f"`{ref}`"
    lines = [f"Under {ATTACKS.get(attack, attack)}, `{student}`, accuracies in % (mean over seeds), classes from the "
             f"weakest ({weakest}'s accuracy). Pool share: the mean class weight p that drew `{ref}`'s synthetic "
             f"labels (Eq. 1-2; uniform is {100 / len(classes):.1f} %). `{arm}` − `{ref}`: paired by seed, points; "
             "below 0 beyond noise, reweighting raised the class; above 0, it lowered it. Each class has its own interval, "
             f"not adjusted for the {len(classes)} classes: read the last column as exploratory.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    moved: dict[str, list[str]] = {"raises": [], "lowers": []}
    for c in order:
        d = tuple(math.nan if x is None else x for x in delta[c]) if delta else (math.nan,) * 3
        effect = "—" if no_interval(d[1], d[2]) else "raises" if d[2] < 0 else "lowers" if d[1] > 0 else "—"
        if effect != "—":
            moved[effect].append(classes[c])
        cells = [classes[c], *([f"{100 * teacher[c]:.1f}"] if teacher else []), f"{100 * acc[c]:.1f}",
                 f"{100 * share[c]:.1f}" if share else "—", points(d), effect]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Beyond noise at {paired} seeds, reweighting raises "
              f"{', '.join(moved['raises']) or 'no class'} and lowers {', '.join(moved['lowers']) or 'no class'}."]
    return lines
