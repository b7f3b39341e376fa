"""The model card of an exported student (``model_card.json`` / ``model_card.md``) and its RobustBench-style
model-info entry (``robustbench.json``), both from the checked records of the run (:mod:`.source`).

Numbers are the run's, never recomputed: ``metrics.json``'s student statistics per attack and
``eval/per_class.json``'s class accuracies, with the per-class retention (student / teacher accuracy of the
class, ``null`` where the teacher gets none right) as :func:`ferd.evaluation.runner.retention` defines it.
JSON has no NaN: a NaN statistic is ``null``.
"""

from __future__ import annotations

import math
from typing import Any

from .. import __version__
from ..attacks import attack_label
from ..core.dataset_catalog import dataset_info
from ..core.provenance import code_version
from .program import input_contract
from .source import RunRecord

CARD_FORMAT = "ferd-model-card/1"


def _normalisation_line(norm: dict) -> str:
    """The card's line on normalisation: ferd's mean/std when set; otherwise none from ferd (an architecture of
    the user's own may normalise in its own ``forward``, which ferd cannot see)."""
    if norm["mean"] is None and norm["std"] is None:
        return ("- no mean/std set in the params (`student.mean`, `student.std`); an architecture of your own "
                "normalises, if at all, in its own forward.")
    return f"- mean {norm['mean'] or 'none'}, std {norm['std'] or 'none'} (applied inside the model)."


def _num(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def eps_fraction(eps: float) -> str:
    """ε as RobustBench writes it (``8/255``), or the decimal when it is no whole k/255."""
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{eps:g}"


def _per_class(record: RunRecord) -> list[dict[str, Any]]:
    names = dataset_info(record.cfg.dataset).class_names
    acc = {(r.model, r.attack, r.class_index): r for r in record.per_class}
    out = []
    for c in range(record.cfg.num_classes):
        row: dict[str, Any] = {"class_index": c, "class_name": names[c] if c < len(names) else str(c)}
        for attack in record.cfg.evaluation.attacks:
            mine, teacher = acc[("student", attack, c)], acc.get(("teacher", attack, c))
            row[attack] = _num(mine.accuracy)
            ratio = None
            if teacher is not None and teacher.accuracy and mine.accuracy is not None:
                ratio = mine.accuracy / teacher.accuracy
            row[f"{attack}_retention"] = ratio
            row["n" if attack != "aa" else "n_aa"] = mine.n
        out.append(row)
    return out


def build_card(record: RunRecord, files: dict[str, str]) -> dict[str, Any]:
    """The model card: what the student is, what it takes, how robust it is and where it came from."""
    cfg, m = record.cfg, record.metrics
    info = dataset_info(cfg.dataset)
    attacks = list(cfg.evaluation.attacks)
    stats = ("avg", "worst", "worst10", "nsd", "retention")
    return {
        "format": CARD_FORMAT,
        "name": f"ferd-{cfg.dataset}-{cfg.student.arch}-{record.student_sha256[:12]}",
        "architecture": cfg.student.arch, "num_classes": cfg.num_classes, "class_names": list(info.class_names),
        "dataset": cfg.dataset, "method": cfg.method,
        "input": input_contract(info.image_size),
        "normalisation": {"mean": cfg.student.mean, "std": cfg.student.std},
        "threat_model": {"norm": "Linf", "eps": cfg.threat.eps, "eps_255": cfg.threat.eps * 255,
                         "pgd_step": cfg.threat.step},
        "evaluation": {"split": "test", "n_examples": cfg.evaluation.n_examples,
                       "aa_examples": cfg.evaluation.aa_examples, "seed": cfg.seed, "attacks": attacks,
                       "attack_labels": {a: attack_label(a) for a in attacks}},
        "metrics": {a: {s: _num(m[f"student.{a}.{s}"]) for s in stats if f"student.{a}.{s}" in m} for a in attacks},
        "teacher_metrics": {a: {s: _num(m[f"teacher.{a}.{s}"]) for s in stats if f"teacher.{a}.{s}" in m}
                            for a in attacks if f"teacher.{a}.avg" in m},
        "per_class": _per_class(record),
        "student_sha256": record.student_sha256,
        "teacher": {"arch": record.teacher_card["arch"], "sha256": record.teacher_card["sha256"],
                    "source": record.teacher_card["source"]},
        "lineage": record.lineage,
        "ferd_version": __version__,
        "exported_by": code_version(),
        "files": files,
    }


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def robustbench_entry(card: dict[str, Any]) -> dict[str, Any]:
    """A RobustBench ``model_info`` entry; without AutoAttack in the run, its robust accuracy is PGD-20's,
    labelled so (``reported`` and ``pgd20_acc``, no ``autoattack_acc``) and said in the footnote."""
    metrics, ev = card["metrics"], card["evaluation"]
    n = ev["aa_examples"] or ev["n_examples"]
    entry = {"link": "", "name": card["name"], "authors": "ferd", "additional_data": False,
             "number_forward_passes": 1, "dataset": card["dataset"], "venue": "",
             "architecture": card["architecture"], "eps": eps_fraction(card["threat_model"]["eps"]),
             "clean_acc": _pct(metrics["clean"]["avg"]) if "clean" in metrics else ""}
    if "aa" in metrics:
        entry["reported"] = entry["autoattack_acc"] = _pct(metrics["aa"]["avg"])
        entry["footnote"] = (f"Data-free robustness distillation (FERD) from teacher {card['teacher']['arch']}; "
                             f"AutoAttack (standard) on {n or 'all'} test images.")
    elif "pgd20" in metrics:
        entry["reported"] = entry["pgd20_acc"] = _pct(metrics["pgd20"]["avg"])
        entry["footnote"] = (f"Data-free robustness distillation (FERD) from teacher {card['teacher']['arch']}; "
                             f"robust accuracy is PGD-20 (not AutoAttack) on {ev['n_examples'] or 'all'} test "
                             "images: an upper bound on AutoAttack accuracy.")
    else:
        entry["footnote"] = "No robust accuracy: the run evaluated neither AutoAttack nor PGD-20."
    entry["unreliable"] = "aa" not in metrics
    return entry


def card_markdown(card: dict[str, Any]) -> str:
    """``model_card.md``: the card for people (the JSON is the record)."""
    attacks = card["evaluation"]["attacks"]
    labels = card["evaluation"]["attack_labels"]
    tm, inp = card["threat_model"], card["input"]
    lines = [f"# {card['name']}", "",
             f"A {card['architecture']} student for **{card['dataset']}** ({card['num_classes']} classes), distilled "
             f"data-free by ferd {card['ferd_version']} (method `{card['method']}`) from a {card['teacher']['arch']} "
             f"teacher (sha256 `{card['teacher']['sha256']}`).", "",
             "## Input", "",
             f"- float32 {inp['layout']} tensor of shape (N, {', '.join(map(str, inp['shape'][1:]))}), pixels in "
             "[0, 1]; the normalisation is inside the model: feed raw pixels.",
             _normalisation_line(card["normalisation"]),
             f"- output: (N, {card['num_classes']}) logits.", "",
             "## Threat model", "",
             f"L∞, ε = {eps_fraction(tm['eps'])} ({tm['eps']:.6f}); PGD step {tm['pgd_step'] * 255:g}/255.", "",
             "## Robustness (test split)", "",
             f"{card['evaluation']['n_examples'] or 'all'} stratified test images, seed {card['evaluation']['seed']}.",
             "", "| attack | avg | worst class | NSD | retention |", "|---|---|---|---|---|"]
    for a in attacks:
        s = card["metrics"][a]
        nsd = "" if s.get("nsd") is None else f"{s['nsd']:.3f}"
        lines.append(f"| {labels[a]} | {_pct(s.get('avg'))} | {_pct(s.get('worst'))} | {nsd} | "
                     f"{_pct(s.get('retention'))} |")
    lines += ["", "Per class (accuracy %, retention % of the teacher's):", "",
              "| class | " + " | ".join(f"{labels[a]} | {labels[a]} retention" for a in attacks) + " |",
              "|---|" + "---|---|" * len(attacks)]
    for row in card["per_class"]:
        lines.append(f"| {row['class_name']} | " + " | ".join(
            f"{_pct(row[a])} | {_pct(row[f'{a}_retention'])}" for a in attacks) + " |")
    lin, code = card["lineage"], card["exported_by"]
    lines += ["", "## Lineage", "",
              f"- student sha256 `{card['student_sha256']}`",
              f"- source: {lin['source']}; parameter fingerprints: " + ", ".join(
                  f"{k} `{v[:16]}…`" for k, v in lin["params_fingerprint"].items()),
              f"- metrics.json sha256 `{lin['metrics_sha256']}`",
              *(f"- {name} artifact `{a['path']}`: manifest sha256 `{a['manifest_sha256']}`"
                for name, a in lin.get("artifacts", {}).items()),
              f"- exported by ferd {code['ferd_version']} (git commit {code['git_commit'] or 'unknown'})", "",
              "## Files", ""] + [f"- `{name}` sha256 `{digest}`" for name, digest in sorted(card["files"].items())]
    return "\n".join(lines) + "\n"
