"""``ferd params``: the project's ``params.yaml`` (every hyper-parameter, resolved) and its ``dvc.yaml``.

::

    ferd params use embedded                 # params/embedded.yaml → params.yaml + dvc.yaml
    ferd params use cifar10-resnet18 -S teacher.source=teachers/wrn-34-10.safetensors
    ferd params check                        # validate params.yaml; dvc.yaml must match it
    ferd params dvc-yaml                     # rewrite dvc.yaml from params.yaml

``params.yaml`` lists every key with its resolved value (a preset in ``params/`` sets only
what differs from the paper's defaults in :mod:`ferd.settings.config`), grouped as the stages read
them, each with its description as a comment. DVC reads it (``params:`` of each stage); every
stage validates it again before any work.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..plan.resolve import load_config
from ..plan.presets import preset_label, preset_path, render_params


def _beside(args: argparse.Namespace) -> None:
    """The generated stages read ``params.yaml`` beside ``dvc.yaml`` (DVC's parameter file): any other ``--params``
    would be checked here and ignored by every stage."""
    expected = Path(args.dvc_yaml).parent / "params.yaml"
    if Path(args.params).absolute() != expected.absolute():
        raise ValueError(f"--params {args.params}: the stages of {args.dvc_yaml} read {expected}; give that file "
                         "(or --dvc-yaml in the folder of your params.yaml)")


def _use(args: argparse.Namespace) -> int:
    from ..core.checkpoint import atomic_write_bytes
    from ..stages.dvc_yaml import pipeline_files, write_dvc_yaml

    _beside(args)
    path = preset_path(args.preset)
    cfg = load_config(path, args.set or ())
    pipeline_files(cfg, args.dvc_yaml)  # where every file goes checked before params.yaml is replaced
    atomic_write_bytes(Path(args.params), render_params(cfg, preset_label(path)).encode())
    n = len(write_dvc_yaml(cfg, args.dvc_yaml))
    print(f"wrote {args.params} (from {preset_label(path)}), {args.dvc_yaml} and {n - 1} round files under rounds/; run `dvc repro`")
    return 0


def _dvc_yaml(args: argparse.Namespace) -> int:
    from ..stages.dvc_yaml import mismatches, write_dvc_yaml

    _beside(args)
    cfg = load_config(args.params)
    if args.check:
        bad = mismatches(cfg, args.dvc_yaml)
        if bad:
            print(f"{', '.join(bad)} {'does' if len(bad) == 1 else 'do'} not match {args.params}: run `ferd params "
                  "dvc-yaml`")
            return 1
        print(f"{args.dvc_yaml} and its round files match {args.params}")
        return 0
    written = write_dvc_yaml(cfg, args.dvc_yaml)
    print(f"wrote {written[0]} and {len(written) - 1} round files under rounds/")
    return 0


def _check(args: argparse.Namespace) -> int:
    _beside(args)
    load_config(args.params)
    args.check = True
    return _dvc_yaml(args)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("params", help="select a preset into params.yaml, check it, regenerate dvc.yaml",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ps = p.add_subparsers(dest="params_action", required=True, metavar="ACTION")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--params", default="params.yaml", help="the parameter file (default params.yaml)")
        q.add_argument("--dvc-yaml", default="dvc.yaml",
                       help="the root DVC pipeline file (default dvc.yaml; the rounds' files go under rounds/ beside it)")

    u = ps.add_parser("use", help="write params.yaml (resolved) and dvc.yaml from a preset in params/")
    u.add_argument("preset", help="a name in params/ (embedded, cifar10-resnet18, …) or a .yaml path")
    u.add_argument("-S", "--set", action="append", metavar="KEY=VALUE", help="override a parameter (repeatable)")
    common(u)
    u.set_defaults(func=_use)
    c = ps.add_parser("check", help="validate params.yaml and check dvc.yaml matches it")
    common(c)
    c.set_defaults(func=_check)
    d = ps.add_parser("dvc-yaml", help="write dvc.yaml from params.yaml")
    d.add_argument("--check", action="store_true", help="only check that dvc.yaml matches")
    common(d)
    d.set_defaults(func=_dvc_yaml)
