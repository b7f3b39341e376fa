"""The shared robust CIFAR-10 teacher (WRN-16-2, L∞ 8/255) under clean / FGSM / PGD-20 / CW∞.

Reference numbers on the full test set (../shared/models/README.md): clean 72.11, FGSM 45.37,
PGD-20 40.93, CW∞ 38.79 (%). Clean accuracy is checked on 200 stratified images (σ ≈ 3 points),
the attacks on 20 of them (≈ 30 s on 2 CPU cores; σ ≈ 11 points), so the bounds are wide and the
ordering is what is checked.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
TEACHER = SHARED / "models" / "wrn-16-2_cifar10_linf.safetensors"
DATA = SHARED / "data" / "cifar10_test.npz"

pytestmark = [pytest.mark.shared,
              pytest.mark.skipif(not (TEACHER.is_file() and DATA.is_file()), reason="needs ../shared")]


def test_shared_teacher_non_aa_attacks(tmp_path):
    from ferd.data import dataset_info, load_split
    from ferd.evaluation.report import write_evaluation
    from ferd.evaluation.runner import evaluate_models, flat_metrics, stratified_subset
    from ferd.models.loading import load_model

    x, y = load_split("cifar10", "test", root=DATA)
    idx = torch.from_numpy(stratified_subset(y, 200, seed=0))
    teacher = load_model(TEACHER, "wrn-16-2", 10)
    clean = evaluate_models({"teacher": teacher}, x[idx].contiguous(), y[idx], num_classes=10,
                            attacks=("clean",), batch_size=200, progress=False)
    assert 0.62 <= flat_metrics(clean)["teacher.clean.avg"] <= 0.82
    idx = torch.from_numpy(stratified_subset(y, 20, seed=0))
    result = evaluate_models({"teacher": teacher}, x[idx].contiguous(), y[idx], num_classes=10,
                             attacks=("clean", "fgsm", "pgd20", "cw"), batch_size=20, seed=0, progress=False)
    m = flat_metrics(result)
    assert 0.1 <= m["teacher.pgd20.avg"] <= 0.75
    assert m["teacher.pgd20.avg"] <= m["teacher.fgsm.avg"] <= m["teacher.clean.avg"]
    assert m["teacher.cw.avg"] <= m["teacher.clean.avg"]
    assert m["teacher.pgd20.nsd"] > m["teacher.clean.nsd"]  # robustness is less equal than accuracy
    files = write_evaluation(result, tmp_path, list(dataset_info("cifar10").class_names))
    assert "airplane" in (tmp_path / "per_class.csv").read_text() and "report.md" in files
