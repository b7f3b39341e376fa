"""``ferd warm -- dvc repro``: run a command whose ``ferd stage`` calls fork from one warm process.

Every ``ferd stage`` of ``dvc repro`` is a new process, and about 3 s of each is importing torch
and ferd, the same 3 s 38 times on the embedded default. Under ``ferd warm`` a worker imports them
once; the command (``dvc repro``) runs with ``FERD_WARM_SOCKET`` set, and each ``ferd stage`` it
starts connects there, hands over its argv, working directory, environment and standard streams,
and the worker forks a child that runs exactly what the stage process would have run, on those
streams. The stage's exit status, and a signal sent to it, pass through; if the stage process
dies the child is killed. Results are unchanged: nothing runs in the worker before the fork but
imports (no torch op, no CUDA), and every random number comes from seeded generators.

The stage process runs the stage itself, as without ``ferd warm``, whenever the fork could differ
from a fresh process: the worker is gone, a variable read at import time differs
(:data:`IMPORT_TIME_ENV`), or a source file of ferd changed since the worker imported it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys

SOCKET_ENV = "FERD_WARM_SOCKET"
IMPORT_TIME_ENV = ("PYTHONPATH", "PYTHONHASHSEED", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
                   "PYTORCH_CUDA_ALLOC_CONF", "LD_LIBRARY_PATH", "LD_PRELOAD")
# imported by the worker besides every command module: torch._dynamo is what torch.optim imports on the
# first optimiser (3.5 s, ~900 modules), in every synthesis and distillation stage
PRELOAD = ("ferd.distributed", "ferd.stages", "ferd.stages.io", "ferd.preflight", "ferd.run_dir", "pyarrow.parquet",
           "torch._dynamo")
_MAX_MESSAGE = 1 << 20


def _send(conn: socket.socket, data: dict) -> None:
    conn.sendall(json.dumps(data).encode() + b"\n")


def _receive(conn: socket.socket, buffer: bytearray) -> dict | None:
    """One newline-terminated JSON message, None at end of stream."""
    while b"\n" not in buffer:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return json.loads(line)


# ---- the stage process: hand the work to the worker ----

def client(argv: list[str]) -> int | None:
    """Run ``ferd <argv>`` in a child of the worker at ``$FERD_WARM_SOCKET``; its exit status, or None
    when the worker cannot take it (then the caller runs the command itself)."""
    path = os.environ.get(SOCKET_ENV)
    if not path:
        return None
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
        request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode() + b"\n"
        socket.send_fds(conn, [request], [0, 1, 2])
        buffer = bytearray()
        reply = _receive(conn, buffer)
    except OSError:
        return None
    if reply is None or "pid" not in reply:
        reason = (reply or {}).get("fallback", "the worker closed the connection")
        print(f"ferd warm: this stage runs in its own process: {reason}", file=sys.stderr)
        return None
    child = int(reply["pid"])

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    done = _receive(conn, buffer)  # a forwarded signal does not interrupt it (PEP 475)
    if done is None:  # the worker died: its children die with it (PR_SET_PDEATHSIG)
        forward(signal.SIGKILL, None)
        return 1
    return int(done["rc"])


# ---- the worker ----

def _sources(package_dir: str) -> dict[str, float]:
    found = {}
    for root, _dirs, files in os.walk(package_dir):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                found[path] = os.stat(path).st_mtime_ns
    return found


class Worker:
    """Listens on a Unix socket; forks one child per request and reports its exit status."""

    def __init__(self, path: str) -> None:
        import importlib

        from . import build_parser

        build_parser()  # every command module (they import the library only when their command runs: PRELOAD)
        for name in PRELOAD:
            importlib.import_module(name)
        import torch

        if torch.cuda.is_initialized():
            raise RuntimeError("ferd warm: CUDA was initialised while importing; a fork could not use it")
        import ferd

        self.package_dir = os.path.dirname(ferd.__file__)
        self.sources = _sources(self.package_dir)
        self.env = {k: os.environ.get(k) for k in IMPORT_TIME_ENV}
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(8)
        self.children: dict[int, socket.socket] = {}  # child pid → the stage process's connection

    def differs(self, env: dict[str, str]) -> str | None:
        """Why a fork of this worker could differ from a fresh ``ferd`` process, or None."""
        changed = [k for k in IMPORT_TIME_ENV if env.get(k) != self.env[k]]
        if changed:
            return f"environment variable {changed[0]} differs from the worker's"
        if _sources(self.package_dir) != self.sources:
            return "ferd's source changed since the worker imported it"
        return None

    def serve_until(self, command: list[str]) -> int:
        """Run ``command`` with ``$FERD_WARM_SOCKET`` set; serve its stage processes until it exits."""
        import selectors
        import subprocess

        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, "accept")
        proc = subprocess.Popen(command, env={**os.environ, SOCKET_ENV: self.path})
        # Ctrl-C reaches the command, which stops its stages and exits; the worker then follows.
        # SIGTERM to the worker is passed on to the command the same way.
        signal.signal(signal.SIGINT, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
        try:
            while proc.poll() is None or self.children:
                for key, _ in sel.select(timeout=0.05):
                    if key.data == "accept":
                        conn, _ = self.listener.accept()
                        self._start(conn, sel)
                    else:  # a stage process closed its end: it is gone, its child must go too
                        self._abandon(key.fileobj, sel)
                self._reap(sel)
                if proc.poll() is not None and self.children:
                    for pid in list(self.children):  # the command is gone: no one waits for these
                        os.kill(pid, signal.SIGKILL)
            return proc.returncode
        except BaseException:
            proc.terminate()
            for pid in self.children:
                os.kill(pid, signal.SIGKILL)
            raise
        finally:
            self.listener.close()
            os.unlink(self.path)

    def _start(self, conn: socket.socket, sel) -> None:
        import selectors

        message, fds, _flags, _addr = socket.recv_fds(conn, _MAX_MESSAGE, 3)
        try:
            while b"\n" not in message and len(message) < _MAX_MESSAGE:  # the rest of a long request
                chunk = conn.recv(65536)
                if not chunk:
                    break
                message += chunk
            request = json.loads(message.partition(b"\n")[0])
            reason = self.differs(request["env"]) if len(fds) == 3 else "the standard streams did not arrive"
        except (ValueError, KeyError) as exc:
            reason = f"unreadable request ({exc})"
        if reason is not None:
            for fd in fds:
                os.close(fd)
            _send(conn, {"fallback": reason})
            conn.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: become the stage process
            self._run_child(request, fds, conn)
        for fd in fds:
            os.close(fd)
        self.children[pid] = conn
        sel.register(conn, selectors.EVENT_READ, "stage")
        _send(conn, {"pid": pid})

    def _run_child(self, request: dict, fds: list[int], conn: socket.socket) -> None:
        rc = 1
        try:
            from ..lifetime import die_with_parent

            die_with_parent()  # no stage outlives the worker that waits for it
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self.listener.close()
            conn.close()
            for fd, target in zip(fds, (0, 1, 2)):
                os.dup2(fd, target)
                os.close(fd)
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update({k: v for k, v in request["env"].items() if k != SOCKET_ENV})
            sys.argv = ["ferd", *request["argv"]]
            from . import main

            rc = main(request["argv"])
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except KeyboardInterrupt:
            rc = 128 + signal.SIGINT
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:  # a closed pipe: nothing left to tell
                    pass
            os._exit(rc)

    def _reap(self, sel) -> None:
        for pid in list(self.children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == 0:
                continue
            conn = self.children.pop(pid)
            if _registered(sel, conn):
                sel.unregister(conn)
            code = os.waitstatus_to_exitcode(status)
            try:
                _send(conn, {"rc": code if code >= 0 else 128 - code})
            except OSError:
                pass
            conn.close()

    def _abandon(self, conn: socket.socket, sel) -> None:
        sel.unregister(conn)
        for pid, c in list(self.children.items()):
            if c is conn:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _registered(sel, conn: socket.socket) -> bool:
    try:
        sel.get_key(conn)
        return True
    except KeyError:
        return False


def _warm(args: argparse.Namespace) -> int:
    import tempfile

    command = args.command_line[1:] if args.command_line[:1] == ["--"] else args.command_line
    if not command:
        raise ValueError("command: expected the command to run after --, e.g. ferd warm -- dvc repro")
    with tempfile.TemporaryDirectory(prefix="ferd-warm-") as tmp:
        return Worker(os.path.join(tmp, "stage.sock")).serve_until(command)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("warm", help="run a command (dvc repro) whose `ferd stage` calls fork from one warm worker",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("command_line", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="e.g. -- dvc repro")
    p.set_defaults(func=_warm)
