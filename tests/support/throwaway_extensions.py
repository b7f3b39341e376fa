"""A throwaway stage and a throwaway attack, each written as its module would be (issue 33):

* ``pool-rows``: a per-round stage after the distillation that records the pool's rows, declared in the graph
  (:data:`ferd.plan.graph.STAGES`) with its function (on disk: ``ferd stage all``, DVC, Kubeflow) and its ``step``
  (in memory: ``ferd run``), as ``ferd/stages/pool_rows.py`` would hold them;
* ``corner``: an attack, one registered class (every pixel moved by ε towards its nearer bound).

:func:`install` adds both; :func:`remove` takes them out again (``tests/e2e/test_plugins.py``).
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from pathlib import Path

import torch

from ferd.plan import graph
from ferd.attacks import ATTACKS, Attack, register
from ferd.stages.artifacts import RoundArtifact, check_inputs, round_epochs, write_json, write_manifest
from ferd.stages.pool_store import load_pool

STAGE = graph.Stage(name="pool-rows", scope="pool", per_round=True, subdir="pool-rows",
                    inputs=(graph.Input("pool", "pool-store", graph.SAME, "pool"),), output="rows", gpu_device=False,
                    title="pool rows", help="a throwaway stage: the pool's rows after the round")
SEEN: list[tuple[int, int]] = []  # (round, rows) of every in-memory step


@dataclass(frozen=True)
class RowsArtifact(RoundArtifact):
    rows: int


def pool_rows(cfg, out_dir, *, round_index, pool, progress=False) -> RowsArtifact:
    check_inputs(cfg, STAGE.name, round_index, out_dir, pool=pool)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = len(load_pool(cfg, pool))
    write_json(out / "rows.json", {"rows": rows})
    write_manifest(out, STAGE.name, cfg, round_index=round_index, inputs={"pool": pool}, scope=STAGE.scope)
    return RowsArtifact(out, round_index, round_epochs(cfg, round_index), rows)


def step(ctx, round_index, inputs) -> int:
    SEEN.append((round_index, len(inputs["pool"])))
    return len(inputs["pool"])


class Corner(Attack):
    """Every pixel moved by ε towards the nearer of 0 and 1 (a fixed, gradient-free perturbation)."""

    name, label = "corner", "Corner"

    def perturb(self, model, x, y, generator=None):
        return (x + self.ctx.eps * torch.where(x < 0.5, -1.0, 1.0)).clamp(0, 1)

    def settings(self):
        return {"step_size": self.ctx.eps}

    @staticmethod
    def describe(settings, eps):
        return f"- Corner: every pixel {settings['step_size'] * 255:g}/255 towards its nearer bound."


def install(monkeypatch) -> None:
    module = types.ModuleType("ferd.stages.pool_rows")
    module.pool_rows, module.step = pool_rows, step
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(graph, "STAGES", (*graph.STAGES, STAGE))
    monkeypatch.setitem(graph.BY_NAME, STAGE.name, STAGE)
    register(Corner)
    SEEN.clear()


def remove() -> None:
    ATTACKS.pop(Corner.name, None)
