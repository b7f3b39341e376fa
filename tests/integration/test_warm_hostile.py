"""``ferd warm`` against hostile or careless peers (issue 34).

A stage process checks the socket ``$FERD_WARM_SOCKET`` names before it sends anything: a rogue listener
gets no byte and no signal, and the stage runs in its own process. The worker survives any client's
failure with one log line, and serves the next stage.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from support.faultlog import record

ROOT = Path(__file__).resolve().parents[2]
FERD = str(Path(sys.executable).parent / "ferd")
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
       "OMP_NUM_THREADS": "1"}
SECRETS = {"FERD_SIGNING_KEY": "hostile-test-signing-key", "AWS_SECRET_ACCESS_KEY": "hostile-test-aws-secret"}


def _stage(out: Path) -> list[str]:
    return [FERD, "stage", "teacher-fetch", "--params", str(ROOT / "params" / "ci.yaml"), "--out", str(out),
            "--no-progress"]


class Rogue(threading.Thread):
    """A plain listener on ``path``: counts the bytes each connection sends, and answers a request with
    ``{"pid": reply_pid}`` (what a worker answers) to see whether the stage process signals that pid."""

    def __init__(self, path: Path, reply_pid: int) -> None:
        super().__init__(daemon=True)
        self.path, self.reply_pid, self.received = path, reply_pid, 0
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(8)

    def run(self) -> None:
        while True:
            conn, _ = self.listener.accept()
            with conn:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if data == b"STOP\n":
                    return
                self.received += len(data)
                if data:
                    conn.sendall(json.dumps({"pid": self.reply_pid}).encode() + b"\n")

    def stop(self) -> None:
        """Connections are accepted in order: the stage's (if any) is served before this one."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(self.path))
            s.sendall(b"STOP\n")
        self.join(timeout=60)
        self.listener.close()


def _rogue_socket(tmp_path: Path, case: str, bystander: int) -> tuple[Rogue, str, str | None]:
    """(the rogue, $FERD_WARM_SOCKET, $FERD_WARM_PID) for one way of planting a rogue listener."""
    home = tmp_path / "rogue"
    home.mkdir(mode=0o700)
    rogue = Rogue(home / "stage.sock", reply_pid=bystander)
    if case == "directory 0777":  # anyone could have bound it; the pid even names the listener
        os.chmod(home, 0o777)
        return rogue, str(rogue.path), str(os.getpid())
    if case == "listener is not the worker pid":  # our directory, our socket, another process listening
        return rogue, str(rogue.path), str(bystander)
    if case == "no FERD_WARM_PID":  # a FERD_WARM_SOCKET left exported, say
        return rogue, str(rogue.path), None
    link_home = tmp_path / "link"  # "symlink": a link in a good directory to a socket elsewhere
    link_home.mkdir(mode=0o700)
    (link_home / "stage.sock").symlink_to(rogue.path)
    return rogue, str(link_home / "stage.sock"), str(os.getpid())


@pytest.mark.parametrize("case", ["directory 0777", "listener is not the worker pid", "no FERD_WARM_PID", "symlink"])
def test_a_rogue_listener_gets_no_byte_and_no_signal_and_the_stage_runs_in_its_own_process(tmp_path, case):
    bystander = subprocess.Popen(["sleep", "600"])
    try:
        rogue, path, pid = _rogue_socket(tmp_path, case, bystander.pid)
        rogue.start()
        env = {**ENV, **SECRETS, "FERD_WARM_SOCKET": path}
        env.pop("FERD_WARM_PID", None)
        if pid is not None:
            env["FERD_WARM_PID"] = pid
        out = tmp_path / "teacher"
        proc = subprocess.run(_stage(out), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        rogue.stop()
        alive = bystander.poll() is None
        survived = proc.returncode == 0 and rogue.received == 0 and alive and (out / "manifest.json").exists()
        record(f"stage client meets a rogue socket ({case})", "FERD_WARM_SOCKET names a listener that is not the "
               "worker, which answers with a bystander's pid", survived, 0 if survived else 1)
        # bytes the rogue got (the stage's environment), whether the pid it named lives, the stage's status
        assert (rogue.received, alive, proc.returncode) == (0, True, 0), proc.stderr
        warnings = [line for line in proc.stderr.splitlines() if line.startswith("ferd warm:")]
        assert len(warnings) == 1 and "is not the warm worker's socket" in warnings[0], proc.stderr
        assert "signature" in json.loads((out / "manifest.json").read_text())  # its own environment: signed
    finally:
        bystander.kill()
        bystander.wait()


# Each entry: (what the client does, the line the worker logs for it). Run by _HOSTILE inside `ferd warm`.
BAD_CLIENTS = [
    ("closed before sending", "the stage process closed its connection before its request ended"),
    ("closed mid-line", "the stage process closed its connection before its request ended"),
    ("not JSON", "not a JSON request"),
    ("a JSON list", "Input should be a valid dictionary"),
    ("env as a list", "env: Input should be a valid dictionary"),
    ("argv not strings", "argv.1: Input should be a valid string"),
    ("argv run", "only `ferd stage …` runs in the worker, not `ferd run …`"),
    ("a huge line", "a request over 1048576 bytes"),
    ("nested 100000 deep", "not a JSON request"),
    ("no descriptors", "expected the stage's 3 standard streams with the request, got 0"),
    ("four descriptors", "the request's descriptors did not all arrive (more than 3"),
    ("relative cwd", "cwd: expected an absolute directory, got 'relative'"),
    ("idle during a stage", "only `ferd stage …` runs in the worker, not `ferd run …`"),
    # a stage's own client, while its fork runs, asks for signals the worker never sends for it
    ("signal -1 (every process)", "ignored a message from a running stage's process: b'{\"signal\": -1}'"),
    ("signal 9", "ignored a message from a running stage's process: b'{\"signal\": 9}'"),
    ("not JSON while running", "ignored a message from a running stage's process: b'[1]'"),
]

_HOSTILE = r'''
import json, os, socket, subprocess, sys
path, out, stage = os.environ["FERD_WARM_SOCKET"], sys.argv[1], sys.argv[2:]
env = dict(os.environ)
def request(**change):
    return (json.dumps({"argv": ["stage", "teacher-fetch"], "cwd": os.getcwd(), "env": env, "unset": [], **change})
            + "\n").encode()
def connect():
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(path)
    return c
def send(data, fds=(0, 1, 2)):
    """Send data (with fds), then read until the worker closes: it has dealt with this client."""
    with connect() as c:
        try:
            sent = socket.send_fds(c, [data], list(fds)) if fds else 0
            c.sendall(data[sent:])
            while c.recv(65536):
                pass
        except OSError:
            pass
with connect() as c:  # closed before sending
    pass
with connect() as c:  # closed mid-line
    socket.send_fds(c, [b'{"argv": ["stage", '], [0, 1, 2])
send(b"not json\n")
send(b"[1, 2]\n")
send(request(env=[]))
send(request(argv=["stage", 1]))
send(request(argv=["run", "--help"]))
send(b"{" + b" " * (2 << 20) + b"}\n")
send(b"[" * 100000 + b"\n")
send(request(), fds=())
send(request(), fds=(0, 1, 2, 2))
send(request(cwd="relative"))
idle = connect()  # connects, sends nothing while a real stage runs through the worker
stage_run = subprocess.run(stage, capture_output=True, text=True)
sys.stderr.write(stage_run.stderr)
send_idle = request(argv=["run", "--help"])
socket.send_fds(idle, [send_idle], [0, 1, 2])
while idle.recv(65536):
    pass
idle.close()
# a client of its own: a second stage, with forged signal requests right behind its request
with connect() as c:
    buffer = b""
    while b"\n" not in buffer:
        buffer += c.recv(65536)
    data = request(argv=stage[1:-2] + [out + "-second"] + stage[-1:])
    data += b'{"signal": -1}\n{"signal": 9}\n[1]\n'
    socket.send_fds(c, [data], [0, 1, 2])
    replies = b""
    while chunk := c.recv(65536):
        replies += chunk
second = [json.loads(line) for line in replies.split(b"\n") if line]
sys.exit(stage_run.returncode or (second != [{"running": True}, {"rc": 0}]))
'''


def test_the_worker_survives_malformed_and_aborted_requests_and_then_runs_a_stage(tmp_path):
    script = tmp_path / "hostile.py"
    script.write_text(_HOSTILE)
    out = tmp_path / "teacher"
    proc = subprocess.run([FERD, "warm", "--", sys.executable, str(script), str(out), *_stage(out)], cwd=tmp_path,
                          env={**ENV, **SECRETS}, capture_output=True, text=True, timeout=600)
    logged = [line for line in proc.stderr.splitlines() if line.startswith("ferd warm: ")]
    survived = proc.returncode == 0 and (out / "manifest.json").exists()
    record("warm worker meets malformed or aborted requests", f"{len(BAD_CLIENTS)} bad clients, then a stage",
           survived, 0 if survived else 1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "this stage runs in its own process" not in proc.stderr  # the stage ran in a fork
    for made in (out, tmp_path / "teacher-second"):  # in a fork, with the worker's signing key
        assert "signature" in json.loads((made / "manifest.json").read_text())
    assert len(logged) == len(BAD_CLIENTS), logged  # one line for each bad client, none for the stage
    for _client, line in BAD_CLIENTS:
        assert any(line in entry for entry in logged), (line, logged)
    assert not any("Traceback" in line for line in proc.stderr.splitlines())


def test_secrets_the_worker_already_has_never_cross_the_socket():
    from ferd.cli.warm_protocol import digest, env_change

    worker = {"PATH": "/bin", **SECRETS}
    stage = {**worker, "FERD_WARM_SOCKET": "/tmp/x/stage.sock", "FERD_WARM_PID": "7", "DVC_STAGE": "train"}
    del stage["PATH"]
    changed, unset = env_change({k: digest(v) for k, v in worker.items()}, stage)
    assert changed == {"FERD_WARM_SOCKET": "/tmp/x/stage.sock", "FERD_WARM_PID": "7", "DVC_STAGE": "train"}
    assert unset == ["PATH"]
    changed, _ = env_change({k: digest(v) for k, v in worker.items()}, {**stage, "FERD_SIGNING_KEY": "another"})
    assert changed["FERD_SIGNING_KEY"] == "another"  # a key changed after the worker started: sent, to the worker only


_FLOOD = r'''
import os, resource, socket, subprocess, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the flood is limited by the worker's descriptors only
idle = []
for _ in range(int(sys.argv[1])):  # connect, send nothing, stay
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(os.environ["FERD_WARM_SOCKET"])
    idle.append(c)
sys.exit(subprocess.run(sys.argv[2:]).returncode)
'''


def test_a_flood_of_idle_connections_does_not_lock_stages_out(tmp_path):
    script = tmp_path / "flood.py"
    script.write_text(_FLOOD)
    out = tmp_path / "teacher"
    # the worker may hold 256 descriptors (its imports use some); 600 connections send nothing
    proc = subprocess.run(["bash", "-c", 'ulimit -Sn 256 && exec "$@"', "-", FERD, "warm", "--", sys.executable,
                           str(script), "600", *_stage(out)], cwd=tmp_path, env={**ENV, **SECRETS}, capture_output=True,
                          text=True, timeout=600)
    survived = proc.returncode == 0 and (out / "manifest.json").exists()
    record("warm worker out of descriptors", "600 connections that send nothing, then a stage", survived,
           0 if survived else 1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dropped the oldest of 64 connections that sent no request yet" in proc.stderr
    assert "this stage runs in its own process" not in proc.stderr  # served by the worker, in a fork
