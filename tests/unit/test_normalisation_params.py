"""``teacher.mean`` / ``teacher.std`` (and the student's): both or neither, one finite value per image channel of
the dataset, every std > 0, refused in one line naming the field and what it expects, before any work."""

from __future__ import annotations

import math

import pytest

from ferd.cli import main
from ferd.core.params_io import ConfigError
from ferd.plan.resolve import parse_config

CIFAR_MEAN, CIFAR_STD = [0.4914, 0.4822, 0.4465], [0.2471, 0.2435, 0.2616]


@pytest.mark.parametrize("group", ["teacher", "student"])
@pytest.mark.parametrize("values, expected", [
    ({"mean": CIFAR_MEAN}, r"{g}\.std: expected a list as {g}\.mean is given \(both or neither\)"),
    ({"std": CIFAR_STD}, r"{g}\.mean: expected a list as {g}\.std is given \(both or neither\)"),
    ({"mean": CIFAR_MEAN[:2], "std": CIFAR_STD[:2]},
     r"{g}\.mean: expected 3 values \(one per image channel of cifar10\), got 2"),
    ({"mean": CIFAR_MEAN, "std": CIFAR_STD + [0.25]}, r"{g}\.std: expected 3 values .*, got 4"),
    ({"mean": CIFAR_MEAN, "std": [0.25, 0.0, 0.25]}, r"{g}\.std: expected finite values > 0, got 0\.0"),
    ({"mean": CIFAR_MEAN, "std": [0.25, -0.25, 0.25]}, r"{g}\.std: expected finite values > 0, got -0\.25"),
    ({"mean": CIFAR_MEAN, "std": [0.25, math.inf, 0.25]}, r"{g}\.std\.1: Input should be a finite number"),
    ({"mean": [0.5, math.nan, 0.5], "std": CIFAR_STD}, r"{g}\.mean\.1: Input should be a finite number"),
])
def test_a_bad_mean_or_std_is_refused_naming_the_field(group, values, expected):
    with pytest.raises(ConfigError, match=expected.format(g=group)):
        parse_config({"dataset": "cifar10", group: values})


def test_the_cli_refuses_it_in_one_line_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["run", "--params", "params/ci.yaml", "-S", "teacher.mean=[0.5, 0.5]", "-S", "teacher.std=[0.2, 0.2]",
               "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "teacher.mean: expected 3 values (one per image channel of digits), got 2" in err[0]
    assert not out.exists()
    cfg = parse_config({"dataset": "digits", "teacher": {"mean": CIFAR_MEAN, "std": CIFAR_STD}})  # 3 and 3: accepted
    assert cfg.teacher.mean == CIFAR_MEAN and cfg.student.mean is None and cfg.student.std is None
