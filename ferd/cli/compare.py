"""``ferd compare --preset P --out DIR``: methods × students × seeds, then the Table-1-style report.

``--method/--student/--seed`` run one arm only (what a DVC ``matrix`` stage or a Kubeflow
``ParallelFor`` iteration does); ``--teacher-only`` prepares the shared teacher;
``--report-only`` writes the report from finished runs (with ``--partial``, from those finished so
far); a run counts as finished only when its result was made with the preset's current parameters and shared
teacher (the decision ``ferd compare`` skips and sets aside runs by): otherwise ``--report-only`` refuses
(exit 2) and ``--report-only --partial`` leaves it out, one line each on stderr and named in comparison.md
(exit 0; exit 2 when no run is left); ``--write-dvc-yaml DIR`` writes the comparison as DVC stages (:mod:`ferd.compare.dvc`);
``--jobs N`` runs N arms at a time in separate processes with one torch thread each
(results do not depend on it: every arm is seeded on its own); an arm that fails leaves the others running and its
error is raised once they end, while Ctrl-C, SIGTERM or a killed arm stops every arm at once
(:func:`_run_arms_in_processes`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import at_least, local_directory


def _arm_worker(preset: str, out: str, arm: tuple[str, str, int], teacher: tuple[str, str]) -> str:
    import torch

    from ..compare.config import Arm, load_compare
    from ..compare.runner import run_arm

    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    run_arm(load_compare(preset), Arm(*arm), Path(out), teacher)
    return arm[0]


def _worker_init() -> None:
    """A ``--jobs`` worker dies with the ``ferd compare`` that started it and leaves Ctrl-C to it (a terminal sends
    SIGINT to the whole group: the parent stops every worker, none prints a traceback of its own)."""
    import signal

    from ..compute.lifetime import die_with_parent

    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_arms_in_processes(args: argparse.Namespace, cc, out: Path) -> None:
    """``--jobs N``: every arm in a pool of N spawned processes. An arm's error is raised once every arm has ended (the
    others' work is not thrown away); an arm's process that dies (killed, out of memory) ends the command with one
    line, the pool broken (``multiprocessing.Pool`` would wait for its result for ever); Ctrl-C or SIGTERM cancels
    the queued arms and terminates the running ones at once — left to itself, the executor would run every queued
    arm before it let the interrupt through. Each arm resumes from its checkpoint."""
    import logging
    import multiprocessing
    import sys
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from ..compare.config import arms
    from ..compare.runner import prepare_teacher

    out.mkdir(parents=True, exist_ok=True)
    teacher = prepare_teacher(cc, out)
    pool = ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init)
    try:
        todo = arms(cc)
        futures = [pool.submit(_arm_worker, str(args.preset), str(out), (a.method, a.student, a.seed), teacher)
                   for a in todo]
        errors = []
        for arm, future in zip(todo, futures):
            try:
                future.result()
            except BrokenProcessPool:
                print("ferd compare: error: an arm's process ended without a result (killed, or out of memory?); "
                      "the finished arms are kept: run the same command again to resume", file=sys.stderr)
                raise SystemExit(1) from None
            except Exception as exc:  # noqa: BLE001  (the first raised below, after the other arms; each logged)
                logging.getLogger(__name__).error("%s: %s", arm.relpath, exc)
                errors.append(exc)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        for process in multiprocessing.active_children():  # the running arms: the executor would wait for them
            process.terminate()
        raise
    pool.shutdown()
    if errors:
        raise errors[0]


def _compare(args: argparse.Namespace) -> int:
    from ..compare.config import Arm, arms, load_compare, teacher_config
    from ..compare.report import write_report
    from ..algorithm.preflight import preflight
    from ..compare.runner import prepare_teacher, run_comparison

    local_directory(args.out)
    local_directory(args.write_dvc_yaml, "--write-dvc-yaml")
    cc = load_compare(args.preset)  # validates every run's parameters before any work
    if args.write_dvc_yaml:
        from ..compare.dvc import write_dvc_yaml

        print(f"wrote {write_dvc_yaml(cc, args.preset, args.write_dvc_yaml)}")
        return 0
    if not args.out:
        raise ValueError("--out: required (the comparison's output directory)")
    out = Path(args.out)
    if args.report_only and (args.teacher_only or any(v is not None for v in (args.method, args.student, args.seed))):
        raise ValueError("--report-only: writes the report from finished runs and runs nothing; expected no "
                         "--teacher-only, --method, --student or --seed")
    if args.partial and not args.report_only:
        raise ValueError("--partial: only with --report-only (a comparison's runs are all run otherwise)")
    if not args.report_only:  # every run of a preset shares the device, the teacher and the test set
        preflight(teacher_config(cc), evaluation=True)
    if args.teacher_only:
        prepare_teacher(cc, out, progress=not args.no_progress)
        return 0
    one = (args.method, args.student, args.seed)
    if any(v is not None for v in one):
        if any(v is None for v in one):
            raise ValueError("--method, --student and --seed: give all three to run one arm, or none")
        arm = Arm(*one)
        if arm not in arms(cc):
            raise ValueError(f"--method/--student/--seed: {arm} is not an arm of {args.preset}; expected a method "
                             f"of {sorted(cc.methods)}, a student of {cc.students} and a seed of {cc.seeds}")
        run_comparison(cc, out, progress=not args.no_progress, only=arm, threads=args.threads)
        return 0
    if args.report_only:
        write_report(cc, out, partial=args.partial)
    elif args.jobs > 1:
        _run_arms_in_processes(args, cc, out)
        write_report(cc, out)
    else:
        run_comparison(cc, out, progress=not args.no_progress, threads=args.threads)
    flat = json.loads((out / "comparison.json").read_text())["metrics"]
    print((out / "comparison.md").read_text())
    print(f"wrote {out}/comparison.md, comparison.csv, comparison.json and per_class_*.png ({len(flat)} metrics)")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="FERD against baselines and ablations: methods × students × seeds",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", required=True,
                   help="a comparison preset: the name of a params/compare-*.yaml (compare-smoke, compare-cpu, "
                        "compare-cifar10-cpu, compare-gpu, …) or a YAML path")
    p.add_argument("--out", metavar="DIR", help="output directory, resumable (required, except with --write-dvc-yaml)")
    p.add_argument("--method", help="run only this method's arm (with --student and --seed)")
    p.add_argument("--student", help="the arm's student architecture")
    p.add_argument("--seed", type=int, help="the arm's seed")
    p.add_argument("--teacher-only", action="store_true", help="only train/load and evaluate the shared teacher")
    p.add_argument("--write-dvc-yaml", metavar="DIR", help="write the comparison as DVC stages to DIR/dvc.yaml")
    p.add_argument("--report-only", action="store_true", help="only write the report from finished runs")
    p.add_argument("--partial", action="store_true",
                   help="with --report-only: report the runs finished with this preset's parameters so far and name "
                        "the others (not finished, or made with other parameters)")
    p.add_argument("--jobs", type=at_least(1), default=1, help="arms run at a time (processes, 1 torch thread each)")
    p.add_argument("--threads", type=at_least(0), default=0, help="torch CPU threads with --jobs 1 (0: default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_compare)
