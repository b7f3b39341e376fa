"""``ferd pipeline submit`` / ``schedule`` through kfp.Client against a local stand-in of the KFP v2beta1 REST API.

The stand-in (a threading http.server on 127.0.0.1) answers only the routes kfp.Client uses
for these two commands, checks each request's method, path and JSON body as it arrives, and
records them; anything else is an error the tests see.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from ferd.cli import main
from support.images import IMAGE
from support.json_handler import JsonHandler

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "params" / "ci.yaml"
API = "/apis/v2beta1"


class KfpStandIn(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict] = []
        self.errors: list[str] = []
        self.experiments: dict[str, dict] = {}
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def posted(self, path: str) -> list[dict]:
        return [r["body"] for r in self.requests if r["method"] == "POST" and r["path"] == API + path]


class _Handler(JsonHandler):
    server: KfpStandIn

    def _fail(self, msg: str) -> None:
        self.server.errors.append(f"{self.command} {self.path}: {msg}")
        self._reply(400, {"error": msg, "code": 3})

    def _record(self, body: dict | None) -> tuple[str, dict]:
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        with self.server.lock:
            self.server.requests.append({"method": self.command, "path": url.path, "query": query, "body": body})
        return url.path, query

    def do_GET(self) -> None:  # noqa: N802
        path, query = self._record(None)
        if path == f"{API}/healthz":
            return self._reply(200, {"multi_user": False})
        if path == f"{API}/experiments":
            name = json.loads(query.get("filter", "{}")).get("predicates", [{}])[0].get("stringValue")
            exp = self.server.experiments.get(name)
            return self._reply(200, {"experiments": [exp], "total_size": 1} if exp else {})
        return self._fail("unexpected route")

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._record(None)
            return self._fail("body is not JSON")
        path, _ = self._record(body)
        if self.headers.get_content_type() != "application/json":
            return self._fail("expected application/json")
        if path == f"{API}/experiments":
            if not body.get("display_name"):
                return self._fail("experiment without display_name")
            exp = {"experiment_id": f"exp-{len(self.server.experiments) + 1}", "display_name": body["display_name"]}
            self.server.experiments[body["display_name"]] = exp
            return self._reply(200, exp)
        if path in (f"{API}/runs", f"{API}/recurringruns"):
            problems = self._check_job(body, recurring=path.endswith("recurringruns"))
            if problems:
                return self._fail("; ".join(problems))
            if path.endswith("/runs"):
                return self._reply(200, {"run_id": "run-1", "experiment_id": body["experiment_id"],
                                         "display_name": body["display_name"], "state": "PENDING"})
            return self._reply(200, {"recurring_run_id": "rr-1", "experiment_id": body["experiment_id"],
                                     "display_name": body["display_name"], "status": "ENABLED"})
        return self._fail("unexpected route")

    def _check_job(self, body: dict, recurring: bool) -> list[str]:
        problems = []
        if body.get("experiment_id") not in {e["experiment_id"] for e in self.server.experiments.values()}:
            problems.append(f"unknown experiment_id {body.get('experiment_id')!r}")
        spec = body.get("pipeline_spec") or {}
        if set(spec) != {"pipeline_spec", "platform_spec"}:
            problems.append("pipeline_spec must carry the PipelineSpec and the kubernetes PlatformSpec")
        else:
            try:  # what the API server does with it first
                json_format.ParseDict(spec["pipeline_spec"], pipeline_spec_pb2.PipelineSpec())
                json_format.ParseDict(spec["platform_spec"], pipeline_spec_pb2.PlatformSpec())
            except json_format.ParseError as exc:
                problems.append(f"pipeline package does not parse: {exc}")
        if body.get("pipeline_version_reference"):
            problems.append("expected the package inline, not a pipeline version reference")
        if not isinstance(body.get("runtime_config", {}).get("parameters", {}), dict):
            problems.append("runtime_config.parameters must be a mapping")
        if recurring:
            cron = body.get("trigger", {}).get("cron_schedule", {}).get("cron")
            if cron is None or len(cron.split()) != 6:
                problems.append(f"expected a six-field cron, got {cron!r}")
            if not isinstance(body.get("max_concurrency"), (int, str)):
                problems.append("max_concurrency missing")
            if "no_catchup" not in body:
                problems.append("no_catchup missing")
            if body.get("mode") not in ("ENABLE", "DISABLE"):
                problems.append(f"mode {body.get('mode')!r}")
        return problems


@pytest.fixture()
def kfp_api():
    server = KfpStandIn()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    from ferd.pipeline.dag import compile_pipeline

    return compile_pipeline(tmp_path_factory.mktemp("pkg") / "ferd.yaml", CI, image=IMAGE)


def _expected_spec(package: Path) -> dict:
    docs = list(yaml.safe_load_all(package.read_text()))
    return {"pipeline_spec": json_format.MessageToDict(json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())),
            "platform_spec": json_format.MessageToDict(json_format.ParseDict(docs[1], pipeline_spec_pb2.PlatformSpec()))}


def test_submit_sends_the_package_and_parameters(kfp_api, package, capsys):
    rc = main(["pipeline", "submit", "--host", kfp_api.url, "--package", str(package), "--experiment", "nightly",
               "--run-name", "ferd-ci", "-S", "seed=7", "-S", "synthesis.lambda_uni=2", "-p", "gpu_device=cuda:1",
               "--pipeline-root", "s3://other-bucket/runs"])
    assert rc == 0, kfp_api.errors
    assert kfp_api.errors == []
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out == {"run_id": "run-1", "experiment_id": "exp-1"}
    assert [e["display_name"] for e in kfp_api.posted("/experiments")] == ["nightly"]
    (run,) = kfp_api.posted("/runs")
    assert run["display_name"] == "ferd-ci" and run["experiment_id"] == "exp-1"
    assert run["pipeline_spec"] == _expected_spec(package)
    assert run["runtime_config"] == {"parameters": {"overrides": ["seed=7", "synthesis.lambda_uni=2"],
                                                    "gpu_device": "cuda:1"},
                                     "pipeline_root": "s3://other-bucket/runs"}
    assert kfp_api.requests[0]["path"] == "/apis/v2beta1/healthz"


def test_submit_with_a_parameter_file(kfp_api, package, tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text(CI.read_text().replace("seed: 0", "seed: 11"))
    assert main(["pipeline", "submit", "--host", kfp_api.url, "--package", str(package),
                 "--params", str(params)]) == 0
    (run,) = kfp_api.posted("/runs")
    assert yaml.safe_load(run["runtime_config"]["parameters"]["params_yaml"])["seed"] == 11
    assert kfp_api.errors == []


def test_schedule_sends_cron_concurrency_and_no_catchup(kfp_api, package, capsys):
    rc = main(["pipeline", "schedule", "--host", kfp_api.url, "--package", str(package), "--cron", "0 30 2 * * 1-5",
               "--max-concurrency", "2", "--name", "ferd-weekdays", "-S", "seed=5",
               "--start-time", "2027-01-01T00:00:00Z"])
    assert rc == 0, kfp_api.errors
    assert kfp_api.errors == []
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"recurring_run_id": "rr-1",
                                                                           "experiment_id": "exp-1"}
    (job,) = kfp_api.posted("/recurringruns")
    assert job["trigger"] == {"cron_schedule": {"cron": "0 30 2 * * 1-5", "start_time": "2027-01-01T00:00:00Z"}}
    assert int(job["max_concurrency"]) == 2
    assert job["no_catchup"] is True
    assert job["mode"] == "ENABLE"
    assert job["display_name"] == "ferd-weekdays" and job["experiment_id"] == "exp-1"
    # a schedule recomputes by default (issue 18): every task's cache off, the rest of the package as compiled
    expected = _expected_spec(package)
    for task in expected["pipeline_spec"]["root"]["dag"]["tasks"].values():
        task["cachingOptions"] = {}
    got = job["pipeline_spec"]
    assert all(t.get("cachingOptions", {}).get("enableCache") is not True
               for t in got["pipeline_spec"]["root"]["dag"]["tasks"].values())
    for task in got["pipeline_spec"]["root"]["dag"]["tasks"].values():
        task["cachingOptions"] = {}
    assert got == expected
    assert job["runtime_config"] == {"parameters": {"overrides": ["seed=5"]}}


def test_schedule_defaults_and_reuses_the_experiment(kfp_api, package):
    for _ in range(2):
        assert main(["pipeline", "schedule", "--host", kfp_api.url, "--package", str(package),
                     "--cron", "0 0 3 * * *", "--catchup", "--disabled"]) == 0
    assert len(kfp_api.posted("/experiments")) == 1  # found by name the second time
    jobs = kfp_api.posted("/recurringruns")
    assert [int(j["max_concurrency"]) for j in jobs] == [1, 1]
    assert [j["no_catchup"] for j in jobs] == [False, False]
    assert [j["mode"] for j in jobs] == ["DISABLE", "DISABLE"]
    assert kfp_api.errors == []


def test_bad_schedules_never_reach_the_api(kfp_api, package, capsys):
    assert main(["pipeline", "schedule", "--host", kfp_api.url, "--package", str(package),
                 "--cron", "0 3 * * *"]) == 2
    assert "did you mean '0 0 3 * * *'" in capsys.readouterr().err
    assert main(["pipeline", "schedule", "--host", kfp_api.url, "--package", str(package),
                 "--cron", "0 0 3 * * *", "-S", "rounds=1"]) == 2
    assert "recompile" in capsys.readouterr().err
    assert kfp_api.requests == []


def test_submit_defaults_to_the_committed_package(kfp_api, capsys):
    """The committed package runs the image ``make image`` built here (localhost/…): refused unless the user says
    the cluster shares this machine's images."""
    from ferd.pipeline.dag import COMPILED

    assert main(["pipeline", "submit", "--host", kfp_api.url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "an image only this machine has" in err[0] and "image/publish.sh" in err[0], err
    assert kfp_api.requests == []
    assert main(["pipeline", "submit", "--host", kfp_api.url, "--allow-local-image"]) == 0
    (run,) = kfp_api.posted("/runs")
    assert run["pipeline_spec"] == _expected_spec(COMPILED)
    assert run["runtime_config"] == {"parameters": {}}
    assert kfp_api.errors == []


@pytest.mark.parametrize("ref", ["localhost/ferd@sha256:" + "ab" * 32, "sha256:" + "ab" * 32])
def test_a_package_running_a_local_image_is_refused_before_the_api(kfp_api, tmp_path, capsys, ref):
    from ferd.core.image import Image
    from ferd.pipeline.dag import compile_pipeline

    package = compile_pipeline(tmp_path / "local.yaml", CI, image=Image(ref, "given with --image"))
    for command in (["submit"], ["schedule", "--cron", "0 0 3 * * *"]):
        assert main(["pipeline", *command, "--host", kfp_api.url, "--package", str(package)]) == 2
        assert "an image only this machine has" in capsys.readouterr().err
    assert kfp_api.requests == []


@pytest.mark.parametrize("text, field", [("a: [", "not YAML"), ("root: {}\n", "not a compiled pipeline"),
                                         ("- 1\n", "not a compiled pipeline")])
def test_a_file_that_is_no_compiled_pipeline_is_one_line(kfp_api, tmp_path, capsys, text, field):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    assert main(["pipeline", "submit", "--host", kfp_api.url, "--package", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0] and str(bad) in err[0], err
    assert kfp_api.requests == []


@pytest.mark.parametrize("param, expected", [("params_yaml=[1]", "-p params_yaml: expected a string"),
                                             ("overrides=seed=1", "-p overrides: expected a list")])
def test_a_pipeline_parameter_of_the_wrong_type_is_one_line(kfp_api, package, capsys, param, expected):
    assert main(["pipeline", "submit", "--host", kfp_api.url, "--package", str(package), "-p", param]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert kfp_api.requests == []


def test_an_unreachable_api_is_one_line_with_status_4(package, capsys):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["pipeline", "submit", "--host", f"http://127.0.0.1:{port}", "--package", str(package)]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ferd pipeline: service error: Kubeflow Pipelines API at"), err


def test_which_images_only_this_machine_has():
    from ferd.pipeline.submit import local_only

    digest = "@sha256:" + "ab" * 32
    assert local_only("localhost/ferd" + digest) and local_only("sha256:" + "ab" * 32)
    assert not local_only("localhost:5000/ferd" + digest) and not local_only("ghcr.io/team/ferd" + digest)
