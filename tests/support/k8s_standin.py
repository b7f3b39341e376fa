"""A local stand-in of the Kubernetes API for the routes a stage's job uses (tests/integration/test_launch.py).

A threading http.server on 127.0.0.1 answering what the kubeflow SDK's TrainerClient and the Kubernetes
client call to create and await a Kubeflow Trainer ``TrainJob`` (the Trainer's version ConfigMap, the
``torch-distributed`` ClusterTrainingRuntime, trainjobs, the job's pods) or a training-operator
``PyTorchJob``. Created objects are recorded; a job reports no condition at its first read and then
``outcome`` (``succeeded`` or ``failed``). With ``execute`` (environment variables) a created TrainJob's
trainer command really runs here, as one node of the job (the ``PET_*`` variables torchrun reads, the
job's env values, its ``secretKeyRef`` entries resolved from ``secrets`` as the kubelet would, ``execute``),
and the job's condition follows its exit status; a secret reaches the job only through its spec (the
test process's ``$FERD_SIGNING_KEY`` is not inherited). ``on_create`` is called with every created
object (a test writing what the job would return). Any other route answers 404 and is recorded as an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from http.server import ThreadingHTTPServer

from support.json_handler import JsonHandler

TRAINER = "/apis/trainer.kubeflow.org/v1alpha1"
OPERATOR = "/apis/kubeflow.org/v1"
RUNTIME = {  # the torch-distributed ClusterTrainingRuntime of the Trainer's manifests, reduced to what is read
    "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "ClusterTrainingRuntime",
    "metadata": {"name": "torch-distributed", "labels": {"trainer.kubeflow.org/framework": "torch"}},
    "spec": {"mlPolicy": {"numNodes": 1, "torch": {"numProcPerNode": "auto"}},
             "template": {"spec": {"replicatedJobs": [{
                 "name": "node",
                 "template": {"metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
                              "spec": {"template": {"spec": {"containers": [
                                  {"name": "node", "image": "pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime",
                                   "command": ["/bin/bash", "-c", "torchrun"]}]}}}}}]}}},
}


class K8sStandIn(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, outcome: str = "succeeded", execute: dict[str, str] | None = None,
                 secrets: dict[str, dict[str, str]] | None = None,
                 on_create: Callable[[dict], None] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.outcome = outcome
        self.execute = execute
        self.secrets = secrets or {}  # secret name -> {key: value}
        self.on_create = on_create
        self.exit_status: dict[str, int | None] = {}  # executed jobs: None while running
        self.created: dict[str, dict] = {}  # "<plural>/<name>" -> body as posted
        self.reads: dict[str, int] = {}
        self.errors: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def configuration(self):
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        return cfg

    def secret_env(self, name: str, entries: list[dict]) -> dict[str, str]:
        """The values of a container's ``secretKeyRef`` entries; a missing required one fails the job (the
        kubelet's CreateContainerConfigError)."""
        out = {}
        for e in entries:
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref is None:
                continue
            value = self.secrets.get(ref["name"], {}).get(ref["key"])
            if value is None and not ref.get("optional"):
                raise KeyError(f"job {name}: secret {ref['name']}/{ref['key']} not found")
            if value is not None:
                out[e["name"]] = value
        return out

    def run(self, name: str, trainjob: dict) -> None:
        """Run a TrainJob's trainer command as its one node (a thread waits for it), with the env of its
        trainer and of the runtime patches' ``node`` container."""
        import os
        import socket
        import subprocess
        import threading

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        trainer = trainjob["spec"]["trainer"]
        patched = [e for p in trainjob["spec"].get("runtimePatches", [])
                   for job in p["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"] if job["name"] == "node"
                   for c in job["template"]["spec"]["template"]["spec"]["containers"] if c["name"] == "node"
                   for e in c.get("env", [])]
        self.exit_status[name] = None
        try:
            secret = self.secret_env(name, patched)
        except KeyError as exc:
            self.exit_status[name] = 1
            self.errors.append(str(exc))
            return
        inherited = {k: v for k, v in os.environ.items() if k != "FERD_SIGNING_KEY"}
        env = {**inherited, **{e["name"]: e["value"] for e in trainer.get("env", []) if "value" in e}, **secret,
               "PET_NNODES": "1", "PET_NODE_RANK": "0", "PET_MASTER_ADDR": "127.0.0.1",
               "PET_MASTER_PORT": str(port), **(self.execute or {})}

        def wait() -> None:
            proc = subprocess.run(trainer["command"], env=env, capture_output=True, text=True)
            self.exit_status[name] = proc.returncode
            if proc.returncode:
                self.errors.append(f"job {name} exited {proc.returncode}: {proc.stderr[-2000:]}")

        threading.Thread(target=wait, daemon=True).start()

    def status(self, plural: str, name: str) -> dict:
        key = f"{plural}/{name}"
        self.reads[key] = self.reads.get(key, 0) + 1
        outcome = self.outcome
        if name in self.exit_status:
            if self.exit_status[name] is None:
                return {}
            outcome = "succeeded" if self.exit_status[name] == 0 else "failed"
        elif self.reads[key] == 1:
            return {}
        kind = ({"succeeded": "Complete", "failed": "Failed"} if plural == "trainjobs"
                else {"succeeded": "Succeeded", "failed": "Failed"})[outcome]
        return {"conditions": [{"type": kind, "status": "True", "reason": kind, "message": kind,
                                "lastTransitionTime": "2026-11-30T00:00:00Z"}]}


class _Handler(JsonHandler):
    server: K8sStandIn

    def _missing(self) -> None:
        self._reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                          "code": 404, "message": f"{self.path} not found"})

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        if path == "/api/v1/namespaces/kubeflow-system/configmaps/kubeflow-trainer-public":
            return self._reply(200, {"kind": "ConfigMap", "apiVersion": "v1",
                                     "metadata": {"name": "kubeflow-trainer-public"},
                                     "data": {"kubeflow_trainer_version": "v2.1.0"}})
        if path == f"{TRAINER}/clustertrainingruntimes/torch-distributed":
            return self._reply(200, RUNTIME)
        if re.fullmatch(rf"{TRAINER}/namespaces/[^/]+/trainingruntimes/[^/]+", path):
            return self._missing()  # no namespaced runtime: the SDK falls back to the cluster's
        if re.fullmatch(r"/api/v1/namespaces/[^/]+/pods", path):
            return self._reply(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []})
        m = re.fullmatch(rf"(?:{TRAINER}|{OPERATOR})/namespaces/([^/]+)/(trainjobs|pytorchjobs)/([^/]+)", path)
        if m and f"{m[2]}/{m[3]}" in self.server.created:
            body = dict(self.server.created[f"{m[2]}/{m[3]}"])
            body["metadata"] = {**body["metadata"], "namespace": m[1], "creationTimestamp": "2026-11-30T00:00:00Z"}
            body["status"] = self.server.status(m[2], m[3])
            return self._reply(200, body)
        self.server.errors.append(f"GET {self.path}")
        self._missing()

    def do_POST(self) -> None:  # noqa: N802
        m = re.fullmatch(rf"(?:{TRAINER}|{OPERATOR})/namespaces/([^/]+)/(trainjobs|pytorchjobs)", self.path)
        if not m:
            self.server.errors.append(f"POST {self.path}")
            return self._missing()
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.created[f"{m[2]}/{body['metadata']['name']}"] = body
        if self.server.on_create is not None:
            self.server.on_create(body)
        if self.server.execute is not None and m[2] == "trainjobs":
            self.server.run(body["metadata"]["name"], body)
        self._reply(201, body)
