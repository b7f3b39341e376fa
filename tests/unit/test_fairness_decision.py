"""The fairness decision (``benchmarks/fairness.py``, ``benchmarks/kept_evaluations.py``): the paper presets carry the
switches the rule chooses from the kept tier-2 6× report, and the rule and verdicts on hand-made reports."""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEPT = ROOT / "benchmarks" / "results" / "compare-cifar10-x6" / "comparison.json"


def _fairness():
    spec = importlib.util.spec_from_file_location("fairness", ROOT / "benchmarks" / "fairness.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


fairness = _fairness()
import kept_evaluations  # noqa: E402  (benchmarks/kept_evaluations.py: loading fairness put benchmarks/ on the path)


def _report(deltas: dict[str, tuple[tuple, tuple]], seeds: int = 5) -> dict:
    """A comparison.json of the 6× preset: arm → ((Δ worst mean, low, high), (Δ clean mean, low, high))."""
    runs = {f"{arm}.cnn-32.seed={s}": {} for arm in ("ferd", *deltas) for s in range(seeds)}
    metrics = {}
    for arm, (worst, clean) in deltas.items():
        for what, values in (("pgd20_worst", worst), ("clean_avg", clean)):
            metrics.update({f"{arm}.cnn-32.delta_{what}.{s}": v for s, v in zip(("mean", "low", "high"), values)})
    return {"metrics": metrics, "runs": runs, "per_class": {}}


NOTHING = ((-0.01, -0.05, 0.03), (0.01, -0.02, 0.04))  # every interval holds 0
ALL_NOTHING = {c.arm: NOTHING for c in fairness.CLAIMS}


def test_the_paper_presets_carry_what_the_rule_chooses_from_the_kept_report():
    """Every paper preset runs with the λ_uni, reweighting and λ_adv that the rule chooses from the kept report,
    and its comment names the page that shows the decision."""
    choices = fairness.fairness_switches(json.loads(KEPT.read_text(encoding="utf-8")), source=str(KEPT))
    assert set(choices) == {"synthesis.lambda_uni", "synthesis.reweighting.enabled", "synthesis.lambda_adv"}
    assert fairness.preset_mismatches(choices) == []
    for name in fairness.PAPER_PRESETS:
        text = (ROOT / "ferd" / "params" / f"{name}.yaml").read_text(encoding="utf-8")
        assert fairness.PAGE in text, f"ferd/params/{name}.yaml: no comment naming {fairness.PAGE}"


def test_paper_as_printed_keeps_the_printed_fairness_switches():
    """``paper-as-printed`` is the paper's text whatever tier 2 decides: λ_uni 5, reweighting on, λ_adv 1."""
    assert "paper-as-printed" not in fairness.PAPER_PRESETS
    switches = [c.switch for c in fairness.CLAIMS if c.switch]
    assert fairness.preset_switches("paper-as-printed", switches) == {
        "synthesis.reweighting.enabled": True, "synthesis.lambda_uni": 5.0, "synthesis.lambda_adv": 1.0}


def test_a_preset_that_departs_from_the_rule_is_named(tmp_path):
    """A paper preset with λ_uni 0 where the rule keeps the paper's 5 is a mismatch, named with both values."""
    choices = fairness.fairness_switches(_report(ALL_NOTHING))
    assert {k: c.value for k, c in choices.items()} == {
        "synthesis.reweighting.enabled": True, "synthesis.lambda_uni": 5.0, "synthesis.lambda_adv": 1.0}
    preset = tmp_path / "cifar10-resnet18.yaml"
    preset.write_text((ROOT / "ferd" / "params" / "cifar10-resnet18.yaml").read_text(encoding="utf-8")
                      + "synthesis:\n  lambda_uni: 0\n", encoding="utf-8")
    assert fairness.preset_mismatches(choices, (preset,)) == [
        f"{preset}: synthesis.lambda_uni = 0.0, the rule chooses 5.0"]


@pytest.mark.parametrize("worst, clean, chosen, why", [
    ((0.02, 0.01, 0.03), (0.01, -0.01, 0.03), 0.0, "measured best: `ferd-no-uni` is better"),  # refuted, equal clean
    ((0.02, 0.01, 0.03), (-0.04, -0.05, -0.03), 5.0, "may lose more than 3 points"),  # refuted, 4 points less clean
    ((0.02, 0.01, 0.03), (-0.025, -0.08, 0.03), 5.0, "may lose more than 3 points"),  # mean −2.5, low end −8
    ((0.02, 0.01, 0.03), (0.04, 0.03, 0.05), 0.0, "and keeps clean accuracy"),  # refuted, 4 points more clean
    ((-0.02, -0.03, -0.01), (0.0, -0.01, 0.01), 5.0, "the paper's value, measured best"),  # confirmed
    ((-0.02, -0.03, -0.01), (0.05, 0.04, 0.06), 5.0, "though `ferd-no-uni` has more clean accuracy"),
    ((0.02, None, None), (0.0, None, None), 5.0, "nothing separates at 5 of 5 seeds"),  # no interval
])
def test_the_rule_takes_the_ablation_only_where_it_is_better_and_keeps_clean_accuracy(worst, clean, chosen, why):
    report = _report({**ALL_NOTHING, "ferd-no-uni": (worst, clean)})
    choice = fairness.fairness_switches(report)["synthesis.lambda_uni"]
    assert (choice.paper, choice.ablation, choice.value) == (5.0, 0.0, chosen)
    assert why in choice.why()
    assert fairness.fairness_switches(report)["synthesis.lambda_adv"].value == 1.0  # the other switches keep theirs


def test_verdicts_say_confirmed_refuted_or_not_separated_at_the_seeds_each_arm_has():
    deltas = {"fast": ((-0.05, -0.08, -0.02), NOTHING[1]), "ferd-no-reweighting": ((0.03, 0.01, 0.05), NOTHING[1]),
              "ferd-no-uni": ((-0.01, None, None), (0.01, None, None))}  # one seed: no interval; no-fae: no run
    report = _report(deltas, seeds=2)
    report["runs"].pop("ferd-no-uni.cnn-32.seed=1")
    cc = fairness.compare_preset()
    words = {v.claim.arm: (v.outcome, v.seeds, v.words()) for v in fairness.verdicts(report, cc)}
    assert words == {"fast": ("confirmed", 2, "**confirmed** at 2 seeds"),
                     "ferd-no-reweighting": ("refuted", 2, "**refuted** at 2 seeds"),
                     "ferd-no-uni": ("not separated", 1, "**not separated at 1 seed**"),
                     "ferd-no-fae": ("not separated", 0, "**not separated at 0 seeds**")}
    assert fairness.kept_line(report, cc, "c.json") == (
        "**Partial**: 7 of 25 runs kept; each verdict is at the seeds its arm has (of 5): `ferd` 2, `fast` 2, "
        "`ferd-no-reweighting` 2, `ferd-no-uni` 1, `ferd-no-fae` 0.")
    assert fairness.kept_line(_report(ALL_NOTHING), cc, "c.json") == (
        "All 25 runs kept: 5 seeds for each of the 5 arms.")
    assert math.isnan(fairness.verdicts(report, cc)[3].worst[0])


def test_a_report_with_a_wrong_field_is_refused_naming_it():
    cc = fairness.compare_preset()
    report = _report(ALL_NOTHING)
    bad = copy.deepcopy(report)
    bad["metrics"]["fast.cnn-32.delta_pgd20_worst.low"] = "-0.05"
    with pytest.raises(ValueError, match=r"c\.json: metrics\.fast\.cnn-32\.delta_pgd20_worst\.low: expected a number"):
        fairness.verdicts(bad, cc, "c.json")
    bad = copy.deepcopy(report)
    bad["runs"]["ferd.cnn-32.seed=x"] = {}
    with pytest.raises(ValueError, match=r"c\.json: runs: key 'ferd\.cnn-32\.seed=x' is not method\.student\.seed=N"):
        fairness.verdicts(bad, cc, "c.json")
    with pytest.raises(ValueError, match=r"c\.json: per_class\.cnn-32: expected an object with a list of classes"):
        fairness.per_class_table(KEPT.parent, report, cc, "c.json")
    for interval, what in [((-0.05, 0.02, 0.01), "inverted"), ((-0.05, -0.04, -0.01), "not holding the mean"),
                           ((float("nan"), None, None), "no mean"), ((-0.05, -0.06, None), "half an interval")]:
        bad = _report({**ALL_NOTHING, "fast": (interval, NOTHING[1])})
        with pytest.raises(ValueError, match=r"c\.json: metrics\.fast\.cnn-32\.delta_pgd20_worst: expected a finite "
                                             r"mean and, over 5 paired seeds, an interval low ≤ mean ≤ high"):
            fairness.verdicts(bad, cc, "c.json")
    one = _report({**ALL_NOTHING, "fast": ((-0.05, -0.08, -0.02), NOTHING[1])}, seeds=1)
    with pytest.raises(ValueError, match=r"over 1 paired seeds, no interval; got"):  # an interval from one seed
        fairness.verdicts(one, cc, "c.json")
    stray = copy.deepcopy(report)
    stray["runs"]["ferd.cnn-32.seed=7"] = {}
    with pytest.raises(ValueError, match=r"c\.json: runs: 'ferd\.cnn-32\.seed=7' is no run of the preset"):
        fairness.kept_line(stray, cc, "c.json")


def test_no_spread_is_no_interval_and_exactly_three_points_less_clean_is_kept():
    """Two seeds with the same difference (accuracies move in steps of 1/N) give a degenerate t interval: not
    separated. A clean difference of exactly −3 points, however the floats round, keeps clean accuracy."""
    cc = fairness.compare_preset()
    flat = _report({**ALL_NOTHING, "ferd-no-uni": ((0.006, 0.006, 0.006), NOTHING[1])})
    verdict = next(v for v in fairness.verdicts(flat, cc) if v.claim.arm == "ferd-no-uni")
    assert verdict.outcome == "not separated" and fairness.points(verdict.worst) == "+0.60 (no interval)"
    assert fairness.fairness_switches(flat)["synthesis.lambda_uni"].value == 5.0
    minus3 = 0.361 - 0.391  # −0.030000000000000027
    v = fairness.Verdict(fairness.CLAIMS[2], 5, 5, (0.02, 0.01, 0.03), (minus3 + 0.01, minus3, minus3 + 0.02))
    assert v.clean_kept and v.clean_equal  # the interval's low end at exactly −3 points
    v = fairness.Verdict(fairness.CLAIMS[2], 5, 5, (0.02, 0.01, 0.03), (minus3, minus3, minus3))
    assert v.clean_kept and v.clean_equal  # no interval: the mean
    assert not fairness.Verdict(fairness.CLAIMS[2], 5, 5, (0.02, 0.01, 0.03), (-0.02, -0.0301, -0.01)).clean_kept
    assert not fairness.Verdict(fairness.CLAIMS[0], 5, 5, (0.02, 0.01, 0.03), (0.0319, 0.0027, 0.0611)).clean_equal


def test_a_separated_verdict_away_from_equal_clean_accuracy_says_so():
    """"FERD is fairer than Fast" confirmed while Fast has 3.09 points more clean accuracy: the verdict says it is
    not at equal clean accuracy."""
    cc = fairness.compare_preset()
    report = _report({**ALL_NOTHING, "fast": ((-0.024, -0.0434, -0.0046), (0.0309, 0.0236, 0.0381))}, seeds=3)
    fast = next(v for v in fairness.verdicts(report, cc) if v.claim.arm == "fast")
    assert fast.words() == "**confirmed** at 3 seeds, not at equal clean accuracy (Δ clean +3.09)"


def test_two_departures_at_once_are_refused_naming_the_arm_to_add():
    """No-uni and no-FAE each better on the worst class at equal clean accuracy: shipping both changes together would
    be a combination no arm ran."""
    better = ((0.02, 0.01, 0.03), (0.01, -0.01, 0.03))
    with pytest.raises(ValueError, match=r"departs from the paper in synthesis\.lambda_uni, synthesis\.lambda_adv at "
                                         r"once, a combination no arm ran \(`ferd-no-uni` and `ferd-no-fae`"):
        fairness.fairness_switches(_report({**ALL_NOTHING, "ferd-no-uni": better, "ferd-no-fae": better}))


def test_the_measurement_does_not_move_with_the_paper_presets(tmp_path):
    """The 6× preset's `ferd` arm pins the paper's switches: a paper preset (its base) set to the ablations' values,
    as the rule may ask, leaves every arm as it was, so the kept runs stay this measurement's and the rule still
    reads one change per arm."""
    from ferd.compare.config import Arm, run_config

    cc = fairness.compare_preset()
    base = tmp_path / "cifar10-resnet18.yaml"
    base.write_text((ROOT / "ferd" / "params" / "cifar10-resnet18.yaml").read_text(encoding="utf-8")
                    + "synthesis:\n  lambda_uni: 0\n  lambda_adv: 0\n  reweighting:\n    enabled: false\n",
                    encoding="utf-8")
    moved = cc.model_copy(update={"base": str(base)})
    assert fairness.preset_switches(base, [c.switch for c in fairness.CLAIMS if c.switch]) == {
        "synthesis.reweighting.enabled": False, "synthesis.lambda_uni": 0.0, "synthesis.lambda_adv": 0.0}
    for method in cc.methods:
        arm = Arm(method, cc.students[0], 0)
        assert run_config(moved, arm) == run_config(cc, arm), method
    assert {k: c.value for k, c in fairness.fairness_switches(_report(ALL_NOTHING), moved).items()} == {
        "synthesis.reweighting.enabled": True, "synthesis.lambda_uni": 5.0, "synthesis.lambda_adv": 1.0}


def test_a_switch_flips_only_once_its_arm_has_every_seed():
    cc = fairness.compare_preset()
    early = _report({**ALL_NOTHING, "ferd-no-uni": ((0.02, 0.01, 0.03), (0.01, -0.01, 0.03))}, seeds=2)
    choice = fairness.fairness_switches(early, cc)["synthesis.lambda_uni"]
    assert choice.value == 5.0 and "until all 5 seeds are in" in choice.why()


def test_the_teacher_column_comes_only_from_an_evaluation_of_that_teacher(tmp_path):
    """A kept ``ferd evaluate`` of the comparison's teacher gives the per-class view its teacher column; one of
    another checkpoint, split, ε or class list is refused naming the file and the field."""
    classes, eps = ["cat", "dog"], 8 / 255
    teacher = kept_evaluations.TeacherCheckpoint("x/t.safetensors", "ab" * 32, eps)

    def kept(teacher=teacher, name="../m/t.safetensors", sha="ab" * 32, split="test", e=eps, names=classes,
             acc=("0.25", "0.5")):
        settings = {"teacher": name, "split": split, "eps": e, **({"teacher_sha256": sha} if sha else {})}
        (tmp_path / "settings.json").write_text(json.dumps(settings))
        rows = ["model,attack,class_index,class_name,accuracy,n"]
        rows += [f"teacher,pgd20,{i},{n},{a},5" for i, (n, a) in enumerate(zip(names, acc))]
        rows += [f"teacher,clean,{i},{n},0.9,5" for i, n in enumerate(names)]
        (tmp_path / "per_class.csv").write_text("\n".join(rows) + "\n")
        return kept_evaluations.teacher_accuracies(tmp_path, "pgd20", classes, teacher)

    unpinned = kept_evaluations.TeacherCheckpoint("x/t.safetensors", None, eps)
    assert kept() == [0.25, 0.5] and kept(teacher=unpinned, sha=None) == [0.25, 0.5]  # no sha256 on either side
    for bad, match in [({"name": "../m/other.safetensors"}, r"settings\.json: teacher: expected 't\.safetensors'"),
                       ({"sha": "cd" * 32}, r"settings\.json: teacher_sha256: expected 'abab"),
                       ({"sha": None}, r"settings\.json: teacher_sha256: expected 'abab.*got None"),
                       ({"teacher": unpinned}, r"settings\.json: teacher_sha256: expected None"),
                       ({"split": "train"}, r"settings\.json: split: expected 'test'"),
                       ({"e": 4 / 255}, r"settings\.json: eps: expected 0\.031"),
                       ({"names": ["dog", "cat"]}, r"per_class\.csv: class_name: expected the classes"),
                       ({"acc": ("0.25", "1.5")}, r"per_class\.csv: accuracy: expected fractions in \[0, 1\]"),
                       ({"acc": ("0.25", "nan")}, r"per_class\.csv")]:
        with pytest.raises(ValueError, match=match):
            kept(**bad)
    card = tmp_path / "cmp" / "teacher" / "model_card.json"
    card.parent.mkdir(parents=True)
    card.write_text(json.dumps({"sha256": "ef" * 32}))
    cc = fairness.compare_preset()
    assert kept_evaluations.teacher_checkpoint(cc, tmp_path / "cmp").sha256 == "ea9aa5239a83078d311c161c9caa40d2d8a08c906ae" \
        "17099edfc0ce88887ce5a"  # the preset pins it: the card is not read
