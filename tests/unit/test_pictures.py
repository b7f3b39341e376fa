"""Issue 35, item 5: pictures where people would rather look — each round's kept synthetic images as a grid
per class, the loss curves (figure and DVC plot files), the report self-contained for the Kubeflow UI."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

from ferd.synthesis import samples
from ferd.evaluation.loss_curves import loss_series
from ferd.evaluation.plots import plot_losses
from ferd.evaluation.portable import inline_images, render_html

HISTORY = [  # two warm-up epochs (generator only), then the student trains; a later release adds kl_*
    {"epoch": 0, "round": 0, "best_terms": {"gen": 3.0, "adv": -0.5, "bn": 2.0}, "distill": {"warmup": 1.0}},
    {"epoch": 1, "round": 0, "best_terms": {"gen": 2.5, "adv": -0.4, "bn": 1.5}, "distill": {"warmup": 1.0}},
    {"epoch": 2, "round": 1, "best_terms": {"gen": 2.0, "adv": -0.3, "bn": 1.0},
     "distill": {"loss": 0.9, "kl_clean": 0.4, "kl_adv": 0.5, "flag": True}},
    {"epoch": 3, "round": 1, "best_terms": {"gen": 1.5, "adv": -0.2, "bn": 0.5}, "distill": {"loss": 0.7}},
]


def _images(n: int) -> torch.Tensor:
    """Image k is the constant (k + 1) / 64 (distinct, in [0, 1], exact in 8 bits only where it matters)."""
    return torch.arange(1, n + 1, dtype=torch.float32).div(64).view(n, 1, 1, 1).expand(n, 3, 8, 8).clone()


def test_the_grid_has_a_row_per_class_holding_the_first_images_of_that_class():
    labels = torch.tensor([2, 0, 2, 2, 1, 2, 2, 2, 2, 2, 2, 2])  # class 2: ten images, class 3: none
    grid = samples.class_grid(_images(12), labels, num_classes=4, per_class=3)
    side = 32 + samples.PAD  # 8×8 images enlarged ×4, one padding between cells
    assert grid.shape == (3, samples.PAD + 4 * side, samples.PAD + 3 * side)

    def cell(row: int, col: int) -> torch.Tensor:
        y, x = samples.PAD + row * side, samples.PAD + col * side
        return grid[:, y:y + 32, x:x + 32]

    first = {0: [1], 1: [4], 2: [0, 2, 3], 3: []}  # the images of each class, in shard order, at most 3
    for c, idx in first.items():
        for col in range(3):
            want = _images(12)[idx[col], 0, 0, 0].item() if col < len(idx) else 1.0  # blank cells are white
            assert torch.all(cell(c, col) == want), (c, col)


def test_the_png_is_deterministic_and_carries_no_metadata(tmp_path):
    labels = torch.tensor([0, 1, 1, 0, 2])
    names = ("airplane", "automobile", "bird")
    a = samples.write_grid(tmp_path / "a.png", _images(5), labels, names)
    b = samples.write_grid(tmp_path / "b.png", _images(5).clone(), labels.clone(), names)
    assert a.read_bytes() == b.read_bytes() == samples.grid_png(_images(5), labels, names)
    chunks, data = [], a.read_bytes()[8:]
    while data:
        n = int.from_bytes(data[:4], "big")
        chunks.append(data[4:8].decode())
        data = data[12 + n:]
    assert set(chunks) == {"IHDR", "IDAT", "IEND"}  # no tIME, tEXt, pHYs: nothing that varies between writes
    image = np.asarray(Image.open(a))
    grid = samples.class_grid(_images(5), labels, 3)
    assert image.shape[0] == grid.shape[1] and image.shape[1] > grid.shape[2]  # the class names on the left
    # the pixels are the images' values in [0, 1] as 8-bit (round to nearest), right of the label margin
    margin = image.shape[1] - grid.shape[2]
    want = grid.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(image[:, margin:], want)


def test_the_round_grids_are_named_by_round(tmp_path):
    from ferd.data.pool import Shard

    shards = [Shard(r, _images(4), torch.tensor([0, 1, 0, 1]), torch.zeros(4, 2), torch.zeros(4, dtype=torch.float64),
                    torch.full((4,), r, dtype=torch.int32)) for r in (0, 3)]
    made = samples.write_round_grids(shards, tmp_path / "samples", ("a", "b"))
    assert [(r, p.name) for r, p in made] == [(0, "round-00.png"), (3, "round-03.png")]
    assert all(p.is_file() for _, p in made)


def test_loss_series_has_every_numeric_term_and_skips_warmup_epochs():
    series = loss_series(HISTORY)
    assert series["generator"] == {"gen": [(0, 3.0), (1, 2.5), (2, 2.0), (3, 1.5)],
                                   "adv": [(0, -0.5), (1, -0.4), (2, -0.3), (3, -0.2)],
                                   "bn": [(0, 2.0), (1, 1.5), (2, 1.0), (3, 0.5)]}
    assert series["student"] == {"loss": [(2, 0.9), (3, 0.7)], "kl_clean": [(2, 0.4)], "kl_adv": [(2, 0.5)]}
    assert loss_series([{"epoch": 0, "distill": {"warmup": 1.0}}]) == {}
    assert loss_series([{"epoch": 0, "distill": {"loss": float("inf")}}]) == {}  # no point for a non-finite value


def test_the_loss_figure_is_drawn(tmp_path):
    path = plot_losses(loss_series(HISTORY), tmp_path / "losses.png")
    assert Image.open(path).size[0] > 600  # two panels


def test_dvc_yaml_declares_the_loss_curves_and_each_rounds_grid():
    from ferd.stages import dvc_yaml
    from ferd.plan.resolve import load_config
    from ferd.plan.presets import PRESETS

    cfg = load_config(PRESETS / "ci.yaml")
    plots = dvc_yaml.dvc_files(cfg)["dvc.yaml"]["plots"]
    assert {"out/live/plots/metrics": {"x": "step"}} in plots  # the loss curves: DVCLive's (ferd.core.tracking)
    assert [p for p in plots if isinstance(p, str)] == [f"out/round-{r}/synthesis/samples.png"
                                                        for r in range(cfg.num_rounds)]


PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def test_inline_images_puts_each_linked_png_into_the_text(tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "a.png").write_bytes(PNG)
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "round-00.png").write_bytes(PNG)
    text = "# R\n\n![A](a.png)\n\n![Round 0](../samples/round-00.png)\n\n![web](https://x/y.png)\n"
    out = inline_images(text, tmp_path / "eval", root=tmp_path)
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert out == f"# R\n\n![A]({uri})\n\n![Round 0]({uri})\n\n![web](https://x/y.png)\n"
    for bad in ("missing.png", "../../outside.png", "../eval/a.txt"):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            inline_images(f"![x]({bad})", tmp_path / "eval", root=tmp_path)
    with pytest.raises(ValueError, match="samples/round-00.png"):  # outside the root (default: the folder)
        inline_images("![x](../samples/round-00.png)", tmp_path / "eval")


def test_render_html_is_one_page_with_tables_images_and_no_raw_html():
    page = render_html("# Title\n\n| a | b |\n|---|---:|\n| 1 | 2 |\n\n<script>alert(1)</script> x <b>y</b>\n\n"
                       "![fig](data:image/png;base64,AAAA)\n", "a <report>")
    assert page.startswith("<!DOCTYPE html>") and "<title>a &lt;report&gt;</title>" in page
    assert "<table>" in page and "<h1>Title</h1>" in page and '<img alt="fig" src="data:image/png;base64,AAAA">' in page
    assert "<script>" not in page and "&lt;script&gt;" in page and "<b>" not in page


def test_the_report_shows_the_grids_and_the_loss_curves(tmp_path):
    from ferd.evaluation.report import write_evaluation
    from ferd.evaluation.runner import evaluate_models

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
    x, y = torch.rand(12, 3, 8, 8), torch.arange(12) % 3
    result = evaluate_models({"teacher": model, "student": model}, x, y, num_classes=3, attacks=("clean",),
                             eps=8 / 255, step=2 / 255, batch_size=12, seed=0, device="cpu", progress=False)
    written = write_evaluation(result, tmp_path / "eval", history=HISTORY,
                               samples=[(0, "../samples/round-00.png"), (1, "../samples/round-01.png")])
    report = written["report.md"].read_text()
    assert written["losses.png"].is_file() and "![Loss curves](losses.png)" in report
    grids = report[report.index("## Synthetic images"):]
    assert "### Round 0\n\n![Round 0](../samples/round-00.png)" in grids
    assert "### Round 1\n\n![Round 1](../samples/round-01.png)" in grids
    plain = write_evaluation(result, tmp_path / "plain")["report.md"].read_text()
    assert "## Synthetic images" not in plain and "losses.png" not in plain
    assert io.BytesIO(written["losses.png"].read_bytes()).read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_grid_of_many_classes_shows_twenty_spread_evenly():
    assert samples.shown_classes(10) == list(range(10))
    assert samples.shown_classes(200) == list(range(0, 200, 10)) and samples.shown_classes(100)[:3] == [0, 5, 10]
    labels = torch.arange(200).repeat_interleave(2)  # two images of every class
    grid = samples.class_grid(_images(400), labels, num_classes=200, per_class=2)
    side = 32 + samples.PAD
    assert grid.shape == (3, samples.PAD + samples.MAX_ROWS * side, samples.PAD + 2 * side)
    y = samples.PAD + 3 * side  # the fourth row is class 30: its first image is image 60
    assert torch.all(grid[:, y:y + 32, samples.PAD:samples.PAD + 32] == _images(400)[60, 0, 0, 0])
    png = Image.open(io.BytesIO(samples.grid_png(_images(400), labels, [f"c{k}" for k in range(200)], 2)))
    assert png.height == grid.shape[1]


def test_the_report_says_which_rows_a_grid_shows():
    from ferd.evaluation.report import _grid_rows

    assert _grid_rows(10) == "one row per class"
    assert _grid_rows(200) == "one row for each of 20 classes spread evenly over the 200"
