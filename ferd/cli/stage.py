"""``ferd stage <name>``: one stage of the DAG from the command line (what ``dvc.yaml`` calls).

::

    ferd stage teacher-fetch --params P --out teacher/
    ferd stage synthesis     --params P --round R --teacher teacher/ [--student D --previous S] --out S
    ferd stage pool-store    --params P --round R --synthesis S [--previous POOL] --out POOL
    ferd stage distillation  --params P --round R --teacher teacher/ --synthesis S --pool POOL [--previous D] --out D
    ferd stage evaluation    --params P --teacher teacher/ --student D --out E
    ferd stage all           --params P --out DIR       # every stage in order, one process

``--previous`` / ``--student`` are the artifacts of round R-1 (none in round 0). Every
command prints a JSON summary of what it wrote.
"""

from __future__ import annotations

import argparse
import json

from .. import __version__
from ..plan import graph
from ..plan.graph import PREVIOUS, describe_input
from ..plan.presets import params_file
from . import at_least


def _config(args: argparse.Namespace):
    from ..plan.resolve import load_config

    cfg = load_config(args.params, [*(args.set or ()), *([f"device={args.device}"] if args.device else [])])
    if getattr(args, "graph_digest", None) is not None:  # a graph stage's flag (not `ferd stage all`)
        from ..stages.dvc_yaml import stage_digest

        if (digest := stage_digest(cfg, args.stage, getattr(args, "round", None))) != args.graph_digest:
            n = cfg.num_rounds
            these = f"give it {digest}" if digest else f"have no such stage ({n} round{'s' * (n != 1)})"
            raise ValueError(f"params: the stage graph (dvc.yaml) was made from parameters that shape this stage "
                             f"otherwise (its digest {args.graph_digest}; these parameters {these}, with ferd "
                             f"{__version__}: rounds, method, teacher.source, data_root, evaluation.attacks or container "
                             "changed?); regenerate it with `ferd params dvc-yaml` and run again")
    if args.graph_ferd_version is not None and args.graph_ferd_version != __version__:
        raise ValueError(f"--graph-ferd-version: the stage graph (dvc.yaml) was made with ferd {args.graph_ferd_version} "
                         f"but ferd {__version__} is installed; regenerate it with `ferd params dvc-yaml` and run again")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return cfg


def _print(data: dict) -> int:
    """The stage's summary as JSON on stdout: a metric with no value (NaN) is ``null``, as in ``metrics.json``."""
    from ..core.checkpoint import json_safe

    print(json.dumps(json_safe(data), indent=1, default=str, allow_nan=False))
    return 0


def _stage(args: argparse.Namespace) -> int:
    from ..compute import distributed
    from ..algorithm.preflight import preflight
    from ..algorithm.run_dir import owned
    from ..stages import run_task
    from ..stages.io import StageIO

    cfg = _config(args)
    io = StageIO(cfg)
    stage = graph.BY_NAME[args.stage]
    preflight(cfg, teacher=stage.fetches_teacher, evaluation=stage.final)
    rc = distributed.torchrun(cfg.nproc_per_node, args.argv) if stage.data_parallel else None
    if rc is not None:
        return rc
    with distributed.process_group(cfg):
        if not (stage.data_parallel or distributed.is_main()):
            return 0  # under torchrun a stage that is not data-parallel runs on rank 0 alone
        inputs = {inp.flag: io.input(getattr(args, inp.flag)) for inp in stage.inputs}
        with distributed.scratch_for_other_ranks(io.output(args.out)) as out, owned(out):  # one process per dir
            a = run_task(cfg, stage.name, getattr(args, "round", None), inputs, out, progress=not args.no_progress,
                         live=getattr(args, "live", None))
            return _print({**a.summary(), "uri": io.publish(a.dir)}) if distributed.is_main() else 0


def _all(args: argparse.Namespace) -> int:
    from ..compute import distributed
    from ..stages import run_stages

    from ..algorithm.preflight import preflight
    from ..algorithm.run_dir import owned
    from ..stages.io import StageIO

    cfg = _config(args)
    preflight(cfg, evaluation=not args.no_evaluation)
    rc = distributed.torchrun(cfg.nproc_per_node, args.argv)
    if rc is not None:
        return rc
    with distributed.process_group(cfg), \
            distributed.scratch_for_other_ranks(StageIO(cfg).output(args.out), resume=True) as out, owned(out):
        target = args.out if distributed.is_main() else out  # rank 0 publishes (storage.uri), no other rank
        paths = run_stages(cfg, target, evaluate=not args.no_evaluation, progress=not args.no_progress)
    return _print({k: str(v) for k, v in paths.items()}) if distributed.is_main() else 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True, type=params_file,
                   help="YAML parameters: a file, or a preset by name (e.g. params/embedded.yaml or embedded)")
    p.add_argument("-S", "--set", action="append", metavar="KEY=VALUE", help="override a parameter (repeatable)")
    p.add_argument("--out", required=True, help="the stage's output directory (a path, or s3://bucket/prefix)")
    p.add_argument("--device", default=None, help="override `device` for this stage (cpu, cuda, cuda:N)")
    p.add_argument("--threads", type=at_least(0), default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--graph-ferd-version", default=None, metavar="VERSION",
                   help="the ferd version the calling graph (dvc.yaml) was made with, when ferd is installed outside "
                        "the project: refuse another")


def _round(p: argparse.ArgumentParser) -> None:
    p.add_argument("--round", type=int, required=True, help="round r, 0-based (the epochs cfg.round_schedule[r])")


def add_parser(sub: argparse._SubParsersAction) -> None:
    stage = sub.add_parser("stage", help="run one stage of the FERD DAG (teacher-fetch, synthesis, pool-store, "
                                         "distillation, evaluation)", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    ss = stage.add_subparsers(dest="stage", required=True, metavar="STAGE")

    for st in graph.STAGES:  # ferd.plan.graph: each stage's inputs as flags (optional where absent in round 0)
        p = ss.add_parser(st.name, help=st.help)
        _common(p)
        p.add_argument("--graph-digest", default=None, metavar="HEX",
                       help="the digest of this stage's entry in the calling graph (dvc.yaml): refuse parameters that "
                            "give it another")
        if st.per_round:
            _round(p)
        for inp in st.inputs:
            p.add_argument(f"--{inp.flag}", required=inp.of != PREVIOUS, help=describe_input(inp))
        if st.tracked:
            p.add_argument("--live", default=None, metavar="DIR",
                           help="a DVCLive directory for the run's per-epoch curves (rebuilt from the run's history, "
                                "then this stage's epochs as they end; needs ferd[dvc])")
        p.set_defaults(func=_stage)

    p = ss.add_parser("all", help="every stage in order in one process (DIR/teacher, DIR/round-<r>/…, "
                                  "DIR/evaluation)")
    _common(p)
    p.add_argument("--no-evaluation", action="store_true", help="stop after the last distillation")
    p.set_defaults(func=_all)
