"""What a run shows while it trains: one log line per epoch, and its curves in DVCLive.

Every synthesis and distillation epoch logs one line (:func:`generation_line`, :func:`distillation_line`), with
or without a terminal: under DVC and Kubeflow, where there is no progress bar, the log is the progress.

With a live directory (``ferd run``: ``<out>/live``; ``ferd stage synthesis|distillation|evaluation --live DIR``;
the generated ``dvc.yaml`` gives ``--live live``) the same numbers go to DVCLive, one step per epoch, under the
names :func:`epoch_metrics` gives: ``generator/<term>`` (L_gen and its terms, Eq. 4-9, on the kept batch),
``p/max`` and ``p/min`` (Eq. 1-2 after the epoch), ``synthesis/<figure>`` (within-label share, the teacher's
confidence and accuracy, the share of channels Eq. 4-6 mark non-robust) and ``student/<term>`` (the mean
distillation loss and the two weighted KL terms of Eq. 11). ``dvc plots show`` draws them and ``dvc exp show``
lists the last epoch's. The directory is rebuilt from the run's history whenever a process opens it, so it
always holds exactly the epochs the run has kept (a stage rerun or a resumed ``ferd run`` repeats none), and
the same history gives the same bytes. The live directory is a view for people, never an input.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from .numbers import is_finite_number

log = logging.getLogger(__name__)

GENERATION, DISTILLATION = "generation", "distillation"
SYNTHESIS_FIGURES = ("within_label_share", "teacher_confidence", "teacher_accuracy", "nonrobust_fraction")


def generation_metrics(h: dict) -> dict[str, float]:
    """The generation side of one epoch of a run's history: ``generator/<term>`` of L_gen, ``p/max``, ``p/min``,
    ``synthesis/<figure>``. Absent or non-finite values are left out."""
    out = {f"generator/{k}": float(v) for k, v in sorted((h.get("best_terms") or {}).items()) if is_finite_number(v)}
    p = [float(v) for v in h.get("p") or [] if is_finite_number(v)]
    if p:
        out["p/max"], out["p/min"] = max(p), min(p)
    out.update({f"synthesis/{k}": float(h[k]) for k in SYNTHESIS_FIGURES if is_finite_number(h.get(k))})
    return out


def distillation_metrics(h: dict) -> dict[str, float]:
    """The distillation side of one epoch: ``student/<term>`` of its losses (none for a warm-up epoch)."""
    losses = h.get("distill") or {}
    if "warmup" in losses:
        return {}
    return {f"student/{k}": float(v) for k, v in sorted(losses.items()) if is_finite_number(v)}


def epoch_metrics(h: dict) -> dict[str, float]:
    """Both sides of one epoch (what a replay logs)."""
    return {**generation_metrics(h), **distillation_metrics(h)}


def _fmt(values: dict[str, float], prefix: str) -> str:
    return ", ".join(f"{k.removeprefix(prefix)} {v:.4g}" for k, v in values.items() if k.startswith(prefix))


def generation_line(h: dict, epochs: int) -> str:
    """``epoch 3/12 (round 3) synthesis: L_gen …; p …; within_label_share …``."""
    m = generation_metrics(h)
    terms = {k: v for k, v in m.items() if k.startswith("generator/") and k != "generator/gen"}
    total = f"L_gen {m['generator/gen']:.4g}" if "generator/gen" in m else ""
    parts = [f"{total} ({_fmt(terms, 'generator/')})" if terms else total,
             f"p max {m['p/max']:.3f} min {m['p/min']:.3f}" if "p/max" in m else "",
             _fmt(m, "synthesis/")]
    return f"epoch {h['epoch'] + 1}/{epochs} (round {h.get('round')}) synthesis: " + "; ".join(p for p in parts if p)


def distillation_line(h: dict, epochs: int) -> str:
    """``epoch 3/12 (round 3) distillation: loss … (kl_adv …, kl_clean …)`` (or ``warm-up``)."""
    m = distillation_metrics(h)
    terms = {k: v for k, v in m.items() if k != "student/loss"}
    what = (f"loss {m.get('student/loss', math.nan):.4g}" + (f" ({_fmt(terms, 'student/')})" if terms else "")
            if m else "warm-up (no training, the schedule steps)")
    return f"epoch {h['epoch'] + 1}/{epochs} (round {h.get('round')}) distillation: {what}"


def _sorted_keys(tree: dict) -> dict:
    return {k: _sorted_keys(v) if isinstance(v, dict) else v for k, v in sorted(tree.items())}


class LiveTracker:
    """DVCLive in ``directory``, one step per epoch: opened fresh (``resume=False`` clears it), the kept
    ``history`` replayed into it, then each new epoch logged as it ends (:meth:`__call__`)."""

    def __init__(self, directory: str | os.PathLike[str], history: Iterable[dict]) -> None:
        from dvclive import Live

        class FilesOnly(Live):
            """DVCLive's files and nothing else: no DVC repository opened. DVCLive's own integration would
            create one (``.dvc/``) in any Git checkout that has none, fails in a Git repository without a
            commit, and saves experiments; here DVC reads the files through ``dvc.yaml`` instead."""

            def _init_dvc(self) -> None:
                return None

            def _init_cleanup(self) -> None:
                """Only what ferd writes here (``metrics.json``, ``plots/metrics/``): DVCLive's own cleanup would
                also delete a ``params.yaml``, ``dvc.yaml`` and reports in the folder (``--live .``)."""
                Path(self.metrics_file).unlink(missing_ok=True)
                shutil.rmtree(Path(self.plots_dir) / "metrics", ignore_errors=True)

            def make_summary(self) -> None:
                """``metrics.json`` with its keys sorted (``step`` among them): a run logged epoch by epoch and
                the same history replayed at once give the same bytes."""
                if self._step is not None:
                    self.summary["step"] = self.step
                self.summary = _sorted_keys(self.summary)
                super().make_summary()

        logging.getLogger("dvclive").setLevel(logging.WARNING)
        self.live = FilesOnly(str(directory), resume=False, report=None, save_dvc_exp=False, dvcyaml=None)
        for h in history:
            self._log(epoch_metrics(h), h["epoch"])
        self.live.make_summary()

    def _log(self, metrics: dict[str, float], epoch: int) -> None:
        if metrics:
            self.live.step = epoch
            for name, value in metrics.items():
                self.live.log_metric(name, value)

    def __call__(self, side: str, h: dict) -> None:
        self._log(generation_metrics(h) if side == GENERATION else distillation_metrics(h), h["epoch"])
        self.live.make_summary()

    @property
    def directory(self) -> Path:
        return Path(self.live.dir)


def live_tracker(directory: str | os.PathLike[str] | None, history: Iterable[dict], *,
                 required: bool = True) -> LiveTracker | None:
    """A :class:`LiveTracker` in ``directory`` (None: none). DVCLive comes with the ``dvc`` extra; without it a
    requested directory is a one-line error (``required``), or, for ``ferd run``'s default, one log line."""
    if directory is None:
        return None
    if importlib.util.find_spec("dvclive") is None:
        if required:
            raise ValueError("--live: needs DVCLive (pip install 'ferd[dvc]')") from None
        log.info("no live curves in %s: DVCLive is not installed (pip install 'ferd[dvc]')", directory)
        return None
    return LiveTracker(directory, history)
