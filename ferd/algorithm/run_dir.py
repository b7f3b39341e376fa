"""An output directory has one owner and holds one run; a result says which parameters made it.

* :func:`owned` holds an advisory lock (``fcntl.flock`` on ``.<name>.lock`` beside the directory, so
  the lock file is never part of the artifact) for as long as a process works in the directory, and the
  lock covers the whole tree: a second process is refused at once, naming the holder, when it asks for the
  same directory, one inside it or one that contains it (``ferd run --out cx`` excludes
  ``ferd stage … --out cx/teacher`` and the other way round; sibling directories ``cx/a``, ``cx/b`` are
  independent). Paths are compared resolved (symlinks, ``..``). ``owned(…, wait=True)`` waits instead while
  another process holds the directory itself (a comparison's shared teacher, which arms started together
  prepare once: the second finds it finished).
* :func:`check_run_dir` decides, **before anything is written**, whether ``ferd run``'s ``--out`` is
  new, this run's (resume, or re-evaluate a finished run), or another run's: refused with the reason
  (a different :func:`~ferd.plan.fingerprint.params_fingerprint` of everything up to the student, or files
  that are no ferd run's).
* :func:`write_result` stores beside ``metrics.json`` a ``result.json`` with the fingerprint of the
  parameters that made it and the sha256 of the metrics; :func:`is_finished` reads it back, so a
  comparison treats as finished only a result made with its current parameters.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from ..core.checkpoint import atomic_write_json, read_json_object, read_json_object_or_none, sha256_file
from ..core.numbers import is_number
from ..settings.config import FerdConfig
from ..plan.fingerprint import params_fingerprint

PARAMS_FILE, METRICS_FILE, RESULT_FILE = "params.json", "metrics.json", "result.json"
PathLike = str | os.PathLike[str]

log = logging.getLogger(__name__)


class RunDirError(ValueError):
    """The output directory is another process's, or holds another run's files."""


def lock_path(directory: PathLike) -> Path:
    """``.<name>.lock`` beside the directory, resolved (a symlink and its target share one lock)."""
    d = Path(directory).resolve()
    return d.with_name(f".{d.name}.lock")


def is_lock_file(name: str) -> bool:
    """A file name :func:`lock_path` gives (``.<name>.lock``)."""
    return name.startswith(".") and name.endswith(".lock") and len(name) > len("..lock")


def _holder(lock: Path) -> str | None:
    """The pid written in ``lock`` when another open file description holds its flock (this process's own
    lock on another descriptor counts too), None when it is absent, unreadable or free (a lock file left by
    a killed process is no lock: the kernel released its flock)."""
    import fcntl

    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared: two probes never refuse each other
        except BlockingIOError:
            return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        return None
    finally:
        os.close(fd)  # releases the probe's shared lock, never the caller's (flock is per open file)


def _tree_locks(real: Path) -> Iterator[tuple[Path, Path, str]]:
    """Every lock file that guards part of ``real``'s tree: ``(lock file, its directory, relation)``, the
    ancestors' (beside each ancestor) first, then every ``.<name>.lock`` inside ``real``."""
    for ancestor in real.parents:
        if ancestor.name:
            yield lock_path(ancestor), ancestor, "is inside"
    for root, _dirs, files in os.walk(real):
        for name in files:
            if is_lock_file(name):
                yield Path(root) / name, Path(root) / name[1:-len(".lock")], "contains"


def _refuse_if_tree_held(directory: PathLike, real: Path, what: str) -> None:
    for lock, guarded, relation in _tree_locks(real):
        if (pid := _holder(lock)) is not None:
            raise RunDirError(f"{what}: {directory} {relation} {guarded}, which another ferd process (pid {pid}) "
                              f"holds; wait for it or use a directory outside its tree")


@contextlib.contextmanager
def owned(directory: PathLike, what: str = "out", wait: bool = False) -> Iterator[Path]:
    """Hold the advisory lock of ``directory``'s tree for the block (its lock file is created if needed,
    not the directory). Refused, before anything is written when no start races this one, if another
    process holds the directory, an ancestor or a descendant; with ``wait``, a holder of the directory
    itself is waited for (logged once, naming it), an ancestor or descendant still refused.

    Two starts at the same instant: each first takes its own lock, then checks the locks of its ancestors
    and descendants. Of two overlapping directories, whichever takes its lock second sees the first's
    (the ancestor's lock file exists before the descendant checks it; the descendant's lock file is listed
    by the ancestor's walk once it exists), so at most one of them starts; both may be refused, never both
    run. Lock files are never removed (removing one that another process has open would split the lock)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks
        yield Path(directory)
        return
    real = Path(directory).resolve()
    _refuse_if_tree_held(directory, real, what)  # the usual refusal: nothing created yet
    path = lock_path(real)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            if not wait:
                raise RunDirError(f"{what}: {directory} is in use by another ferd process (pid {holder}); wait for "
                                  "it or use another directory") from None
            if holder == str(os.getpid()):  # this process's own lock: a wait would never end
                raise RunDirError(f"{what}: {directory} is already held by this process (pid {holder})") from None
            log.info("%s: waiting for the ferd process (pid %s) that holds %s", what, holder, directory)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _refuse_if_tree_held(directory, real, what)  # again, now that this lock is visible to a racing start
        yield Path(directory)
    finally:
        os.close(fd)  # releases the lock


def check_run_dir(out: PathLike, cfg: FerdConfig) -> Literal["new", "resume"]:
    """``new`` (absent or empty) or ``resume`` (``params.json`` of the same run: same parameters up to
    the student; the evaluation may differ and is then redone); anything else is refused."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"out: {out} exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        return "new"
    params = out / PARAMS_FILE
    if not params.is_file():
        raise RunDirError(f"out: {out} holds files but no ferd run ({PARAMS_FILE} missing); use an empty or new "
                          "directory")
    stored = read_json_object_or_none(params)
    try:
        same = stored is not None and params_fingerprint(stored, "distillation") == params_fingerprint(cfg,
                                                                                                      "distillation")
    except (KeyError, TypeError):  # written by another version of the configuration
        same = False
    if not same:
        raise RunDirError(f"out: {out} holds a run made with other parameters ({PARAMS_FILE} differs in what the "
                          "student depends on); use another --out, or remove that run first")
    return "resume"


def write_result(out: PathLike, cfg: FerdConfig, metrics: dict, scope: str = "evaluation",
                 model_sha256: str | None = None) -> Path:
    """``metrics.json`` and then ``result.json``: the fingerprint of ``scope``, the metrics' sha256 and,
    when the metrics are of a model given from outside (a comparison's teacher), that model's sha256."""
    out = Path(out)
    path = atomic_write_json(out / METRICS_FILE, metrics)
    return atomic_write_json(out / RESULT_FILE, {"params_fingerprint": params_fingerprint(cfg, scope), "scope": scope,
                                                 "model_sha256": model_sha256, "metrics_sha256": sha256_file(path)})


def read_metrics(path: PathLike) -> dict[str, float]:
    """A ``metrics.json`` read back (untrusted): a JSON object of numbers, ``null`` standing for an undefined
    statistic (read as NaN); a :class:`RunDirError` naming the file and the key otherwise."""
    path = Path(path)
    data = read_json_object(path, RunDirError, "JSON metrics file")
    bad = next((k for k, v in data.items() if v is not None and not is_number(v)), None)
    if bad is not None:
        raise RunDirError(f"{path}: {str(bad)[:80]}: expected a number or null, got {data[bad]!r:.80}")
    return {k: float("nan") if v is None else float(v) for k, v in data.items()}


def is_finished(out: PathLike, cfg: FerdConfig, scope: str = "evaluation", model_sha256: str | None = None) -> bool:
    """``out`` holds metrics made with ``cfg``'s parameters (``scope``) and model, unchanged since."""
    out = Path(out)
    record = read_json_object_or_none(out / RESULT_FILE)
    return (record is not None and (out / METRICS_FILE).is_file()
            and record.get("params_fingerprint") == params_fingerprint(cfg, scope)
            and record.get("model_sha256") == model_sha256
            and record.get("metrics_sha256") == sha256_file(out / METRICS_FILE))


def set_aside(run_dir: PathLike) -> Path:
    """Move a run made with other parameters to ``<parent>/.stale/<name>-<n>`` (nothing is deleted)."""
    run_dir = Path(run_dir)
    stale = run_dir.parent / ".stale"
    stale.mkdir(parents=True, exist_ok=True)
    n = 0
    while (dest := stale / f"{run_dir.name}-{n}").exists():
        n += 1
    run_dir.rename(dest)
    return dest
