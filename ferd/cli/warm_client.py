"""The stage process's side of ``ferd warm`` (:mod:`ferd.cli.warm`): check the socket is the worker's, hand
the stage to it, pass signals and the exit status through; or say in one line why the stage runs in its own
process."""

from __future__ import annotations

import os
import signal
import socket
import sys

from .warm_protocol import FORWARDED_SIGNALS, PID_ENV, SOCKET_ENV, connect_to_worker, encode, env_change, receive


def _fallback(reason: str) -> None:
    print(f"ferd warm: this stage runs in its own process: {reason}", file=sys.stderr)


def client(argv: list[str]) -> int | None:
    """Run ``ferd <argv>`` in a child of the worker at ``$FERD_WARM_SOCKET``; its exit status, or None
    when the worker cannot take it or is not verifiably the worker (then the caller runs the command
    itself)."""
    path = os.environ.get(SOCKET_ENV)
    if not path:
        return None
    conn = connect_to_worker(path, os.environ.get(PID_ENV))
    if isinstance(conn, str):
        return _fallback(f"${SOCKET_ENV} is not the warm worker's socket: {conn}")
    buffer = bytearray()
    try:
        greeting = receive(conn, buffer)
        digests = (greeting or {}).get("env")
        if not isinstance(digests, dict):
            raise ValueError("the worker sent no environment digests")
        changed, unset = env_change(digests, dict(os.environ))
        request = encode({"argv": argv, "cwd": os.getcwd(), "env": changed, "unset": unset})
        sent = socket.send_fds(conn, [request], [0, 1, 2])
        if sent < len(request):  # (an empty send to a worker that already answered would fail)
            conn.sendall(request[sent:])
        reply = receive(conn, buffer)
    except (OSError, ValueError) as exc:
        conn.close()
        return _fallback(f"the worker's connection failed ({exc})")
    if reply is None or reply.get("running") is not True:
        conn.close()
        return _fallback(str((reply or {}).get("fallback", "the worker closed the connection")))

    def forward(signum: int, _frame: object) -> None:  # the worker signals its fork; we signal no one
        try:
            conn.sendall(encode({"signal": signum}))
        except OSError:
            pass

    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, forward)
    try:
        done = receive(conn, buffer)  # a forwarded signal does not interrupt it (PEP 475)
    except (OSError, ValueError):
        done = None
    rc = (done or {}).get("rc")
    if type(rc) is not int or not 0 <= rc <= 255:  # the worker died: its children die with it (PR_SET_PDEATHSIG)
        print("ferd warm: the worker went away before the stage finished", file=sys.stderr)
        return 1
    return rc
