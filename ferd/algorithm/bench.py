"""``ferd bench``: a cost model that measures itself.

For a preset it times, with the preset's shapes and models (a teacher of ``teacher.arch`` with
random weights: speed does not depend on them):

* a **generator iteration** (:meth:`Synthesizer.run_epoch` over ``--iterations`` iterations,
  per iteration) and its **bare passes** — the method's generator forward and backward, then the model passes
  its objective makes, as the method declares them
  (:meth:`ferd.synthesis.epoch.GenerationMethod.generator_passes`): teacher forwards with the backward to the
  input (FERD's split at ``synthesis.layer``, with the BatchNorm-statistics hooks that compute L_bn inside the
  forward, Eq. 8), student forwards with the backward to the input, and, when L_uni is on, the bottleneck fit
  plus the masked head pass; DFHL's: the student alone; CMI's: the teacher on two views;
* a **student iteration** (:meth:`Distiller.run_epoch` over ``--iterations`` iterations, per
  iteration) and its bare passes, as the run's student side makes them
  (:meth:`ferd.distill.side.StudentSide.passes` of the resolved plan, :mod:`ferd.plan.resolve`): for Eq. 10-11 the
  UTAE steps (``steps`` × forward and input-backward of the attacked model, the teacher or the student
  as the plan decides; none when cached) and the teacher forward (cached: only on an augmented view),
  then the two student forwards and one backward; DFHL's side: the HEE steps on the student, one teacher
  forward, one student pass.

The run's settings are the plan's (:func:`ferd.plan.resolve.resolve`), the same object ``ferd run`` trains
with: a baseline's A.8 conversion, γ and the attack target are decided there once.

It prints the ratio iteration / bare passes (the overhead of everything else: sampling,
optimiser steps, bookkeeping), the achieved FLOP/s of the bare passes and, on a GPU, the
fraction of the device's bf16 peak (``--peak-tflops``, e.g. 989 for an H100 SXM dense bf16).

``--nproc N`` then times the same student iteration under ``torchrun --nproc_per_node N`` (the same
global batch split across N processes, :mod:`ferd.compute.distributed`) and reports the speed-up and the scaling
efficiency (speed-up / N); under torchrun only the iterations are timed, not the bare passes.

FLOP counting (stated, not measured): MACs of one forward pass from
:func:`ferd.models.count_macs` (conv and linear layers only), 2 FLOPs per MAC; a backward pass
to the input only costs one forward (the data-gradient GEMMs), a backward to the input and the
weights two forwards; the passes counted are the declared ones (``GeneratorPasses.flops``,
``IterationPasses.flops``), the bottleneck's as passes of the teacher's head; the generator itself is not
counted. Medians over ``--repeats`` repeats after ``--warmup`` untimed ones.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from ..compute.switches import attack_model
from ..settings.config import FerdConfig
from ..plan.resolve import Plan, resolve
from ..synthesis.epoch import GeneratorPasses


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int, device: str) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timed_plan(plan: Plan, iterations: int) -> Plan:
    """``plan`` with ``iterations`` generator and student iterations per timed call, nothing else changed."""
    return dataclasses.replace(plan, synthesis=plan.synthesis.model_copy(update={"iterations": iterations}),
                               distill=plan.distill.model_copy(update={"iterations": iterations}))


def _setup(plan: Plan):
    from ..core import rng
    from .round_state import RunState
    from ..compute.switches import set_memory_format
    from ..data import dataset_info
    from ..models import create_model
    from ..data.pool import Shard

    cfg = plan.cfg
    info = dataset_info(cfg.dataset)
    state = RunState.initial(plan)  # what ferd run trains (tests/unit/test_bench.py compares the two)
    with rng.seeded(cfg.seed, "bench-teacher"):
        teacher = create_model(cfg.teacher.arch, num_classes=info.num_classes, mean=cfg.teacher.mean,
                               std=cfg.teacher.std).to(cfg.device).eval().requires_grad_(False)
    set_memory_format(teacher, cfg.compute.channels_last)
    n = max(plan.distill.batch_size, plan.synthesis.batch_size)
    g = rng.generator(cfg.seed, "bench-pool")
    images = torch.rand((n, 3, info.image_size, info.image_size), generator=g)
    with torch.no_grad():
        logits = teacher(images.to(cfg.device)).float().cpu()
    shard = Shard(round=0, images=images, labels=torch.randint(0, info.num_classes, (n,), generator=g),
                  teacher_logits=logits, class_weight=torch.full((n,), 1.0 / info.num_classes, dtype=torch.float64),
                  epochs=torch.zeros(n, dtype=torch.int32))
    if plan.distill.utae.cache == "pool":
        from .rounds import shard_utaes

        shard.utaes = shard_utaes(plan, teacher, images, logits, 0)
    state.pool.append(shard)
    return teacher, state, info


def bench(cfg: FerdConfig, iterations: int = 5, repeats: int = 5, warmup: int = 1) -> dict[str, Any]:
    from ..compute import distributed

    dev, plan = cfg.device, resolve(cfg)
    teacher, state, info = _setup(timed_plan(plan, iterations))
    gen_passes = state.synthesizer.method.generator_passes(0)  # declared (or refused) before anything is timed
    s_cfg, d_cfg = plan.synthesis, plan.distill
    p = torch.full((info.num_classes,), 1.0 / info.num_classes, dtype=torch.float64)

    gen_epoch = median_seconds(lambda: state.synthesizer.run_epoch(teacher, state.student, p, 0), repeats, warmup,
                               dev) / iterations
    stu_epoch = median_seconds(lambda: state.distiller.run_epoch(teacher, state.pool, 0), repeats, warmup,
                               dev) / iterations
    out = {"device": dev, "threads": torch.get_num_threads(), "processes": distributed.world()[1],
           "iterations": iterations, "repeats": repeats, "teacher": cfg.teacher.arch, "student": cfg.student.arch,
           "batch": {"generator": s_cfg.batch_size, "student": d_cfg.batch_size}, "utae_cache": d_cfg.utae.cache,
           "amp": cfg.compute.amp, "generator_iteration_s": gen_epoch, "student_iteration_s": stu_epoch,
           "epoch_s": s_cfg.iterations * gen_epoch + d_cfg.iterations * stu_epoch}
    out["paper_220_epochs_h"] = 220 * (200 * gen_epoch + 400 * stu_epoch) / 3600
    if distributed.world()[1] > 1:  # under torchrun: the data-parallel iterations only (ferd.compute.distributed)
        return out
    return {**out, **_bare_passes(plan, teacher, state, info, gen_passes, gen_epoch, stu_epoch, repeats, warmup)}


def _head_macs(teacher: torch.nn.Module, layer: str, size: tuple[int, ...]) -> int:
    """MACs of one pass of the teacher's head from ``layer`` (:func:`ferd.models.count_macs` on the split)."""
    from ..models import count_macs

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.teacher = teacher

        def forward(self, f: torch.Tensor) -> torch.Tensor:
            return teacher.head(f, layer)

    with torch.no_grad():
        f = teacher.features(torch.zeros((1, *size), device=next(teacher.parameters()).device), layer)
    return count_macs(Head().train(teacher.training), tuple(f.shape))  # count_macs restores that mode


def _bare_passes(plan: Plan, teacher: torch.nn.Module, state: Any, info: Any, gen_passes: GeneratorPasses,
                 gen_epoch: float, stu_epoch: float, repeats: int, warmup: int) -> dict[str, Any]:
    """The bare passes of a generator iteration (``gen_passes``: the method's declaration for epoch 0, the one
    timed) and of a student iteration, their ratio to the iterations and FLOP/s."""
    from ..core import rng
    from ..models import count_macs
    from ..synthesis.epoch import frozen_student

    cfg = plan.cfg
    dev, s_cfg, d_cfg = cfg.device, plan.synthesis, plan.distill
    size = (3, info.image_size, info.image_size)

    # ---- bare passes, same shapes ----
    bg, bs = s_cfg.batch_size, d_cfg.batch_size
    student, method = state.student, state.synthesizer.method
    y = torch.randint(0, info.num_classes, (bg,), device=dev)
    # the method's own generator of epoch 0 and what it optimises (FERD: persistent or re-initialised, with z)
    synthesize, _ = method.start_epoch(0, y, rng.generator(cfg.seed, "latent", 0))

    def gen_bare() -> None:
        with frozen_student(student):
            gen_passes.loss(teacher, student, synthesize(), y, torch.Generator().manual_seed(0)).backward()

    passes = state.distiller.side.passes(d_cfg)  # what the run's student iteration makes (ferd.plan.resolve)
    target = attack_model(teacher, cfg.compute) if passes.attacked == "teacher" else student
    xs = torch.rand(bs, *size, device=dev)

    def stu_bare() -> None:
        student.eval()
        for _ in range(passes.attack_steps):
            x = xs.clone().requires_grad_(True)
            torch.autograd.grad(target(x).sum(), x)
        with torch.no_grad():
            for _ in range(passes.teacher_forwards):
                teacher(xs)
        student.train()
        sum(student(xs).sum() for _ in range(passes.student_passes)).backward()

    from ..compute.numerics import autocast

    def amp(fn: Callable[[], None]) -> Callable[[], None]:  # the bare passes under the same autocast
        def run() -> None:
            with autocast(cfg.compute.amp, dev):
                fn()
        return run

    gen_bare_s = median_seconds(amp(gen_bare), repeats, warmup, dev)
    stu_bare_s = median_seconds(amp(stu_bare), repeats, warmup, dev)

    mt, ms = count_macs(teacher, (1, *size)), count_macs(student, (1, *size))
    mh = _head_macs(teacher, teacher.check_layer(gen_passes.layer), size) if gen_passes.bottleneck else 0
    gen_flops = gen_passes.flops(mt, ms, bg, mh)  # the method's declared passes
    stu_flops = passes.flops(mt, ms, bs)  # the side's passes (attack steps, teacher forwards, student passes)
    return {"teacher_macs": mt, "student_macs": ms, "generator_bare_s": gen_bare_s,
            "generator_ratio": gen_epoch / gen_bare_s, "student_bare_s": stu_bare_s,
            "student_ratio": stu_epoch / stu_bare_s, "generator_tflops": gen_flops / gen_bare_s / 1e12,
            "student_tflops": stu_flops / stu_bare_s / 1e12}
