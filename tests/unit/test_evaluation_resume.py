"""An evaluation stopped part-way resumes at the attack it was in, with the same outcome; a kept attack is read
back only when it is the evaluation's own (ferd.evaluation.resume)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from ferd.evaluation import resume, runner
from ferd.evaluation.runner import evaluate_models

N, C = 24, 10
ATTACKS = ("clean", "fgsm", "pgd20")
pytestmark = pytest.mark.usefixtures("one_thread_module")  # tiny models: one intra-op thread


def tiny(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, C))


def examples() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(N, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(N) % C


def evaluate(partial=None, seed: int = 0, models=None, **settings):
    x, y = examples()
    return evaluate_models(models or {"teacher": tiny(0), "student": tiny(1)}, x, y, num_classes=C,
                           attacks=settings.pop("attacks", ATTACKS), **{"batch_size": 8, **settings}, seed=seed,
                           progress=False, partial=partial)


PREDICT = runner._predict_attacked  # the real one, whatever a test patches in


class Stop(Exception):
    pass


def attacked_with(monkeypatch, stop_at: tuple[str, str] | None = None) -> list[str]:
    """Record each attack run (``model/attack``); raise :class:`Stop` when ``stop_at`` is reached."""
    ran: list[str] = []

    def spy(model, attack, *args, desc, **kwargs):
        if stop_at is not None and desc == "/".join(stop_at):
            raise Stop(desc)
        ran.append(desc)
        return PREDICT(model, attack, *args, desc=desc, **kwargs)

    monkeypatch.setattr(runner, "_predict_attacked", spy)
    return ran


def test_a_stopped_evaluation_resumes_at_the_attack_it_was_in_with_the_same_outcome(tmp_path, monkeypatch):
    whole = evaluate()
    partial = tmp_path / "eval.partial"
    ran = attacked_with(monkeypatch, stop_at=("student", "fgsm"))
    with pytest.raises(Stop):
        evaluate(partial)
    assert ran == ["teacher/clean", "teacher/fgsm", "teacher/pgd20", "student/clean"]
    assert sorted(p.name for p in partial.iterdir()) == [f"{m}.{a}.npz" for m, a in
                                                         [("student", "clean"), ("teacher", "clean"),
                                                          ("teacher", "fgsm"), ("teacher", "pgd20")]]
    ran = attacked_with(monkeypatch)
    resumed = evaluate(partial)
    assert ran == ["student/fgsm", "student/pgd20"]  # the finished four are read back
    for key in whole.predictions:
        assert np.array_equal(resumed.predictions[key], whole.predictions[key]), key
        assert np.array_equal(resumed.correct[key], whole.correct[key]), key
    ran.clear()
    assert evaluate(partial).seconds == resumed.seconds and ran == []  # each attack's time as it ran


def test_a_kept_attack_of_another_seed_model_or_examples_is_run_again(tmp_path, monkeypatch):
    partial = tmp_path / "p"
    evaluate(partial)
    ran = attacked_with(monkeypatch)
    evaluate(partial, seed=1)  # another seed: every attack runs again (the seed is in every key)
    assert ran == ["teacher/clean", "teacher/fgsm", "teacher/pgd20", "student/clean", "student/fgsm",
                   "student/pgd20"]
    ran.clear()
    evaluate(partial, seed=1, models={"teacher": tiny(0), "student": tiny(2)})  # another student's weights
    assert ran == ["student/clean", "student/fgsm", "student/pgd20"]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "labels out of range", "wrong length", "no key"])
def test_a_damaged_kept_attack_is_ignored_with_a_warning_and_run_again(tmp_path, monkeypatch, caplog, damage):
    partial = tmp_path / "p"
    whole = evaluate(partial)
    path = partial / "student.pgd20.npz"
    if damage == "garbage":
        path.write_bytes(b"not a zip")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    else:
        with np.load(path) as kept:
            data = dict(kept)
        if damage == "labels out of range":
            data["predictions"] = data["predictions"] + C
        elif damage == "wrong length":
            data["predictions"] = data["predictions"][:-1]
        else:
            del data["key"]
        np.savez(path, **data)
    ran = attacked_with(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="ferd.evaluation.resume"):
        again = evaluate(partial)
    assert ran == ["student/pgd20"] and "student.pgd20.npz" in caplog.text and "running student/pgd20 again" in caplog.text
    assert np.array_equal(again.predictions["student", "pgd20"], whole.predictions["student", "pgd20"])


def _with_bn(shift: float = 0.0) -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 8 * 8, C))
    torch.manual_seed(0)
    for p in model.parameters():
        nn.init.normal_(p, std=0.1)
    model[1].running_mean += shift  # a buffer: no parameter changes
    return model


PLUGIN = """import torch
from torch import nn


class Plugin(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)) {sign} 0.0
"""


@pytest.mark.parametrize("change", ["eps", "step", "batch size", "a buffer", "threads", "the CPU", "oneDNN's ISA",
                                    "a plugin's code"])
def test_an_attack_kept_under_anything_else_is_run_again(tmp_path, monkeypatch, change):
    """Each thing that decides an attack's predictions, changed alone after a whole evaluation, makes it run again
    (and nothing unchanged does: the same evaluation repeated reads every attack back)."""
    import importlib
    import sys

    partial = tmp_path / "p"
    (tmp_path / "plugin_model.py").write_text(PLUGIN.format(sign="+"))
    monkeypatch.syspath_prepend(str(tmp_path))
    def plugin() -> dict[str, nn.Module]:
        torch.manual_seed(0)  # the same weights each time
        return {"student": importlib.import_module("plugin_model").Plugin()}

    models = {"student": _with_bn()} if change == "a buffer" else plugin() if change == "a plugin's code" else None
    one = ("pgd20",)
    evaluate(partial, models=models, attacks=one)
    ran = attacked_with(monkeypatch)
    evaluate(partial, models=models, attacks=one)
    assert ran == [], "the same evaluation must read its attacks back"
    settings: dict = {}
    if change in ("eps", "step", "batch size"):
        settings = {"eps": {"eps": 4 / 255}, "step": {"step": 1 / 255}, "batch size": {"batch_size": 12}}[change]
    elif change == "a buffer":
        models = {"student": _with_bn(shift=0.5)}
    elif change == "threads":
        monkeypatch.setattr(torch, "get_num_threads", lambda: 7)
    elif change == "the CPU":
        monkeypatch.setattr(resume, "_cpu_model", lambda: "another CPU")
    elif change == "oneDNN's ISA":
        # the key reads os.environ; a plain dict leaves the process's real environment (which oneDNN reads) alone
        monkeypatch.setattr(resume.os, "environ", {**resume.os.environ, "ONEDNN_MAX_CPU_ISA": "ANOTHER"})
    else:  # the same weights, another forward
        (tmp_path / "plugin_model.py").write_text(PLUGIN.format(sign="-"))
        sys.modules.pop("plugin_model")
        resume._file_digest.cache_clear()
        models = plugin()
    evaluate(partial, models=models, attacks=one, **settings)
    assert ran == ["student/pgd20"] if models else ran == ["teacher/pgd20", "student/pgd20"]


def test_an_odd_partial_folder_is_refused_in_one_line_before_any_attack(tmp_path, monkeypatch):
    ran = attacked_with(monkeypatch)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"file: expected the folder of an evaluation's kept attacks, found a file"):
        evaluate(tmp_path / "file")
    (tmp_path / "p" / "student.pgd20.npz").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"p: student\.pgd20\.npz: expected a kept attack's file, found something"):
        evaluate(tmp_path / "p")
    assert ran == []


def test_ferd_evaluate_stopped_part_way_resumes_and_leaves_no_kept_attacks_behind(tmp_path, monkeypatch):
    from ferd.cli import main
    from ferd.core.checkpoint import save_state_dict
    from ferd.models import create_model

    ckpt = tmp_path / "t.safetensors"
    save_state_dict(create_model("cnn-4", 10).state_dict(), ckpt)
    out = tmp_path / "eval"
    argv = ["evaluate", "--teacher", str(ckpt), "--teacher-arch", "cnn-4", "--dataset", "digits",
            "--attacks", "clean,fgsm", "--n-examples", "20", "--out", str(out), "--no-progress"]
    attacked_with(monkeypatch, stop_at=("teacher", "fgsm"))
    with pytest.raises(Stop):
        main(argv)
    assert [p.name for p in resume.partial_dir(out).iterdir()] == ["teacher.clean.npz"]
    ran = attacked_with(monkeypatch)
    assert main(argv) == 0 and ran == ["teacher/fgsm"]  # clean read back
    assert (out / "metrics.json").is_file() and not resume.partial_dir(out).exists()
