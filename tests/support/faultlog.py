"""The fault suite's summary table: each fault test records a row; ``conftest.py`` prints them."""

from __future__ import annotations

ROWS: list[tuple[str, str, bool, int]] = []  # (fault, injected, survived, artifacts lost)


def record(fault: str, injected: str, survived: bool, lost: int) -> None:
    ROWS.append((fault, injected, survived, lost))


def table() -> str:
    head = ("fault", "injected", "survived", "artifacts lost")
    rows = [head, *((f, i, "yes" if s else "NO", str(n)) for f, i, s, n in ROWS)]
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    line = lambda r: "| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows[1:])])
