"""Stage 5, evaluation: teacher and final student on the dataset's test split, per class.

The same :func:`ferd.evaluation.quick.quick_evaluation` that ``ferd run`` calls (``evaluation.attacks``:
clean, FGSM, PGD-20, CW∞, AutoAttack; ``evaluation.n_examples`` a stratified subset), so its
``metrics.json`` equals ``ferd run``'s (less ``run.seconds``) for the same student.

Output directory: ``metrics.json`` (flat ``<model>.<attack>.<statistic>`` keys, accuracies in
[0, 1]), ``eval/`` (per-class tables, confusion matrices, figures, ``report.md``),
``history.json`` and ``class_weights.json`` of the whole run (from the final distillation
artifact), ``plots/`` (CSV for ``dvc plots``: per-class accuracy per attack, per-example
predictions for the confusion matrices, class weights per epoch), ``manifest.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..settings.config import FerdConfig
from ..core.provenance import utc_now
from ..models.loading import load_model
from ..data import dataset_info
from ..evaluation.dvc_plots import write_class_weights
from ..evaluation.resume import partial_dir, remove_partial
from ..synthesis.samples import SAMPLES_DIR, write_round_grids
from ..core.checkpoint import atomic_write_json, copy_file, save_state_dict
from ..compute.switches import set_memory_format
from ..algorithm.round_state import HISTORY_FILE, STUDENT_FILE, class_weights
from ..algorithm.run_dir import METRICS_FILE, write_result
from ..core.tracking import live_tracker
from .artifacts import ArtifactError, check_inputs, read_json, write_json, write_manifest
from .executor import InProcess
from .layout import AA_REPORT_DIR, CLASS_WEIGHTS_FILE, EVALUATION, PLOTS_DIR, REPORT_DIR
from .teacher_fetch import load_teacher


@dataclass(frozen=True)
class EvaluationArtifact:
    dir: Path
    metrics: dict[str, float]
    metrics_file: Path
    report: Path

    def summary(self) -> dict:
        keys = sorted(k for k in self.metrics if k.endswith((".avg", ".worst", ".nsd")))
        return {"dir": self.dir, "metrics": {k: round(self.metrics[k], 4) for k in keys}}

    def confusion(self, attack: str, model: str = "student") -> tuple[list[str], list[list[int]]]:
        """(class names, counts[true][predicted]) of ``model`` under ``attack``, from the report's
        ``confusion_<model>_<attack>.csv`` (AutoAttack on its own subset: ``eval-aa/``)."""
        import csv

        name = f"confusion_{model}_{attack}.csv"
        path = next((d / name for d in (self.dir / REPORT_DIR, self.dir / AA_REPORT_DIR) if (d / name).is_file()), None)
        if path is None:
            raise ArtifactError(f"evaluation: no {name} in {self.dir}; attacks evaluated: "
                                f"{sorted(self.evaluated_attacks())}")
        header, *rows = list(csv.reader(path.read_text().splitlines()))
        return header[1:], [[int(v) for v in row[1:]] for row in rows]

    def evaluated_attacks(self, model: str = "student") -> list[str]:
        """The attacks with a confusion matrix for ``model``, in the order of the flat metrics."""
        return [k.split(".")[1] for k in self.metrics if k.startswith(f"{model}.") and k.endswith(".avg")]


def evaluation(cfg: FerdConfig, out_dir: str | os.PathLike[str], *, teacher: str | os.PathLike[str],
               student: str | os.PathLike[str], progress: bool = False,
               live: str | os.PathLike[str] | None = None) -> EvaluationArtifact:
    """Evaluate the teacher and the student of the *final* distillation artifact; ``live``: a DVCLive directory
    that receives the whole run's curves from its history (:mod:`ferd.core.tracking`)."""
    from ..evaluation.quick import quick_evaluation

    started = utc_now()

    manifest = check_inputs(cfg, "evaluation", teacher=teacher, student=student)["student"]
    teacher_model, _ = load_teacher(cfg, teacher)
    student_dir = Path(student)
    if not manifest.get("complete"):
        raise ArtifactError(f"student: {student_dir} is the student after round {manifest.get('round')} of "
                            f"{manifest.get('rounds')}; evaluation takes the final round's")
    student_model = load_model(student_dir / STUDENT_FILE, cfg.student.arch, cfg.num_classes, cfg.student.mean,
                               cfg.student.std).to(cfg.device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = quick_evaluation(cfg, {"teacher": teacher_model, "student": student_model}, out / REPORT_DIR, progress,
                               plots_dir=out / PLOTS_DIR, history=read_json(student_dir / HISTORY_FILE))
    write_json(out / METRICS_FILE, metrics)
    for name in (HISTORY_FILE, CLASS_WEIGHTS_FILE):
        copy_file(student_dir / name, out / name)
    history = read_json(out / HISTORY_FILE)
    write_class_weights(history, out / PLOTS_DIR, dataset_info(cfg.dataset).class_names)
    live_tracker(live, history)
    remove_partial(partial_dir(out / REPORT_DIR))  # the result is recorded: the kept attacks go, before the manifest
    write_manifest(out, EVALUATION, cfg, started=started, inputs={"teacher": teacher, "student": student},
                   extra={"attacks": list(cfg.evaluation.attacks), "n_examples": cfg.evaluation.n_examples})
    return EvaluationArtifact(out, metrics, out / METRICS_FILE, out / REPORT_DIR / "report.md")


def step(ctx: InProcess, round_index: None, inputs: dict) -> dict[str, float]:
    """The stage in memory (``ferd run``, :mod:`ferd.stages.executor`): the final student, its records and the
    flat metrics (the teacher's too unless ``ctx.evaluate_teacher`` is off) written into ``ctx.out``."""
    from ..evaluation.quick import quick_evaluation

    cfg, state, out = ctx.state.cfg, ctx.state, ctx.out
    teacher = set_memory_format(inputs["teacher"], False)  # evaluation runs contiguous (ferd.compute.switches)
    student = inputs["student"] if inputs["student"] is not None else state.student  # a finished run resumed
    student = set_memory_format(student.eval(), False)
    save_state_dict(student.state_dict(), out / STUDENT_FILE,
                    metadata={"arch": cfg.student.arch, "num_classes": str(cfg.num_classes),
                              "teacher_sha256": ctx.card["sha256"]})
    atomic_write_json(out / CLASS_WEIGHTS_FILE, class_weights(state.history))
    atomic_write_json(out / HISTORY_FILE, state.history)
    models = {"teacher": teacher, "student": student} if ctx.evaluate_teacher else {"student": student}
    grids = write_round_grids(map(state.pool.shard, state.pool.rounds), out / SAMPLES_DIR,
                              dataset_info(cfg.dataset).class_names)  # every round's, also on a resumed run
    metrics = quick_evaluation(cfg, models, out / REPORT_DIR, ctx.progress, history=state.history,
                               samples=[(r, f"../{SAMPLES_DIR}/{p.name}") for r, p in grids])
    metrics["run.seconds"] = ctx.spent()
    write_result(out, cfg, metrics)
    remove_partial(partial_dir(out / REPORT_DIR))  # the result is recorded: the kept attacks go, before the manifest
    return metrics
