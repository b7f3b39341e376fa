"""What a stage process and the ``ferd warm`` worker say to each other, and how the stage process makes
sure it is talking to the worker before it says anything.

The worker listens on ``stage.sock`` in a directory it creates 0700, and sets ``FERD_WARM_SOCKET`` (the
socket) and ``FERD_WARM_PID`` (its pid) for its command. A stage process sends nothing until
:func:`connect_to_worker` has checked the directory (a real directory, ours, no access for group or others),
the socket (a socket, not a link, ours) and the listening peer (``SO_PEERCRED``: our uid and the pid
``FERD_WARM_PID`` names). The messages are one JSON object a line:

- worker → stage, on connect: ``{"env": {name: sha256 of value}}``, the worker's environment as hashes;
- stage → worker, with the stage's stdin/stdout/stderr as descriptors: ``{"argv", "cwd", "env", "unset"}``
  where ``env`` holds only the variables whose value the worker lacks or has otherwise and ``unset`` the
  worker's variables the stage process lacks. The worker was started with the command's environment, so
  secrets set before ``ferd warm`` (``FERD_SIGNING_KEY``, ``AWS_SECRET_ACCESS_KEY``, …) are already the
  worker's and never cross the socket; the fork gets them from the worker's own environment;
- worker → stage: ``{"fallback": reason}`` (run the stage yourself) or ``{"running": true}``, then
  ``{"rc": status}`` when the fork ends;
- stage → worker, while it runs: ``{"signal": n}`` for SIGINT/SIGTERM/SIGHUP the stage process received.
  The stage process never signals a process itself: the worker signals its own fork, and kills it when the
  stage process's connection drops.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import struct

SOCKET_ENV = "FERD_WARM_SOCKET"
PID_ENV = "FERD_WARM_PID"
FORWARDED_SIGNALS = (1, 2, 15)  # SIGHUP, SIGINT, SIGTERM
MAX_MESSAGE = 1 << 20  # a request carries argv, cwd and a few changed variables: far below this


def digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()


def encode(message: dict) -> bytes:
    return json.dumps(message).encode() + b"\n"


def receive(conn: socket.socket, buffer: bytearray) -> dict | None:
    """One newline-terminated JSON object (blocking), None at end of stream; ValueError if it is not one."""
    while b"\n" not in buffer:
        if len(buffer) > MAX_MESSAGE:
            raise ValueError(f"a message over {MAX_MESSAGE} bytes")
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError(f"expected a JSON object, got {type(message).__name__}")
    return message


def peer_credentials(conn: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a connected Unix socket (Linux ``SO_PEERCRED``)."""
    fmt = "3i"
    pid, uid, _gid = struct.unpack(fmt, conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize(fmt)))
    return pid, uid


def _refuse_path(path: str) -> str | None:
    """Why ``path`` is not a socket only this user can reach, or None."""
    uid = os.geteuid()
    directory = os.path.dirname(os.path.abspath(path))
    try:
        d, s = os.lstat(directory), os.lstat(path)
    except OSError as exc:
        return f"{exc.strerror.lower()}: {exc.filename}"
    if not stat.S_ISDIR(d.st_mode) or d.st_uid != uid or d.st_mode & 0o077:
        return f"its directory {directory} is not a directory of uid {uid} with mode 0700 (uid {d.st_uid}, " \
               f"mode {stat.filemode(d.st_mode)})"
    if not stat.S_ISSOCK(s.st_mode) or s.st_uid != uid:
        return f"{path} is not a socket of uid {uid} (uid {s.st_uid}, mode {stat.filemode(s.st_mode)})"
    return None


def connect_to_worker(path: str, pid_text: str | None) -> socket.socket | str:
    """A connection to the ``ferd warm`` worker at ``path`` whose pid is ``pid_text``, or why not (then
    nothing was sent). The path checks keep other users out; ``SO_PEERCRED`` proves who listens."""
    if not (pid_text or "").isdigit():
        return f"${PID_ENV} is not a pid ({pid_text!r})"
    reason = _refuse_path(path)
    if reason is not None:
        return reason
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        pid, uid = peer_credentials(conn)
    except OSError as exc:
        conn.close()
        return f"cannot connect to {path}: {exc.strerror or exc}"
    if uid != os.geteuid() or pid != int(pid_text):
        conn.close()
        return f"{path} is served by pid {pid} (uid {uid}), not the worker (pid {pid_text}, uid {os.geteuid()})"
    return conn


def env_change(worker_env: dict[str, str], env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The variables of ``env`` the worker lacks or has otherwise (``worker_env``: name → digest), and the
    worker's variables ``env`` lacks: all the fork needs to rebuild ``env`` from the worker's own."""
    changed = {k: v for k, v in env.items() if worker_env.get(k) != digest(v)}
    return changed, sorted(k for k in worker_env if k not in env)
