"""``ferd bench`` runs on a tiny preset and reports every figure (a smoke test: timings are not asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferd.bench import bench
from ferd.cli import main
from ferd.config import load_config

CI = Path(__file__).resolve().parents[1] / "params" / "ci.yaml"


@pytest.mark.parametrize("cache", ["recompute", "pool"])
def test_bench_reports_iterations_bare_passes_and_flops(cache, single_thread):
    r = bench(load_config(CI, [f"distill.utae.cache={cache}", "distill.utae.target=teacher"]), iterations=2,
              repeats=1, warmup=0)
    for kind in ("generator", "student"):
        assert r[f"{kind}_iteration_s"] > 0 and r[f"{kind}_bare_s"] > 0 and r[f"{kind}_tflops"] > 0
        assert r[f"{kind}_ratio"] == pytest.approx(r[f"{kind}_iteration_s"] / r[f"{kind}_bare_s"])
    assert r["utae_cache"] == cache and r["teacher_macs"] > 0 and r["paper_220_epochs_h"] > 0


def test_bench_cli_writes_json(tmp_path, capsys, single_thread):
    out = tmp_path / "b.json"
    assert main(["bench", "--preset", str(CI), "--iterations", "1", "--repeats", "1", "--warmup", "0",
                 "--out", str(out)]) == 0
    assert "ratio" in capsys.readouterr().out and out.is_file()
