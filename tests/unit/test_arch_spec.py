"""``teacher.arch`` / ``student.arch`` from outside ferd (issue 35): ``package.module:factory`` and the
``ferd.models`` entry points — one line for each way such a name is wrong, refused while the parameters are
validated; ferd's normalisation and the user's state_dict layout kept."""

from __future__ import annotations

import pytest
import torch
import yaml

from ferd.models import FerdModel, ForeignModel, check_arch, create_model, list_models
from ferd.models.foreign import entry_points
from ferd.core.params_io import ConfigError
from ferd.plan.resolve import load_config

PKG = "support.my_models"  # tests/ is on sys.path under pytest; a user's module comes via PYTHONPATH


def _refusal(*overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config("params/ci.yaml", list(overrides))
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("arch, expected", [
    (f"{PKG}.nope:build", f"student.arch: '{PKG}.nope:build': cannot import module '{PKG}.nope' "
                          f"(ModuleNotFoundError: No module named '{PKG}.nope'); is it installed"),
    (f"{PKG}.needs_missing:build", f"cannot import module '{PKG}.needs_missing' (ModuleNotFoundError: No module "
                                   "named 'a_package_that_is_not_installed')"),
    (f"{PKG}.tiny:nope", f"student.arch: '{PKG}.tiny:nope': {PKG}.tiny has no attribute 'nope'"),
    (f"{PKG}.broken:NOT_CALLABLE", f"{PKG}.broken.NOT_CALLABLE (int) is not callable"),
    (f"{PKG}.broken:raises", "the factory raised RuntimeError: no weights for this size (called as "
                             "raises(num_classes=10))"),
    (f"{PKG}.broken:not_a_module", "the factory returned a list, expected a torch.nn.Module"),
    (f"{PKG}.broken:wrong_classes", "a 1×3×32×32 image gave output (1, 11), expected logits of shape (1, 10)"),
    (f"{PKG}.broken:wrong_input", "the forward pass of a 1×3×32×32 zero image raised RuntimeError: mat1 and mat2"),
    ("my-models.tiny:build", "'my-models.tiny:build' is not a module:factory reference; expected "
                              "package.module:callable"),
    ("vgg16", "student.arch: unknown architecture 'vgg16'; expected one of"),
    ("wrn-11-2", "student.arch: depth: expected 6n+4 with n >= 1 (10, 16, 22, 28, 34, ...), got 11 (got 'wrn-11-2')"),
    ("wrn-16-0", "student.arch: width: expected a positive integer, got 0 (got 'wrn-16-0')"),
    ("cnn-0", "student.arch: width: expected a positive integer, got 0 (got 'cnn-0')"),
])
def test_each_wrong_architecture_is_one_line_before_any_work(arch, expected):
    assert expected in _refusal(f"student.arch={arch}")


def test_a_plain_module_cannot_be_the_teacher_ferd_splits_but_can_be_a_baselines():
    msg = _refusal(f"teacher.arch={PKG}.tiny:plain")
    assert f"teacher.arch: '{PKG}.tiny:plain' is a plain nn.Module with no split points" in msg
    assert load_config("params/ci.yaml", [f"teacher.arch={PKG}.tiny:plain", "method=deepinv"]).teacher.arch \
        == f"{PKG}.tiny:plain"


def test_the_split_layer_of_an_own_teacher_is_checked_before_any_work():
    msg = _refusal(f"teacher.arch={PKG}.tiny:build", "synthesis.layer=block3")
    assert "synthesis.layer 'block3' is not a split point of" in msg and "['block1', 'block2']" in msg
    cfg = load_config("params/ci.yaml", [f"teacher.arch={PKG}.tiny:build", "synthesis.layer=block1",
                                         f"student.arch={PKG}.tiny:plain"])
    assert (cfg.teacher.arch, cfg.student.arch) == (f"{PKG}.tiny:build", f"{PKG}.tiny:plain")  # as given


def test_validation_leaves_the_global_rng_as_it_was():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    check_arch(f"{PKG}.tiny:plain", num_classes=7, image_size=16)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_a_plain_module_gets_ferds_normalisation_and_keeps_its_own_keys(tmp_path):
    from ferd.core.checkpoint import save_state_dict
    from ferd.models.loading import load_model
    from support.my_models.tiny import plain

    own = plain(10).eval()  # the user's own module, trained by the user's own code
    torch.save({"state_dict": own.state_dict()}, tmp_path / "own.pt")
    model = load_model(tmp_path / "own.pt", f"{PKG}.tiny:plain", 10, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert isinstance(model, ForeignModel) and list(model.state_dict()) == list(own.state_dict())
    x = torch.rand(4, 3, 32, 32)
    assert torch.allclose(model(x), own((x - 0.5) / 0.25))  # Normalize in front, as for a registered arch
    save_state_dict(model.state_dict(), tmp_path / "ferd.safetensors")  # what ferd writes reloads strictly
    again = load_model(tmp_path / "ferd.safetensors", f"{PKG}.tiny:plain", 10, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert torch.equal(again(x), model(x))


def test_a_model_attribute_named_model_survives_the_prefix_stripping(tmp_path):
    """checkpoint.load_state_dict strips ``model.`` from every key; a module whose top-level child is named
    ``model`` gets it back, so ferd's own students round-trip."""
    from ferd.core.checkpoint import save_state_dict
    from ferd.models.foreign import adopt
    from ferd.models.loading import check_state_dict
    from ferd.core.checkpoint import load_state_dict

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))

        def forward(self, x):
            return self.model(x)

    m = adopt(Wrapped(), "x:y", 3)
    save_state_dict(m.state_dict(), tmp_path / "s.safetensors")
    state = check_state_dict(m, load_state_dict(tmp_path / "s.safetensors"), 3)
    assert sorted(state) == ["model.1.bias", "model.1.weight"]


def test_an_own_ferd_model_has_its_normalize_slot_set_from_the_parameters():
    m = create_model(f"{PKG}.tiny:build", 10, mean=[0.4, 0.4, 0.4], std=[0.2, 0.2, 0.2])
    assert isinstance(m, FerdModel) and not isinstance(m, ForeignModel) and m.normalize.enabled
    assert not create_model(f"{PKG}.tiny:build", 10).normalize.enabled


def test_an_installed_package_registers_names_through_entry_points(tmp_path, monkeypatch):
    dist = tmp_path / "my_models_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-models-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[ferd.models]\ntiny-net = {PKG}.tiny:build\n"
                                           "resnet18 = support.my_models.tiny:plain\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry_points.cache_clear()
    try:
        assert "tiny-net" in list_models() and list_models().count("resnet18") == 1
        cfg = load_config("params/ci.yaml", ["teacher.arch=tiny-net", "student.arch=tiny-net"])
        assert cfg.teacher.arch == "tiny-net"
        assert type(create_model("tiny-net", 10)).__name__ == "TinyNet"
        assert type(create_model("resnet18", 10)).__name__ == "ResNet"  # a built-in name is never shadowed
    finally:
        monkeypatch.undo()
        entry_points.cache_clear()
    assert "tiny-net" not in list_models()


def test_a_comparison_refuses_a_student_that_names_no_directory(tmp_path):
    from ferd.compare.config import load_compare

    preset = tmp_path / "p.yaml"
    preset.write_text(yaml.safe_dump({"base": "ci", "students": [f"{PKG}.tiny:plain"], "seeds": [0],
                                      "methods": {"ferd": []}}))
    with pytest.raises(ConfigError, match=r"student 'support.my_models.tiny:plain': expected a plain architecture "
                                          r"name .* register it as a ferd.models entry point"):
        load_compare(preset)
