"""``ferd lineage show | verify`` (:mod:`ferd.stages.lineage`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import module_doc


def _show(args: argparse.Namespace) -> int:
    from ..stages.lineage import chain, describe_node

    nodes = chain(args.artifact)
    if args.json:
        print(json.dumps(nodes, indent=1, default=str))
    else:
        print("\n".join(describe_node(n) for n in nodes))
    return 1 if any(n.get("missing") for n in nodes) else 0


def _verify(args: argparse.Namespace) -> int:
    from ..stages.lineage import verify_run

    report = verify_run(args.run)
    for line in report.problems:
        print(f"FAIL {line}", file=sys.stderr)
    status = "OK" if report.ok else f"FAILED ({len(report.problems)} problems)"
    print(f"lineage verify {args.run}: {status}: {report.checked_artifacts} artifacts, "
          f"{report.checked_files} files re-hashed; {report.authenticity}")
    return 0 if report.ok else 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lineage", help="show or verify where an artifact came from",
                       description=module_doc("ferd.stages.lineage"),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ls = p.add_subparsers(dest="lineage", required=True, metavar="ACTION")
    s = ls.add_parser("show", help="the chain from an artifact (or a file in one) back to the teacher")
    s.add_argument("artifact", type=Path)
    s.add_argument("--json", action="store_true", help="the chain as JSON, manifests included")
    s.set_defaults(func=_show)
    v = ls.add_parser("verify", help="re-hash every artifact under a run directory")
    v.add_argument("run", type=Path)
    v.set_defaults(func=_verify)
