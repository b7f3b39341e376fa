"""Algorithm 1 end to end on a tiny configuration: data-free, deterministic, resumable."""

from __future__ import annotations

import pytest
import torch

import ferd.data.datasets as datasets
from ferd.stages.run import run_algorithm1
from ferd.settings.config import round_epochs
from ferd.plan.resolve import parse_config
from ferd.models import create_model
from support.resume import killed_then_resumed

TINY = dict(dataset="digits", epochs=2, seed=3, threat=dict(eps=0.1, step=0.025),
            teacher=dict(arch="cnn-4"), student=dict(arch="cnn-4"),
            synthesis=dict(iterations=2, batch_size=16, generator=dict(ngf=4, nz=8), bottleneck=dict(iterations=3),
                           reweighting=dict(pgd_steps=2)),
            distill=dict(iterations=3, batch_size=16, utae=dict(steps=2)))


pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py: one torch thread per test


def _teacher():
    torch.manual_seed(0)
    return create_model("cnn-4", num_classes=10).eval()


def test_round_epochs():
    assert round_epochs(5, 2) == [range(0, 3), range(3, 5)]
    assert round_epochs(3, 3) == [range(0, 1), range(1, 2), range(2, 3)]
    with pytest.raises(ValueError, match="rounds"):
        round_epochs(2, 3)


def test_synthesis_and_distillation_never_touch_the_dataset(monkeypatch):
    calls = []
    real = datasets.load_split

    def spy(*a, **k):
        calls.append(a)
        return real(*a, **k)

    monkeypatch.setattr(datasets, "load_split", spy)
    monkeypatch.setattr("ferd.data.load_split", spy)
    state = run_algorithm1(_teacher(), parse_config(TINY), progress=False)
    assert calls == [] and len(state.pool) == 32
    # and the guard is what stops them: inside it, any load raises
    from ferd.data import DataAccessError, load_split, no_data_access

    with no_data_access("test"), pytest.raises(DataAccessError):
        load_split("digits", "train")


def test_same_seed_same_student_and_resume_is_bit_identical(tmp_path, monkeypatch):
    cfg = parse_config(TINY)
    a = run_algorithm1(_teacher(), cfg, progress=False)
    b = run_algorithm1(_teacher(), cfg, progress=False)
    for k, v in a.student.state_dict().items():
        assert torch.equal(v, b.student.state_dict()[k]), k
    assert a.history == b.history

    # die at the start of round 1 (after round 0's checkpoint), then rerun: resumes, same student
    c = killed_then_resumed(_teacher, cfg, tmp_path, monkeypatch)
    for k, v in a.student.state_dict().items():
        assert torch.equal(v, c.student.state_dict()[k]), k
    assert c.history == a.history
    # a checkpoint from other parameters is refused, not silently resumed
    with pytest.raises(ValueError, match="other parameters"):
        run_algorithm1(_teacher(), parse_config({**TINY, "seed": 4}), checkpoint_dir=tmp_path, progress=False)


def test_authors_variants_run():
    cfg = parse_config({**TINY, "synthesis": {**TINY["synthesis"], "generator": dict(kind="reinit", ngf=4, nz=8),
                                               "bottleneck": dict(mode="authors", iterations=2),
                                               "reweighting": dict(strategy="minmax", pgd_steps=2)},
                        "distill": {**TINY["distill"], "warmup_epochs": 1,
                                    "utae": dict(target="student", random_start="gaussian", steps=2)}})
    state = run_algorithm1(_teacher(), cfg, progress=False)
    assert len(state.history) == 2 and abs(sum(state.history[-1]["p"]) - 1) < 1e-9


def test_ferd_run_executes_the_graph_so_a_new_per_round_stage_runs_in_it(monkeypatch):
    """Issue 17: ``ferd run`` is the stage graph in one process. A throwaway per-round stage (the pool's
    rows after each round), declared in the graph and written as one module whose ``step`` reads the
    in-memory pool artifact, runs in every round; the student is unchanged."""
    from support import throwaway_extensions as ext

    reference = run_algorithm1(_teacher(), parse_config(TINY), progress=False)
    ext.install(monkeypatch)  # the stage pool-rows (and an attack, unused here)
    try:
        state = run_algorithm1(_teacher(), parse_config(TINY), progress=False)
    finally:
        ext.remove()
    assert ext.SEEN == [(0, 16), (1, 32)]
    ref = reference.student.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in state.student.state_dict().items())
