"""Overhead of ferd's AutoAttack path over calling ``pyautoattack`` directly.

Times, on the shared robust CIFAR-10 teacher (WRN-16-2) and a seeded class-stratified
subset of ``../shared/data/cifar10_test.npz``:

- ``direct``: ``AutoAttack(model, norm='Linf', eps=8/255, version='standard', seed=S,
  device='cpu').run_standard_evaluation(x, y, batch_size=B)``;
- ``ferd``: ``evaluate_models({'teacher': model}, x, y, attacks=('aa',), ...)`` (input checks,
  eval()/float32 preparation, contiguous-gradient wrapper, RNG save/restore, per-sample flags),
  followed by the per-class bookkeeping (``flat_metrics``, ``per_class_table``, confusion
  matrices and attack-target distributions, timed separately as ``bookkeeping``).

The two paths alternate, ``--repeats`` times each; medians are reported, and the script checks
that both give the same adversarial predictions. AutoAttack standard is slow on CPU (500 images
took 30 minutes on 2 cores): keep ``--n`` small. Run from the repository root::

    nice -n 10 .venv/bin/python benchmarks/bench_evaluate.py --n 50 --repeats 3 \\
        --out benchmarks/results/bench_evaluate.json

Prints one line per run and a summary; ``--out`` also writes the numbers as JSON.

Measured (November 2026, 2 shared CPU cores, 1 thread, N = 50, seed 0, other jobs running):
direct 436.8 / 495.0 / 571.9 s, ferd 568.3 / 433.8 / 419.5 s (medians 495.0 vs 433.8 s), identical
predictions (AA accuracy 32 %). The run-to-run spread (±15 %) from the shared machine swamps the
overhead, which is bounded instead by its parts: bookkeeping 0.4 ms, input checks plus the two
one-image probe forwards 14 ms per call, and the contiguous-gradient wrapper 20-45 µs per
forward/backward (against ~120 ms for one 20-image WRN-16-2 forward/backward), i.e. well under 0.1 %.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", default=str(SHARED / "models" / "wrn-16-2_cifar10_linf.safetensors"))
    p.add_argument("--arch", default="wrn-16-2")
    p.add_argument("--data", default=str(SHARED / "data" / "cifar10_test.npz"))
    p.add_argument("--n", type=int, default=50, help="stratified test images (default 50)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: on a shared 2-core machine two threads oversubscribe "
                        "and AutoAttack's many small batches run several times slower; 0 = torch's default)")
    p.add_argument("--out", help="write the timings as JSON here")
    args = p.parse_args(argv)

    from pyautoattack import AutoAttack

    from ferd.data import load_split
    from ferd.evaluation import metrics
    from ferd.evaluation.runner import evaluate_models, flat_metrics, per_class_table, stratified_subset
    from ferd.models.loading import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    x_all, y_all = load_split("cifar10", "test", root=args.data)
    idx = torch.from_numpy(stratified_subset(y_all, args.n, seed=args.seed))
    x, y = x_all[idx].contiguous(), y_all[idx].clone()
    model = load_model(args.teacher, args.arch, 10)
    eps = 8 / 255

    times: dict[str, list[float]] = {"direct": [], "ferd": [], "bookkeeping": []}
    preds: dict[str, np.ndarray] = {}
    for r in range(args.repeats):
        t0 = time.perf_counter()
        adversary = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=args.seed, device="cpu")
        _, y_adv = adversary.run_standard_evaluation(x, y, batch_size=args.batch_size)
        times["direct"].append(time.perf_counter() - t0)
        preds["direct"] = y_adv.numpy()

        t0 = time.perf_counter()
        result = evaluate_models({"teacher": model}, x, y, num_classes=10, attacks=("aa",), eps=eps,
                                 batch_size=args.batch_size, seed=args.seed, progress=False)
        t1 = time.perf_counter()
        flat = flat_metrics(result)
        per_class_table(result)
        result.confusion("teacher", "aa")
        metrics.attack_target_distribution(result.y, result.predictions[("teacher", "aa")], 10)
        t2 = time.perf_counter()
        times["ferd"].append(t1 - t0)
        times["bookkeeping"].append(t2 - t1)
        preds["ferd"] = result.predictions[("teacher", "aa")]
        print(f"run {r + 1}/{args.repeats}: direct {times['direct'][-1]:.2f} s, ferd {times['ferd'][-1]:.2f} s "
              f"+ bookkeeping {1e3 * times['bookkeeping'][-1]:.2f} ms; AA accuracy {flat['teacher.aa.avg']:.3f}",
              flush=True)
        torch.manual_seed(args.seed)

    same = bool(np.array_equal(preds["direct"], preds["ferd"]))
    med = {k: statistics.median(v) for k, v in times.items()}
    overhead = med["ferd"] + med["bookkeeping"] - med["direct"]
    summary = {
        "n": args.n, "repeats": args.repeats, "batch_size": args.batch_size, "seed": args.seed,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.processor() or
        platform.machine(), "median_s": med, "runs_s": times, "overhead_s": overhead,
        "overhead_pct": 100 * overhead / med["direct"], "identical_predictions": same,
        "aa_accuracy": float((preds["ferd"] == y.numpy()).mean()),
    }
    print(f"median over {args.repeats}: direct {med['direct']:.2f} s, ferd {med['ferd']:.2f} s, "
          f"bookkeeping {1e3 * med['bookkeeping']:.2f} ms; overhead {overhead:+.2f} s "
          f"({summary['overhead_pct']:+.2f} %); identical predictions: {same}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
