"""Stage artifacts: directories of atomically written files plus a ``manifest.json``.

Every stage writes one directory. Its ``manifest.json`` names the stage, the round, the
parameter fingerprint, the ferd version, the sha256 of every file in the directory and the
manifests of the inputs it was made from (so the lineage of any artifact can be followed
back to the teacher). A stage reading an artifact checks its stage name, its round, the
parameter fingerprint and the sha256 of every file before using it.

The *parameter fingerprint* of a stage is the sha256 of the parameters that stage depends
on (:data:`ferd.plan.fingerprint.SCOPES`, the same lists ``dvc.yaml`` declares as each stage's ``params``):
the teacher depends on the seed, the dataset, ε and the teacher group; synthesis and the pool
also on the epochs, rounds, student, method, baseline and synthesis groups; distillation also on the distill
group; evaluation on everything. So changing ``synthesis.lambda_uni`` keeps the teacher
artifact valid and invalidates every later one. ``device``, ``data_root``,
``checkpoint_every`` and ``storage`` cannot change a result bit and are in no fingerprint.

Lineage (``ferd lineage``): a manifest also records the stage's resolved parameters, each
input's URI (path relative to the artifact, or ``s3://`` with ETag and version id) and the
sha256 of the input's manifest, each output's URI, sha256 and size, the code version, torch /
CUDA / device, start and end time, and its own checksum (:mod:`ferd.core.provenance`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .. import __version__
from ..plan import graph
from ..core.checkpoint import atomic_write_json as write_json
from ..core.checkpoint import sha256_file
from ..core.kill_points import kill_point
from ..settings.config import FerdConfig
from ..plan.resolve import config_from_yaml
from ..plan.fingerprint import params_fingerprint, scoped_params
from ..core.storage import MANIFEST, listed_files
from ..core.provenance import SELF_KEY, authenticity_problem, code_version, environment, manifest_digest, seal, utc_now



@dataclass(frozen=True)
class StageArtifact:
    """What a stage returns: its output directory and what ``ferd stage`` prints (:meth:`summary`: every
    field, a range as ``[start, stop]``)."""

    dir: Path

    def summary(self) -> dict:
        return {f.name: ([v.start, v.stop] if isinstance(v := getattr(self, f.name), range) else v)
                for f in fields(self)}


@dataclass(frozen=True)
class RoundArtifact(StageArtifact):
    """The artifact of a per-round stage: its round and the epochs it covers."""

    round: int
    epochs: range


class ArtifactError(ValueError):
    """An input artifact is missing, of the wrong stage or round, from another run, or corrupt."""


def round_epochs(cfg: FerdConfig, round_index: int) -> range:
    """The epochs of round ``round_index`` (``cfg.round_schedule``), refusing a round outside the run."""
    rounds = cfg.num_rounds
    if not 0 <= round_index < rounds:
        raise ValueError(f"round: expected 0 <= round < {rounds} (rounds of {cfg.epochs} epochs), got {round_index}")
    return cfg.round_schedule[round_index]


def check_previous(round_index: int, what: str, path: str | os.PathLike[str] | None) -> None:
    """Round 0 starts from the initial state; every later round needs the artifact of round r−1."""
    if round_index == 0 and path is not None:
        raise ArtifactError(f"{what}: round 0 starts from the initial state; no previous artifact may be given")
    if round_index > 0 and path is None:
        raise ArtifactError(f"{what}: round {round_index} needs the artifact of round {round_index - 1}")


def check_inputs(cfg: FerdConfig, stage: str, round_index: int | None = None, out_dir: str | os.PathLike[str] | None = None,
                 **given: str | os.PathLike[str] | None) -> dict[str, dict]:
    """Every input of ``stage`` checked as the graph declares it (:data:`ferd.plan.graph.STAGES`), in declared order,
    before the stage does any work: present or absent (an input of round r−1 is absent in round 0 and
    required after), and each present one a complete artifact of its producer (manifest stage, round, parameter
    fingerprint, sha256 of every file). A chained artifact kept in place (the pool: ``--previous`` = ``--out``)
    may be of this round already (a rerun). Returns the manifests by input flag."""
    st = graph.BY_NAME[stage]

    def what(inp: graph.Input) -> str:
        return f"previous {graph.BY_NAME[inp.stage].scope}" if inp.flag == "previous" else inp.flag

    for inp in st.inputs:  # first the cheap part: which inputs must be there
        if inp.of == graph.PREVIOUS:
            check_previous(round_index, what(inp), given.get(inp.flag))
    out: dict[str, dict] = {}
    for inp in st.inputs:
        producer, path = graph.BY_NAME[inp.stage], given.get(inp.flag)
        if inp.of == graph.PREVIOUS and path is None:
            continue
        expected = {graph.ONCE: None, graph.LAST: None, graph.SAME: round_index,
                    graph.PREVIOUS: None if round_index is None else round_index - 1}[inp.of]
        if producer.chained and out_dir is not None and Path(path).resolve() == Path(out_dir).resolve():
            expected = None
        out[inp.flag] = read_manifest(path, producer.scope, cfg, round_index=expected, what=what(inp))
    return out


def node_overrides(overrides: list[str] | tuple[str, ...], device: str = "") -> list[str]:
    """A Kubeflow component's overrides plus its node's ``device`` (``cuda`` on a GPU node; the parameters'
    own device when empty)."""
    return list(overrides) + ([f"device={device}"] if device else [])


def config_from_text(params_yaml: str, overrides: list[str] | tuple[str, ...] = (),
                     where: str = "params_yaml") -> FerdConfig:
    """Validate parameters given as YAML text (what a Kubeflow component receives) plus overrides; errors name
    ``where`` (the pipeline parameter, or the file the text came from)."""
    return config_from_yaml(params_yaml, where, list(overrides))


RUN_TIME_PARAMS: dict[str, str] = {"teacher_source": "teacher.source", "teacher_sha256": "teacher.sha256",
                                   "eps": "threat.eps", "gamma": "distill.utae.gamma", "lambda1": "distill.lambda1",
                                   "lambda2": "distill.lambda2", "lambda_uni": "synthesis.lambda_uni"}
"""The Kubeflow pipeline's typed run-time parameters (name → parameter key); anything else changes through
``overrides``. The rounds (``epochs``, ``rounds``) shape the unrolled DAG, so they are compile-time."""


def run_time_values(cfg: FerdConfig) -> dict[str, Any]:
    """The typed parameters' values in ``cfg`` (the compiled defaults the Kubeflow UI shows; None → "")."""
    values = {}
    for name, key in RUN_TIME_PARAMS.items():
        value: Any = cfg
        for part in key.split("."):
            value = getattr(value, part)
        values[name] = "" if value is None else value
    return values


def run_time_overrides(params_yaml: str, overrides: list[str], values: dict[str, Any]) -> list[str]:
    """The overrides every stage of a pipeline run gets: the typed values (an empty string keeps the file's
    value) then ``overrides``, which win; the whole configuration is validated once here, so a bad value
    fails the run's first task, in one line, before any stage."""
    if set(values) != set(RUN_TIME_PARAMS):
        raise ValueError(f"run-time parameters: expected {sorted(RUN_TIME_PARAMS)}, got {sorted(values)}")
    typed = [f"{RUN_TIME_PARAMS[name]}={json.dumps(v)}" for name, v in values.items() if v != ""]
    resolved = [*typed, *overrides]
    config_from_text(params_yaml, resolved)
    return resolved


def read_json(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: missing")
    return json.loads(path.read_text())


def _files(directory: Path) -> dict[str, dict[str, Any]]:
    """Every regular file the stage wrote (hidden names aside: temporaries, ``.debug/``); a symbolic link
    or a special file in the directory is refused, never followed into the manifest."""
    out = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if rel == MANIFEST or any(part.startswith(".") for part in rel.split("/")):
            continue
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise ArtifactError(f"{path}: a symbolic link or special file in the output directory; a stage "
                                "lists only the regular files it wrote")
        if path.is_file():
            out[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return out


def manifest_files(manifest: Mapping[str, Any], where: str | os.PathLike[str] = MANIFEST) -> dict[str, str]:
    """``{relative path: sha256}`` of the files a manifest lists (each a path inside the artifact)."""
    return {rel: manifest["outputs"][rel]["sha256"] for rel in listed_files(dict(manifest), where)}


def _input_record(directory: Path, path: str | os.PathLike[str]) -> dict[str, Any]:
    m = Path(path) / MANIFEST
    record: dict[str, Any] = {"uri": str(path), "manifest_sha256": sha256_file(m) if m.is_file() else None}
    if m.is_file():
        record["stage"] = json.loads(m.read_text()).get("stage")
    try:
        record["relpath"] = os.path.relpath(Path(path).resolve(), directory.resolve())
    except ValueError:  # another drive (Windows)
        record["relpath"] = None
    return record


def write_manifest(directory: str | os.PathLike[str], stage: str, cfg: FerdConfig, *, round_index: int | None = None,
                   inputs: Mapping[str, str | os.PathLike[str] | None] | None = None,
                   extra: Mapping[str, Any] | None = None, started: str | None = None,
                   scope: str | None = None) -> dict:
    """Hash every file of ``directory`` and write its ``manifest.json`` (last, atomically); its parameters
    are those of ``scope`` (:data:`ferd.plan.fingerprint.SCOPES`; default: the stage's own name)."""
    scope = scope or stage
    directory = Path(directory)
    parents = {name: _input_record(directory, path) for name, path in (inputs or {}).items() if path is not None}
    manifest = {"stage": stage, "round": round_index, "rounds": cfg.num_rounds, "epochs": cfg.epochs,
                "params": scoped_params(cfg, scope), "params_fingerprint": params_fingerprint(cfg, scope),
                "ferd_version": __version__, "code": code_version(), "environment": environment(cfg.device),
                "started_at": started, "finished_at": utc_now(), "uri": str(directory),
                "outputs": _files(directory), "inputs": parents, **(extra or {})}
    manifest = seal(manifest)
    kill_point("manifest.before-write")
    write_json(directory / MANIFEST, manifest)
    return manifest


def read_manifest(directory: str | os.PathLike[str] | None, stage: str, cfg: FerdConfig, *,
                  round_index: int | None = None, what: str | None = None, verify: bool = True) -> dict:
    """Read and check the manifest of an input artifact (stage, round, fingerprint, file hashes)."""
    what = what or stage
    if directory is None:
        raise ArtifactError(f"{what}: no artifact given")
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{what}: {directory} is not a ferd {stage} artifact (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_bytes())
    except ValueError as exc:  # not JSON, not UTF-8
        raise ArtifactError(f"{what}: {path}: not a JSON manifest ({type(exc).__name__})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{what}: {path}: not a manifest (a JSON {type(manifest).__name__}, expected an object)")
    if manifest.get("stage") != stage:
        raise ArtifactError(f"{what}: {directory} holds a {manifest.get('stage')!r} artifact, expected {stage!r}")
    if round_index is not None and manifest.get("round") != round_index:
        raise ArtifactError(f"{what}: {directory} is from round {manifest.get('round')}, expected round {round_index}")
    fp = params_fingerprint(cfg, stage)
    if manifest.get("params_fingerprint") != fp:
        raise ArtifactError(f"{what}: {directory} was made with other parameters (fingerprint "
                            f"{str(manifest.get('params_fingerprint'))[:12]}…, these give {fp[:12]}…); "
                            "every stage of a run must get the same parameters")
    if verify:
        if manifest.get(SELF_KEY) != manifest_digest(manifest):
            raise ArtifactError(f"{what}: {path}: the manifest's checksum does not match its content (changed "
                                "or corrupt)")
        if (problem := authenticity_problem(manifest)) is not None:
            raise ArtifactError(f"{what}: {path}: {problem}")
        for rel, digest in manifest_files(manifest, path).items():
            f = directory / rel
            if not f.is_file():
                raise ArtifactError(f"{what}: {f} is listed in the manifest but missing")
            if sha256_file(f) != digest:
                raise ArtifactError(f"{what}: {f}: sha256 does not match the manifest (changed or corrupt)")
    return manifest


