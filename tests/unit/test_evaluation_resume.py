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


def evaluate(partial=None, seed: int = 0, models=None):
    x, y = examples()
    return evaluate_models(models or {"teacher": tiny(0), "student": tiny(1)}, x, y, num_classes=C,
                           attacks=ATTACKS, batch_size=8, seed=seed, progress=False, partial=partial)


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


def test_the_key_covers_the_weights_the_examples_and_the_settings():
    x, y = examples()
    a, b = tiny(0), tiny(0)
    assert resume.model_digest(a) == resume.model_digest(b)
    with torch.no_grad():
        b[0].bias[0] += 1e-7
    assert resume.model_digest(a) != resume.model_digest(b)
    assert resume.examples_digest(x, y) != resume.examples_digest(x, (y + 1) % C)
    key = lambda **s: resume.attack_key("student", "pgd20", "m", "e", {"eps": 8 / 255, **s})  # noqa: E731
    assert key() == key() and key() != key(eps=4 / 255) and key() != key(steps=10)


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
