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
from pathlib import Path


def _config(args: argparse.Namespace):
    from ..config import load_config

    cfg = load_config(args.params, [*(args.set or ()), *([f"device={args.device}"] if args.device else [])])
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return cfg


def _print(data: dict) -> int:
    print(json.dumps(data, indent=1, default=str))
    return 0


def _io(cfg):
    from ..stages.io import StageIO

    return StageIO(cfg)


def _teacher(args: argparse.Namespace) -> int:
    from ..stages.teacher_fetch import describe, teacher_fetch

    cfg = _config(args)
    io = _io(cfg)
    a = teacher_fetch(cfg, io.output(args.out), progress=not args.no_progress)
    return _print({**describe(a), "uri": io.publish(a.dir)})


def _synthesis(args: argparse.Namespace) -> int:
    from ..stages.rounds import synthesis

    cfg = _config(args)
    io = _io(cfg)
    a = synthesis(cfg, args.round, io.input(args.teacher), io.output(args.out), student_dir=io.input(args.student),
                  previous_dir=io.input(args.previous), progress=not args.no_progress)
    return _print({"dir": a.dir, "uri": io.publish(a.dir), "round": a.round, "epochs": [a.epochs.start, a.epochs.stop],
                   "shard": a.shard, "rows": a.rows, "p": a.p})


def _pool(args: argparse.Namespace) -> int:
    from ..stages.rounds import pool_store

    cfg = _config(args)
    io = _io(cfg)
    a = pool_store(cfg, args.round, io.input(args.synthesis), io.output(args.out), previous_dir=io.input(args.previous))
    return _print({"dir": a.dir, "uri": io.publish(a.dir), "round": a.round, "rounds": a.rounds, "rows": a.rows})


def _distillation(args: argparse.Namespace) -> int:
    from ..stages.rounds import distillation

    cfg = _config(args)
    io = _io(cfg)
    a = distillation(cfg, args.round, io.input(args.teacher), io.input(args.synthesis), io.input(args.pool),
                     io.output(args.out), previous_dir=io.input(args.previous), progress=not args.no_progress)
    return _print({"dir": a.dir, "uri": io.publish(a.dir), "round": a.round, "epochs": [a.epochs.start, a.epochs.stop],
                   "student": a.student, "complete": a.complete, "losses": a.losses})


def _evaluation(args: argparse.Namespace) -> int:
    from ..stages.evaluation import evaluation

    cfg = _config(args)
    io = _io(cfg)
    a = evaluation(cfg, io.input(args.teacher), io.input(args.student), io.output(args.out),
                   progress=not args.no_progress)
    keys = sorted(k for k in a.metrics if k.endswith((".avg", ".worst", ".nsd")))
    return _print({"dir": a.dir, "uri": io.publish(a.dir), "metrics": {k: round(a.metrics[k], 4) for k in keys}})


def _all(args: argparse.Namespace) -> int:
    from ..stages import run_stages

    paths = run_stages(_config(args), args.out, evaluate=not args.no_evaluation, progress=not args.no_progress)
    return _print({k: str(v) for k, v in paths.items()})


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True, help="YAML parameters (e.g. params/embedded.yaml)")
    p.add_argument("-S", "--set", action="append", metavar="KEY=VALUE", help="override a parameter (repeatable)")
    p.add_argument("--out", required=True, type=Path, help="the stage's output directory")
    p.add_argument("--device", default=None, help="override `device` for this stage (cpu, cuda, cuda:N)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _round(p: argparse.ArgumentParser) -> None:
    p.add_argument("--round", type=int, required=True, help="round r, 0-based (epochs round_epochs(T, R)[r])")


def add_parser(sub: argparse._SubParsersAction) -> None:
    stage = sub.add_parser("stage", help="run one stage of the FERD DAG (teacher-fetch, synthesis, pool-store, "
                                         "distillation, evaluation)", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    ss = stage.add_subparsers(dest="stage", required=True, metavar="STAGE")

    p = ss.add_parser("teacher-fetch", help="stage 1: a verified teacher checkpoint + model card")
    _common(p)
    p.set_defaults(func=_teacher)

    p = ss.add_parser("synthesis", help="stage 2: one round of synthesis with reweighting")
    _common(p)
    _round(p)
    p.add_argument("--teacher", required=True, type=Path, help="teacher-fetch artifact")
    p.add_argument("--student", type=Path, help="distillation artifact of round r-1 (not in round 0)")
    p.add_argument("--previous", type=Path, help="synthesis artifact of round r-1 (not in round 0)")
    p.set_defaults(func=_synthesis)

    p = ss.add_parser("pool-store", help="stage 3: append the round's FAE shard to the pool")
    _common(p)
    _round(p)
    p.add_argument("--synthesis", required=True, type=Path, help="synthesis artifact of round r")
    p.add_argument("--previous", type=Path, help="pool artifact of round r-1 (not in round 0; may equal --out)")
    p.set_defaults(func=_pool)

    p = ss.add_parser("distillation", help="stage 4: one round of UTAE distillation")
    _common(p)
    _round(p)
    p.add_argument("--teacher", required=True, type=Path, help="teacher-fetch artifact")
    p.add_argument("--synthesis", required=True, type=Path, help="synthesis artifact of round r")
    p.add_argument("--pool", required=True, type=Path, help="pool artifact of round r")
    p.add_argument("--previous", type=Path, help="distillation artifact of round r-1 (not in round 0)")
    p.set_defaults(func=_distillation)

    p = ss.add_parser("evaluation", help="stage 5: per-class robustness of teacher and final student")
    _common(p)
    p.add_argument("--teacher", required=True, type=Path, help="teacher-fetch artifact")
    p.add_argument("--student", required=True, type=Path, help="distillation artifact of the last round")
    p.set_defaults(func=_evaluation)

    p = ss.add_parser("all", help="every stage in order in one process (DIR/teacher, DIR/round-<r>/…, "
                                  "DIR/evaluation)")
    _common(p)
    p.add_argument("--no-evaluation", action="store_true", help="stop after the last distillation")
    p.set_defaults(func=_all)
