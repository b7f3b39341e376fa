"""The compiled Kubeflow DAG: golden file, protos, GPU and S3 settings, structure, arguments."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from ferd.plan.resolve import load_config
from ferd.stages import RUN_TIME_PARAMS
from support.images import IMAGE, TEST_IMAGE, compiled_image, image_of

ROOT = Path(__file__).resolve().parents[2]

from ferd.pipeline.dag import (COMPILED, DEFAULT_CLUSTER, STAGE_NAMES, compile_pipeline,  # noqa: E402
                          compiled_params_file, load_cluster)
from ferd.pipeline.submit import build_arguments, check_cron, compiled_rounds, package_defaults  # noqa: E402

CI = ROOT / "params" / "ci.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _compile_cli(out: Path, params: Path, image: str = TEST_IMAGE, by_env: bool = False) -> Path:
    env = {k: v for k, v in ENV.items() if k != "FERD_IMAGE"}
    flag = []
    if by_env:
        env["FERD_IMAGE"] = image
    else:
        flag = ["--image", image]
    subprocess.run([sys.executable, "-m", "ferd.cli", "pipeline", "compile", "--params", str(params),
                    "--out", str(out), *flag], check=True, cwd=ROOT, env=env, capture_output=True)
    return out


def _normalise(text: str) -> list[dict]:
    """Both YAML documents, without what legitimately differs between kfp releases."""
    text = re.sub(r"kfp==\d+\.\d+\.\d+\S*", "kfp==X", text)
    docs = list(yaml.safe_load_all(text))
    docs[0].pop("sdkVersion", None)
    return docs


@pytest.fixture(scope="module")
def ci_package(tmp_path_factory) -> Path:
    return _compile_cli(tmp_path_factory.mktemp("compiled") / "ferd_ci.yaml", CI)


@pytest.fixture(scope="module")
def docs(ci_package) -> list[dict]:
    return list(yaml.safe_load_all(ci_package.read_text()))


def _stage(task_or_component: str) -> str:
    """teacher-fetch / synthesis-2 / comp-pool-store-3 → teacher_fetch / synthesis / pool_store."""
    name = re.sub(r"^(comp|exec)-", "", task_or_component)
    name = re.sub(r"-\d+$", "", name)
    return name.replace("-", "_")


def _executors(doc: dict) -> dict[str, str]:
    """task name → executor label."""
    comps = doc["components"]
    return {name: comps[t["componentRef"]["name"]]["executorLabel"] for name, t in doc["root"]["dag"]["tasks"].items()}


def test_committed_yaml_matches_the_code(tmp_path):
    """Golden file: `ferd pipeline compile` of the committed parameters gives the committed YAML."""
    committed = ROOT / COMPILED
    assert committed.is_file(), "pipeline/ferd_pipeline.yaml is missing: run `ferd pipeline compile`"
    params = compiled_params_file(committed)
    assert params.is_file(), f"{committed} names {params} as its parameters, which does not exist"
    image = image_of(committed)
    assert re.fullmatch(r"localhost/ferd@sha256:[0-9a-f]{64}", image.ref)  # the image make image built, by digest
    assert image.source.startswith("built by `make image` from commit ")  # and where that digest comes from
    fresh = compile_pipeline(tmp_path / "fresh.yaml", params, image=image)
    assert _normalise(fresh.read_text()) == _normalise(committed.read_text()), (
        "pipeline/ferd_pipeline.yaml is out of date: run `ferd pipeline compile --image-from-build` and commit it")


def test_committed_yaml_parses_as_pipeline_and_platform_spec():
    docs = list(yaml.safe_load_all(COMPILED.read_text()))
    assert len(docs) == 2
    spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())
    platform = json_format.ParseDict(docs[1], pipeline_spec_pb2.PlatformSpec())
    assert spec.pipeline_info.name == "ferd"
    assert spec.default_pipeline_root.startswith("s3://")
    assert "kubernetes" in platform.platforms


def test_gpu_settings_on_exactly_the_gpu_stages_and_the_secret_on_every_s3_stage(docs):
    cluster = load_cluster(DEFAULT_CLUSTER)
    assert set(cluster.gpu_stages) == {"synthesis", "distillation", "evaluation"}
    assert set(cluster.s3_stages) == set(STAGE_NAMES)  # every artifact goes through the S3 pipeline_root
    spec, k8s = docs[0], docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    executors = _executors(spec)
    helper = k8s[executors.pop("run-params")]  # resolves the parameters: no GPU, no secret
    assert "secretAsEnv" not in helper and "nodeSelector" not in helper
    assert {_stage(t) for t in executors} == set(STAGE_NAMES)
    for task, label in executors.items():
        stage = _stage(task)
        gpu = stage in cluster.gpu_stages
        container = spec["deploymentSpec"]["executors"][label]["container"]
        acc = container.get("resources", {}).get("accelerator")
        settings = k8s.get(label, {})
        if gpu:
            assert acc == {"count": "1", "resourceCount": "1", "resourceType": "nvidia.com/gpu",
                           "type": "nvidia.com/gpu"}, task
            assert settings["nodeSelector"] == {"labels": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}}, task
            assert settings["tolerations"] == [{"effect": "NoSchedule", "key": "nvidia.com/gpu",
                                                "operator": "Exists"}], task
        else:
            assert acc is None and "nodeSelector" not in settings and "tolerations" not in settings, task
        secrets = settings.get("secretAsEnv", [])
        assert stage not in cluster.s3_stages or secrets, task
        required = [s for s in secrets if not s.get("optional")]
        assert [s["secretName"] for s in required] == ["ferd-s3-credentials"], task
        assert {e["envVar"] for e in required[0]["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        optional = [s for s in secrets if s.get("optional")]
        assert {e["envVar"] for s in optional for e in s["keyToEnv"]} == {"AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"}


def test_every_stage_retries_and_runs_ferd_stages_in_the_project_image(docs):
    spec = docs[0]
    for name, task in spec["root"]["dag"]["tasks"].items():
        if name == "run-params":  # a bad parameter fails every try alike: no retry, one line at once
            assert "retryPolicy" not in task
            continue
        assert task["retryPolicy"]["maxRetryCount"] == 3, name
        assert task["retryPolicy"]["backoffDuration"] == "60s"
    for label, ex in spec["deploymentSpec"]["executors"].items():
        c = ex["container"]
        assert c["image"] == TEST_IMAGE, label
        script = " ".join(c["command"])
        assert "pip install" not in script, f"{label}: install_kfp_package must be False"
        assert "kfp.dsl.executor_main" in script and "from ferd.stages import" in script, label


def test_the_image_comes_from_FERD_IMAGE_pinned_by_digest_or_refused(tmp_path):
    ref = "registry.example/team/ferd@sha256:" + "cd" * 32
    out = _compile_cli(tmp_path / "p.yaml", CI, image=ref, by_env=True)
    assert compiled_image(out) == ref
    assert f"Image: {ref}, from $FERD_IMAGE." in out.read_text()
    with pytest.raises(subprocess.CalledProcessError) as err:
        _compile_cli(tmp_path / "q.yaml", CI, image="registry.example/team/ferd:abc123", by_env=True)
    assert err.value.returncode == 2 and not (tmp_path / "q.yaml").exists()
    assert b"$FERD_IMAGE: expected an image pinned by digest" in err.value.stderr


def test_rounds_are_unrolled_into_a_chain(docs):
    tasks = docs[0]["root"]["dag"]["tasks"]
    assert compiled_rounds.__doc__
    names = {"synthesis": ["synthesis", "synthesis-2"], "pool": ["pool-store", "pool-store-2"],
             "distillation": ["distillation", "distillation-2"]}
    assert set(tasks) == {"run-params", "teacher-fetch", "evaluation", *sum(names.values(), [])}
    for name, task in tasks.items():  # every stage takes the overrides the run-params task resolved
        if name != "run-params":
            assert task["inputs"]["parameters"]["overrides"]["taskOutputParameter"]["producerTask"] == "run-params"

    def producers(task: str) -> dict[str, str]:
        arts = tasks[task]["inputs"].get("artifacts", {})
        return {k: v["taskOutputArtifact"]["producerTask"] for k, v in arts.items()}

    assert producers("synthesis") == {"teacher": "teacher-fetch"}
    assert producers("synthesis-2") == {"teacher": "teacher-fetch", "student": "distillation",
                                        "previous_generation": "synthesis"}
    assert producers("pool-store") == {"generation": "synthesis"}
    assert producers("pool-store-2") == {"generation": "synthesis-2", "previous_pool": "pool-store"}
    assert producers("distillation") == {"teacher": "teacher-fetch", "generation": "synthesis", "pool": "pool-store"}
    assert producers("distillation-2") == {"teacher": "teacher-fetch", "generation": "synthesis-2",
                                           "pool": "pool-store-2", "previous_student": "distillation"}
    assert producers("evaluation") == {"teacher": "teacher-fetch", "student": "distillation-2"}
    for t in ("synthesis-2", "pool-store-2", "distillation-2"):
        assert tasks[t]["inputs"]["parameters"]["round_index"]["runtimeValue"]["constant"] == 1


def test_pipeline_parameters_default_to_the_parameter_file(ci_package):
    defaults = package_defaults(ci_package)
    assert set(defaults) == {"params_yaml", "overrides", "gpu_device", *RUN_TIME_PARAMS}
    assert yaml.safe_load(defaults["params_yaml"]) == yaml.safe_load(CI.read_text())
    assert defaults["gpu_device"] == "cuda" and defaults["overrides"] == []
    cfg = load_config(CI)
    assert defaults["eps"] == cfg.threat.eps and defaults["lambda1"] == cfg.distill.lambda1
    assert defaults["teacher_source"] == "train:digits" and defaults["teacher_sha256"] == ""
    assert compiled_rounds(ci_package) == 2


def test_run_arguments_are_checked_before_anything_is_sent(ci_package):
    args = build_arguments(ci_package, overrides=["seed=3"], extra={"gpu_device": "cuda:1"})
    assert args == {"overrides": ["seed=3"], "gpu_device": "cuda:1"}
    with pytest.raises(ValueError, match="unrolls 2"):
        build_arguments(ci_package, overrides=["rounds=1"])
    with pytest.raises(ValueError, match="threat.eps"):  # a typed run-time value, checked as the run would
        build_arguments(ci_package, extra={"eps": -0.1})
    assert build_arguments(ci_package, extra={"gamma": 0.3}) == {"gamma": 0.3}
    for device in ("tpu", "", "cuda:x"):  # the GPU stages' device: not a typed value, so checked here
        with pytest.raises(ValueError, match=r"gpu_device: expected cuda, cuda:N or cpu"):
            build_arguments(ci_package, extra={"gpu_device": device})
    with pytest.raises(ValueError, match="invalid"):
        build_arguments(ci_package, overrides=["synthesis.lambda_uni=-1"])
    with pytest.raises(ValueError, match="unknown pipeline parameter"):
        build_arguments(ci_package, extra={"gpu": "x"})


@pytest.mark.parametrize("expr", ["0 0 3 * * *", "0 */30 * * * 1-5", "0 0 9 ? * 2-6", "@daily", "@every 6h"])
def test_six_field_cron_is_accepted(expr):
    assert check_cron(expr) == expr


def test_five_field_cron_is_refused_with_a_hint():
    with pytest.raises(ValueError, match="six fields, seconds first; did you mean '0 0 3 \\* \\* \\*'"):
        check_cron("0 3 * * *")
    with pytest.raises(ValueError, match="six fields"):
        check_cron("0 0 3 * * * *")


def test_compile_in_process_equals_the_cli(tmp_path, ci_package):
    out = compile_pipeline(tmp_path / "p.yaml", CI, image=IMAGE)
    assert _normalise(out.read_text()) == _normalise(ci_package.read_text())


PRESETS = sorted(p for p in (ROOT / "params").glob("*.yaml")
                 if not p.name.startswith("compare-"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_preset_states_its_rounds_and_compiles_under_one_mib(preset, tmp_path):
    """Issue 18: Argo/etcd accept a workflow object of about 1.5 MiB; every preset compiles well under
    1 MiB, with 3 tasks a round plus teacher fetch and evaluation, and dvc.yaml stays ≤ 100 stages."""
    from ferd.plan.resolve import load_config
    from ferd.stages.dvc_yaml import dvc_stages

    assert "rounds" in yaml.safe_load(preset.read_text()), f"{preset.name}: state `rounds` explicitly"
    cfg = load_config(preset)
    out = compile_pipeline(tmp_path / "p.yaml", preset, image=IMAGE)
    text = Path(out).read_text()
    assert len(text.encode()) < 1 << 20, f"{preset.name}: {len(text.encode())} bytes"
    assert text.count("taskInfo:") == 3 * cfg.num_rounds + 3  # + the run-params task
    assert len(dvc_stages(cfg)) == 3 * cfg.num_rounds + 2 <= 100


def test_every_task_has_its_resources_and_time_limit_from_cluster_yaml(docs):
    """Issue 18: requests, limits and a time limit per stage, as pipeline/cluster.yaml says."""
    cluster = load_cluster(DEFAULT_CLUSTER)
    spec, k8s = docs[0], docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for task, label in _executors(spec).items():
        want = cluster.resources[_stage(task)]
        res = spec["deploymentSpec"]["executors"][label]["container"]["resources"]
        assert (res["resourceCpuRequest"], res["resourceCpuLimit"]) == (want.cpu_request, want.cpu_limit), task
        assert (res["resourceMemoryRequest"], res["resourceMemoryLimit"]) == (want.memory_request,
                                                                              want.memory_limit), task
        assert int(k8s[label]["activeDeadlineSeconds"]) == want.timeout_s, task


def test_a_remote_teacher_is_never_served_from_the_cache(tmp_path):
    from ferd.pipeline.dag import compile_pipeline

    params = tmp_path / "p.yaml"
    data = yaml.safe_load(CI.read_text())
    data["teacher"] = {**data.get("teacher", {}), "source": "https://example.org/t.safetensors",
                       "sha256": "0" * 64, "arch": "cnn-4"}
    params.write_text(yaml.safe_dump(data))
    spec = next(yaml.safe_load_all(compile_pipeline(tmp_path / "compiled.yaml", params, image=IMAGE).read_text()))
    caching = {name: t.get("cachingOptions", {}).get("enableCache", False) for name, t in
               spec["root"]["dag"]["tasks"].items()}
    assert caching.pop("teacher-fetch") is False
    local = next(yaml.safe_load_all((ROOT / COMPILED).read_text()))["root"]["dag"]["tasks"]
    assert local["teacher-fetch"]["cachingOptions"].get("enableCache") is True  # train:digits: cached


def test_compile_pins_the_image_by_digest_or_refuses(tmp_path, capsys):
    from ferd.cli import main

    assert main(["pipeline", "compile", "--params", str(CI), "--image", "ghcr.io/ferd/ferd:latest",
                 "--out", str(tmp_path / "x.yaml")]) == 2
    assert "--image: expected an image pinned by digest" in capsys.readouterr().err and not (tmp_path / "x.yaml").exists()
    ref = "ghcr.io/ferd/ferd@sha256:" + "ab" * 32
    env = {k: v for k, v in ENV.items() if k != "FERD_IMAGE"}
    subprocess.run([sys.executable, "-m", "ferd.cli", "pipeline", "compile", "--params", str(CI), "--image", ref,
                    "--out", str(tmp_path / "p.yaml")], check=True, cwd=ROOT, env=env, capture_output=True)
    images = {e["container"]["image"] for e in
              next(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))["deploymentSpec"]["executors"].values()}
    assert images == {ref}


def test_a_data_volume_is_mounted_in_the_stages_that_read_data(tmp_path):
    from ferd.pipeline.dag import compile_pipeline

    cluster = yaml.safe_load(DEFAULT_CLUSTER.read_text())
    cluster["data_pvc"] = {"name": "ferd-datasets", "mount_path": "/data"}
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(cluster))
    docs = list(yaml.safe_load_all(compile_pipeline(tmp_path / "c.yaml", CI, tmp_path / "cluster.yaml", IMAGE).read_text()))
    k8s = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    mounted = {_stage(task) for task, label in _executors(docs[0]).items() if k8s[label].get("pvcMount")}
    assert mounted == {"teacher_fetch", "evaluation"}
    assert all(m["mountPath"] == "/data" and m["constant"] == "ferd-datasets"
               for label in k8s for m in k8s[label].get("pvcMount", [])), k8s


def test_a_distributed_block_launches_synthesis_and_distillation_as_jobs(tmp_path):
    """With ``distributed`` the data-parallel tasks receive the job settings (the S3 secret by reference,
    never a value) and request no GPU themselves; the other tasks are unchanged."""
    cluster = yaml.safe_load(DEFAULT_CLUSTER.read_text())
    cluster["distributed"] = {"namespace": "ferd", "scratch_uri": "s3://ferd-pipelines/jobs", "nodes": 2,
                              "gpus_per_node": 4}
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(cluster))
    docs = list(yaml.safe_load_all(compile_pipeline(tmp_path / "c.yaml", CI, tmp_path / "cluster.yaml", IMAGE).read_text()))
    spec, tasks = docs[0], docs[0]["root"]["dag"]["tasks"]
    launched = set()
    for name, task in tasks.items():
        stage = _stage(name)
        launch = task.get("inputs", {}).get("parameters", {}).get("launch")
        label = _executors(spec)[name]
        acc = spec["deploymentSpec"]["executors"][label]["container"].get("resources", {}).get("accelerator")
        if stage in ("synthesis", "distillation"):
            settings = json.loads(launch["runtimeValue"]["constant"])
            assert settings["nodes"] == 2 and settings["gpus_per_node"] == 4 and settings["engine"] == "trainer"
            assert settings["secret_env"]["AWS_SECRET_ACCESS_KEY"] == ["ferd-s3-credentials", "AWS_SECRET_ACCESS_KEY"]
            assert acc is None, name  # the job holds the GPUs
            launched.add(stage)
        else:
            assert launch is None, name
            assert (acc is not None) == (stage == "evaluation"), name
    assert launched == {"synthesis", "distillation"}
