"""Data parallelism under ``torchrun`` (PyTorch DDP): one global batch split across ranks (issue 20).

``torchrun --nproc_per_node N ferd stage distillation …`` (or ``ferd run``, ``ferd stage synthesis``)
starts N copies of the same command; :func:`init_from_env` joins them into one process group (NCCL on
CUDA, gloo on the CPU). What makes N ranks compute what one process computes with the same global batch:

* **the draws**: every rank draws the whole global batch from the seeded streams (pool indices, crop
  and flip, attack starts; labels, z and the bottleneck's noise in synthesis; :mod:`ferd.core.rng`) and keeps
  its own contiguous rows (:func:`shard`, :func:`draw_rows`), so the union of the ranks' batches is
  exactly the single-process batch and no stream depends on N;
* **BatchNorm**: the student's BatchNorm layers normalise with the statistics of the global batch
  (:func:`sync_batchnorm`: ``nn.SyncBatchNorm`` on CUDA; on the CPU, where that module refuses to run,
  :class:`GlobalBatchNorm2d`, the same computation with all-reduces that carry autograd);
* **the gradient**: the student's training passes go through ``DistributedDataParallel``
  (:func:`data_parallel`), which averages the ranks' gradients of their batch-mean losses: the gradient
  of the global batch mean. The frozen teacher is replicated, not wrapped; attacks run on the bare
  student in eval mode (running statistics, equal on every rank), per sample;
* **synthesis** (:class:`ferd.synthesis.epoch.Synthesizer`): the generator likewise (DDP, global-batch
  BatchNorm), L_bn on the global batch's statistics (:func:`channel_moments`), each rank's rows of z
  and of the bottleneck's noise scales with their one-process gradients, the kept iteration chosen on
  the global loss and the kept batch gathered (:func:`gather_rows`).

Every rank ends a step with the same parameters, so the saved state does not depend on N and a run
resumes with any world size. Only rank 0 writes artifacts (:func:`scratch_for_other_ranks`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import nn

from .lifetime import die_with_parent, run_stopping_with_us

if TYPE_CHECKING:
    from ..settings.config import FerdConfig


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def launched() -> bool:
    """Whether ``torchrun`` started this process as one of several (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def torchrun(nproc: int, argv: list[str]) -> int | None:
    """Run the command ``ferd <argv>`` under ``torchrun --standalone --nproc_per_node nproc`` and return its
    exit status, when ``nproc`` > 1 and this process is not already one of several ranks; None otherwise
    (the caller then runs the command itself)."""
    if nproc == 1 or "WORLD_SIZE" in os.environ:
        return None
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "ferd.cli", *argv]
    return run_stopping_with_us(cmd)  # interrupted: the agent stops its ranks, their writes finish


def init_from_env(device: str) -> None:
    """Join the process group ``torchrun`` describes (no-op for a single process); on CUDA each rank takes
    the GPU of its ``LOCAL_RANK`` as its current device (``cuda`` then means that GPU; the parameters and
    their fingerprints stay as written)."""
    if not launched() or world()[1] > 1:
        return
    die_with_parent()  # torchrun's ranks run in sessions of their own: none outlives its agent
    cuda = torch.device(device).type == "cuda"
    if cuda:
        if torch.device(device).index is not None:
            raise ValueError(f"device: {device} names one GPU, but several processes run; expected cuda (each "
                             "process then takes the GPU of its LOCAL_RANK)")
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")


@contextlib.contextmanager
def process_group(cfg: FerdConfig) -> Iterator[None]:
    """An entry point's process group for its whole run: joined from the ``torchrun`` environment, the
    global batches checked to split evenly across the ranks before any work, left at the end."""
    init_from_env(cfg.device)
    try:
        for field, size in {"distill.batch_size": cfg.distill.batch_size,
                            "synthesis.batch_size": cfg.synthesis.batch_size}.items():
            check_divisible(size, field)
        yield
    finally:
        if world()[1] > 1:
            dist.destroy_process_group()


def check_divisible(batch_size: int, field: str) -> None:
    """Refuse a global batch the ranks cannot split evenly (ValueError naming ``field``)."""
    n = world()[1]
    if batch_size % n:
        raise ValueError(f"{field}: {batch_size} does not split across {n} processes; expected a multiple of {n}")


def rows(n: int) -> slice:
    """This rank's contiguous rows of a global batch of ``n`` (``n`` divisible by the world size)."""
    rank, size = world()
    per = n // size
    return slice(rank * per, (rank + 1) * per)


def shard(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """This rank's rows of each global-batch tensor (all of them, unchanged, in one process)."""
    if world()[1] == 1:
        return tensors
    return tuple(t[rows(t.shape[0])] for t in tensors)


def mean_across(value: float) -> float:
    """The mean of ``value`` over the ranks (a logged loss: mean of the ranks' batch means)."""
    return float(sum_across(torch.tensor([value], dtype=torch.float64))) / world()[1]


def sum_across(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the ranks (a new tensor; no autograd)."""
    t = t.detach().clone()
    if world()[1] > 1:
        dist.all_reduce(t)
    return t


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """The global batch from every rank's rows (:func:`rows`), in rank order: the inverse of :func:`shard`."""
    size = world()[1]
    if size == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(size)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def draw_rows(shape: tuple[int, ...], draw) -> torch.Tensor:
    """This rank's rows of a random tensor drawn for the global batch: ``draw(global shape)`` with the
    first dimension ``shape[0]`` × world size, then :func:`shard` (the one-process draw in one process)."""
    size = world()[1]
    return shard(draw((shape[0] * size, *shape[1:])))[0]


def channel_moments(x: torch.Tensor, global_batch: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of ``x`` (N×C×H×W) over N, H, W — of the global batch across the
    ranks when several run and ``global_batch`` (sums all-reduced with autograd, two passes), else of ``x``.
    What BatchNorm normalises with, and the batch side of L_bn (Eq. 8)."""
    if not (global_batch and world()[1] > 1):
        return x.mean(dim=(0, 2, 3)), x.transpose(0, 1).reshape(x.shape[1], -1).var(dim=1, unbiased=False)
    from torch.distributed import _functional_collectives as funcol  # all_reduce with autograd

    dims, group = [0, 2, 3], dist.group.WORLD
    n = sum_across(torch.tensor(float(x.numel() // x.shape[1]), device=x.device))
    mean = funcol.all_reduce(x.sum(dims), "sum", group) / n
    centred = x - mean.view(1, -1, 1, 1)
    return mean, funcol.all_reduce((centred * centred).sum(dims), "sum", group) / n


def broadcast_(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` replaced in place by rank 0's (what a rank-0-only computation hands every rank)."""
    if world()[1] > 1:
        dist.broadcast(tensor, src=0)
    return tensor


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are those of the global batch across the process group
    (what ``nn.SyncBatchNorm`` computes, for the CPU/gloo where it refuses): :func:`channel_moments`, whose
    backward pass sums the ranks' gradients of the statistics as SyncBatchNorm's does; running statistics
    updated with the unbiased variance. Eval mode and one process: plain BN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and world()[1] > 1):
            return super().forward(x)
        shape = (1, -1, 1, 1)
        mean, var = channel_moments(x)
        n = float(x.numel() // x.shape[1]) * world()[1]
        y = (x - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - f).add_(f * mean.detach())
                self.running_var.mul_(1 - f).add_(f * var.detach() * n / (n - 1))
        return y


def sync_batchnorm(model: nn.Module, device: str | torch.device) -> nn.Module:
    """``model`` with its BatchNorm2d layers computing global-batch statistics when several ranks run
    (same parameters and buffers, same state-dict keys); unchanged in one process."""
    if world()[1] == 1:
        return model
    if torch.device(device).type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            bn = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats, device=child.weight.device if child.affine else None)
            if child.affine:
                bn.weight, bn.bias = child.weight, child.bias
            bn.running_mean, bn.running_var = child.running_mean, child.running_var
            bn.num_batches_tracked = child.num_batches_tracked
            bn.train(child.training)
            setattr(model, name, bn)
        else:
            sync_batchnorm(child, device)
    return model


class Passes(nn.Module):
    """``model`` applied to each input in turn: the student's training passes (clean and adversarial)
    as one module call, so ``DistributedDataParallel`` sees one forward per backward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model(x) for x in xs)


def ddp(model: nn.Module) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` when several ranks run (gradients averaged across ranks;
    buffers not broadcast at each forward: global-batch BatchNorm keeps them equal on every rank), else
    ``model`` itself."""
    if world()[1] == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, forward_sync_buffers=False)


def data_parallel(model: nn.Module) -> nn.Module:
    """The training passes of ``model``: :class:`Passes` (several inputs in one call, so DDP sees one
    forward per backward), through :func:`ddp`."""
    return ddp(Passes(model))


@contextlib.contextmanager
def scratch_for_other_ranks(out: str | os.PathLike[str], resume: bool = False) -> Iterator[Path]:
    """The output directory this rank writes to: ``out`` on rank 0; on every other rank a private temporary
    directory, removed afterwards, so only rank 0's artifacts are published. With ``resume`` (``ferd run``,
    which resumes from its own output) the other ranks start from a copy of ``out``, taken before rank 0
    writes anything (a barrier)."""
    rank, size = world()
    if size == 1:
        yield Path(out)
        return
    if rank == 0:
        dist.barrier()
        yield Path(out)
        return
    tmp = Path(tempfile.mkdtemp(prefix=f"ferd-rank{rank}-"))
    try:
        if resume and Path(out).is_dir():
            shutil.copytree(out, tmp / "out", ignore=shutil.ignore_patterns(".*"))
        dist.barrier()
        yield tmp / "out"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
