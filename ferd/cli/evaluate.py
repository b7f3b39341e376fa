"""``ferd evaluate``: robustness and robust fairness of a teacher (and a student), FERD §5.1.

Example (the shared CIFAR-10 teacher, 200 stratified test images, no AutoAttack)::

    ferd evaluate --teacher ../shared/models/wrn-16-2_cifar10_linf.safetensors \\
        --teacher-arch wrn-16-2 --dataset cifar10 --data-root ../shared/data \\
        --attacks clean,fgsm,pgd20,cw --n-examples 200 --out results/eval

Every argument is checked before any model or data is loaded; a bad one stops
the command with one line naming the flag (exit code 2).
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from fractions import Fraction
from pathlib import Path

from . import local_directory

logger = logging.getLogger(__name__)


def parse_attacks(text: str) -> tuple[str, ...]:
    """``"clean, PGD20"`` → ``("clean", "pgd20")``, checked against the registry as ``evaluation.attacks`` is
    (:func:`ferd.attacks.check_attack_names`)."""
    from ..attacks import check_attack_names

    names = tuple(a.strip().lower() for a in text.split(","))
    try:
        check_attack_names(names)
    except ValueError as exc:
        raise ValueError(f"--attacks: {exc}") from None
    return names


def parse_eps(text: str) -> float:
    """``"8/255"`` or ``"0.0314"`` → float, in the range :class:`ferd.settings.config.ThreatConfig` allows."""
    from ..settings.config import ThreatConfig

    try:
        value = float(Fraction(text.strip())) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"--eps: expected a number or a fraction such as 8/255, got {text[:40]!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"--eps: expected a finite number (pixel scale; 8/255 = {8 / 255:.4f}), got {text[:40]}")
    _checked("--eps", ThreatConfig, eps=value)
    return value


def parse_floats(flag: str):
    """An argparse ``type`` for ``--teacher-mean`` and its kin: ``"0.4914,0.4822,0.4465"`` → a list of floats."""
    def parse(text: str) -> list[float]:
        try:
            return [float(v) for v in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, one per image channel, e.g. "
                                             f"0.4914,0.4822,0.4465, got {text[:40]!r}") from None
    parse.__name__ = f"{flag} list"
    return parse


def _check_normalisation(args: argparse.Namespace) -> None:
    """``--teacher-mean/--teacher-std`` (and the student's): both or neither, one finite value per channel of the
    dataset, every std > 0, as ``teacher.mean``/``teacher.std`` are checked in a run."""
    from ..plan.resolve import check_normalisation

    for who in ("teacher", "student"):
        mean, std = getattr(args, f"{who}_mean"), getattr(args, f"{who}_std")
        if who == "student" and args.student is None and (mean or std):
            raise ValueError("--student-mean/--student-std: only with --student")
        try:
            check_normalisation(who, mean, std, args.dataset)
        except ValueError as exc:
            raise ValueError(str(exc).replace(f"{who}.mean", f"--{who}-mean").replace(f"{who}.std", f"--{who}-std")) \
                from None


def _checked(flag: str, model: type, **values: object) -> None:
    """Validate ``values`` with the configuration's own model; one line naming ``flag`` on failure."""
    from pydantic import ValidationError

    try:
        model(**values)
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ValueError(f"{flag}: {msg}") from None


def _known_arch(flag: str, name: str) -> None:
    from ..models import check_arch

    try:
        check_arch(name)
    except ValueError as exc:
        raise ValueError(f"{flag}: {exc}") from None


def _check_file(path: str, flag: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{flag}: no such file: {path}")
    return p


def validate(args: argparse.Namespace) -> None:
    """Check every argument (and normalise ``attacks``, ``eps``) without loading models or data: the
    values that are also parameters through the configuration's validators (:mod:`ferd.settings.config`)."""
    from ..compute.switches import require_device
    from ..settings.config import EvalConfig

    local_directory(args.out)
    if args.attacks is None:  # every registered attack
        from ..attacks import ATTACKS

        args.attacks = tuple(ATTACKS)
    args.attacks = parse_attacks(args.attacks) if isinstance(args.attacks, str) else tuple(args.attacks)
    args.eps = parse_eps(args.eps) if isinstance(args.eps, str) else float(args.eps)
    _checked("--n-examples", EvalConfig, n_examples=args.n_examples)
    _checked("--batch-size", EvalConfig, batch_size=args.batch_size)
    if args.num_classes is not None and args.num_classes < 2:
        raise ValueError(f"--num-classes: expected an integer >= 2, got {args.num_classes}")
    if (args.student is None) != (args.student_arch is None):
        raise ValueError("--student and --student-arch: give both or neither")
    require_device(args.device, "--device")
    _check_file(args.teacher, "--teacher")
    _known_arch("--teacher-arch", args.teacher_arch)
    if args.student is not None:
        _check_file(args.student, "--student")
        _known_arch("--student-arch", args.student_arch)
    if args.data_root is not None and not args.data_root.startswith("s3://") and not Path(args.data_root).exists():
        raise FileNotFoundError(f"--data-root: no such file or directory: {args.data_root}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: exists and is not a directory: {args.out}")
    if not out.resolve().name:
        raise ValueError(f"--out: expected a folder inside another (its finished attacks are kept beside it), got "
                         f"{args.out}")
    from ..data import dataset_info

    try:
        dataset_info(args.dataset)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"--dataset: {exc}") from None
    _check_normalisation(args)


def run(args: argparse.Namespace) -> int:
    """Validate, load the split (stratified subset), the model(s), evaluate, write the report."""
    validate(args)
    import torch

    from ..data import dataset_info, load_split
    from ..models.loading import load_model
    from ..evaluation.report import summary_table, write_evaluation
    from ..core.checkpoint import sha256_file
    from ..algorithm.run_dir import owned
    from ..evaluation.resume import partial_dir, remove_partial
    from ..evaluation.runner import evaluate_models, stratified_subset

    info = dataset_info(args.dataset)
    num_classes = args.num_classes or info.num_classes
    class_names = list(info.class_names) if len(info.class_names) == num_classes else None
    shas = {"teacher": sha256_file(args.teacher), "student": args.student and sha256_file(args.student)}
    models = {"teacher": load_model(args.teacher, args.teacher_arch, num_classes, args.teacher_mean,
                                    args.teacher_std, sha256=shas["teacher"])}
    if args.student is not None:  # small files first; each loaded as the bytes hashed
        models["student"] = load_model(args.student, args.student_arch, num_classes, args.student_mean,
                                       args.student_std, sha256=shas["student"])
    x, y = load_split(args.dataset, args.split, root=args.data_root)
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if args.n_examples is not None and args.n_examples < len(y):
        idx = torch.from_numpy(stratified_subset(y, args.n_examples, seed=args.seed))
        x, y = x[idx].contiguous(), y[idx]
    t0 = time.perf_counter()
    partial = partial_dir(Path(args.out))  # finished attacks: a stopped evaluation resumes at the one it was in
    with owned(args.out, "--out"):  # one evaluation at a time in a folder and its kept attacks
        result = evaluate_models(models, x, y, num_classes=num_classes, attacks=args.attacks, eps=args.eps,
                                 batch_size=args.batch_size, seed=args.seed, device=args.device,
                                 progress=not args.no_progress, partial=partial)
        result.settings.update(dataset=args.dataset, split=args.split, teacher=str(args.teacher),
                               teacher_sha256=shas["teacher"], teacher_arch=args.teacher_arch,
                               teacher_mean=args.teacher_mean, teacher_std=args.teacher_std,
                               student=args.student, student_sha256=shas["student"], student_arch=args.student_arch,
                               student_mean=args.student_mean, student_std=args.student_std)
        written = write_evaluation(result, args.out, class_names,
                                   title=f"Robustness and robust fairness on {args.dataset} ({args.split})")
        remove_partial(partial)
    print(summary_table(result))
    print(f"{len(written)} files written to {args.out} in {time.perf_counter() - t0:.1f} s "
          f"({result.n_examples} examples)")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``ferd evaluate`` (sets ``func``)."""
    p = subparsers.add_parser(
        "evaluate", help="robustness and robust fairness under FGSM / PGD-20 / CW∞ / AutoAttack",
        description="Evaluate a teacher (and a student) under L∞ attacks and write metrics.json, "
                    "per-class tables, confusion matrices, figures and report.md (FERD §5.1).")
    p.add_argument("--teacher", required=True, metavar="PATH", help="teacher checkpoint (.pt or .safetensors)")
    p.add_argument("--teacher-arch", required=True, metavar="NAME", help="teacher architecture, e.g. wrn-34-10")
    p.add_argument("--student", metavar="PATH", help="student checkpoint")
    p.add_argument("--student-arch", metavar="NAME", help="student architecture, e.g. resnet18")
    for who in ("teacher", "student"):  # what teacher.mean/std (student.mean/std) are in a run
        p.add_argument(f"--{who}-mean", type=parse_floats(f"--{who}-mean"), metavar="M1,M2,M3",
                       help=f"per-channel mean the {who} was trained to subtract inside the model (its "
                            f"{who}.mean in a run; with --{who}-std; default: none, inputs in [0, 1] as they are)")
        p.add_argument(f"--{who}-std", type=parse_floats(f"--{who}-std"), metavar="S1,S2,S3",
                       help=f"per-channel std the {who} divides by (its {who}.std in a run; with --{who}-mean)")
    p.add_argument("--dataset", required=True, metavar="NAME", help="cifar10, cifar100, tiny-imagenet, digits")
    p.add_argument("--data-root", metavar="PATH",
                   help="dataset folder or .npz (default: $FERD_DATA_ROOT, else ~/.cache/ferd/data)")
    p.add_argument("--split", default="test", help="split to evaluate on (default: test)")
    p.add_argument("--attacks", default=None,
                   help="comma-separated registered attacks (ferd.attacks.ATTACKS: clean, fgsm, pgd20, cw, aa, …; "
                        "default: all)")
    p.add_argument("--n-examples", type=int, metavar="N",
                   help="seeded class-stratified subset of N examples (default: the whole split)")
    p.add_argument("--batch-size", type=int, default=256, metavar="B", help="attack batch size (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset, random starts and AutoAttack")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--eps", default="8/255", help="L∞ budget on the [0, 1] scale, e.g. 8/255 (default)")
    p.add_argument("--num-classes", type=int, metavar="C", help="override the dataset's number of classes")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
