"""Golden fingerprints of the CI preset's results through all three front doors (issue 17).

The sha256 of the student, of every pool shard and of the metrics (every key but the wall time
``run.seconds``, canonical JSON) for ``ferd run --params params/ci.yaml``, for the stage split and for
every arm of ``ferd compare --preset compare-smoke``. Recorded before the consolidation of issue 17
and kept since: a refactoring that changes a single byte of a result fails the golden tests
(``tests/e2e/test_stages.py``, ``tests/e2e/test_dvc.py``, ``tests/e2e/test_compare.py``).

The bytes are those of torch's and oneDNN's AVX2 kernels (their AVX-512 ones sum in another order):
the repository's ``conftest.py`` pins the kernels with ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``, so
the fingerprints hold on any x86-64 machine. Regenerate only deliberately (a change that is meant to
change results), from finished runs, all with one torch thread and the same two variables exported::

    export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
    ferd run --params params/ci.yaml --out G/run --threads 1
    ferd stage all --params params/ci.yaml --out G/stages --threads 1
    ferd compare --preset compare-smoke --out G/smoke --threads 1
    python tests/support/golden.py G  # rewrites tests/support/golden.json
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

GOLDEN = Path(__file__).with_name("golden.json")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def metrics_sha(path: Path) -> str:
    """sha256 of a metrics.json without its wall time, in canonical JSON (an undefined statistic, written
    ``null``, hashed as NaN: the fingerprints were recorded when it was written as NaN)."""
    metrics = {k: float("nan") if v is None else v for k, v in json.loads(path.read_text()).items()
               if k != "run.seconds"}
    return hashlib.sha256(json.dumps(metrics, sort_keys=True).encode()).hexdigest()


def fingerprint(student: Path, shards: list[Path], metrics: Path) -> dict[str, str]:
    """{file: sha256} of one run's student, pool shards (``round=R/part-N.parquet``) and metrics."""
    out = {"student": _sha(student), "metrics": metrics_sha(metrics)}
    for shard in sorted(shards, key=lambda p: (p.parent.name, p.name)):
        out[f"pool/{shard.parent.name}/{shard.name}"] = _sha(shard)
    return out


def run_fingerprint(run: Path) -> dict[str, str]:
    """A ``ferd run`` output directory (also each arm of ``ferd compare``)."""
    return fingerprint(run / "student.safetensors", list((run / "pool").glob("round=*/*.parquet")),
                       run / "metrics.json")


def stages_fingerprint(out: Path) -> dict[str, str]:
    """A ``ferd stage all`` (or stage-by-stage) output directory of the two-round CI preset (each round's
    pool artifact holds its own shard)."""
    last = max(out.glob("round-*"), key=lambda p: int(p.name.split("-")[1]))
    return fingerprint(last / "distillation" / "student.safetensors", list(out.glob("round-*/pool/round=*/*.parquet")),
                       out / "evaluation" / "metrics.json")


def smoke_fingerprint(out: Path) -> dict[str, dict[str, str]]:
    """Every arm of a ``ferd compare`` output directory, keyed ``method/student/seed=S``."""
    return {str(arm.relative_to(out / "runs")): run_fingerprint(arm)
            for arm in sorted((out / "runs").glob("*/*/seed=*"))}


def load() -> dict:
    """The recorded fingerprints; refused (with the reason) where the AVX2 pin is not in effect."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    assert not capability.startswith(("AVX512", "AMX")), (
        f"torch runs its {capability} kernels: the golden bytes are AVX2 ones; run pytest from the repository "
        "(its conftest.py sets ATEN_CPU_CAPABILITY=avx2 before torch is loaded)")
    return json.loads(GOLDEN.read_text())


def main(root: str) -> None:
    r = Path(root)
    data = {"run": run_fingerprint(r / "run"), "stages": stages_fingerprint(r / "stages"),
            "compare-smoke": smoke_fingerprint(r / "smoke")}
    GOLDEN.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    main(sys.argv[1])
