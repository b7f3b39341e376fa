"""``ferd bench --preset P``: generator and student iterations timed against their bare passes
(:mod:`ferd.algorithm.bench`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..plan.resolve import load_config
from ..plan.presets import preset_path
from . import at_least, local_directory, module_doc


def _print(r: dict[str, Any], peak: float | None) -> None:
    print(f"device {r['device']} ({r['threads']} threads), teacher {r['teacher']} ({r['teacher_macs'] / 1e6:.1f} M MACs),"
          f" student {r['student']} ({r['student_macs'] / 1e6:.1f} M MACs), utae_cache {r['utae_cache']}, amp {r['amp']}")
    for kind in ("generator", "student"):
        line = (f"{kind:9s} iteration {r[f'{kind}_iteration_s'] * 1e3:9.2f} ms | bare passes "
                f"{r[f'{kind}_bare_s'] * 1e3:9.2f} ms | ratio {r[f'{kind}_ratio']:.3f} | "
                f"{r[f'{kind}_tflops'] * 1e3:.1f} GFLOP/s")
        if peak:
            line += f" | {100 * r[f'{kind}_tflops'] / peak:.1f} % of {peak} TFLOP/s bf16 peak"
        print(line)
    print(f"epoch at this preset {r['epoch_s']:.2f} s; the paper's 220 epochs (200 + 400 iterations) at these "
          f"shapes: {r['paper_220_epochs_h']:.2f} h")


def scaling(one: dict[str, Any], many: dict[str, Any]) -> dict[str, float]:
    """The generator and student iterations (both data-parallel for FERD) of N processes against one:
    speed-up and efficiency (speed-up / N; 1 is perfect scaling of the same global batch)."""
    n = many["processes"]
    out: dict[str, float] = {"processes": n}
    for kind in ("generator", "student"):
        speedup = one[f"{kind}_iteration_s"] / many[f"{kind}_iteration_s"]
        out.update({f"{kind}_iteration_s": many[f"{kind}_iteration_s"], f"{kind}_speedup": speedup,
                    f"{kind}_efficiency": speedup / n})
    return out


def _torchrun(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The same benchmark under ``torchrun --nproc_per_node N`` (rank 0 writes ``out``)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.nproc),
           "-m", "ferd.cli", "bench", "--preset", args.preset, "--iterations", str(args.iterations),
           "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--threads", str(args.threads),
           "--out", str(out), *(f"--set={kv}" for kv in args.set or ()),
           *([f"--device={args.device}"] if args.device else [])]
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())


def _main(args: argparse.Namespace) -> int:
    import torch

    from ..compute import distributed
    from ..algorithm.bench import bench
    from ..algorithm.preflight import preflight
    from ..core.checkpoint import atomic_write_json

    local_directory(args.out)
    cfg = load_config(preset_path(args.preset), [*(args.set or ()), *([f"device={args.device}"] if args.device else [])])
    preflight(cfg, teacher=False, evaluation=False)  # the device, in one line (bench's teacher has random weights)
    if args.nproc is not None and args.nproc < 2:
        raise ValueError(f"--nproc: expected 2 or more processes, got {args.nproc}")
    if args.threads:
        torch.set_num_threads(args.threads)
    with distributed.process_group(cfg):
        r = bench(cfg, args.iterations, args.repeats, args.warmup)
        if not distributed.is_main():
            return 0
    r["preset"] = args.preset
    if r["processes"] > 1:  # a rank of `--nproc`'s torchrun: the parent prints
        atomic_write_json(args.out, r)
        return 0
    _print(r, args.peak_tflops)
    if args.nproc:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            r["data_parallel"] = scaling(r, _torchrun(args, Path(tmp) / "bench.json"))
        d = r["data_parallel"]
        for kind in ("generator", "student"):
            print(f"{kind:9s} iteration on {d['processes']} processes × {r['threads']} threads "
                  f"{d[f'{kind}_iteration_s'] * 1e3:9.2f} ms | speed-up {d[f'{kind}_speedup']:.2f} | "
                  f"scaling efficiency {100 * d[f'{kind}_efficiency']:.0f} %")
    if args.out:
        atomic_write_json(args.out, r)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="time generator and student iterations against their bare passes",
                       description=module_doc("ferd.algorithm.bench"), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", required=True, help="a name in params/ or a .yaml path")
    p.add_argument("-S", "--set", action="append", metavar="KEY=VALUE", help="override a parameter")
    p.add_argument("--device", default=None)
    p.add_argument("--iterations", type=at_least(1), default=5, help="iterations per timed call (default 5)")
    p.add_argument("--repeats", type=at_least(1), default=5, help="timed repeats; the median is reported (default 5)")
    p.add_argument("--warmup", type=at_least(0), default=1, help="untimed repeats first (default 1)")
    p.add_argument("--threads", type=at_least(0), default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, for the %% column")
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="also time the data-parallel student iteration under torchrun with N processes "
                        "(same global batch) and report the scaling efficiency")
    p.add_argument("--out", help="also write the numbers as JSON")
    p.set_defaults(func=_main)
