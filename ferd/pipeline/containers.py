"""``ferd pipeline run-local --runner docker``: every task of the DAG in a container of ferd's image, through
``kfp.local.DockerRunner`` on Docker or on podman's Docker-compatible API.

Two adaptations of kfp's runner, both installed only for the run (:func:`docker_runner`):

* **How a task's container is run** (:func:`run_task_container` replaces kfp's ``run_docker_container``).
  kfp starts the container with ``auto_remove=True`` and then asks for its logs and exit status; a task that
  ends quickly is gone by then. Docker answers 404, which kfp takes as *success* (a fast failure reported as
  SUCCESS); podman 4.3 answers 500, which kfp does not handle. Here the container is kept until its exit
  status is read, then removed: a failing task is a failure on both engines. kfp's command replaces the
  image's entrypoint, as a Kubernetes ``command`` does (kfp hands it to Docker as arguments to the
  entrypoint, ``ferd``). The image is looked up by its
  pinned reference, never pulled implicitly, and the task's environment gets
  :data:`ferd.core.image.PASS_ENV` (threads, CPU-kernel pins, S3 credentials, signing key) as set here.
* **The user inside** (:func:`container_user`). Tasks write into the pipeline root, bind-mounted from this
  machine. They run as the image's own non-root user when that user can write there (the caller's uid is
  the image's, or the caller is root and hands it the run's folder); otherwise as the caller's uid:gid, the
  usual ``docker run --user`` for bind mounts.

Without a Docker daemon, ``$DOCKER_HOST`` may point at ``podman system service``; when it is unset and
``/var/run/docker.sock`` does not exist but ``podman`` does, :func:`docker_api` starts that service on a
private socket for the run and stops it afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ferd.core.image import PASS_ENV

IMAGE_UID = 1000  # the image's user (Dockerfile: USER 1000:1000)
DOCKER_SOCKET = Path("/var/run/docker.sock")


def container_user(root: Path) -> str | None:
    """The ``user`` to run tasks as, writing under ``root``: None (the image's user) when it can, else the
    caller's ``uid:gid``. As root, ``root`` is handed to the image's user first."""
    uid = os.getuid()
    if uid == IMAGE_UID:
        return None
    if uid == 0:
        for path in (root, *root.rglob("*")):
            os.chown(path, IMAGE_UID, IMAGE_UID, follow_symlinks=False)
        return None
    return f"{uid}:{os.getgid()}"


def run_task_container(client, image: str, command: list[str], volumes: dict, **run_args) -> int:
    """Run one task's container to its end and return its exit status (kfp's ``run_docker_container``, without
    auto-removal: see the module docstring)."""
    import docker

    client.images.get(image)  # the pinned image must be here: a missing one is an error, not a pull
    env = dict(run_args.pop("environment", None) or {})
    env.update({name: os.environ[name] for name in PASS_ENV if name in os.environ and name not in env})
    run_args.pop("auto_remove", None)
    # kfp's command is a Kubernetes `command`: it replaces the image's entrypoint (`ferd`), as on a cluster
    container = client.containers.run(image=image, entrypoint=command[:1], command=command[1:], detach=True,
                                      volumes=volumes, environment=env, **run_args)
    try:
        for chunk in container.logs(stream=True, follow=True):
            print(chunk.decode(errors="replace"), end="")
        return int(container.wait()["StatusCode"])
    finally:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)


@contextlib.contextmanager
def docker_api() -> Iterator[None]:
    """A Docker API for the run: ``$DOCKER_HOST`` or Docker's socket when there is one, else podman's service
    on a private socket (started here, stopped on exit)."""
    if os.environ.get("DOCKER_HOST") or DOCKER_SOCKET.exists() or shutil.which("podman") is None:
        yield
        return
    folder = Path(tempfile.mkdtemp(prefix="ferd-podman-"))
    sock = folder / "podman.sock"
    service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):  # the socket appears when the service listens (poll, not a fixed delay)
            if sock.exists() or service.poll() is not None:
                break
            time.sleep(0.1)
        if not sock.exists():
            raise RuntimeError("podman system service did not start (is podman configured? see image/README.md)")
        os.environ["DOCKER_HOST"] = f"unix://{sock}"
        yield
    finally:
        os.environ.pop("DOCKER_HOST", None)
        service.terminate()
        service.wait()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def docker_runner(root: Path) -> Iterator[object]:
    """``kfp.local.DockerRunner`` for tasks writing under ``root``, with :func:`run_task_container` in place of
    kfp's container function for the duration (restored on exit)."""
    from kfp import local
    from kfp.local import docker_task_handler

    user = container_user(root)
    original = docker_task_handler.run_docker_container
    docker_task_handler.run_docker_container = run_task_container
    try:
        with docker_api():
            yield local.DockerRunner(**({"user": user} if user else {}))
    finally:
        docker_task_handler.run_docker_container = original
