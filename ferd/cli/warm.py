"""``ferd warm -- dvc repro``: run a command whose ``ferd stage`` calls fork from one warm process.

Every ``ferd stage`` of ``dvc repro`` is a new process, and about 3 s of each is importing torch
and ferd, the same 3 s 38 times on the embedded default. Under ``ferd warm`` a worker imports them
once; the command (``dvc repro``) runs with ``FERD_WARM_SOCKET`` and ``FERD_WARM_PID`` set, and each
``ferd stage`` it starts makes sure the socket is the worker's, hands over its argv, working directory,
the environment it has otherwise than the worker, and its standard streams
(:mod:`ferd.cli.warm_protocol`), and the worker forks a child that runs exactly what the stage process
would have run, on those streams. The stage's exit status, and a signal sent to it, pass through; if
the stage process dies the worker kills the child. Results are unchanged: nothing runs in the worker
before the fork but imports (no torch op, no CUDA), and every random number comes from seeded generators.

The stage process runs the stage itself, as without ``ferd warm``, with one line saying why, whenever
the fork could differ from a fresh process or the worker cannot be trusted: the worker is gone, the
socket is not the worker's (another owner or pid, a directory others can enter; nothing is sent to it
and nothing signalled), a variable read at import time differs (:data:`IMPORT_TIME_ENV`), or a source
file of ferd changed since the worker imported it. Running the stage itself is what it would do without
``ferd warm``, so a stale or hostile socket costs the 3 s, never a wrong result or a failed pipeline.

The worker serves every connection from one event loop without blocking on any: a request that is
malformed, aborted, oversized, for a command other than ``ferd stage``, or never sent, is refused or
dropped with one line on its standard error, and the other stages go on.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys

from .warm_protocol import FORWARDED_SIGNALS, MAX_MESSAGE, PID_ENV, SOCKET_ENV, digest, encode, peer_credentials

IMPORT_TIME_ENV = ("PYTHONPATH", "PYTHONHASHSEED", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
                   "PYTORCH_CUDA_ALLOC_CONF", "LD_LIBRARY_PATH", "LD_PRELOAD")
# imported by the worker besides every command module: torch._dynamo is what torch.optim imports on the
# first optimiser (3.5 s, ~900 modules), in every synthesis and distillation stage
PRELOAD = ("ferd.compute.distributed", "ferd.stages", "ferd.stages.io", "ferd.algorithm.preflight", "ferd.algorithm.run_dir", "pyarrow.parquet",
           "torch._dynamo", "ferd.cli.warm_request")
_GONE = "the stage process closed its connection before its request ended"
MAX_PENDING = 64  # connections that sent no request yet: the oldest goes when another comes
REQUEST_TIMEOUT_S = 60.0  # a connection that sends no request within this is dropped (a stuck or hostile client)


# ---- the worker ----

def _sources(package_dir: str) -> dict[str, float]:
    found = {}
    for root, _dirs, files in os.walk(package_dir):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                found[path] = os.stat(path).st_mtime_ns
    return found


class _Refused(Exception):
    """A request the worker will not run: one line for its log, sent to the stage process as a fallback."""


class _Connection:
    """One stage process's connection: its request as it arrives, then its fork."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.fds: list[int] = []  # descriptors that came with the request (its stdin, stdout, stderr)
        self.deadline = deadline
        self.child: int | None = None  # the fork's pid once it runs

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        self.sock.close()


def _log(line: str) -> None:
    print(f"ferd warm: {line}", file=sys.stderr, flush=True)


class Worker:
    """Listens on a Unix socket; forks one child per accepted request and reports its exit status."""

    def __init__(self, path: str) -> None:
        import importlib
        import selectors

        from . import build_parser

        self.environ = dict(os.environ)  # before any import: what the command and a fresh stage start with
        self.digests = {k: digest(v) for k, v in self.environ.items()}
        build_parser()  # every command module (they import the library only when their command runs: PRELOAD)
        for name in PRELOAD:
            importlib.import_module(name)
        import torch

        if torch.cuda.is_initialized():
            raise RuntimeError("ferd warm: CUDA was initialised while importing; a fork could not use it")
        import ferd

        self.package_dir = os.path.dirname(ferd.__file__)
        self.sources = _sources(self.package_dir)
        self.env = {k: self.environ.get(k) for k in IMPORT_TIME_ENV}
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.connections: list[_Connection] = []

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

        self.sel.register(self.listener, selectors.EVENT_READ, None)
        proc = subprocess.Popen(command, env={**self.environ, SOCKET_ENV: self.path, PID_ENV: str(os.getpid())})
        # Ctrl-C reaches the command, which stops its stages and exits; the worker then follows.
        # SIGTERM to the worker is passed on to the command the same way.
        signal.signal(signal.SIGINT, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
        try:
            while proc.poll() is None or self._forks():
                for key, _ in self.sel.select(timeout=0.05):
                    if key.data is None:
                        self._accept()
                    else:
                        self._guarded(key.data, self._readable)
                self._reap()
                self._expire()
                if proc.poll() is not None:
                    for pid in self._forks():  # the command is gone: no one waits for these
                        os.kill(pid, signal.SIGKILL)
            return proc.returncode
        except BaseException:
            proc.terminate()
            for pid in self._forks():
                os.kill(pid, signal.SIGKILL)
            raise
        finally:
            for conn in self.connections:
                conn.close()
            self.sel.close()
            self.listener.close()
            os.unlink(self.path)

    def _forks(self) -> list[int]:
        return [c.child for c in self.connections if c.child is not None]

    def _accept(self) -> None:
        import selectors
        import time

        try:
            sock, _ = self.listener.accept()
        except BlockingIOError:
            return
        except OSError as exc:  # out of descriptors: the oldest connection that sent nothing yet makes room
            idle = [c for c in self.connections if c.child is None]
            _log(f"cannot accept a stage connection ({exc.strerror}); "
                 + ("dropped the oldest that sent no request" if idle else "it waits for a stage to end"))
            if idle:
                self._drop(idle[0])
            return
        sock.setblocking(False)
        idle = [c for c in self.connections if c.child is None]
        if len(idle) >= MAX_PENDING:  # a flood of silent clients holds no more descriptors than this
            _log(f"dropped the oldest of {MAX_PENDING} connections that sent no request yet")
            self._drop(idle[0])
        conn = _Connection(sock, time.monotonic() + REQUEST_TIMEOUT_S)
        self.connections.append(conn)
        self.sel.register(sock, selectors.EVENT_READ, conn)
        self._guarded(conn, self._greet)

    def _greet(self, conn: _Connection) -> None:
        _pid, uid = peer_credentials(conn.sock)
        if uid != os.geteuid():
            raise _Refused(f"a process of uid {uid} connected; only uid {os.geteuid()} is served")
        try:
            conn.sock.sendall(encode({"env": self.digests}))  # non-blocking: a few kB into an empty buffer
        except ConnectionError:
            raise _Refused(_GONE) from None

    def _guarded(self, conn: _Connection, step) -> None:
        """``step(conn)``; whatever goes wrong with one connection ends it (and its fork) with one log line."""
        try:
            step(conn)
        except _Refused as exc:
            _log(f"refused a request: {exc}")
            try:
                conn.sock.sendall(encode({"fallback": str(exc)}))
            except OSError:
                pass
            self._drop(conn)
        except Exception as exc:  # noqa: BLE001 - a client's failure must never end the worker
            _log(f"dropped a stage connection: {type(exc).__name__}: {exc}")
            self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
        """End a connection; a running fork is killed and stays listed until reaped."""
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        if conn.child is None:
            conn.close()
            self.connections.remove(conn)
        else:
            os.kill(conn.child, signal.SIGKILL)  # not reaped yet: the pid is still its

    def _readable(self, conn: _Connection) -> None:
        if conn.child is not None:
            return self._running(conn)
        try:
            message, fds, flags, _ = socket.recv_fds(conn.sock, 65536, 3)
        except BlockingIOError:
            return
        except ConnectionError:
            raise _Refused(_GONE) from None
        conn.fds += fds
        if flags & socket.MSG_CTRUNC:  # the kernel could not hand over all of them
            raise _Refused("the request's descriptors did not all arrive (more than 3, or the worker has no "
                           "descriptors left)")
        if not message:
            raise _Refused(_GONE)
        conn.buffer += message
        if b"\n" in conn.buffer:
            self._request(conn)
        elif len(conn.buffer) > MAX_MESSAGE:
            raise _Refused(f"a request over {MAX_MESSAGE} bytes")

    def _request(self, conn: _Connection) -> None:
        from .warm_request import parse_request

        line, _, rest = bytes(conn.buffer).partition(b"\n")
        conn.buffer[:] = rest
        if len(conn.fds) != 3:
            raise _Refused(f"expected the stage's 3 standard streams with the request, got {len(conn.fds)}")
        try:
            request = parse_request(line)
        except ValueError as exc:
            raise _Refused(str(exc)) from None
        env = {k: v for k, v in self.environ.items() if k not in request.unset}
        env.update(request.env)
        env.pop(SOCKET_ENV, None)  # the fork runs the stage; it is no client
        env.pop(PID_ENV, None)
        reason = self.differs(env)
        if reason is not None:  # a legitimate request the fork would run otherwise: no log line
            conn.sock.sendall(encode({"fallback": reason}))
            return self._drop(conn)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: become the stage process
            self._run_child(request, env, conn)
        for fd in conn.fds:
            os.close(fd)
        conn.fds = []
        conn.child = pid
        conn.sock.sendall(encode({"running": True}))
        self._messages(conn)  # any that came with the request

    def _running(self, conn: _Connection) -> None:
        """A message from a running stage's process: a signal to pass to its fork, or its end."""
        try:
            data = conn.sock.recv(4096)
        except ConnectionError:
            data = b""
        if not data:  # the stage process is gone: its fork must go too
            return self._drop(conn)
        conn.buffer += data
        self._messages(conn)

    def _messages(self, conn: _Connection) -> None:
        """Pass each ``{"signal": n}`` (SIGHUP, SIGINT, SIGTERM) to the connection's own fork; log others."""
        while b"\n" in conn.buffer:
            line, _, rest = bytes(conn.buffer).partition(b"\n")
            conn.buffer[:] = rest
            try:
                number = json.loads(line).get("signal")
            except (ValueError, RecursionError, AttributeError):
                number = None
            if type(number) is int and number in FORWARDED_SIGNALS:
                os.kill(conn.child, number)
            else:
                _log(f"ignored a message from a running stage's process: {line[:80]!r}")
        if len(conn.buffer) > MAX_MESSAGE:
            raise ValueError(f"a message over {MAX_MESSAGE} bytes")

    def _run_child(self, request, env: dict[str, str], conn: _Connection) -> None:
        rc = 1
        try:
            from ..compute.lifetime import die_with_parent

            die_with_parent()  # no stage outlives the worker that waits for it
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            for fd, target in zip(conn.fds, (0, 1, 2)):
                os.dup2(fd, target)
            for other in self.connections:  # every descriptor of the worker's, this one's included
                other.close()
            self.sel.close()
            self.listener.close()
            os.chdir(request.cwd)
            os.environ.clear()
            os.environ.update(env)
            sys.argv = ["ferd", *request.argv]
            from . import main

            rc = main(request.argv)
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

    def _reap(self) -> None:
        for conn in [c for c in self.connections if c.child is not None]:
            done, status = os.waitpid(conn.child, os.WNOHANG)
            if done == 0:
                continue
            code = os.waitstatus_to_exitcode(status)
            try:
                conn.sock.sendall(encode({"rc": code if code >= 0 else 128 - code}))
            except OSError:  # the stage process is gone
                pass
            conn.child = None
            self._drop(conn)

    def _expire(self) -> None:
        import time

        now = time.monotonic()
        for conn in [c for c in self.connections if c.child is None and c.deadline < now]:
            _log(f"dropped a stage connection that sent no request within {REQUEST_TIMEOUT_S:.0f} s")
            self._drop(conn)


def _warm(args: argparse.Namespace) -> int:
    import tempfile

    command = args.command_line[1:] if args.command_line[:1] == ["--"] else args.command_line
    if not command:
        raise ValueError("command: expected the command to run after --, e.g. ferd warm -- dvc repro")
    with tempfile.TemporaryDirectory(prefix="ferd-warm-") as tmp:  # created 0700: only we can reach the socket
        return Worker(os.path.join(tmp, "stage.sock")).serve_until(command)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("warm", help="run a command (dvc repro) whose `ferd stage` calls fork from one warm worker",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("command_line", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="e.g. -- dvc repro")
    p.set_defaults(func=_warm)
