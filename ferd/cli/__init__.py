"""The ``ferd`` command line: every command module of the package, and nothing else, lives here.

Each sub-command is one module of this package exposing ``add_parser(subparsers) -> None``; the
parser it adds sets ``func`` (called with the parsed args, returns an exit code). The library
(everything outside ``ferd.cli``) has no argparse and never imports from here.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn
from pathlib import Path

from .. import __version__
from ..core.errors import ServiceError
from ..core.environment import check as check_environment

COMMAND_MODULES = (
    "ferd.cli.run",            # ferd run
    "ferd.cli.evaluate",       # ferd evaluate
    "ferd.cli.stage",          # ferd stage <name>
    "ferd.cli.pipeline",       # ferd pipeline run-local|compile|submit|schedule
    "ferd.cli.lineage",        # ferd lineage show|verify
    "ferd.cli.params",         # ferd params use|check|dvc-yaml
    "ferd.cli.bench",          # ferd bench --preset P
    "ferd.cli.compare",        # ferd compare --preset P
    "ferd.cli.data",           # ferd data pack
    "ferd.cli.warm",           # ferd warm -- dvc repro
    "ferd.cli.export",         # ferd export RUN --to DIR
)


BAD_PATH_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EEXIST,
                             errno.EINVAL, errno.ENOENT, errno.EROFS, errno.ELOOP})
# the storage gave out mid-run (a full disk, a file-size limit, a quota): atomic writes left no partial file,
# the same command resumes once there is room; reported like an unreachable object store, status 4
STORAGE_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})
CREDENTIAL_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "aiobotocore", "s3fs")


def module_doc(name: str) -> str | None:
    """A module's docstring read from its source, without importing it (and torch with it): command modules
    import the library only when their command runs, so ``ferd --help`` and ``ferd params`` stay fast."""
    import ast
    import importlib.util

    top, _, rest = name.partition(".")  # find_spec of a submodule would import its packages (ferd.stages: torch)
    path = Path(importlib.util.find_spec(top).origin)
    if rest:
        path = path.parent.joinpath(*rest.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))


class _Parser(argparse.ArgumentParser):
    """argparse with ferd's error format: one line, status 2 (the usage is one ``--help`` away); the help drops the
    reStructuredText markup of the docstrings it shows (``code``, :mod:`name`, a ``::`` before an example)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")

    def format_help(self) -> str:
        import re

        text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", super().format_help())
        text = re.sub(r"^[ \t]*::\n\n", "", text.replace("``", "`"), flags=re.M)  # a lone "::" introducing an example
        return re.sub(r"::$", ":", text, flags=re.M)


class Terminated(KeyboardInterrupt):
    """SIGTERM (Kubernetes evicting a pod, torchrun's agent stopping its ranks, ``kill``), raised like Ctrl-C:
    ``finally`` blocks remove the temporary files of the writes under way and the command ends with one line
    and the shell's status 143, not silently with its temporary files left behind."""


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` while the block runs (main thread only: Python's rule for handlers);
    the previous handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(_signum: int, _frame: object) -> NoReturn:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``minimum`` (counts, repeats, threads, jobs)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text[:40]!r}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ferd", description=(
        "FERD: fairness-enhanced data-free adversarial robustness distillation."))
    parser.add_argument("--version", action="version", version=f"ferd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["stage"]:  # under `ferd warm`: the stage runs in a fork of the warm worker
        from .warm_client import client

        rc = client(argv)
        if rc is not None:
            return rc
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv)  # the command as given: what `nproc_per_node` > 1 starts again under torchrun
    if getattr(args, "no_progress", True) is False and not sys.stderr.isatty():
        args.no_progress = True  # progress bars on a terminal only: in a piped log they are noise
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in CREDENTIAL_LOGGERS:  # their DEBUG records carry signed headers: access key id, session token
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        check_environment()  # the environment variables ferd obeys (signing key included): bad input too
        with _sigterm_raises():
            return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:  # bad input: one clear line, no traceback
        print(f"ferd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: what was finished (checkpoints, kept attacks, runs) stays
        signum = signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT
        what = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
        print(f"ferd {args.command}: {what}; run the same command again to resume from what was kept",
              file=sys.stderr)
        return 128 + signum
    except ModuleNotFoundError as exc:  # an optional dependency: name the extra that brings it
        from ..core.extras import missing_extra

        line = missing_extra(exc)
        if line is None:
            raise
        print(f"ferd {args.command}: error: {line}", file=sys.stderr)
        return 2
    except FloatingPointError as exc:  # a non-finite loss (ferd.compute.numerics): step, loss terms, debug file
        print(f"ferd {args.command}: numerical error: {exc}", file=sys.stderr)
        return 3
    except ServiceError as exc:  # the object store or the Kubeflow API, unreachable through the retries
        print(f"ferd {args.command}: {exc.kind} error: {exc}", file=sys.stderr)
        return 4
    except OSError as exc:  # a path the system refuses (too long, a file where a folder is needed, no access)
        if exc.errno in STORAGE_FULL_ERRNOS:
            print(f"ferd {args.command}: storage error: {_shown(exc.filename)}{exc.strerror} (nothing partial was "
                  "kept: make room, then run the same command again)", file=sys.stderr)
            return 4
        if exc.errno not in BAD_PATH_ERRNOS:
            raise
        print(f"ferd {args.command}: error: {_shown(exc.filename)}{exc.strerror}", file=sys.stderr)
        return 2


def _shown(filename: object) -> str:
    """``"<path>: "`` shortened to 120 characters, or nothing when the error names no file."""
    if filename is None:
        return ""
    return str(filename)[:120] + ("…" if len(str(filename)) > 120 else "") + ": "


def local_path(value: str) -> Path:
    """An argparse ``type``: the path of a local file or directory, a URL refused (:func:`local_directory`)."""
    try:
        local_directory(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--out ")) from None
    return Path(value)


def local_directory(value: str | None, flag: str = "--out") -> None:
    """Refuse a URL where a command writes only to a local directory (``ferd stage`` alone publishes to
    ``s3://``), before any work: ``ValueError`` naming the flag."""
    if value is not None and "://" in value:
        raise ValueError(f"{flag} {value}: expected a local directory (only `ferd stage … --out s3://bucket/prefix` "
                         "writes to object storage; sync a finished local directory with `aws s3 sync`)")

