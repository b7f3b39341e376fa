"""Evaluate teacher and student under the attacks of FERD §5.1, keeping per-sample results.

The attacks (L∞, inputs in [0, 1], ε = 8/255 by default) are the registered ones of
:mod:`ferd.attacks` (clean, FGSM, PGD-20, CW∞, AutoAttack), with the settings of the
robust-fairness evaluation code FERD follows (Fair-ARD, Yue et al., 2023; ABSLD,
Zhao et al., 2024; see ``../shared/notes/evaluation.md``).

Every model is evaluated on the same examples; per (model, attack) the result
keeps per-sample ``correct`` flags and predictions, from which
:mod:`ferd.evaluation.metrics` computes Avg, Worst, Worst-10 %, NSD, confusion
matrices and attack-target distributions.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..attacks import ATTACKS, Attack, ThreatContext, build_attack, check_attack_names
from ..core.kill_points import kill_point
from . import metrics, resume

logger = logging.getLogger(__name__)

STATS: tuple[str, ...] = ("avg", "worst", "worst10", "nsd")


@dataclass
class EvaluationResult:
    """Per-sample outcomes of every (model, attack) on one set of labelled examples.

    ``correct[(model, attack)]`` is a bool array (N,), ``predictions[(model, attack)]``
    an int64 array (N,) of the predicted classes on the (adversarial) inputs;
    ``seconds`` the wall time of each pair; ``settings`` the attack settings and the
    environment (JSON-serialisable).
    """

    y: np.ndarray
    num_classes: int
    models: list[str]
    attacks: list[str]
    correct: dict[tuple[str, str], np.ndarray]
    predictions: dict[tuple[str, str], np.ndarray]
    settings: dict[str, Any]
    seconds: dict[tuple[str, str], float] = field(default_factory=dict)

    @property
    def n_examples(self) -> int:
        return int(self.y.shape[0])

    def class_counts(self) -> np.ndarray:
        return metrics.class_counts(self.y, self.num_classes)

    def class_accuracy(self, model: str, attack: str) -> np.ndarray:
        """Class-wise accuracy (C,), NaN for classes absent from the examples."""
        return metrics.per_class_accuracy(self.correct[(model, attack)], self.y, self.num_classes)

    def stats(self, model: str, attack: str) -> metrics.ClassStats:
        """Avg, Worst, Worst-10 % (fractions) and NSD of one (model, attack)."""
        return metrics.class_stats(self.correct[(model, attack)], self.y, self.num_classes)

    def confusion(self, model: str, attack: str) -> np.ndarray:
        """Confusion matrix (true × predicted counts) of the (adversarial) predictions."""
        return metrics.confusion_matrix(self.y, self.predictions[(model, attack)], self.num_classes)

    def target_distribution(self, model: str, attack: str) -> np.ndarray:
        """Where successful attacks on samples the model classifies correctly when clean land (C,).

        Restricted to clean-correct samples when ``clean`` was evaluated for ``model``.
        """
        clean = self.correct.get((model, "clean"))
        return metrics.attack_target_distribution(self.y, self.predictions[(model, attack)],
                                                  self.num_classes, clean_correct=clean)


def stratified_subset(y: np.ndarray | torch.Tensor, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded class-stratified subset of ``n`` of the labels ``y``.

    Each class gets n · (its share of ``y``) examples, rounded by largest
    remainder (ties broken by class index), so a balanced test set yields an
    equal number per class (±1); the examples within a class are drawn without
    replacement with ``numpy.random.default_rng(seed)``. ``n ≥ len(y)`` returns all
    indices.
    """
    y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y).astype(np.int64)
    if n < 1:
        raise ValueError(f"n_examples: expected an integer >= 1, got {n}")
    if n >= y.shape[0]:
        return np.arange(y.shape[0])
    classes, counts = np.unique(y, return_counts=True)
    quota = n * counts / counts.sum()
    take = np.floor(quota).astype(np.int64)
    order = sorted(range(len(classes)), key=lambda i: (-(quota[i] - take[i]), i))
    for i in order[: n - int(take.sum())]:
        take[i] += 1
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(y == c), size=k, replace=False) for c, k in zip(classes, take) if k]
    return np.sort(np.concatenate(picked))


def attack_seed(seed: int, model: str, attack: str) -> int:
    """The seed of the random-start generator of one (model, attack): independent of run order."""
    seq = np.random.SeedSequence([seed, zlib.crc32(model.encode()), zlib.crc32(attack.encode())])
    return int(seq.generate_state(1, np.uint64)[0] >> 1)


def pgd_step_size(eps: float, step: float | None = None) -> float:
    """The PGD-20 / CW∞ step: ``step`` when given, else ε/4 (:func:`ferd.settings.config.standard_step`: 2/255 at
    ε = 8/255), as a run's ``threat.step`` when none is given."""
    from ..settings.config import standard_step

    return step if step is not None else standard_step(eps)


def _attack_context(eps: float, seed: int, batch_size: int, device: str | torch.device, num_classes: int,
                    step: float | None) -> ThreatContext:
    return ThreatContext(eps=eps, step=pgd_step_size(eps, step), seed=seed, num_classes=num_classes,
                         batch_size=batch_size, device=str(device))


def attack_settings(eps: float, seed: int, n_examples: int, batch_size: int, device: str,
                    attacks: tuple[str, ...] | list[str], num_classes: int,
                    step: float | None = None) -> dict[str, Any]:
    """The settings recorded with a result (and printed in ``report.md``): each attack's own
    (:meth:`ferd.attacks.Attack.settings`) and the evaluation's."""
    ctx = _attack_context(eps, seed, batch_size, device, num_classes, step)
    per_attack = {name: build_attack(name, ctx).settings() for name in attacks}
    return {"norm": "Linf", "eps": eps, "eps_255": eps * 255, "attacks": list(attacks),
            **{name: s for name, s in per_attack.items() if s is not None},
            "n_examples": n_examples, "num_classes": num_classes, "seed": seed, "batch_size": batch_size,
            "device": device, "dtype": "float32", "torch": torch.__version__}


def _check_inputs(models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, num_classes: int,
                  attacks: tuple[str, ...], eps: float, batch_size: int) -> None:
    if not models:
        raise ValueError("models: expected at least one model")
    for name, model in models.items():
        if not isinstance(model, nn.Module):
            raise ValueError(f"models[{name!r}]: expected an nn.Module, got {type(model).__name__}")
        if not name or any(ch in name for ch in "./\\ "):
            raise ValueError(f"models: name {name!r} must be non-empty without '.', '/', '\\' or spaces "
                             "(it is used in metric keys and file names)")
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"x: expected a tensor N×3×H×W (or N×1×H×W), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"x: expected floating-point images in [0, 1], got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError("x: expected at least one example")
    lo, hi = float(x.min()), float(x.max())
    if not (0.0 <= lo and hi <= 1.0) or math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"x: expected pixel values in [0, 1] (normalisation belongs inside the model), "
                         f"got range [{lo:.4g}, {hi:.4g}]")
    if not isinstance(y, torch.Tensor) or y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y: expected a 1-D tensor of {x.shape[0]} labels (one per image), got "
                         f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"y: expected integer labels, got dtype {y.dtype}")
    if num_classes < 2:
        raise ValueError(f"num_classes: expected an integer >= 2, got {num_classes}")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(f"y: expected labels in [0, {num_classes}), got range [{int(y.min())}, {int(y.max())}]")
    try:
        check_attack_names(attacks)
    except ValueError as exc:
        raise ValueError(f"attacks: {exc}") from None
    if not 0.0 < eps <= 1.0:
        raise ValueError(f"eps: expected a value in (0, 1] (pixel scale), got {eps}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size}")


def _prepare(model: nn.Module, name: str, device: torch.device, x0: torch.Tensor, num_classes: int) -> None:
    model.to(device=device, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model(x0.to(device))
    if out.ndim != 2 or out.shape[1] != num_classes:
        raise ValueError(f"num_classes: model {name!r} returns logits of shape {tuple(out.shape)}, "
                         f"expected (batch, {num_classes})")


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision off: attacks and predictions in float32 (fp16 gradients mask gradients)."""
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _predict_attacked(model: nn.Module, attack: Attack, x: torch.Tensor, y: torch.Tensor, *, batch_size: int,
                      generator: torch.Generator, device: torch.device, progress: bool, desc: str) -> np.ndarray:
    """The model's predictions on the attack's examples, batch by batch (a whole-set attack first
    perturbs every example at once)."""
    if not attack.batched:
        x = attack.perturb(model, x, y)
    preds = []
    for start in tqdm(range(0, x.shape[0], batch_size), desc=desc, disable=not progress, leave=False):
        xb = x[start:start + batch_size].to(device)
        if attack.batched:
            xb = attack.perturb(model, xb, y[start:start + batch_size].to(device), generator)
        with torch.no_grad():
            preds.append(model(xb).argmax(1).cpu())
    return torch.cat(preds).numpy().astype(np.int64)


def evaluate_models(models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, *, num_classes: int,
                    attacks: tuple[str, ...] | list[str] = tuple(ATTACKS), eps: float = 8 / 255,
                    batch_size: int = 256, seed: int = 0, device: str | torch.device = "cpu",
                    progress: bool = True, step: float | None = None,
                    partial: Path | None = None) -> EvaluationResult:
    """Run every attack in ``attacks`` on every model in ``models`` over the examples ``(x, y)``.

    ``models`` maps a name (``teacher``, ``student``, …; no ``.`` or ``/``) to a
    model taking N×3×H×W inputs in [0, 1] and returning logits. Each model is moved
    to ``device`` as float32 and put in ``eval()`` mode *in place* (FERD, like every
    robustness evaluation, attacks the inference-mode network: BatchNorm uses its
    running statistics and is never updated); the previous mode and device are not
    restored. ``x`` is a float tensor in [0, 1], ``y`` int labels in
    [0, ``num_classes``); both stay on their device (batches are moved), and a
    ValueError names the offending argument otherwise. Attacks and predictions run
    in float32 with autocast disabled.

    Deterministic for a given ``seed`` and ``batch_size``: PGD-20 and CW∞ draw
    their random starts from a ``torch.Generator`` seeded by
    :func:`attack_seed` (seed, model name, attack), AutoAttack gets ``seed``
    directly; the global torch RNG is left as it was. ``step`` is the PGD-20 / CW∞
    step size (default 2/255 at ε = 8/255, scaled as ε/4 for other ε).

    ``partial``: a folder where each finished (model, attack) is kept as soon as it is known, and from which an
    evaluation stopped part-way resumes (:mod:`ferd.evaluation.resume`); the caller removes it.
    """
    attacks = tuple(attacks)
    device = torch.device(device)
    _check_inputs(models, x, y, num_classes, attacks, eps, batch_size)
    x = x.detach().float()
    y = y.detach().long()
    for name, model in models.items():
        _prepare(model, name, device, x[:1], num_classes)
    y_np = y.cpu().numpy().astype(np.int64)
    result = EvaluationResult(y=y_np, num_classes=num_classes, models=list(models), attacks=list(attacks),
                              correct={}, predictions={},
                              settings=attack_settings(eps, seed, int(x.shape[0]), batch_size, str(device),
                                                       attacks, num_classes, step))
    ctx = _attack_context(eps, seed, batch_size, device, num_classes, step)
    if partial is not None:
        resume.check_partial(partial)
    examples_sha = resume.examples_digest(x, y) if partial is not None else ""
    arithmetic = resume.arithmetic(str(device)) if partial is not None else {}
    for name, model in models.items():
        model_sha = resume.model_digest(model) if partial is not None else ""
        for attack in attacks:
            t0 = time.perf_counter()
            built = build_attack(attack, ctx)
            key = "" if partial is None else resume.attack_key(name, attack, model_sha, examples_sha, {
                "context": asdict(ctx), "attack": built.settings(), "arithmetic": arithmetic,
                "code": resume.code_digest([*model.modules(), built])})
            kept = None if partial is None else resume.load_attack(partial, name, attack, key, len(y_np), num_classes)
            if kept is not None:
                pred, seconds = kept
            else:
                gen = torch.Generator(device=device)
                gen.manual_seed(attack_seed(seed, name, attack))
                with _no_autocast(device):
                    pred = _predict_attacked(model, built, x, y, batch_size=batch_size, generator=gen,
                                             device=device, progress=progress, desc=f"{name}/{attack}")
                seconds = time.perf_counter() - t0
                if partial is not None:
                    resume.save_attack(partial, name, attack, key, pred, seconds)
                    kill_point("evaluation.attack")
            result.predictions[(name, attack)] = pred
            result.correct[(name, attack)] = pred == y_np
            result.seconds[(name, attack)] = seconds
            logger.info("%s/%s: accuracy %.2f%% (%.1f s%s)", name, attack, 100 * result.correct[(name, attack)].mean(),
                        seconds, f" when it ran; read back from {partial}" if kept is not None else "")
    return result


def flat_metrics(result: EvaluationResult) -> dict[str, float]:
    """``{"<model>.<attack>.<stat>": value}`` for stat in avg, worst, worst10, nsd.

    Accuracies are fractions in [0, 1] (``student.pgd20.worst``), NSD unitless
    (``teacher.clean.nsd``; NaN when every class accuracy is 0). Keys follow
    ``result.models`` × ``result.attacks`` order.
    """
    out: dict[str, float] = {}
    for model in result.models:
        for attack in result.attacks:
            stats = result.stats(model, attack)
            for stat in STATS:
                out[f"{model}.{attack}.{stat}"] = float(stats[stat])  # type: ignore[literal-required]
            if model != REFERENCE and REFERENCE in result.models:
                out[f"{model}.{attack}.retention"] = retention(result, model, attack)[0]
    return out


REFERENCE = "teacher"  # the model a distilled model's retention is measured against


def retention(result: EvaluationResult, model: str, attack: str) -> tuple[float, np.ndarray]:
    """How much of the teacher's accuracy ``model`` kept under ``attack``: (avg_model / avg_teacher, the
    same ratio per class). A class the teacher never gets right has ratio NaN; avg NaN when the
    teacher's average is 0."""
    t_avg = float(result.correct[(REFERENCE, attack)].mean())
    avg = float(result.correct[(model, attack)].mean()) / t_avg if t_avg > 0 else math.nan
    t_cls = result.class_accuracy(REFERENCE, attack)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_class = np.where(t_cls > 0, result.class_accuracy(model, attack) / t_cls, np.nan)
    return avg, per_class


def class_name_list(num_classes: int, class_names: list[str] | tuple[str, ...] | None) -> list[str]:
    """``class_names`` checked against ``num_classes``, or ``["0", "1", …]`` when None."""
    if class_names is None:
        return [str(i) for i in range(num_classes)]
    names = [str(c) for c in class_names]
    if len(names) != num_classes:
        raise ValueError(f"class_names: expected {num_classes} names, got {len(names)}")
    return names


def per_class_table(result: EvaluationResult,
                    class_names: list[str] | tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """One row per (model, attack, class): model, attack, class_index, class_name, accuracy, n.

    ``accuracy`` is a fraction (None for a class with no example, ``n`` = 0): rows
    ready for ``per_class.csv`` / ``per_class.json`` and ``dvc plots``.
    """
    names = class_name_list(result.num_classes, class_names)
    counts = result.class_counts()
    rows = []
    for model in result.models:
        for attack in result.attacks:
            acc = result.class_accuracy(model, attack)
            for c in range(result.num_classes):
                rows.append({"model": model, "attack": attack, "class_index": c, "class_name": names[c],
                             "accuracy": None if np.isnan(acc[c]) else float(acc[c]), "n": int(counts[c])})
    return rows
