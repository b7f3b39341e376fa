"""The comparison's per-class figures (``per_class_<attack>.png``): every arm's per-class accuracy (the mean over its
seeds) and the shared teacher's, one figure per attack."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..core.checkpoint import atomic_write_bytes

STYLES = ("-", "--", ":", "-.")  # with more lines than colours, a line's style tells it from its colour's twin


def plot_lines(per_class: dict[tuple[str, str], dict[str, dict[int, np.ndarray]]], attack: str
               ) -> tuple[str, list[tuple[str, np.ndarray]]]:
    """A per-class plot's lines: each (method, student)'s per-class accuracy under ``attack``, the mean over its
    finished seeds evaluated with it (none: no line), labelled; and what the title says of the seeds, which are
    named there when every line has the same, else in each line's label."""
    seeds = {line: sorted(by_attack[attack]) for line, by_attack in per_class.items() if by_attack[attack]}
    shared = len({tuple(s) for s in seeds.values()}) <= 1
    lines = [(f"{method} ({student})" if shared else f"{method} ({student}; seeds {s})",
              np.mean([per_class[method, student][attack][seed] for seed in s], axis=0))
             for (method, student), s in seeds.items()]
    return (f"mean over seeds {next(iter(seeds.values()), [])}" if shared else "mean over each line's seeds"), lines


def line_styles(n: int) -> list[tuple[tuple[float, ...], str]]:
    """(colour, line style) for ``n`` lines, all distinct: tab10's colours solid up to 10 lines, then tab20's
    colours with a style per pass through them (tab10 alone gave an 11th line the first one's colour)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [(cmap(i % cmap.N), STYLES[(i // cmap.N) % len(STYLES)]) for i in range(n)]


def plot_per_class(out: Path, per_class: dict[tuple[str, str], dict[str, dict[int, np.ndarray]]],
                   teacher: dict[str, list[float]], class_names: dict[str, list[str]]) -> None:
    """``out/per_class_<attack>.png`` for each attack of ``teacher`` (attack → the teacher's per-class accuracies,
    empty when it was not evaluated), the teacher dashed black and drawn over the arms; the classes named on the
    axis (attack → names) when there are at most 20 of them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for a, t in teacher.items():
        fig, ax = plt.subplots(figsize=(9, 4))
        title, lines = plot_lines(per_class, a)
        for (label, acc), (colour, style) in zip(lines, line_styles(len(lines))):
            ax.plot(range(len(acc)), acc * 100, style, color=colour, marker="o", ms=3, label=label)
        if t:
            ax.plot(range(len(t)), np.array(t) * 100, "k--", lw=2, zorder=10, label="teacher")
        ax.set(xlabel="class", ylabel=f"{a} accuracy (%)", ylim=(0, 100), title=f"per-class {a} accuracy, {title}")
        names = class_names.get(a, [])
        if 0 < len(names) <= 20:
            ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.legend(fontsize=7, ncol=2)
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        atomic_write_bytes(out / f"per_class_{a}.png", buf.getvalue())
