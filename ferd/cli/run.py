"""``ferd run --params FILE --out DIR [-S key=value ...]``."""

from __future__ import annotations

import argparse
import json

from ..plan.resolve import load_config
from ..plan.presets import params_file
from . import at_least, local_directory


def _run(args: argparse.Namespace) -> int:
    from ..compute import distributed
    from ..core.checkpoint import json_safe
    from ..stages.run import run

    local_directory(args.out)
    cfg = load_config(args.params, args.set or ())
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rc = distributed.torchrun(cfg.nproc_per_node, args.argv)
    if rc is not None:
        return rc
    with distributed.process_group(cfg), \
            distributed.scratch_for_other_ranks(args.out, resume=True) as out:
        metrics = run(cfg, out, progress=not args.no_progress, live=False if args.no_live else args.live or True)
    if not distributed.is_main():
        return 0
    keys = sorted(k for k in metrics if k.endswith((".avg", ".worst", ".nsd")))
    print(json.dumps(json_safe({k: round(metrics[k], 4) for k in keys}), indent=1))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="teacher → Algorithm 1 → quick evaluation, in one process",
                       description="Run FERD end to end (resumes from DIR/checkpoint/ when present).")
    p.add_argument("--params", required=True, type=params_file,
                   help="YAML parameters: a file, or a preset by name (e.g. params/embedded.yaml or embedded)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("-S", "--set", action="append", metavar="KEY=VALUE",
                   help="override a parameter, e.g. -S synthesis.lambda_uni=2 (repeatable)")
    p.add_argument("--threads", type=at_least(0), default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    live = p.add_mutually_exclusive_group()
    live.add_argument("--live", default=None, metavar="DIR",
                      help="the DVCLive directory of the per-epoch curves (default: DIR/live when DVCLive is installed)")
    live.add_argument("--no-live", action="store_true", help="no DVCLive curves (the per-epoch log lines remain)")
    p.set_defaults(func=_run)
