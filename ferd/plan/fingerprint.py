"""The one parameter fingerprint: which parameters a result depends on, and their sha256.

A *scope* names a result and lists the parameter keys it depends on (dotted keys of the resolved
:class:`~ferd.settings.config.FerdConfig`): the teacher depends on the seed, the dataset, ε and the teacher
group; a round's synthesis and pool also on the schedule, the student, the method, the baseline
groups the method reads (:func:`scope_keys`: the method's ``groups``, :mod:`ferd.settings.method` — none for
``ferd``, ``baseline.robust`` and ``baseline.<method>`` for a baseline), the synthesis group and the UTAE group (synthesis caches UTAEs
with ``distill.utae.cache: pool``); the distillation on the whole distill group; the evaluation on
everything. ``device``, ``nproc_per_node``, ``data_root``,
``checkpoint_every``, ``storage`` and ``container`` are in no scope: they say where, in what, on how many
processes and how often,
not what (a run resumes on another number of processes: :mod:`ferd.compute.distributed`). Nor is the
``teacher.source`` of a *pinned* teacher (:func:`pinned_teacher`: a checkpoint, URL or model named with its
``teacher.sha256``): its bytes are its identity, so a moved comparison directory or teacher file changes no
fingerprint.

Every check that a result on disk was made from these parameters uses :func:`params_fingerprint`:
teacher model cards (``teacher``), stage manifests (the stage's scope), ``ferd run``'s checkpoint
(``round.json``; ``distillation``: everything up to the student) and the finished arms of ``ferd compare``
(``evaluation``). ``dvc.yaml`` declares the same lists as each stage's ``params``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from ..settings.config import FerdConfig

NOT_IN_ANY_SCOPE = ("device", "nproc_per_node", "data_root", "checkpoint_every", "storage", "container")
_TEACHER = ("seed", "dataset", "threat.eps", "teacher")
_ROUND = (*_TEACHER[:3], "threat.step", "epochs", "rounds", "teacher", "student", "compute", "method", "baseline",
          "synthesis", "distill.utae")
SCOPES: dict[str, tuple[str, ...]] = {
    "teacher": _TEACHER,
    "synthesis": _ROUND,
    "pool": _ROUND,
    "distillation": (*_ROUND[:-1], "distill"),
    "evaluation": (*_ROUND[:-1], "distill", "evaluation"),
    "teacher-evaluation": (*_TEACHER, "threat.step", "evaluation"),  # a comparison's shared teacher/eval
}


def scope_keys(scope: str, method: str) -> tuple[str, ...]:
    """The keys of ``SCOPES[scope]`` for a run of ``method``: its ``baseline`` entry narrowed to the groups the
    method reads (its registered ``groups``: none for ``ferd``), so tuning one baseline never invalidates
    FERD's or another baseline's results (``dvc exp run -S baseline.cmi.lr=…`` reruns nothing of a FERD run)."""
    from .methods import method_class

    if scope not in SCOPES:
        raise ValueError(f"scope: expected one of {sorted(SCOPES)}, got {scope!r}")
    keys = SCOPES[scope]
    if "baseline" not in keys:
        return keys
    at = keys.index("baseline")
    return (*keys[:at], *method_class(method).groups, *keys[at + 1:])


def pinned_teacher(teacher: Mapping[str, Any]) -> bool:
    """A teacher given by its bytes: ``teacher.sha256`` set and a source that is checked against it (a path, a
    URL, a model; ``train:`` trains one and checks no pin)."""
    return (isinstance(teacher, Mapping) and teacher.get("sha256") is not None
            and not str(teacher.get("source", "")).startswith("train:"))


def scoped_params(cfg: FerdConfig | Mapping[str, Any], scope: str) -> dict[str, Any]:
    """The resolved parameters ``scope`` depends on, by dotted key (a pinned teacher without its ``source``:
    module doc); ``cfg`` may also be a dumped config (``params.json``)."""
    return _scoped(cfg, scope, pinned_source=False)


def _scoped(cfg: FerdConfig | Mapping[str, Any], scope: str, pinned_source: bool) -> dict[str, Any]:
    data = cfg.model_dump(mode="json") if isinstance(cfg, FerdConfig) else cfg
    out = {}
    for key in scope_keys(scope, data["method"]):
        node: Any = data
        for part in key.split("."):
            node = node[part]
        if key == "teacher" and not pinned_source and pinned_teacher(node):
            node = {k: v for k, v in node.items() if k != "source"}
        out[key] = node
    return out


def params_fingerprint(cfg: FerdConfig | Mapping[str, Any], scope: str) -> str:
    """sha256 of :func:`scoped_params` in canonical JSON."""
    return hashlib.sha256(json.dumps(scoped_params(cfg, scope), sort_keys=True).encode()).hexdigest()


def legacy_fingerprint(cfg: FerdConfig | Mapping[str, Any], scope: str) -> str:
    """The fingerprint as results recorded it before a pinned teacher's ``source`` left it (a path in it): read
    back only, so that a result made then with the same parameters stays finished (:mod:`ferd.compare.config`)."""
    return hashlib.sha256(json.dumps(_scoped(cfg, scope, pinned_source=True), sort_keys=True).encode()).hexdigest()
