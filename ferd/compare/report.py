"""The comparison's outputs, in the layout of the paper's Table 1.

* ``comparison.csv`` — one row per (method, student): for each attack, Avg / Worst / NSD as mean
  and std over seeds (accuracies in %, NSD as a ratio), the number of seeds and the mean wall time.
* ``comparison.json`` — flat ``<method>.<student>.<attack>.<avg|worst|nsd>.<mean|std>`` keys and
  ``…delta_pgd20_worst.{mean,low,high}`` (for ``dvc metrics show``), plus every run's own values.
* ``comparison.md`` — the table (mean ± std), the shared teacher's row, the retention (student ÷
  teacher PGD-20), for every method the paired difference to the reference in worst-class PGD-20,
  average PGD-20 and clean accuracy with 95 % intervals over seeds, and every setting in which each
  arm differs from the reference (:func:`arm_differences`).
* ``per_class_<attack>.png`` — per-class accuracy of every method (mean over seeds) and the teacher.

The interval: for each seed s both methods ran, d_s = worst_method(s) − worst_reference(s)
(paired: same seed, same student init stream); mean(d) ± t_{0.975, n−1}·sd(d)/√n (Student's t, as
the seeds are few). A method is "worse than the reference beyond noise" when the whole interval is
below 0, "better" when it is above 0, otherwise "within noise"; with one seed there is no interval;
when every paired difference is exactly 0 (e.g. both at 0 % in every seed) it says so.

NSD is undefined (0 / 0) for a run whose every class accuracy is 0: its mean and std over seeds
use the seeds where it is defined (the table says how many), and it is ``null`` in the JSON and
empty in the CSV when no seed defines it.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..attacks import ATTACKS
from .plots import plot_per_class
from ..core.checkpoint import atomic_write_bytes, atomic_write_json, json_safe
from ..core.dataset_catalog import dataset_info
from ..core.params_io import dotted
from ..plan.resolve import Plan, resolve
from ..algorithm.round_state import HISTORY_FILE
from ..algorithm.run_dir import METRICS_FILE, is_finished, read_metrics
from ..stages.layout import REPORT_DIR, TEACHER_DIR
from .per_class import class_deltas, per_class_section, pool_share
from .stats import paired_interval, verdict
from .config import DELTAS, LEFT_OUT, Arm, CompareConfig, arm_status, arms, current_teacher, run_config, teacher_config

STATS = ("avg", "worst", "nsd")
log = logging.getLogger(__name__)


def _collect(cc: CompareConfig, out: Path, teacher: tuple[str, str], partial: bool = False
             ) -> tuple[dict, dict, dict, list[str], dict[str, list[str]]]:
    """Every finished run's metrics and per-class accuracies (finished: :func:`~.config.arm_status` against the
    shared teacher, the decision ``ferd compare`` runs by), the class names per student and attack (those of the
    reference's first finished run), the attacks, and the runs left out by why (one warning line each) — with
    ``partial`` only; otherwise a run that is not finished is refused."""
    left: dict[str, list[Arm]] = defaultdict(list)
    finished: list[Arm] = []
    for arm in arms(cc):
        status = arm_status(out / arm.relpath, run_config(cc, arm, teacher))
        if status == "finished":
            finished.append(arm)
        else:
            left[LEFT_OUT[status]].append(arm)
    named = [f"{a.relpath} ({why})" for why, group in left.items() for a in group]
    if named and not partial:
        raise ValueError(f"comparison: {len(named)} of {len(arms(cc))} runs under {out} are not finished runs of "
                         f"this preset: {', '.join(named[:5])}{f' and {len(named) - 5} more' if len(named) > 5 else ''}"
                         "; run `ferd compare` again to (re)run them, or report the finished runs with "
                         "--report-only --partial")
    if not finished:
        raise FileNotFoundError(f"comparison: no run under {out} is a finished run of this preset (of "
                                f"{len(named)}: {', '.join(f'{len(g)} {why}' for why, g in left.items())})")
    for why, group in left.items():
        for a in group:
            log.warning("arm %s student %s seed %d (%s): %s, left out", a.method, a.student, a.seed, a.relpath, why)
    runs: dict[tuple[str, str], dict[int, dict]] = defaultdict(dict)
    per_class: dict[tuple[str, str], dict[str, dict[int, np.ndarray]]] = defaultdict(lambda: defaultdict(dict))
    names: dict[str, dict[str, list[str]]] = defaultdict(dict)  # student → attack → class names
    metrics = {arm: read_metrics(out / arm.relpath / METRICS_FILE) for arm in finished}
    attacks = [a for a in ATTACKS if any(f"student.{a}.avg" in m for m in metrics.values())]
    for arm, m in metrics.items():
        ran = [a for a in attacks if f"student.{a}.avg" in m]  # a seed left out of AutoAttack has no aa
        _check_numbers(out / arm.relpath / METRICS_FILE, m, ["run.seconds", *(f"student.{k}" for k in DELTAS),
                                                               *(f"student.{a}.{s}" for a in ran for s in STATS)])
        runs[arm.method, arm.student][arm.seed] = m
        rows = _per_class_rows(out / arm.relpath / REPORT_DIR)
        for a in ran:
            mine = _class_rows(rows, "student", a, out / arm.relpath / REPORT_DIR)
            known = names[arm.student].setdefault(a, list(dataset_info(run_config(cc, arm).dataset).class_names))
            if [r["class_name"] for r in mine] != known:  # the dataset's classes, in its order
                raise ValueError(f"{out / arm.relpath / REPORT_DIR / 'per_class.csv'}: class_name: expected {known} "
                                 f"under {a}, in class_index order")
            per_class[arm.method, arm.student][a][arm.seed] = np.array([r["accuracy"] for r in mine])
    return runs, per_class, names, attacks, {why: [a.relpath for a in g] for why, g in left.items()}


def _check_numbers(path: Path, metrics: dict, keys: list[str]) -> None:
    for key in keys:
        value = metrics.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"comparison: {path}: {key}: expected a number, got {value!r:.80}")


PER_CLASS_FIELDS = ("model", "attack", "class_index", "class_name", "accuracy")


def _per_class_rows(eval_dir: Path) -> list[dict]:
    """per_class.csv of an evaluation, plus ``eval-aa/`` when AutoAttack ran on its own subset, read as untrusted:
    every row has :data:`PER_CLASS_FIELDS`, an integer class_index ≥ 0 and an accuracy in [0, 1] (parsed), or one
    line names the file, the row and the field."""
    rows = []
    for d in (eval_dir, eval_dir.with_name(eval_dir.name + "-aa")):
        path = d / "per_class.csv"
        if not path.is_file():
            continue
        with path.open(encoding="utf-8", newline="") as f:
            for i, row in enumerate(csv.DictReader(f), start=2):
                where = f"{path}: row {i}"
                missing = [k for k in PER_CLASS_FIELDS if not row.get(k)]
                if missing:
                    raise ValueError(f"{where}: {missing[0]}: expected a value")
                try:
                    index, acc = int(row["class_index"]), float(row["accuracy"])
                except ValueError:
                    raise ValueError(f"{where}: class_index, accuracy: expected an integer and a number") from None
                if index < 0 or not 0 <= acc <= 1:
                    raise ValueError(f"{where}: expected class_index ≥ 0 and accuracy in [0, 1], got {index}, {acc}")
                rows.append({**row, "class_index": index, "accuracy": acc})
    return rows


def _class_rows(rows: list[dict], model: str, attack: str, where: Path) -> list[dict]:
    """``model``'s rows under ``attack``, one per class, in class_index order 0…C−1 (else one line)."""
    mine = sorted((r for r in rows if r["model"] == model and r["attack"] == attack), key=lambda r: r["class_index"])
    if [r["class_index"] for r in mine] != list(range(len(mine))) or not mine:
        raise ValueError(f"{where / 'per_class.csv'}: class_index: expected one row per class 0…C−1 for "
                         f"{model}/{attack}")
    return mine


def _fmt(mean: float, std: float, stat: str, seeds: int, of: int) -> str:
    """mean ± std over seeds; a single seed's value alone (its std is not a measurement)."""
    if stat == "nsd":
        if seeds == 0:
            return "n/a (all classes 0)"
        return (f"{mean:.3f}" + ("" if seeds == 1 else f" ± {std:.3f}")
                + (f" ({seeds} of {of} seeds)" if seeds < of else ""))
    return f"{100 * mean:.1f}" + ("" if of == 1 else f" ± {100 * std:.1f}")


def _cell(row: dict[str, object], attack: str, stat: str) -> str:
    """A table cell: :func:`_fmt` over the seeds evaluated with ``attack``, naming how many when not every seed was."""
    ran, seeds = row.get(f"{attack}_seeds", row["seeds"]), row["seeds"]
    if ran == 0:
        return "—"
    if stat == "nsd":  # NSD names the seeds it is defined on, of all the row's seeds when the attack ran on fewer
        return _fmt(row[f"{attack}_nsd_mean"], row[f"{attack}_nsd_std"], stat, row[f"{attack}_nsd_seeds"],
                    seeds if ran < seeds else ran)
    cell = _fmt(row[f"{attack}_{stat}_mean"], row[f"{attack}_{stat}_std"], stat, 0, ran)
    return cell + (f" ({ran} of {seeds} seeds)" if ran < seeds else "")


def write_report(cc: CompareConfig, out: Path, partial: bool = False) -> dict[str, float]:
    """Write comparison.{csv,json,md} and the per-class plots from the finished runs under ``out``; with
    ``partial``, from those that have finished so far (a long tier's progress), naming the others in
    comparison.md: a paired difference then uses the seeds both methods finished."""
    shared = current_teacher(cc, out)  # what every arm's result must have been made with
    runs, per_class, names, attacks, left = _collect(cc, out, shared, partial)
    teacher = _teacher_metrics(cc, out, shared[1])  # {}: evaluate_teacher: false, or other parameters
    if teacher:
        _check_numbers(out / TEACHER_DIR / REPORT_DIR / METRICS_FILE, teacher,
                       [f"teacher.{a}.{s}" for a in attacks for s in STATS])
    flat: dict[str, float] = {}
    table: list[dict[str, object]] = []
    counted = bool(cc.attack_seeds) or any(  # some seeds are not evaluated with every attack: say how many are
        f"student.{a}.avg" not in m for d in runs.values() for m in d.values() for a in attacks)
    for (method, student), by_seed in runs.items():
        row: dict[str, object] = {"method": method, "student": student, "seeds": len(by_seed),
                                  "seconds": round(float(np.mean([m["run.seconds"] for m in by_seed.values()])), 1)}
        for a in attacks:
            ran = [m for m in by_seed.values() if f"student.{a}.avg" in m]
            if counted:
                row[f"{a}_seeds"] = flat[f"{method}.{student}.{a}.seeds"] = len(ran)
            for s in STATS:
                vals = np.array([m[f"student.{a}.{s}"] for m in ran], dtype=float)
                vals = vals[~np.isnan(vals)]  # NSD: 0 / 0 when every class is at 0 %
                mean = float(vals.mean()) if vals.size else math.nan
                std = float(vals.std(ddof=1)) if vals.size > 1 else (0.0 if vals.size else math.nan)
                row[f"{a}_{s}_mean"], row[f"{a}_{s}_std"] = mean, std
                if s == "nsd":
                    row[f"{a}_nsd_seeds"] = int(vals.size)  # the seeds where NSD is defined
                flat[f"{method}.{student}.{a}.{s}.mean"], flat[f"{method}.{student}.{a}.{s}.std"] = mean, std
        table.append(row)
    deltas = []
    for method in cc.methods:
        if method == cc.reference:
            continue
        for student in cc.students:
            ref, other = runs.get((cc.reference, student), {}), runs.get((method, student), {})
            seeds = sorted(set(ref) & set(other))
            if not seeds:  # partial: nothing to pair yet
                continue
            row = [method, student, len(seeds)]
            for key in DELTAS:
                mean, low, high = paired_interval([other[s][f"student.{key}"] for s in seeds],
                                                  [ref[s][f"student.{key}"] for s in seeds], span=1.0)
                row.append((mean, low, high))
                name = f"{method}.{student}.delta_{key.replace('.', '_')}"
                flat[f"{name}.mean"], flat[f"{name}.low"], flat[f"{name}.high"] = mean, low, high
            deltas.append(tuple(row))
    rows = _per_class_rows(out / TEACHER_DIR / REPORT_DIR) if teacher else []  # the teacher's, read once
    teacher_acc = {a: [float(r["accuracy"]) for r in rows if r["model"] == "teacher" and r["attack"] == a]
                   for a in attacks}
    classes, by_class = _per_class_view(cc, out, per_class, names, attacks, teacher_acc)
    _write_csv(out / "comparison.csv", table)
    atomic_write_json(out / "comparison.json", json_safe({
        "metrics": flat, "runs": {f"{m}.{s}.seed={seed}": v for (m, s), d in runs.items() for seed, v in d.items()},
        "per_class": by_class}))
    _write_markdown(cc, out, table, deltas, teacher, attacks, left, classes)
    plot_per_class(out, per_class, teacher_acc,
                   {a: next((n[a] for n in names.values() if a in n), []) for a in attacks})
    return flat


def _teacher_metrics(cc: CompareConfig, out: Path, sha: str) -> dict:
    """The shared teacher's evaluation when it was made with this preset's parameters and teacher, else {}."""
    ev = out / TEACHER_DIR / REPORT_DIR
    if not is_finished(ev, teacher_config(cc), "teacher-evaluation", sha):
        return {}
    return read_metrics(ev / METRICS_FILE)


def _write_csv(path: Path, table: list[dict[str, object]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(table[0]))
    writer.writeheader()
    writer.writerows([{k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
                      for row in table])
    atomic_write_bytes(path, buf.getvalue().encode())


def _write_markdown(cc, out, table, deltas, teacher, attacks, left=None, classes=()) -> None:
    head = "| method | student | seeds | s/run | " + " | ".join(
        f"{a} {s.capitalize() if s != 'nsd' else 'NSD'}" for a in attacks for s in STATS) + " |"
    lines = [f"# Comparison: {', '.join(cc.methods)}", "",
             f"Base parameters: `{cc.base}` with "
             f"{', '.join(f'`{o}`' for o in cc.set) + ' overrides' if cc.set else 'no overrides'}; budget: equal "
             f"{cc.budget} (the same "
             f"epochs, generator iterations, synthetic batch, student iterations and batch for every method; "
             f"wall time differs and is shown). Seeds {cc.seeds}; accuracies in % (mean ± std over seeds), "
             f"NSD = std/mean of the class-wise accuracies."
             + "".join(f" {a} on seeds {cc.seeds_for(a)} only (`attack_seeds`)." for a in cc.attack_seeds),
             "", head,
             "|" + "---|" * (4 + 3 * len(attacks))]
    missing, other = (left or {}).get(LEFT_OUT["absent"], []), (left or {}).get(LEFT_OUT["stale"], [])
    if missing:
        lines.insert(-2, f"**Partial**: {len(missing)} of {len(arms(cc))} runs have not finished and are left out: "
                         + ", ".join(f"`{m}`" for m in missing) + ".\n")
    if other:
        lines.insert(-2, f"**Left out**: {len(other)} of {len(arms(cc))} runs were made with other parameters than "
                         "this preset's (a changed preset, or files from elsewhere): "
                         + ", ".join(f"`{m}`" for m in other) + ".\n")
    if teacher:
        t_cells = [f"{100 * teacher[f'teacher.{a}.{s}']:.1f}" if s != "nsd" else f"{teacher[f'teacher.{a}.{s}']:.3f}"
                   for a in attacks for s in STATS]
        lines.append("| teacher | — | — | — | " + " | ".join(t_cells) + " |")
        classes_n = teacher_config(cc).num_classes
        if "clean" in attacks and teacher["teacher.clean.avg"] <= 1.5 / classes_n:
            lines.insert(-2, f"**The teacher is at chance level** ({100 * teacher['teacher.clean.avg']:.1f} % clean "
                             f"with {classes_n} classes): no student here can show what distillation does.\n")
    elif (out / TEACHER_DIR / REPORT_DIR / METRICS_FILE).is_file():
        lines.insert(-2, "The teacher's evaluation (`teacher/eval`) was made with other parameters and is left out.\n")
    else:
        lines.insert(-2, "The teacher was not evaluated here (`evaluate_teacher: false`).\n")
    for row in table:
        cells = [_cell(row, a, s) for a in attacks for s in STATS]
        lines.append(f"| {row['method']} | {row['student']} | {row['seeds']} | {row['seconds']} | "
                     + " | ".join(cells) + " |")
    if teacher and "pgd20" in attacks:
        lines += ["", f"Retention (student PGD-20 avg ÷ teacher's {100 * teacher['teacher.pgd20.avg']:.1f} %): "
                  + ", ".join(f"{r['method']} {r['pgd20_avg_mean'] / teacher['teacher.pgd20.avg']:.2f}"
                              for r in table) + "."]
    lines += ["", f"## Each method minus `{cc.reference}` (paired by seed, 95 % t interval, points)", "",
              "| method | student | seeds | Δ worst PGD-20 [95 %] | verdict | Δ avg PGD-20 [95 %] | Δ avg clean [95 %] |",
              "|---|---|---|---|---|---|---|"]
    for method, student, n, worst, avg, clean in deltas:
        lines.append(f"| {method} | {student} | {n} | {_delta(*worst)} | {verdict(*worst[1:])} | {_delta(*avg)} "
                     f"| {_delta(*clean)} |")
    if not deltas:
        lines[-2:] = [f"No other method shares a finished seed with `{cc.reference}` yet: nothing to pair."]
    lines += ["", *classes]
    lines += [f"## How each arm differs from `{cc.reference}`", "",
              "Every setting the arm runs with that differs from the reference's (the distillation as the method "
              "actually runs it, i.e. after the A.8 conversion; seed and student aside).", "",
              "| method | differs in |", "|---|---|"]
    for method, diff in arm_differences(cc).items():
        lines.append(f"| {method} | {'; '.join(diff) if diff else '— (the reference)'} |")
    lines += ["", *[f"![per-class {a}](per_class_{a}.png)" for a in attacks], ""]
    atomic_write_bytes(out / "comparison.md", "\n".join(lines).encode())


def _per_class_view(cc, out, per_class, names, attacks, teacher_acc) -> tuple[list[str], dict]:
    """The per-class section of comparison.md (:mod:`.per_class`, under PGD-20 where it ran, else the last
    attack) and its numbers for comparison.json: per student, the class names, the teacher's accuracies
    (``teacher_acc``: attack → per class, empty when not evaluated), each reweighting arm's pool share and each
    arm's per-class difference to the reference (mean, low, high)."""
    if not attacks:
        return [], {}
    attack = "pgd20" if "pgd20" in attacks else attacks[-1]
    t_acc = teacher_acc.get(attack) or None
    lines, data = [], {}
    for student in cc.students:
        acc = {m: per_class[m, s][attack] for (m, s) in per_class if s == student}
        if cc.reference not in acc:
            continue
        classes = names[student][attack]
        shares = {}
        for m in acc:
            found = [pool_share(out / a.relpath / HISTORY_FILE, len(classes)) for a in arms(cc)
                     if a.method == m and a.student == student and a.seed in acc[m]]
            found = [f for f in found if f is not None]
            share = np.mean(found, axis=0) if found else None
            if share is not None and not np.allclose(share, 1 / len(classes)):  # reweighting arms only
                shares[m] = share
        deltas = {m: class_deltas(acc[m], acc[cc.reference]) for m in acc if m != cc.reference}
        lines += per_class_section(cc.reference, student, attack, classes, acc, shares, t_acc, deltas)
        data[student] = {"attack": attack, "classes": classes, "teacher": t_acc,
                         "pool_share": {m: v.tolist() for m, v in shares.items()}, "delta": deltas}
    return lines, data


def _delta(mean: float, low: float, high: float) -> str:
    return f"{100 * mean:+.1f}" + (" (no interval)" if math.isnan(low) else f" [{100 * low:+.1f}, {100 * high:+.1f}]")


def effective_settings(plan: Plan) -> dict[str, object]:
    """The settings a run actually uses (:class:`ferd.plan.resolve.Plan`), flattened: method, budget, threat, synthesis
    (reweighting as the plan decides: the baselines draw labels uniformly), the distillation its student side
    runs with, and the method's own parameter groups."""
    cfg = plan.cfg
    data = cfg.model_dump(mode="json", include={"method", "epochs", "rounds", "threat", "synthesis"})
    data["synthesis"]["reweighting"]["enabled"] = plan.reweighting is not None
    data["distill"] = plan.distill.model_dump(mode="json")
    if plan.student_side == "own":
        data["distill"]["loss"] = plan.side().description
    for group in plan.method.synthesis_groups:
        data[group] = f"its own synthesis ({group}.*)"
    return dotted(data)


def arm_differences(cc: CompareConfig) -> dict[str, list[str]]:
    """Per method, ``key: value`` for every effective setting that differs from the reference's (first
    student and seed of the preset)."""
    student, seed = cc.students[0], cc.seeds[0]
    ref = effective_settings(resolve(run_config(cc, Arm(cc.reference, student, seed))))
    out = {}
    for method in [cc.reference] + [m for m in cc.methods if m != cc.reference]:
        plan = resolve(run_config(cc, Arm(method, student, seed)))
        mine = effective_settings(plan)
        # a method with its own synthesis group does not read FERD's generator settings
        unused = bool(plan.method.synthesis_groups)
        out[method] = [f"{k}: {_short(mine.get(k))}" for k in sorted(set(ref) | set(mine))
                       if mine.get(k) != ref.get(k) and not (unused and k.startswith("synthesis.")
                                                              and k != "synthesis.reweighting.enabled"
                                                              and k not in SHARED_SYNTHESIS)]
    return out


SHARED_SYNTHESIS = ("synthesis.iterations", "synthesis.batch_size")  # the budget every method shares


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
