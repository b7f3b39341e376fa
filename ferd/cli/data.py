"""``ferd data pack``: a dataset laid out for ``data_root: s3://…`` (or a folder): one ``.npz`` per split and a
``dataset.json`` with their sizes and sha256, sealed, and signed when ``FERD_SIGNING_KEY`` is set (a consumer with
the key refuses an unsigned or wrongly signed one; :mod:`ferd.data.dataset_json`, :mod:`ferd.data.remote`).

::

    ferd data pack --dataset cifar10 --from ../shared/data/cifar10_test.npz --split test --to s3://bucket/data/cifar10
    ferd data pack --dataset cifar100 --from ~/.cache/ferd/data --to /mnt/datasets/cifar100
"""

from __future__ import annotations

import argparse


def _pack(args: argparse.Namespace) -> int:
    from ..data.pack import pack

    for written in pack(args.dataset, args.source, args.to, args.split):
        print(written)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="lay a dataset out for data_root: s3://… (ferd data pack)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ds = p.add_subparsers(dest="data_action", required=True, metavar="ACTION")
    k = ds.add_parser("pack", help="one .npz per split and dataset.json (sha256 of each; signed under "
                                           "FERD_SIGNING_KEY) to a folder or s3://")
    k.add_argument("--dataset", required=True, help="cifar10 or cifar100")
    k.add_argument("--from", dest="source", required=True, help="a folder the loader reads, or one .npz file")
    k.add_argument("--split", choices=("train", "test"), help="the split a single .npz holds")
    k.add_argument("--to", required=True, help="a folder or s3://bucket/prefix")
    k.set_defaults(func=_pack)
