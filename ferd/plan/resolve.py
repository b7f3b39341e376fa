"""The resolved plan of a run: every setting that depends on another, decided once.

Each entry point (``ferd run``, ``ferd stage``, ``ferd bench``, ``ferd compare``, the DVC and Kubeflow
generators) validates the parameters (:func:`load_config` / :func:`parse_config`: the schema of :mod:`ferd.settings.config`, then the
registered names) and calls :func:`resolve`; everything downstream
reads the :class:`Plan`, never the raw groups it was made from. The rules that tie one field to another
across groups live here alone:

* the method (:mod:`ferd.settings.method`) by its name;
* reweighting: ``synthesis.reweighting`` when the method reweights and it is enabled, else none (p stays
  uniform: the baselines draw labels uniformly, §3; ``enabled: false`` is the 'w/o reweighting' ablation);
* the student side and the distillation settings it runs with (:func:`distill_settings`), with γ
  effective (0 when ``distill.utae.enabled`` is off: plain PGD on the KL, the 'w/o UTAEs' ablation) and the
  attack target decided;
* the parameter groups the method's results depend on (:func:`ferd.plan.fingerprint.scope_keys`);
* the fields that must agree across groups (:func:`cross_field_errors`): rounds and epochs, the student's warm-up
  and the epochs, the processes and the device and batches, mean/std and the dataset's channels, the UTAE cache
  and its target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..settings.config import PGD_STEPS, DistillConfig, FerdConfig, ReweightConfig, SynthesisConfig, standard_step
from ..settings.method import Method, StudentSideKind
from .methods import known_methods, method_class
from ..core.params_io import ConfigError, load_yaml, read_yaml_file, short_repr


@dataclass(frozen=True)
class Plan:
    """What a run of ``cfg`` does (:func:`resolve`)."""

    cfg: FerdConfig
    method: type[Method]
    synthesis: SynthesisConfig
    reweighting: ReweightConfig | None
    student_side: StudentSideKind  # "given" (Eq. 10-11 with ``distill``), "a8" (the A.8 conversion) or "own"
    distill: DistillConfig  # the distillation settings the student side runs with (γ effective)
    groups: tuple[str, ...]  # the method's own parameter groups (fingerprint)

    def synthesizer(self, num_classes: int, img_size: int) -> Any:
        """The method's generation stage."""
        return self.method.synthesizer(self, num_classes, img_size)

    def side(self) -> Any:
        """The student side (:mod:`ferd.distill.side`): Eq. 10-11, or the method's own."""
        if self.student_side == "own":
            return self.method.own_student_side(self)
        from ..distill.side import UtaeSide

        return UtaeSide()


def resolve(cfg: FerdConfig) -> Plan:
    """The plan of ``cfg``; :class:`ConfigError` (one line naming the field) when fields contradict."""
    errors = cross_field_errors(cfg)
    if errors:
        raise ConfigError("invalid parameters: " + "; ".join(errors))
    try:
        method = method_class(cfg.method)
    except KeyError as exc:
        raise ConfigError(f"invalid parameters: {exc.args[0]}") from None
    side = student_side(method, cfg)
    if side != "given" and cfg.distill.utae.cache == "pool":
        raise ConfigError(f"invalid parameters: distill.utae.cache: 'pool' needs UTAEs against the teacher as "
                          f"distill.* says; method {cfg.method!r} distils its own way (baseline.robust.student_side: "
                          f"{cfg.baseline.robust.student_side}), so use distill.utae.cache: recompute")
    rw = cfg.synthesis.reweighting
    return Plan(cfg=cfg, method=method, synthesis=cfg.synthesis,
                reweighting=rw if method.reweights and rw.enabled else None, student_side=side,
                distill=distill_settings(cfg, side), groups=method.groups)


def cross_field_errors(cfg: FerdConfig) -> list[str]:
    """One line per rule that ties fields of different groups and that ``cfg`` breaks, naming the field."""
    out = []
    if cfg.rounds is not None and cfg.rounds > cfg.epochs:
        out.append(f"rounds: expected at most epochs ({cfg.epochs}), got {cfg.rounds}")
    if cfg.distill.warmup_epochs >= cfg.epochs:
        out.append(f"distill.warmup_epochs: expected fewer than epochs ({cfg.epochs}), got {cfg.distill.warmup_epochs}")
    threat = cfg.threat  # PGD-20 and CW∞ must be able to cross ε: 2/255 kept with ε = 0.2 leaves them inside the ball
    if PGD_STEPS * threat.step < threat.eps * (1 - 1e-9):
        out.append(f"threat.step: expected at least ε/20 = {threat.eps / PGD_STEPS:.4g} with threat.eps = "
                   f"{threat.eps:.4g}, so that PGD-20 reaches the edge of the ε-ball (ε/4 = "
                   f"{standard_step(threat.eps):.4g} is the usual step), got {threat.step:.4g}")
    if cfg.nproc_per_node > 1 and ":" in cfg.device:
        out.append(f"device: {cfg.device} names one GPU, but nproc_per_node is {cfg.nproc_per_node}; expected cuda "
                   "(each process then takes the GPU of its LOCAL_RANK)")
    for field, size in (("distill.batch_size", cfg.distill.batch_size),
                        ("synthesis.batch_size", cfg.synthesis.batch_size)):
        if size % cfg.nproc_per_node:
            out.append(f"nproc_per_node: expected a divisor of {field} ({size}: each process takes an equal share of "
                       f"the batch), got {cfg.nproc_per_node}")
    for group in ("teacher", "student"):
        try:
            check_normalisation(group, getattr(cfg, group).mean, getattr(cfg, group).std, cfg.dataset)
        except ValueError as exc:
            out.append(str(exc))
    out += teacher_source_errors(cfg)
    if cfg.distill.utae.cache == "pool" and cfg.distill.utae.target != "teacher":
        out.append("distill.utae.cache: 'pool' needs distill.utae.target: teacher (a UTAE that attacks the student "
                   "changes as the student learns; there is nothing to cache)")
    return out


def teacher_source_errors(cfg: FerdConfig) -> list[str]:
    """``teacher.source`` on its own, before any stage: a URL needs ``teacher.sha256`` (or
    ``teacher.allow_unverified_url``), an ``s3://`` source must name one object. (``train:<dataset>`` against
    ``dataset`` is the teacher stage's check: the schema's defaults, ``train:digits`` with the paper's CIFAR-10, are
    a valid configuration of every other stage.)"""
    source, out = cfg.teacher.source, []
    if source.startswith(("http://", "https://")) and cfg.teacher.sha256 is None and not cfg.teacher.allow_unverified_url:
        out.append(f"teacher.sha256: required for a URL source ({source[:100]}); give the checkpoint's sha256 (or set "
                   "teacher.allow_unverified_url: true to accept any bytes)")
    if source.startswith("s3://"):
        from ..core.storage import split_s3

        try:
            key = split_s3(source)[1]
        except ValueError:
            key = ""
        if not key:
            out.append(f"teacher.source: expected s3://bucket/key naming one object, got {source[:100]!r}")
    return out


def check_normalisation(group: str, mean: list[float] | None, std: list[float] | None, dataset: str) -> None:
    """``<group>.mean`` / ``<group>.std``: both or neither, one finite value per channel of ``dataset``'s images,
    every std > 0; a ValueError naming the field and what it expects otherwise."""
    from ..core.dataset_catalog import KNOWN_DATASETS, dataset_info

    if (mean is None) != (std is None):
        given, absent = ("mean", "std") if std is None else ("std", "mean")
        raise ValueError(f"{group}.{absent}: expected a list as {group}.{given} is given (both or neither)")
    if mean is None or std is None:
        return
    channels = dataset_info(dataset).channels if dataset in KNOWN_DATASETS else None
    for key, values in (("mean", mean), ("std", std)):
        if channels is not None and len(values) != channels:
            raise ValueError(f"{group}.{key}: expected {channels} values (one per image channel of {dataset}), got "
                             f"{len(values)}")
        bad = next((v for v in values if not math.isfinite(v) or (key == "std" and v <= 0)), None)
        if bad is not None:
            what = "finite values > 0" if key == "std" else "finite values"
            raise ValueError(f"{group}.{key}: expected {what}, got {bad}")


def student_side(method: type[Method], cfg: FerdConfig) -> StudentSideKind:
    """The method's own choice, unless ``baseline.robust.student_side: ferd`` gives it FERD's."""
    return method.student_side if cfg.baseline.robust.student_side == "a8" else "given"


def distill_settings(cfg: FerdConfig, side: StudentSideKind) -> DistillConfig:
    """The distillation parameters the student side runs with, γ effective.

    ``given`` and ``own``: ``distill`` as written (DFHL's side swaps the loss, not the schedule). ``a8`` (deepinv,
    cmi, fast, zskt): ``distill`` with its UTAE replaced by RSLAD's attack — the student is attacked from
    x + 0.001·N(0, 1) on KL(f^T(x) ‖ f^S(x')), γ = 0, ``baseline.robust.attack_steps`` steps of ``threat.step``
    (by default FERD's ``distill.utae.steps``) — and λ1, λ2 by RSLAD's weights (clean 1/6, adversarial 5/6).
    Optimiser, schedule, iterations and batch stay FERD's, so every method gets the same student budget; with
    FERD's default ``distill`` (RSLAD's side) the conversion changes nothing, so a baseline's arm and FERD's
    differ in synthesis only.
    """
    d = cfg.distill
    if side == "a8":
        r = cfg.baseline.robust
        utae = d.utae.model_copy(update={"target": "student", "steps": r.attack_steps or d.utae.steps,
                                         "gamma": 0.0, "random_start": r.random_start, "cache": "recompute"})
        return d.model_copy(update={"lambda1": r.lambda_clean, "lambda2": r.lambda_adv, "utae": utae})
    gamma = d.utae.gamma if d.utae.enabled else 0.0  # 'w/o UTAEs': plain PGD on the KL
    return d.model_copy(update={"utae": d.utae.model_copy(update={"gamma": gamma})})


def _did_you_mean(loc: tuple) -> str:
    """`` (did you mean <key>?)`` for a mistyped key: the closest field of the group it was found in."""
    import difflib

    from pydantic import BaseModel

    model: Any = FerdConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if isinstance(model, type) and issubclass(model, BaseModel) else None
        model = field.annotation if field is not None else None
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.75)
    return f" (did you mean {'.'.join([*map(str, loc[:-1]), close[0]])}?)" if close else ""


def _describe(err: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in err["loc"])[:200] or "<root>"
    msg = err["msg"].removeprefix("Value error, ")[:300]
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key{_did_you_mean(err['loc'])}"
    return f"{key}: {msg} (got {short_repr(err.get('input'))})"


def parse_config(data: dict[str, Any]) -> FerdConfig:
    """Validate a nested dict against the schema, then its names against the registries and its fields
    against each other (:func:`resolve`); raise :class:`ConfigError` naming every bad key."""
    try:
        cfg = FerdConfig.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors()[:10]]
        raise ConfigError("invalid parameters: " + "; ".join(lines)) from None
    bad = unknown_names(cfg)
    if bad:
        raise ConfigError("invalid parameters: " + "; ".join(bad[:10]))
    resolve(cfg)
    return cfg


def unknown_names(cfg: FerdConfig) -> list[str]:
    """One line per field naming something no registry knows: architectures, attacks, dataset, method."""
    from ..attacks import check_attack_names
    from ..data import KNOWN_DATASETS, dataset_info
    from ..models import check_arch, check_split

    out = []
    # an architecture from outside ferd is built and run once on the dataset's image size (ferd.models.registry)
    info = dataset_info(cfg.dataset) if cfg.dataset in KNOWN_DATASETS else None
    size = (info.num_classes, info.image_size) if info else (None, 32)
    for key, arch in (("teacher.arch", cfg.teacher.arch), ("student.arch", cfg.student.arch)):
        try:
            check_arch(arch, *size)
            if key == "teacher.arch" and info and cfg.method in known_methods() and \
                    method_class(cfg.method).splits_teacher:
                check_split(arch, cfg.synthesis.layer, *size)
        except ValueError as exc:
            out.append(f"{key}: {exc} (got {short_repr(arch)})")
    try:
        check_attack_names(cfg.evaluation.attacks)
    except ValueError as exc:
        out.append(f"evaluation.attacks: {exc} (got {short_repr(cfg.evaluation.attacks)})")
    if cfg.dataset not in KNOWN_DATASETS:
        out.append(f"dataset: unknown dataset {cfg.dataset!r}; expected one of {sorted(KNOWN_DATASETS)} "
                   f"(got {short_repr(cfg.dataset)})")
    if cfg.method not in known_methods():
        out.append(f"method: expected one of {known_methods()}, got {cfg.method!r}")
    return out


def _set_override(data: dict[str, Any], assignment: str) -> None:
    key, sep, raw = assignment.partition("=")
    if not sep:
        raise ConfigError(f"override {assignment!r}: expected KEY=VALUE (e.g. synthesis.lambda_uni=2)")
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}: {part} is not a group")
    node[parts[-1]] = load_yaml(raw, f"override {key[:80]}")


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> FerdConfig:
    """Read a YAML params file (``None``: all defaults), apply ``KEY=VALUE`` overrides, validate."""
    if path is None:
        return _with_overrides({}, "", overrides)
    return _with_overrides(read_yaml_file(Path(path)), str(path), overrides)


def config_from_yaml(text: str, where: str, overrides: list[str] | tuple[str, ...] = ()) -> FerdConfig:
    """:func:`load_config` of parameters given as YAML text (a Kubeflow parameter), named ``where`` in errors."""
    return _with_overrides(load_yaml(text, where), where, overrides)


def _with_overrides(data: Any, where: str, overrides: list[str] | tuple[str, ...]) -> FerdConfig:
    if data is None:
        raise ConfigError(f"{where}: empty; expected a mapping of parameter groups ({{}} for all defaults)")
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of parameter groups, got {type(data).__name__}")
    threat = data.get("threat")
    file_eps = threat.get("eps") if isinstance(threat, dict) else None
    for item in overrides:
        _set_override(data, item)
    _step_follows_a_new_eps(data, file_eps, overrides)
    return parse_config(data)


def _step_follows_a_new_eps(data: dict[str, Any], file_eps: Any, overrides: list[str] | tuple[str, ...]) -> None:
    """A file's ``threat.step`` is for its own ε (``embedded.yaml``: 2/255 at 8/255): an override that changes ε
    and gives no step drops it, so the new ε takes ε/4 as a file without a step does
    (:class:`ferd.settings.config.ThreatConfig`), from ``-S``, a compare preset's ``set`` and the Kubeflow ``eps``
    alike. (``dvc exp run -S`` rewrites the file itself: its step stays as written.)"""
    keys = {item.partition("=")[0].strip() for item in overrides}
    threat = data.get("threat")
    if "threat.eps" in keys and not keys & {"threat.step", "threat"} and isinstance(threat, dict) \
            and threat.get("eps") != file_eps:
        threat.pop("step", None)
