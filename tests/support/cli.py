"""The exit status of ``ferd <argv>`` run in-process, argparse's refusals included."""

from __future__ import annotations

from ferd.cli import main


def status(argv: list[str]) -> int:
    """``main(argv)``'s status, or the status argparse exits with when it refuses an argument."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)
