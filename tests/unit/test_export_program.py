"""ferd.export in pieces: the program keeps the normalisation inside and takes [0, 1] NCHW float32 of any batch
size; the RobustBench entry labels a PGD-20 number as PGD-20; the missing exporter names its extra."""

from __future__ import annotations

import pytest
import torch

from ferd.export.card import eps_fraction, robustbench_entry
from ferd.export.program import export_program, load_program, save_program
from ferd.core.extras import missing_extra
from ferd.models import create_model

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def test_the_program_normalises_inside_and_takes_any_batch_of_the_image_size(tmp_path, single_thread):
    torch.manual_seed(0)
    model = create_model("cnn-8", num_classes=10, mean=MEAN, std=STD).eval()
    raw = create_model("cnn-8", num_classes=10).eval()
    raw.load_state_dict(model.state_dict())  # the same weights, no normalisation
    program = load_program(save_program(export_program(model, 32), tmp_path / "model.pt2"))
    x = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(program(x), model(x))
        assert not torch.allclose(program(x), raw(x), atol=1e-3)  # the mean/std are in the program
        assert program(x[:1]).shape == (1, 10)
    with pytest.raises(Exception):  # the input contract: the dataset's image size only
        program(torch.rand(2, 3, 16, 16))


def _card(metrics: dict, aa_examples: int | None = None) -> dict:
    return {"name": "ferd-cifar10-resnet18-0123", "dataset": "cifar10", "architecture": "resnet18",
            "threat_model": {"eps": 8 / 255}, "metrics": metrics, "teacher": {"arch": "wrn-34-10"},
            "evaluation": {"n_examples": 1000, "aa_examples": aa_examples}}


def test_the_robustbench_entry_reports_autoattack_or_says_it_is_pgd20():
    with_aa = robustbench_entry(_card({"clean": {"avg": 0.8312}, "pgd20": {"avg": 0.5}, "aa": {"avg": 0.4567}}, 500))
    assert with_aa["clean_acc"] == "83.12" and with_aa["autoattack_acc"] == with_aa["reported"] == "45.67"
    assert with_aa["unreliable"] is False and "500 test images" in with_aa["footnote"]
    pgd_only = robustbench_entry(_card({"clean": {"avg": 0.8312}, "pgd20": {"avg": 0.5}}))
    assert "autoattack_acc" not in pgd_only and pgd_only["reported"] == pgd_only["pgd20_acc"] == "50.00"
    assert pgd_only["unreliable"] is True and "PGD-20 (not AutoAttack)" in pgd_only["footnote"]
    assert {k: pgd_only[k] for k in ("authors", "additional_data", "number_forward_passes", "eps", "venue")} == {
        "authors": "ferd", "additional_data": False, "number_forward_passes": 1, "eps": "8/255", "venue": ""}


def test_eps_is_written_as_robustbench_writes_it():
    assert eps_fraction(8 / 255) == "8/255" and eps_fraction(4 / 255) == "4/255" and eps_fraction(0.1) == "0.1"


@pytest.mark.parametrize("module", ["onnx", "onnxscript", "onnx_ir"])
def test_a_missing_onnx_exporter_names_the_onnx_extra(module):
    line = missing_extra(ModuleNotFoundError(f"No module named {module!r}", name=module))
    assert line == f"needs the optional dependency {module!r}: pip install 'ferd[onnx]'"


def test_the_same_model_exported_twice_gives_the_same_bytes_whatever_the_global_rng(tmp_path, single_thread):
    model = create_model("cnn-4", num_classes=10).eval()
    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)  # another global RNG state each time: the program must not depend on it
        paths.append(save_program(export_program(model, 32), tmp_path / f"{seed}.pt2"))
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_an_architecture_torch_export_cannot_capture_is_one_line_naming_the_student(single_thread):
    """Data-dependent control flow: torch.export refuses it; ``ferd export`` says so in one line (status 2)."""
    from ferd.export import ExportError, _captured

    class Branchy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :10] if x.sum() > 0 else -x.flatten(1)[:, :10]

    with pytest.raises(ExportError) as err:
        _captured("torch.export", "my_models:branchy", lambda: export_program(Branchy(), 32))
    message = str(err.value)
    assert message.startswith("student.arch my_models:branchy: torch.export cannot capture it (") and "\n" not in message


def test_the_card_names_the_mean_and_std_or_says_ferd_set_none():
    from ferd.export.card import _normalisation_line

    assert _normalisation_line({"mean": list(MEAN), "std": list(STD)}) == \
        f"- mean {list(MEAN)}, std {list(STD)} (applied inside the model)."
    line = _normalisation_line({"mean": None, "std": None})  # e.g. an architecture of the user's own
    assert "no mean/std set in the params" in line and "its own forward" in line
