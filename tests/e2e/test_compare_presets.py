"""``ferd compare``'s presets: every mistake refused in one line before any run, ``extends`` chains merged by key,
and every shipped preset valid with ``compare/dvc.yaml`` current."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from ferd.cli import main
from ferd.compare.config import Arm, arms, load_compare
from ferd.core.params_io import ConfigError
from ferd.plan.presets import PRESETS
from support.compare_preset import tiny_preset as _preset


def test_bad_presets_are_refused_before_any_run(tmp_path):
    with pytest.raises(ConfigError, match="reference"):
        load_compare(_preset(tmp_path, reference="deepinv"))
    with pytest.raises(ConfigError, match=r"(?s)method 'cmi'.*synthesis\.lamda_uni: unknown key"):
        load_compare(_preset(tmp_path, methods={"ferd": [], "cmi": ["method=cmi", "synthesis.lamda_uni=1"]}))
    with pytest.raises(ConfigError, match="seeds"):
        load_compare(_preset(tmp_path, seeds=[1, 1]))
    with pytest.raises(FileNotFoundError, match="compare-smoke"):
        load_compare("compare-nonexistent")
    cc = load_compare(_preset(tmp_path, seeds=[0, 1]))
    assert arms(cc)[0] == Arm("ferd", "cnn-8", 0) and len(arms(cc)) == 4
    with pytest.raises(ConfigError, match=r"attack_seeds: fgsm: expected distinct seeds of \[0, 1\], got \[2\]"):
        load_compare(_preset(tmp_path, seeds=[0, 1], attack_seeds={"fgsm": [2]}))
    with pytest.raises(ConfigError, match=r"attack_seeds: 'pgd20': the paired differences .* need it on every seed"):
        load_compare(_preset(tmp_path, seeds=[0, 1], attack_seeds={"pgd20": [0]}))  # the paired differences need it
    with pytest.raises(ConfigError, match=r"attack_seeds: 'fgsm': expected an attack of evaluation.attacks"):
        load_compare(_preset(tmp_path, seeds=[0, 1], attack_seeds={"fgsm": [0]}))  # the ci preset does not run FGSM


@pytest.mark.parametrize("changes, message", [
    ({"methods": {"ferd": [], "fast": ["method=fast", "distill.iterations=30"]}},
     r"methods: fast: distill\.iterations: the same for every arm, given by the budget \(`set`\)"),
    ({"methods": {"ferd": [], "fast": ["method=fast", "seed=7"]}}, r"methods: fast: seed: .* given by `seeds`"),
    ({"methods": {"ferd": ["student.arch=cnn-16"]}}, r"methods: ferd: student\.arch: .* given by `students`"),
    ({"methods": {"ferd": ["teacher.train.epochs=3"]}}, r"methods: ferd: teacher\.train\.epochs: .* shared teacher"),
    ({"methods": {"ferd": ["evaluation.n_examples=9"]}}, r"methods: ferd: evaluation\.n_examples: .* given by `set`"),
    ({"methods": {"ferd": [], "big": ["distill={iterations: 500, batch_size: 128}"]}},
     r"methods: big: distill: replaces a group holding distill\.iterations, the same for every arm"),
    ({"methods": {"ferd": ["student={arch: cnn-16}"]}}, r"methods: ferd: student: replaces a group holding student\.arch"),
    ({"students": ["cnn-8", "cnn-8"]}, r"students: Value error, expected distinct|students: expected distinct"),
    ({"seed": [0]}, r"seed: unknown field \(did you mean seeds\?\)"),
    ({"set": ["distill.iteratons=5"]}, r"p\.yaml: set: .*distill\.iteratons: unknown key \(did you mean "
                                       r"distill\.iterations\?\)"),
    ({"reference": "deepinv"}, r"invalid comparison preset: reference: 'deepinv' is not one of methods"),
])
def test_a_preset_mistake_is_one_line_naming_its_field(tmp_path, changes, message):
    """What a user writing a preset gets wrong: an arm changing what every arm shares (it would be dropped, or break
    the equal budget the report claims), a student twice, a mistyped field, a mistake in `set` (named as `set`'s,
    not the first arm's), a rule of the whole preset (no empty location)."""
    with pytest.raises(ConfigError, match=message) as exc:
        load_compare(_preset(tmp_path, **changes))
    assert ": : " not in str(exc.value) and "\n" not in str(exc.value)


def test_an_arm_named_twice_is_refused_not_silently_replaced(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("base: ci\nstudents: [cnn-8]\nseeds: [0]\nmethods:\n  ferd: []\n  fast: [method=fast]\n"
                    "  fast: [method=cmi]\n")
    with pytest.raises(ConfigError, match=r"line 7, column 3: 'fast' given twice; expected each key once"):
        load_compare(path)
    child = tmp_path / "child.yaml"
    path.write_text("base: ci\nstudents: [cnn-8]\nseeds: [0]\nmethods:\n  ferd: []\n  fast: [method=fast]\n")
    child.write_text(f"extends: {path}\nmethods: [ferd, fast, fast]\n")
    with pytest.raises(ConfigError, match=r"methods: expected each arm once, got \['ferd', 'fast', 'fast'\]"):
        load_compare(child)


def test_a_preset_extends_another_merging_set_by_key(tmp_path, capsys):
    from ferd.compare.config import merge_overrides, preset_files, run_config
    from ferd.compare.dvc import compare_stages

    assert merge_overrides(["a=1", "b=2"], ["b=3", "c=4"]) == ["a=1", "b=3", "c=4"]
    parent = _preset(tmp_path, set=["epochs=2", "rounds=2", "distill.iterations=3"], seeds=[0, 1])
    child = tmp_path / "child.yaml"
    child.write_text(yaml.safe_dump({"extends": str(parent), "set": ["distill.iterations=9", "synthesis.iterations=4"],
                                     "methods": {"ferd": []}}))
    cc = load_compare(child)
    assert cc.set == ["epochs=2", "rounds=2", "distill.iterations=9", "synthesis.iterations=4"]
    assert cc.seeds == [0, 1] and list(cc.methods) == ["ferd"] and cc.base == "ci"  # the parent's, and its own
    cfg = run_config(cc, arms(cc)[1])
    assert (cfg.epochs, cfg.distill.iterations, cfg.synthesis.iterations, cfg.seed) == (2, 9, 4, 1)
    assert preset_files(child) == [child, parent]
    deps = compare_stages(cc, child, tmp_path)["stages"]["run"]["deps"]
    ci = PRESETS / "ci.yaml"  # a preset name resolves to the one ferd ships (none in tmp_path/params)
    assert deps[:3] == ["child.yaml", "p.yaml", os.path.relpath(ci, tmp_path)]
    # the tier-2 budgets are tier 2 with a few keys changed
    x6 = load_compare("compare-cifar10-cpu-x6")
    assert [s for s in x6.set if s not in load_compare("compare-cifar10-cpu").set] == \
        ["epochs=48", "rounds=48", "distill.iterations=120"]
    child.write_text(yaml.safe_dump({"extends": str(parent), "methods": ["cmi"], "reference": "cmi"}))
    assert load_compare(child).methods == {"cmi": ["method=cmi"]}  # a list picks the parent's arms
    child.write_text(yaml.safe_dump({"extends": str(parent), "methods": ["ferd", "fast"]}))
    with pytest.raises(ConfigError, match=r"methods: 'fast' is not an arm of p; expected some of \['cmi', 'ferd'\]"):
        load_compare(child)
    with pytest.raises(ConfigError, match=r"methods: a list of names picks arms of the preset it `extends`"):
        load_compare(_preset(tmp_path, methods=["ferd"]))
    parent = _preset(tmp_path, set=["epochs=2", "rounds=2", "distill.iterations=3"], seeds=[0, 1])
    parent.write_text(yaml.safe_dump({"extends": str(child)}))  # a cycle: one line, exit 2, before any work
    with pytest.raises(ConfigError, match=r"extends: a cycle .*child → p → child"):
        load_compare(child)
    assert main(["compare", "--preset", str(child), "--out", str(tmp_path / "out")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    child.write_text(yaml.safe_dump({"extends": "compare-nonexistent", "methods": {"ferd": []}}))
    with pytest.raises(FileNotFoundError, match=r"child.yaml: extends: .*compare-nonexistent.yaml not found"):
        load_compare(child)


def test_every_comparison_preset_is_valid_and_compare_dvc_yaml_is_current(tmp_path):
    from ferd.compare.dvc import HEADER, compare_stages

    root = Path(__file__).resolve().parents[2]
    for path in sorted((root / "params").glob("compare-*.yaml")):
        load_compare(path)
    committed = (root / "compare" / "dvc.yaml").read_text()
    want = HEADER.format(preset="compare-cpu", folder="compare") + yaml.safe_dump(
        compare_stages(load_compare("compare-cpu"), "compare-cpu", root / "compare"), sort_keys=False, width=120)
    assert committed == want, "compare/dvc.yaml is stale: ferd compare --preset compare-cpu --write-dvc-yaml compare"
