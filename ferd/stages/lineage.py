"""``ferd lineage``: follow and prove where an artifact came from.

Every stage writes ``manifest.json`` beside its outputs (:mod:`ferd.stages.artifacts`): the
stage, its resolved parameters and their hash, each input's URI and the sha256 of the input's
manifest, each output's sha256 and size, the code version, torch/CUDA/device, start and end
time, and the manifest's own checksum (:mod:`ferd.core.provenance`). Because an input is named by
the hash of its manifest, and a manifest by the hashes of its files, one manifest pins the whole
chain back to the teacher.

::

    ferd lineage show runs/dvc/evaluation/metrics.json     # the chain, evaluation → … → teacher
    ferd lineage show runs/dvc/round-11/distillation --json
    ferd lineage verify runs/dvc                             # re-hash every artifact of a run

``verify`` checks, for every artifact (directory with a manifest) under the run: the manifest
parses and its checksum matches its content; every listed output exists with its sha256 and
size; no unlisted file sits in the artifact; and every input the manifest names (by its path
relative to the artifact) exists and its manifest has the recorded sha256. It prints one line
per problem, naming the file, and exits 1 if there is any.

A ``ferd run`` output directory is an artifact too (stage ``run``, :mod:`ferd.stages.run`): its
``manifest.json``, written when the run finishes, lists every file under it, the records
(``round.json``, ``result.json``, ``elapsed.json``, ``params.json``, ``metrics.json``) included, so
``verify`` re-hashes all of them and refuses any it does not list. A ``ferd run`` directory without one
(killed, or still running) is reported as unfinished, not as verified.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.checkpoint import sha256_file
from ..core.provenance import SELF_KEY, authenticity_problem, manifest_digest, signing_key
from ..core.storage import MANIFEST, listed_files
from ..data.dataset_json import DATASET_MANIFEST, dataset_problems
from ..algorithm.round_state import STUDENT_FILE
from .layout import TEACHER


@dataclass
class Report:
    checked_artifacts: int = 0
    checked_files: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.checked_artifacts > 0

    @property
    def authenticity(self) -> str:
        """What was checked beyond integrity: signatures under the key, or plainly nothing."""
        if signing_key() is None:
            return "authenticity NOT checked (FERD_SIGNING_KEY unset: a manifest resealed in the store passes)"
        return "signatures checked under FERD_SIGNING_KEY"


def find_artifact(path: str | Path) -> Path:
    """The artifact directory holding ``path`` (the path itself, or its nearest parent with a manifest)."""
    p = Path(path).resolve()
    for candidate in [p, *p.parents] if p.is_dir() else list(p.parents):
        if (candidate / MANIFEST).is_file():
            return candidate
    raise FileNotFoundError(f"lineage: {path} is not inside a ferd artifact (no {MANIFEST} in it or above it)")


def _load(directory: Path) -> dict[str, Any]:
    try:
        return json.loads((directory / MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{directory / MANIFEST}: unreadable manifest ({exc})") from exc


def _outputs(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return manifest.get("outputs", {})


def _input_dir(directory: Path, record: dict[str, Any]) -> Path | None:
    rel = record.get("relpath")
    return (directory / rel).resolve() if rel else None


def verify_artifact(directory: Path, report: Report) -> None:
    report.checked_artifacts += 1
    mpath = directory / MANIFEST
    try:
        manifest = _load(directory)
        listed_files(manifest, mpath)  # an 'outputs' object; each entry a sha256 and a byte count, inside the artifact
    except ValueError as exc:
        report.problems.append(str(exc))
        return
    if manifest.get(SELF_KEY) != manifest_digest(manifest):
        report.problems.append(f"{mpath}: manifest checksum mismatch (the manifest was changed)")
    if (problem := authenticity_problem(manifest)) is not None:
        report.problems.append(f"{mpath}: {problem}")
    listed = _outputs(manifest)
    for rel, out in sorted(listed.items()):
        f = directory / rel
        report.checked_files += 1
        if not f.is_file():
            report.problems.append(f"{f}: missing (listed in {mpath})")
        elif f.stat().st_size != out.get("bytes", f.stat().st_size) or sha256_file(f) != out["sha256"]:
            report.problems.append(f"{f}: sha256 mismatch (expected {out['sha256'][:16]}…, listed in {mpath})")
    for f in sorted(directory.rglob("*")):
        rel = f.relative_to(directory).as_posix()
        if f.is_file() and rel != MANIFEST and rel not in listed and not any(p.startswith(".") for p in rel.split("/")):
            nested = any((d / MANIFEST).is_file() for d in f.parents if d != directory and d.is_relative_to(directory))
            if not nested:
                report.problems.append(f"{f}: not listed in {mpath} (added after the stage)")
    for name, record in sorted(manifest.get("inputs", {}).items()):
        src = _input_dir(directory, record)
        if src is None:
            continue
        m = src / MANIFEST
        if not m.is_file():
            report.problems.append(f"{mpath}: input {name!r} ({record.get('uri')}) not found at {src}")
        elif record.get("manifest_sha256") and sha256_file(m) != record["manifest_sha256"]:
            report.problems.append(f"{m}: sha256 differs from the one recorded as input {name!r} in {mpath}")


def artifacts_under(run: Path) -> list[Path]:
    return sorted(p.parent for p in run.rglob(MANIFEST)
                  if not any(part.startswith(".") for part in p.relative_to(run).parts))


def verify_run(run: str | Path) -> Report:
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"lineage verify: {run} is not a directory")
    report = Report()
    for directory in artifacts_under(run):
        verify_artifact(directory, report)
    for dataset in sorted({p.parent for p in run.rglob(DATASET_MANIFEST) if p.is_file()}):  # `ferd data pack`'s
        report.checked_artifacts += 1
        report.problems += dataset_problems(dataset)
    if report.checked_artifacts == 0 and (run / "params.json").is_file() and (run / "checkpoint").is_dir():
        report.problems.append(f"{run}: an unfinished ferd run (no {MANIFEST} yet: killed or still running); "
                               "resume it with the same ferd run command, which verifies its checkpoint")
    elif report.checked_artifacts == 0:
        report.problems.append(f"{run}: no artifacts (no {MANIFEST} anywhere under it)")
    return report


def chain(path: str | Path) -> list[dict[str, Any]]:
    """The artifacts ``path`` was made from, depth first, each once: ``[{dir, depth, name, manifest}]``."""
    start = find_artifact(path)
    seen: set[Path] = set()
    out: list[dict[str, Any]] = []

    def walk(directory: Path, name: str, depth: int, record: dict[str, Any] | None) -> None:
        node: dict[str, Any] = {"dir": str(directory), "depth": depth, "name": name}
        if record is not None:
            node["recorded"] = record
        if directory in seen:
            out.append({**node, "seen": True})
            return
        if not (directory / MANIFEST).is_file():
            out.append({**node, "missing": True})
            return
        seen.add(directory)
        manifest = _load(directory)
        node["manifest"] = manifest
        out.append(node)
        for child, rec in sorted(manifest.get("inputs", {}).items()):
            src = _input_dir(directory, rec)
            if src is not None:
                walk(src, child, depth + 1, rec)
            else:
                out.append({"dir": rec.get("uri"), "depth": depth + 1, "name": child, "recorded": rec,
                            "missing": True})

    walk(start, "artifact", 0, None)
    return out


def describe_node(node: dict[str, Any]) -> str:
    pad = "  " * node["depth"] + ("└─ " if node["depth"] else "")
    head = f"{pad}{node['name']}: {node['dir']}"
    if node.get("missing"):
        return f"{head}  [not available here: {node.get('recorded', {}).get('uri')}]"
    if node.get("seen"):
        return f"{head}  (shown above)"
    m = node["manifest"]
    code = m.get("code", {})
    rnd = "" if m.get("round") is None else f" round {m['round']}"
    bits = [f"{m.get('stage')}{rnd}", f"params {str(m.get('params_fingerprint'))[:12]}",
            f"ferd {code.get('ferd_version', m.get('ferd_version'))}"
            + (f" @{code['git_commit'][:10]}" if code.get("git_commit") else ""),
            f"torch {m.get('environment', {}).get('torch')} on {m.get('environment', {}).get('device')}",
            f"{m.get('started_at')} → {m.get('finished_at')}"]
    if m.get("stage") == TEACHER:
        bits.append(f"source {m.get('source')} sha256 {str(m.get('sha256'))[:16]}…")
    if STUDENT_FILE in _outputs(m):
        bits.append(f"student sha256 {_outputs(m)[STUDENT_FILE]['sha256'][:16]}…")
    return head + "\n" + " " * len(pad) + "   " + " | ".join(bits)
