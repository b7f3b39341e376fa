"""``dataset.json``: what ``ferd data pack`` writes beside a dataset's ``<dataset>_<split>.npz`` files, and what every
consumer checks before it uses one byte of them (issue 34: datasets held to the artifacts' standard).

Schema (every field required; a file read back is untrusted): ``dataset`` (a packable dataset), ``files``
(``{"<dataset>_<split>.npz": {"split", "rows", "bytes", "sha256"}}``, the name exactly the split's file name, so a
listed name is never a path), ``manifest_sha256`` (:func:`ferd.core.provenance.manifest_digest`) and, when it was packed
under ``$FERD_SIGNING_KEY``, ``signature``. It is sealed and checked with the artifacts' own primitives
(:func:`ferd.core.provenance.seal`, :func:`ferd.core.provenance.authenticity_problem`): with the key set on the consumer an
unsigned or wrongly signed ``dataset.json`` is refused. A split's bytes are used only after their length and sha256
matched their entry (:func:`verified`), and the bytes parsed are the bytes hashed.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from ..core.dataset_catalog import dataset_info
from ..core.provenance import SELF_KEY, authenticity_problem, manifest_digest, seal

DATASET_MANIFEST = "dataset.json"
PACKABLE = ("cifar10", "cifar100")
MAX_MANIFEST_BYTES = 1 << 20  # a dataset.json lists a few files: ~1 KiB
LAYOUT = "<dataset>_<split>.npz (ferd.data.remote)"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_REPACK = "write it again with `ferd data pack`"


class DatasetError(ValueError):
    """A packed dataset's ``dataset.json`` or one of its files is malformed, changed, or not authentic."""


def file_name(dataset: str, split: str) -> str:
    return f"{dataset}_{split}.npz"


def build(dataset: str, files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The sealed ``dataset.json`` of ``files`` (signed when ``$FERD_SIGNING_KEY`` is set)."""
    return seal({"dataset": dataset, "files": files, "layout": LAYOUT})


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_entry(dataset: str, name: Any, entry: Any, where: str) -> None:
    splits = dataset_info(dataset).splits
    if not isinstance(entry, dict) or entry.get("split") not in splits or name != file_name(dataset, entry["split"]):
        raise DatasetError(f"{where}: files: {str(name)[:80]!r} is not a file of this dataset (expected an object "
                           f"with split in {list(splits)}, listed as {file_name(dataset, '<split>')})")
    for field, ok, expected in (("rows", _count, "a count"), ("bytes", _count, "a size in bytes"),
                                ("sha256", lambda v: isinstance(v, str) and _SHA256.fullmatch(v), "64 hex digits")):
        if field not in entry:
            raise DatasetError(f"{where}: files.{name}.{field}: missing; expected {expected} ({_REPACK})")
        if not ok(entry[field]):
            raise DatasetError(f"{where}: files.{name}.{field}: expected {expected}, got {str(entry[field])[:80]!r}")


def parse(raw: bytes, where: str) -> dict[str, Any]:
    """``dataset.json``'s bytes checked: size, JSON object, schema, checksum, then signature under the key."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise DatasetError(f"{where}: {len(raw)} bytes, more than a dataset.json's {MAX_MANIFEST_BYTES}")
    try:
        manifest = json.loads(raw)
    except ValueError as exc:  # not JSON, not UTF-8
        raise DatasetError(f"{where}: not a JSON dataset manifest ({type(exc).__name__}); {_REPACK}") from None
    if not isinstance(manifest, dict):
        raise DatasetError(f"{where}: a JSON {type(manifest).__name__}, expected an object ({_REPACK})")
    if manifest.get("dataset") not in PACKABLE:
        raise DatasetError(f"{where}: dataset: expected one of {list(PACKABLE)}, got "
                           f"{str(manifest.get('dataset'))[:80]!r}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise DatasetError(f"{where}: files: expected an object listing the packed files, got {str(files)[:80]!r}")
    for name, entry in files.items():
        _check_entry(manifest["dataset"], name, entry, where)
    if not isinstance(manifest.get(SELF_KEY), str):
        raise DatasetError(f"{where}: {SELF_KEY}: missing; expected the manifest's own checksum ({_REPACK})")
    if manifest[SELF_KEY] != manifest_digest(manifest):
        raise DatasetError(f"{where}: the manifest's checksum does not match its content (changed or corrupt)")
    if (problem := authenticity_problem(manifest)) is not None:
        raise DatasetError(f"{where}: {problem}")
    return manifest


def entry(manifest: dict[str, Any], dataset: str, split: str, where: str, what: str = "data_root") -> dict[str, Any]:
    """The entry of ``dataset``'s ``split`` (FileNotFoundError naming ``what`` when ``manifest`` does not list it)."""
    name = file_name(dataset, split)
    if manifest["dataset"] != dataset or name not in manifest["files"]:
        raise FileNotFoundError(f"{what}: {where} lists {manifest['dataset']!r} files {sorted(manifest['files'])}, "
                                f"not {name}")
    return manifest["files"][name]


def mismatch(data: bytes, listed: dict[str, Any]) -> str | None:
    """Why ``data`` is not the file ``listed`` describes (size, then sha256); None when it is."""
    if len(data) != listed["bytes"]:
        return f"{len(data)} bytes, dataset.json lists {listed['bytes']}"
    if hashlib.sha256(data).hexdigest() != listed["sha256"]:
        return "sha256 does not match dataset.json (changed or corrupt)"
    return None


def verified(data: bytes, listed: dict[str, Any], where: str) -> bytes:
    """``data`` when it is the file ``listed`` describes; DatasetError naming ``where`` otherwise."""
    if (problem := mismatch(data, listed)) is not None:
        raise DatasetError(f"{where}: {problem}")
    return data


def read_bounded(path: Path) -> bytes:
    """A local ``dataset.json``'s bytes, refused by its size before it is read."""
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise DatasetError(f"{path}: {size} bytes, more than a dataset.json's {MAX_MANIFEST_BYTES}")
    return path.read_bytes()


def is_packed(folder: Path) -> bool:
    """Whether ``folder`` is a dataset laid out by ``ferd data pack`` (it holds a ``dataset.json``)."""
    return (folder / DATASET_MANIFEST).exists()


def folder_manifest(folder: Path) -> dict[str, Any]:
    """The checked ``dataset.json`` of the dataset packed in ``folder``."""
    where = folder / DATASET_MANIFEST
    return parse(read_bounded(where), str(where))


def folder_split(folder: Path, dataset: str, split: str) -> bytes:
    """The verified bytes of ``split`` of the dataset packed in ``folder``."""
    where = folder / DATASET_MANIFEST
    listed = entry(folder_manifest(folder), dataset, split, str(where))
    path = folder / file_name(dataset, split)
    if path.is_symlink() or not path.is_file():
        raise DatasetError(f"{path}: listed in {where} but not a regular file")
    return verified(path.read_bytes(), listed, str(path))


def dataset_problems(directory: str | Path) -> list[str]:
    """Every reason the dataset packed in ``directory`` is not what ``ferd data pack`` wrote (what ``ferd lineage
    verify`` reports for a folder holding a ``dataset.json``): its manifest's schema, checksum and signature under
    the key; each listed file missing, of another size or sha256; a file beside them it does not list."""
    folder = Path(directory)
    where = folder / DATASET_MANIFEST
    try:
        manifest = parse(read_bounded(where), str(where))
    except (OSError, DatasetError) as exc:
        return [str(exc) if isinstance(exc, DatasetError) else f"{where}: unreadable ({exc.strerror})"]
    problems = []
    for name, listed in sorted(manifest["files"].items()):
        path = folder / name
        if path.is_symlink() or not path.is_file():
            problems.append(f"{path}: missing (listed in {where})")
        elif (problem := mismatch(path.read_bytes(), listed)) is not None:
            problems.append(f"{path}: {problem}")
    extra = sorted(p.name for p in folder.iterdir() if p.name not in manifest["files"]
                   and p.name != DATASET_MANIFEST and not p.name.startswith("."))
    problems += [f"{folder / name}: not listed in {where} (added after packing)" for name in extra]
    return problems


__all__ = ["DATASET_MANIFEST", "MAX_MANIFEST_BYTES", "PACKABLE", "DatasetError", "build", "dataset_problems",
           "entry", "file_name", "folder_manifest", "folder_split", "is_packed", "parse", "verified"]
