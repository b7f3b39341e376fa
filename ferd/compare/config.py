"""A comparison preset (``params/compare-*.yaml``): methods × students × seeds at one stated budget.

Budget: **equal iterations**. Every run starts from the same base parameters (``base`` + ``set``),
so every method gets the same epochs, generator iterations per epoch and synthetic batch
(``synthesis.iterations``, ``synthesis.batch_size``: the same number of kept synthetic samples),
and the same student iterations, batch, optimiser and schedule (``distill.*``: the same number of
student updates, each on two student passes plus a 10-step attack). What a generator iteration
costs differs by method (FERD adds the bottleneck fit, CMI a second teacher view), so the
comparison also reports each method's wall time; it does not equalise it.

A method's entry is a list of ``KEY=VALUE`` overrides on top of the base, e.g.
``deepinv: [method=deepinv]`` or ``ferd-no-reweighting: [synthesis.reweighting.enabled=false]``.
The teacher is trained (or loaded) once, with ``teacher_seed``, and shared by every run.

A preset may ``extends: <another compare preset>`` (a tier at a larger budget): every field it does
not give is the parent's, and its ``set`` is merged into the parent's by key (an override of a key
the parent sets replaces it in place; a new key is appended), so the resolved ``set`` reads as if
written out in full. Other fields given in the child replace the parent's; ``methods`` may also be a
list of the parent's arm names (``methods: [ferd, fast]``), which keeps those arms, in that order.

Whether an arm's folder holds this preset's result is decided once, by :func:`arm_status`, for ``ferd compare``
(which skips a finished arm and sets a stale one aside) and for its report (which includes only finished
arms); :func:`current_teacher` is the shared teacher a report-only run checks the arms against.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..core.checkpoint import read_json_object_or_none, sha256_file
from ..settings.config import FerdConfig
from ..plan.fingerprint import legacy_fingerprint, params_fingerprint
from ..core.params_io import ConfigError
from ..plan.resolve import load_config
from ..core.params_io import load_yaml
from ..plan.presets import find_preset, known_presets
from ..algorithm.run_dir import METRICS_FILE, PARAMS_FILE, RESULT_FILE, RunDirError, check_run_dir, is_finished, read_metrics
from ..core.storage import MANIFEST
from ..stages.layout import TEACHER_DIR

NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
MAX_EXTENDS = 8  # a chain of presets deeper than this is a mistake, not a design
DELTAS = ("pgd20.worst", "pgd20.avg", "clean.avg")  # paired differences to the reference, in this order
PAIRED_ATTACKS = tuple(dict.fromkeys(k.split(".")[0] for k in DELTAS))  # the attacks every seed must run
# what the comparison holds equal or sets itself: an arm's override of one would be dropped (seed, student.arch, the
# shared teacher) or would break the equal budget and the shared test set the report claims
SHARED_KEYS = {"seed": "`seeds`", "student.arch": "`students`", "teacher": "the shared teacher (`set`)",
               "dataset": "`set`", "data_root": "`set`", "threat": "`set`", "evaluation": "`set`",
               "epochs": "the budget (`set`)", "synthesis.iterations": "the budget (`set`)",
               "synthesis.batch_size": "the budget (`set`)", "distill.iterations": "the budget (`set`)",
               "distill.batch_size": "the budget (`set`)"}


class CompareConfig(BaseModel):
    """A comparison preset (``params/compare-*.yaml``, or a YAML file of yours): every run starts from ``base`` with
    ``set`` applied, then its method's overrides, its student and its seed. ``extends: <preset>`` (a name or a
    path) takes another preset's fields and states what differs: ``set`` merges by key, other fields replace, and
    ``methods`` may be a list of the parent's arm names. An arm may not override what the comparison holds equal or
    sets itself (the seed, the student, the teacher, the dataset, the threat model, the evaluation and the budget):
    those belong in ``set``, ``students`` and ``seeds``. Every run's parameters are checked before the first
    starts."""

    model_config = ConfigDict(extra="forbid")

    base: str = Field(description="the params preset every run starts from (params/<base>.yaml or a path)")
    set: list[str] = Field([], description="KEY=VALUE overrides applied to every run (the shared budget)")
    budget: Literal["iterations"] = Field("iterations", description="what is equal across methods: the "
                                         "epochs, generator and student iterations and batches (wall time differs "
                                         "and is reported)")
    methods: dict[str, list[str]] = Field(description="name → overrides; the reference method must be present")
    reference: str = Field("ferd", description="the method every other is compared with")
    students: list[str] = Field(min_length=1, description="student architectures (student.arch)")
    seeds: list[int] = Field(min_length=1, description="run seeds (student init, generator, sampling, attacks)")
    teacher_seed: int = Field(0, ge=0, description="seed of the shared teacher (when the base trains one)")
    evaluate_teacher: bool = Field(True, description="evaluate the shared teacher once (false: its figures are "
                                   "known, e.g. from its provider, and the attacks would cost hours)")
    attack_seeds: dict[str, list[int]] = Field({}, description="attack → the seeds whose runs it evaluates, for "
                                               "an attack too costly for every seed (`{aa: [0, 1]}`: AutoAttack on "
                                               "seeds 0-1 only; on a CPU it can cost as much as the training); an "
                                               "attack not named here evaluates every seed")

    @field_validator("methods")
    @classmethod
    def _names(cls, methods: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, overrides in methods.items():
            if not NAME.match(name):
                raise ValueError(f"method name {name!r}: expected lower-case letters, digits, '.', '_' or '-'")
            for item in overrides:
                key = item.partition("=")[0].strip()
                shared = next((k for k in SHARED_KEYS if key == k or key.startswith(k + ".")), None)
                if shared is not None:
                    raise ValueError(f"{name}: {key}: the same for every arm, given by {SHARED_KEYS[shared]}; "
                                     "expected an override of the method itself")
                held = next((k for k in SHARED_KEYS if k.startswith(key + ".")), None)  # a whole group replaced
                if held is not None:
                    raise ValueError(f"{name}: {key}: replaces a group holding {held}, the same for every arm "
                                     f"(given by {SHARED_KEYS[held]}); expected the keys the method changes, one "
                                     f"by one ({key}.<key>=…)")
        return methods

    @field_validator("students")
    @classmethod
    def _plain_students(cls, students: list[str]) -> list[str]:
        from ..models import PLAIN_NAME  # each names a directory and a DVC matrix item

        if len(set(students)) != len(students):
            raise ValueError(f"expected distinct architectures, got {students}")
        for name in students:
            if not PLAIN_NAME.fullmatch(name):
                raise ValueError(f"student {name!r}: expected a plain architecture name (letters, digits, '_', '.', "
                                 "'+', '-'); a package.module:factory names no directory: register it as a "
                                 "ferd.models entry point (docs/bring-your-own-teacher.md)")
        return students

    @field_validator("seeds")
    @classmethod
    def _unique(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ValueError(f"expected distinct seeds >= 0, got {seeds}")
        return seeds

    @model_validator(mode="after")
    def _reference(self) -> CompareConfig:
        if self.reference not in self.methods:
            raise ValueError(f"reference: {self.reference!r} is not one of methods {sorted(self.methods)}")
        return self

    @model_validator(mode="after")
    def _attack_seeds(self) -> CompareConfig:
        for attack, seeds in self.attack_seeds.items():
            if attack in PAIRED_ATTACKS:
                raise ValueError(f"attack_seeds: {attack!r}: the paired differences ({', '.join(DELTAS)}) need it on "
                                 "every seed; expected another attack")
            if not seeds or len(set(seeds)) != len(seeds) or set(seeds) - set(self.seeds):
                raise ValueError(f"attack_seeds: {attack}: expected distinct seeds of {self.seeds}, got {seeds}")
        return self

    def seeds_for(self, attack: str) -> list[int]:
        """The seeds whose runs ``attack`` evaluates (where their parameters name it), in the preset's order."""
        return [s for s in self.seeds if s in self.attack_seeds.get(attack, self.seeds)]


@dataclass(frozen=True)
class Arm:
    """One run of a comparison."""

    method: str
    student: str
    seed: int

    @property
    def relpath(self) -> str:
        return f"runs/{self.method}/{self.student}/seed={self.seed}"


def preset_path(preset: str | Path) -> Path:
    """``compare-smoke`` → its file (``./params/`` or ferd's own presets, :func:`ferd.plan.presets.find_preset`);
    a path is taken as is (a name found nowhere stays ``params/<name>.yaml``, refused by the caller)."""
    path = Path(preset)
    if path.suffix in (".yaml", ".yml") or path.parent != Path("."):
        return path
    return find_preset(str(preset)) or Path("params") / f"{preset}.yaml"


def merge_overrides(parent: list[str], child: list[str]) -> list[str]:
    """``KEY=VALUE`` lists merged by key: the child's value replaces the parent's in place, new keys
    follow in the child's order (``[a=1, b=2]`` + ``[b=3, c=4]`` → ``[a=1, b=3, c=4]``). A child's ``threat.eps``
    without a ``threat.step`` drops the parent's step, which was for the parent's ε: the new ε takes ε/4, as an
    override of a parameter file's ε does (:func:`ferd.plan.resolve.load_config`)."""
    merged = {item.partition("=")[0]: item for item in parent}
    child_keys = {item.partition("=")[0] for item in child}
    if "threat.eps" in child_keys and "threat.step" not in child_keys:
        merged.pop("threat.step", None)
    merged.update((item.partition("=")[0], item) for item in child)
    return list(merged.values())


def _read_preset(path: Path) -> tuple[dict, list[Path]]:
    """A preset's fields with its ``extends`` chain resolved, and the files it was read from
    (the preset first, then each parent)."""
    data: dict = {}
    files: list[Path] = []
    while True:
        if len(files) > MAX_EXTENDS or path.resolve() in [f.resolve() for f in files]:
            chain = " → ".join(f.stem for f in [*files, path])
            raise ConfigError(f"{files[0]}: extends: a cycle or a chain over {MAX_EXTENDS} presets ({chain})")
        if not path.is_file():
            where = f"{files[-1]}: extends: " if files else "--preset: "
            known = known_presets("compare-")
            raise FileNotFoundError(f"{where}{path} not found; expected one of {known} or a YAML path")
        fields = load_yaml(path.read_text(), str(path)) or {}
        if not isinstance(fields, dict):
            raise ConfigError(f"{path}: expected a mapping of comparison fields, got {type(fields).__name__}")
        files.append(path)
        sets = [fields.get("set", []), data.get("set", [])]
        data = {**fields, **data}
        if all(isinstance(s, list) and all(isinstance(i, str) for i in s) for s in sets):
            data["set"] = merge_overrides(*sets)
        picked, known = data.get("methods"), fields.get("methods")  # a child's pick from this parent's arms
        if len(files) > 1 and isinstance(picked, list) and isinstance(known, (dict, list)):
            missing = [m for m in picked if not isinstance(m, str) or m not in known]
            if len(set(map(str, picked))) != len(picked):
                raise ConfigError(f"{files[0]}: methods: expected each arm once, got {picked}")
            if missing:
                raise ConfigError(f"{files[0]}: methods: {missing[0]!r:.80} is not an arm of {path.stem}; "
                                  f"expected some of {list(known)}")
            data["methods"] = {m: known[m] for m in picked} if isinstance(known, dict) else picked
        parent = data.pop("extends", None)
        if parent is None:
            if isinstance(data.get("methods"), list):
                raise ConfigError(f"{files[0]}: methods: a list of names picks arms of the preset it `extends`; "
                                  "without one, expected a mapping of method name → overrides")
            return data, files
        if not isinstance(parent, str):
            raise ConfigError(f"{path}: extends: expected the name or path of a compare preset, got {parent!r:.80}")
        path = preset_path(parent)


def preset_files(preset: str | Path) -> list[Path]:
    """The files a preset is read from: itself, then its ``extends`` chain (DVC ``deps``)."""
    return _read_preset(preset_path(preset))[1]


def load_compare(preset: str | Path) -> CompareConfig:
    """Read and validate a comparison preset (its ``extends`` chain resolved), and every run's
    parameters, before any work."""
    path = preset_path(preset)
    data, _ = _read_preset(path)
    try:
        cc = CompareConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid comparison preset: " + "; ".join(_error_lines(exc)[:10])) from None
    try:
        load_config(base_path(cc), cc.set)  # the shared part first: its mistake named as `set`'s, not an arm's
    except ConfigError as exc:
        raise ConfigError(f"{path}: set: {exc}") from None
    evaluated: set[str] = set()
    for arm in arms(cc):
        cfg = run_config(cc, arm)  # refuses a bad override now, not an hour in
        missing = sorted(set(PAIRED_ATTACKS) - set(cfg.evaluation.attacks))
        if missing:
            raise ConfigError(f"method {arm.method!r}: evaluation.attacks must include {missing} (the report pairs "
                              f"{', '.join(DELTAS)} with the reference's), got {cfg.evaluation.attacks}")
        evaluated.update(cfg.evaluation.attacks)
    for attack in cc.attack_seeds:
        if attack not in evaluated:
            raise ConfigError(f"{path}: attack_seeds: {attack!r}: expected an attack of evaluation.attacks "
                              f"{sorted(evaluated)}")
    return cc


def _error_lines(exc: ValidationError) -> list[str]:
    """One ``field: message`` per error; an unknown field names the closest known one."""
    import difflib

    lines = []
    for e in exc.errors():
        where = ".".join(map(str, e["loc"]))[:200]
        message = e["msg"].removeprefix("Value error, ")[:300]
        if e["type"] == "extra_forbidden" and len(e["loc"]) == 1:
            close = difflib.get_close_matches(str(e["loc"][0]), [*CompareConfig.model_fields, "extends"], n=1)
            message = "unknown field" + (f" (did you mean {close[0]}?)" if close else
                                         f"; expected one of {', '.join(CompareConfig.model_fields)}")
        lines.append(f"{where}: {message}" if where else message)
    return lines


def base_path(cc: CompareConfig) -> Path:
    return preset_path(cc.base)


def arms(cc: CompareConfig) -> list[Arm]:
    """Every run, reference method first, then methods in preset order; students, then seeds."""
    names = [cc.reference] + [m for m in cc.methods if m != cc.reference]
    return [Arm(m, s, seed) for m in names for s in cc.students for seed in cc.seeds]


def teacher_config(cc: CompareConfig) -> FerdConfig:
    """The parameters the shared teacher is trained or loaded with."""
    return load_config(base_path(cc), [*cc.set, f"seed={cc.teacher_seed}"])


def run_config(cc: CompareConfig, arm: Arm, teacher: tuple[str, str] | None = None) -> FerdConfig:
    """One run's parameters: base, then ``set``, then the method's overrides, then student and seed
    (and, once the shared teacher exists, its checkpoint path and sha256), less the attacks its seed is not
    evaluated with (:meth:`CompareConfig.seeds_for`)."""
    extra = [f"teacher.source={json.dumps(teacher[0])}", f"teacher.sha256={json.dumps(teacher[1])}"] if teacher else []
    overrides = [*cc.set, *cc.methods[arm.method], f"student.arch={arm.student}", f"seed={arm.seed}", *extra]
    try:
        cfg = load_config(base_path(cc), overrides)
        kept = [a for a in cfg.evaluation.attacks if arm.seed in cc.seeds_for(a)]
        if kept == list(cfg.evaluation.attacks):
            return cfg
        return load_config(base_path(cc), [*overrides, f"evaluation.attacks=[{','.join(kept)}]"])
    except ConfigError as exc:
        raise ConfigError(f"method {arm.method!r} (student {arm.student}, seed {arm.seed}): {exc}") from None


ArmStatus = Literal["finished", "absent", "unfinished", "outdated", "stale"]
LEFT_OUT: dict[str, str] = {  # why a report leaves an arm out, by its status
    "absent": "has not finished", "unfinished": "has not finished",
    "outdated": "made with other parameters", "stale": "made with other parameters"}


def arm_status(run_dir: Path, cfg: FerdConfig) -> ArmStatus:
    """The one decision of what an arm's folder holds for the run ``cfg``: ``finished`` (a ``result.json`` with
    ``cfg``'s fingerprint and its metrics' sha256: reused and reported), ``absent`` (nothing yet), ``unfinished``
    (a run of these parameters without metrics yet: resumed), ``outdated`` (that run, but its metrics were made
    with other parameters or changed since their ``result.json``: evaluated again) or ``stale`` (a run made with other parameters, or
    no ferd run: set aside and run again). A report includes only ``finished`` arms."""
    if finished_arm_metrics(run_dir, cfg) is not None:
        return "finished"
    try:
        kind = check_run_dir(run_dir, cfg)
    except RunDirError:
        return "stale"
    if kind == "new":
        return "absent"
    return "outdated" if (run_dir / METRICS_FILE).exists() else "unfinished"  # numbers, not this run's: evaluated again


def finished_arm_metrics(run_dir: Path, cfg: FerdConfig) -> dict[str, float] | None:
    """The metrics of the arm's folder when it holds a finished run of ``cfg``, else None. A run with its
    ``manifest.json`` has every file verified first (signature included under ``FERD_SIGNING_KEY``; a changed,
    added or unsigned file is a :class:`~ferd.stages.run.RunRecordError`, never a finished arm). A run recorded
    without one (a kept result of an earlier ferd) counts by its ``result.json`` alone, and only when no
    signing key is set: with a key, every record that decides what is reported must be signed."""
    from ..core.provenance import signing_key
    from ..stages.run import finished_metrics

    if (run_dir / MANIFEST).is_file():
        return finished_metrics(run_dir, cfg)
    if signing_key() is None and (is_finished(run_dir, cfg) or _finished_before_pinning(run_dir, cfg)):
        return read_metrics(run_dir / METRICS_FILE)
    return None


def _finished_before_pinning(run_dir: Path, cfg: FerdConfig) -> bool:
    """A result recorded with :func:`~ferd.plan.fingerprint.legacy_fingerprint` (its teacher's path in it): finished
    when its own ``params.json`` gives that fingerprint and, without the path, ``cfg``'s."""
    record, stored = read_json_object_or_none(run_dir / RESULT_FILE), read_json_object_or_none(run_dir / PARAMS_FILE)
    if record is None or stored is None or not (run_dir / METRICS_FILE).is_file():
        return False
    try:
        same = (record.get("params_fingerprint") == legacy_fingerprint(stored, "evaluation")
                and params_fingerprint(stored, "evaluation") == params_fingerprint(cfg, "evaluation"))
    except (KeyError, TypeError, ValueError):  # no config of this version
        return False
    return (same and record.get("model_sha256") is None
            and record.get("metrics_sha256") == sha256_file(run_dir / METRICS_FILE))


SHA256 = re.compile(r"^[0-9a-f]{64}$")


def current_teacher(cc: CompareConfig, out: Path) -> tuple[str, str]:
    """The shared teacher under ``out/teacher`` (checkpoint path, sha256) as its model card gives it, refused
    unless the card was made with this preset's teacher parameters (``teacher_seed``, the teacher group, …) and
    the checkpoint, where it is kept, has the card's sha256. A report checks the arms against it."""
    from ..algorithm.teacher_source import CARD_NAME

    path = out / TEACHER_DIR / CARD_NAME
    if not path.is_file():
        raise FileNotFoundError(f"comparison: {path} is missing (no shared teacher under {out}); run `ferd compare` "
                                "first")
    card = read_json_object_or_none(path) or {}
    for field, ok in (("sha256", lambda v: isinstance(v, str) and SHA256.match(v)),
                      ("params_sha256", lambda v: isinstance(v, str)),
                      ("checkpoint", lambda v: isinstance(v, str) and v and Path(v).name == v)):
        if not ok(card.get(field)):
            raise ValueError(f"comparison: {path}: {field}: expected a teacher model card's "
                             f"{'file name' if field == 'checkpoint' else 'sha256'}, got {card.get(field)!r:.80}")
    cfg = teacher_config(cc)
    if card["params_sha256"] not in (params_fingerprint(cfg, "teacher"), legacy_fingerprint(cfg, "teacher")):
        raise ValueError(f"comparison: {path}: the shared teacher was made with other parameters than "
                         f"{cc.base} with this preset's overrides and teacher_seed; run `ferd compare` to make "
                         "this preset's teacher and runs")
    ckpt = path.parent / card["checkpoint"]
    if ckpt.is_file() and sha256_file(ckpt) != card["sha256"]:
        raise ValueError(f"comparison: {ckpt}: sha256 differs from {path}'s sha256 (changed since)")
    return str(ckpt.resolve()), card["sha256"]
