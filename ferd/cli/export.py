"""``ferd export RUN --to DIR [--onnx | --no-onnx] [--trust-arch MODULE:FACTORY]``: a finished run's student as files to ship (RUN: a ``ferd run
--out`` directory, or a stage layout: ``ferd stage all --out``, DVC's ``out``)."""

from __future__ import annotations

import argparse
import json
import sys

from . import local_directory, local_path


def _export(args: argparse.Namespace) -> int:
    local_directory(args.to, "--to")
    from ..export import export

    result = export(args.run, args.to, onnx=args.onnx, trust_arch=args.trust_arch)
    for note in result.notes:
        print(f"ferd export: note: {note}", file=sys.stderr)
    print(json.dumps(result.summary(), indent=1))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="a finished run's student as a torch.export program, ONNX and a model card",
                       description="Export the final student of a finished `ferd run --out` directory or of a stage "
                                   "layout (`ferd stage all --out`, DVC's `out` after `dvc repro`): model.pt2 "
                                   "(torch.export, normalisation inside: float32 NCHW images in [0, 1]), model.onnx "
                                   "(with the onnx extra), model_card.json/.md, robustbench.json, export.json.")
    p.add_argument("run", metavar="RUN", type=local_path,
                   help="a finished `ferd run --out` directory, or a stage layout with its evaluation (`out` after "
                        "`make run` / `dvc repro`, the --out of `ferd stage all`)")
    p.add_argument("--to", required=True, metavar="DIR",
                   help="output directory: absent, empty, or an earlier export of the same run (replaced whole)")
    p.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=None,
                   help="--onnx: require model.onnx (refused without `pip install 'ferd[onnx]'`); --no-onnx: skip "
                        "it; default: written when the onnx extra is installed, else a note says how to get it")
    p.add_argument("--trust-arch", action="append", default=[], metavar="MODULE:FACTORY",
                   help="an architecture from outside ferd (package.module:factory) that RUN's parameters may name: "
                        "exporting imports that module and runs its code, so a name read from RUN is refused "
                        "unless given here (repeat for the teacher's); ferd's own and installed ferd.models entry "
                        "points need none")
    p.set_defaults(func=_export)
