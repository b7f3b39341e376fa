"""The five stages (ferd.stages): bit-identical to ``ferd run``, strict about their inputs, idempotent."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
import torch

from ferd.core.checkpoint import load_state_dict
from ferd.cli import main
from ferd.plan.resolve import load_config
from ferd.data.pool import FaePool
from ferd.stages.io import remote_of
from ferd.stages.pool_store import load_pool
from ferd.stages import (ArtifactError, distillation, evaluation, node_overrides, pool_store, run_stages, synthesis,
                         teacher_fetch)

from support import golden
from support.images import IMAGE

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "params" / "ci.yaml"


pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py: one torch thread per test


@pytest.fixture(scope="module")
def cfg():
    return load_config(CI)


@pytest.fixture(scope="module")
def single(cfg, tmp_path_factory):
    """``ferd run --params params/ci.yaml`` in one process, evaluation included."""
    out = tmp_path_factory.mktemp("single")
    assert main(["run", "--params", str(CI), "--out", str(out), "--threads", "1", "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def split(cfg, tmp_path_factory):
    """The same parameters, one stage at a time (as the DAG runs them), through ``ferd stage``."""
    out = tmp_path_factory.mktemp("split")
    torch.set_num_threads(1)
    common = ["--params", str(CI), "--no-progress"]
    assert main(["stage", "teacher-fetch", *common, "--out", str(out / "teacher")]) == 0
    for r in range(2):
        d, prev = out / f"round-{r}", out / f"round-{r - 1}"
        extra = [] if r == 0 else ["--student", str(prev / "distillation"), "--previous", str(prev / "synthesis")]
        assert main(["stage", "synthesis", *common, "--round", str(r), "--teacher", str(out / "teacher"),
                     *extra, "--out", str(d / "synthesis")]) == 0
        extra = [] if r == 0 else ["--previous", str(prev / "pool")]
        assert main(["stage", "pool-store", *common, "--round", str(r), "--synthesis", str(d / "synthesis"),
                     *extra, "--out", str(d / "pool")]) == 0
        extra = [] if r == 0 else ["--previous", str(prev / "distillation")]
        assert main(["stage", "distillation", *common, "--round", str(r), "--teacher", str(out / "teacher"),
                     "--synthesis", str(d / "synthesis"), "--pool", str(d / "pool"), *extra,
                     "--out", str(d / "distillation")]) == 0
    assert main(["stage", "evaluation", *common, "--teacher", str(out / "teacher"),
                 "--student", str(out / "round-1" / "distillation"), "--out", str(out / "evaluation")]) == 0
    return out


def test_two_round_stage_split_is_bit_identical_to_ferd_run(cfg, single, split):
    assert cfg.rounds == 2
    ref = load_state_dict(single / "student.safetensors")
    got = load_state_dict(split / "round-1" / "distillation" / "student.safetensors")
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    # the rest of the state that crossed the round boundary, in the one layout (ferd.algorithm.round_state)
    ckpt, d1, s1 = single / "checkpoint", split / "round-1" / "distillation", split / "round-1" / "synthesis"
    assert json.loads((ckpt / "round.json").read_text())["next_round"] == 2
    assert (ckpt / "generator.pt").read_bytes() == (s1 / "generator.pt").read_bytes()
    trainer, state = (torch.load(d / "trainer.pt", weights_only=True)["distiller"] for d in (d1, ckpt))
    assert trainer["scheduler"] == state["scheduler"]
    for a, b in zip(trainer["optimizer"]["state"].values(), state["optimizer"]["state"].values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    rw, ref = (torch.load(d / "reweighting.pt", weights_only=True) for d in (s1, ckpt))
    assert torch.equal(rw["p"], ref["p"]) and torch.equal(rw["scores"], ref["scores"])
    assert (ckpt / "history.json").read_bytes() == (d1 / "history.json").read_bytes()
    assert json.loads((split / "round-1" / "distillation" / "history.json").read_text()) == \
        json.loads((single / "history.json").read_text())
    assert json.loads((split / "round-1" / "distillation" / "class_weights.json").read_text()) == \
        json.loads((single / "class_weights.json").read_text())
    ref_pool, got_pool = FaePool.load(single / "pool"), load_pool(cfg, split / "round-1" / "pool")
    assert ref_pool.rounds == got_pool.rounds == [0, 1]
    for a, b in zip(ref_pool.tensors(), got_pool.tensors()):
        assert torch.equal(a, b)


def test_ferd_run_and_the_stage_split_give_the_golden_bytes(single, split):
    """Issue 17's guard: the results of the CI preset are byte-identical to those recorded before the
    consolidation (tests/support/golden.py says how to regenerate them, deliberately)."""
    expected = golden.load()
    assert golden.run_fingerprint(single) == expected["run"]
    assert golden.stages_fingerprint(split) == expected["stages"]


def test_run_stages_in_one_process_matches_too(cfg, single, tmp_path):
    paths = run_stages(cfg, tmp_path, evaluate=False)
    ref = load_state_dict(single / "student.safetensors")
    got = load_state_dict(paths["distillation"] / "student.safetensors")
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_a_components_device_overrides_the_parameters_only_when_given():
    assert node_overrides(("epochs=2",), "cuda") == ["epochs=2", "device=cuda"]
    assert node_overrides(("epochs=2",), "") == ["epochs=2"]
    assert node_overrides([]) == []


def test_artifacts_are_tensor_only_and_listed_in_manifests(split):
    d = split / "round-1"
    for f in (d / "synthesis" / "generator.pt", d / "synthesis" / "reweighting.pt", d / "distillation" / "trainer.pt"):
        torch.load(f, weights_only=True)  # no pickled objects
    rw = torch.load(d / "synthesis" / "reweighting.pt", weights_only=True)
    assert rw["round"] == 1 and len(rw["margins"]) == 1 and rw["margins"][0].shape == rw["margin_labels"][0].shape
    assert rw["p"].dtype == torch.float64 and abs(float(rw["p"].sum()) - 1) < 1e-12
    for stage, name in (("synthesis", "synthesis"), ("pool", "pool"), ("distillation", "distillation")):
        m = json.loads((d / stage / "manifest.json").read_text())
        assert m["stage"] == name and m["round"] == 1 and m["rounds"] == 2
        files = {p.relative_to(d / stage).as_posix() for p in (d / stage).rglob("*")
                 if p.is_file() and p.name != "manifest.json"}
        assert set(m["outputs"]) == files
    dist = json.loads((d / "distillation" / "manifest.json").read_text())
    assert dist["complete"] and dist["next_round"] == 2
    assert dist["inputs"]["previous"]["uri"].endswith("round-0/distillation")
    assert dist["inputs"]["previous"]["relpath"] == "../../round-0/distillation"
    rng = json.loads((d / "distillation" / "rng.json").read_text())
    assert rng["seed"] == 0 and rng["next_epoch"] == 2
    card = json.loads((split / "teacher" / "model_card.json").read_text())
    assert {"arch", "num_classes", "mean", "std", "sha256", "source"} <= set(card)


def test_pool_schema(split):
    t = pq.read_table(split / "round-1" / "pool" / "round=1" / "part-0.parquet")
    assert {"image", "label", "round", "teacher_logits", "class_weight"} <= set(t.column_names)
    assert json.loads(t.schema.metadata[b"ferd.image_shape"]) == [3, 32, 32]
    index = json.loads((split / "round-1" / "pool" / "pool.json").read_text())
    assert index["rounds"] == [0, 1] and index["total_rows"] == 32


def test_pool_store_is_idempotent(cfg, split, tmp_path):
    prev, synth1 = split / "round-0" / "pool", split / "round-1" / "synthesis"
    shutil.copytree(prev, tmp_path / "pool")
    # in place (the previous pool *is* the output), twice: round 1 is replaced, never duplicated
    for _ in range(2):
        a = pool_store(cfg, tmp_path / "pool", round_index=1, synthesis=synth1, previous=tmp_path / "pool")
        assert a.rounds == [0, 1] and a.rows == 32
    assert len(load_pool(cfg, tmp_path / "pool")) == 32
    # a fresh output directory, twice
    for _ in range(2):
        a = pool_store(cfg, tmp_path / "fresh", round_index=1, synthesis=synth1, previous=prev)
    assert a.rows == 32
    got = load_pool(cfg, tmp_path / "fresh").tensors()
    ref = load_pool(cfg, split / "round-1" / "pool").tensors()
    assert all(torch.equal(x, y) for x, y in zip(got, ref))
    # re-running round 0 in a directory that still holds round 1 leaves the pool after round 0
    pool_store(cfg, tmp_path / "fresh", round_index=0, synthesis=split / "round-0" / "synthesis")
    assert load_pool(cfg, tmp_path / "fresh").rounds == [0]


def test_pool_storage_grows_linearly_and_pins_every_shard(cfg, split, tmp_path):
    """Issue 18: each round's pool artifact holds its own shard and an index; all of them together take the
    bytes of the final pool stored once (within 5 %), and an earlier shard changed or missing is refused."""
    pools = sorted(split.glob("round-*/pool"))
    assert [[p.parent.name for p in d.glob("round=*/*.parquet")] for d in pools] == [["round=0"], ["round=1"]]
    stored = sum(p.stat().st_size for d in pools for p in d.rglob("*") if p.is_file())
    once = sum(p.stat().st_size for p in split.glob("round-*/pool/round=*/part-0.parquet"))
    assert stored <= 1.05 * once, (stored, once)
    copy = tmp_path / "run"
    for d in pools:
        shutil.copytree(d, copy / d.parent.name / "pool")
    shard0 = copy / "round-0" / "pool" / "round=0" / "part-0.parquet"
    shard0.write_bytes(shard0.read_bytes()[:-1] + b"x")
    with pytest.raises(ArtifactError, match="sha256 pinned"):
        load_pool(cfg, copy / "round-1" / "pool")
    shutil.rmtree(copy / "round-0")
    with pytest.raises(ArtifactError, match="shard of round 0 not found"):
        load_pool(cfg, copy / "round-1" / "pool")


def test_kubeflow_and_cache_paths_map_to_their_object_store_uri(tmp_path, monkeypatch):
    monkeypatch.setenv("FERD_CACHE", str(tmp_path))
    assert remote_of(Path("/s3/bucket/v2/artifacts/ferd/pool-store-r0/pool")) == \
        "s3://bucket/v2/artifacts/ferd/pool-store-r0/pool"
    assert remote_of(Path("/minio/mlpipeline/a/pool")) == "s3://mlpipeline/a/pool"
    assert remote_of(tmp_path / "s3" / "b" / "k") == "s3://b/k"
    assert remote_of(Path("/tmp/elsewhere/pool")) is None and remote_of(Path("out/round-0/pool")) is None


def test_stages_refuse_inputs_of_the_wrong_kind_round_or_run(cfg, split, tmp_path):
    t, r0, r1 = split / "teacher", split / "round-0", split / "round-1"
    with pytest.raises(ArtifactError, match="needs the artifact of round 0"):
        synthesis(cfg, tmp_path / "s", round_index=1, teacher=t)
    with pytest.raises(ArtifactError, match="round 0 starts from the initial state"):
        synthesis(cfg, tmp_path / "s", round_index=0, teacher=t, student=r0 / "distillation", previous=r0 / "synthesis")
    with pytest.raises(ArtifactError, match="expected round 0"):
        synthesis(cfg, tmp_path / "s", round_index=1, teacher=t, student=r1 / "distillation", previous=r0 / "synthesis")
    with pytest.raises(ArtifactError, match="expected 'distillation'"):
        synthesis(cfg, tmp_path / "s", round_index=1, teacher=t, student=r0 / "pool", previous=r0 / "synthesis")
    with pytest.raises(ValueError, match="round: expected 0 <= round < 2"):
        synthesis(cfg, tmp_path / "s", round_index=2, teacher=t, student=r1 / "distillation", previous=r1 / "synthesis")
    with pytest.raises(ArtifactError, match="other parameters"):
        pool_store(cfg.model_copy(update={"seed": 1}), tmp_path / "p", round_index=0, synthesis=r0 / "synthesis")
    # the device is not part of the fingerprint: a GPU stage may follow a CPU stage
    pool_store(cfg.model_copy(update={"device": "cuda"}), tmp_path / "p", round_index=0, synthesis=r0 / "synthesis")
    with pytest.raises(ArtifactError, match="after round 0 of 2"):
        evaluation(cfg, tmp_path / "e", teacher=t, student=r0 / "distillation")
    # a changed file is caught by its sha256
    bad = tmp_path / "bad"
    shutil.copytree(r0 / "synthesis", bad)
    (bad / "history.json").write_text("[]\n")
    with pytest.raises(ArtifactError, match="sha256"):
        pool_store(cfg, tmp_path / "p2", round_index=0, synthesis=bad)
    with pytest.raises(ArtifactError, match="from round 0, expected round 1"):
        distillation(cfg, tmp_path / "d", round_index=1, teacher=t, synthesis=r1 / "synthesis", pool=r0 / "pool", previous=r0 / "distillation")


def _teacher(cfg, **fields):
    """``cfg`` with teacher fields replaced (parameter groups are immutable once validated)."""
    return cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update=fields)})


def test_teacher_fetch_reuses_a_local_checkpoint(cfg, split, tmp_path):
    ckpt = split / "teacher" / "teacher.safetensors"
    sha = json.loads((split / "teacher" / "model_card.json").read_text())["sha256"]
    local = _teacher(cfg, source=str(ckpt), sha256=sha)
    a = teacher_fetch(local, tmp_path / "t")
    assert a.card["source"] == str(ckpt) and a.card["source_sha256"] == sha
    got, ref = load_state_dict(a.checkpoint), load_state_dict(ckpt)
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    local = _teacher(local, sha256="0" * 64)
    with pytest.raises(ValueError, match="sha256 mismatch"):
        teacher_fetch(local, tmp_path / "t2")


@pytest.fixture()
def http_file_server(tmp_path):
    """Serve ``tmp_path/www`` over HTTP on 127.0.0.1 (a stand-in for an https:// checkpoint host)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_teacher_fetch_from_a_url_needs_and_checks_the_sha256(cfg, split, tmp_path, http_file_server):
    www, url = http_file_server
    shutil.copy(split / "teacher" / "teacher.safetensors", www / "t.safetensors")
    sha = json.loads((split / "teacher" / "model_card.json").read_text())["sha256"]
    c = _teacher(cfg, source=f"{url}/t.safetensors")
    with pytest.raises(ValueError, match="teacher.sha256: required for a URL"):
        teacher_fetch(c, tmp_path / "a")
    c = _teacher(c, sha256="f" * 64)
    with pytest.raises(ValueError, match="sha256 mismatch"):
        teacher_fetch(c, tmp_path / "b")
    c = _teacher(c, sha256=sha)
    a = teacher_fetch(c, tmp_path / "c")
    assert a.card["source"] == c.teacher.source and a.card["source_sha256"] == sha
    from ferd.plan.fingerprint import params_fingerprint

    assert a.card["params_sha256"] == params_fingerprint(c, "teacher")
    # the verified download is kept, hidden, for the next use to re-hash against the pin (not part of the artifact)
    assert (tmp_path / "c" / ".download" / "t.safetensors").is_file()
    assert ".download/t.safetensors" not in json.loads((tmp_path / "c" / "manifest.json").read_text())["outputs"]
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["source"] == c.teacher.source
    # the same source behind `ferd run` and `ferd compare` (one teacher source for every entry point)
    from ferd.algorithm.teacher_source import obtain_teacher

    _, card = obtain_teacher(c, tmp_path / "run" / "teacher", progress=False)
    assert card["sha256"] == a.card["sha256"] and card["source"] == c.teacher.source


def test_teacher_fetch_from_s3(cfg, split, tmp_path, monkeypatch):
    boto3 = pytest.importorskip("boto3")
    server_mod = pytest.importorskip("moto.server")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                     "AWS_ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(k, v)
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="models")
        s3.upload_file(str(split / "teacher" / "teacher.safetensors"), "models", "digits/teacher.safetensors")
        c = _teacher(cfg, source="s3://models/digits/teacher.safetensors")
        a = teacher_fetch(c, tmp_path / "t")
        assert a.card["source"] == c.teacher.source
        got, ref = load_state_dict(a.checkpoint), load_state_dict(split / "teacher" / "teacher.safetensors")
        assert all(torch.equal(got[k], ref[k]) for k in ref)
    finally:
        server.stop()


def test_teacher_fetch_from_robustbench_says_what_it_needs(cfg, tmp_path):
    c = _teacher(cfg, source="robustbench:Carmon2019Unlabeled")
    try:
        import robustbench  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="needs the robustbench package and internet access"):
            teacher_fetch(c, tmp_path / "t")
    else:
        pytest.skip("robustbench is installed; fetching needs the internet")


def test_a_new_stage_is_one_module_plus_its_graph_entry(cfg, split, tmp_path, monkeypatch, capsys):
    """Issue 17: a throwaway stage (a summary of the final pool), declared in the graph and written as one
    module ``ferd.stages.pool_summary``, is run by ``ferd stage``, by ``run_task`` and appears in
    ``dvc.yaml`` and in the Kubeflow DAG (through the generic ``components/stage``) with no other change."""
    import sys
    import types

    from ferd.plan import graph
    from ferd.stages.dvc_yaml import dvc_stages
    from ferd.stages import run_task
    from ferd.stages.artifacts import write_json, write_manifest

    module = types.ModuleType("ferd.stages.pool_summary")

    class Summary:
        def __init__(self, d: Path, rows: int):
            self.dir, self.rows = d, rows

        def summary(self) -> dict:
            return {"dir": self.dir, "rows": self.rows}

    def pool_summary(cfg, out_dir, *, pool, progress=False):
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        rows = len(load_pool(cfg, pool))
        write_json(out / "summary.json", {"rows": rows})
        write_manifest(out, "pool-summary", cfg, inputs={"pool": pool}, scope="pool")
        return Summary(out, rows)

    module.pool_summary = pool_summary
    monkeypatch.setitem(sys.modules, module.__name__, module)
    stage = graph.Stage(name="pool-summary", scope="pool", per_round=False, subdir="pool-summary",
                        inputs=(graph.Input("pool", "pool-store", graph.LAST, "pool"),), output="summary",
                        gpu_device=False, title="pool summary", help="a throwaway stage: the final pool's row count")
    monkeypatch.setattr(graph, "STAGES", (*graph.STAGES, stage))
    monkeypatch.setitem(graph.BY_NAME, stage.name, stage)

    assert [t.id for t in graph.unroll(2)][-1] == "pool-summary"
    dvc = dvc_stages(cfg)["pool-summary"]
    assert dvc["deps"] == ["out/round-0/pool", "out/round-1/pool"]  # the pool reads every round's shard
    assert "--pool out/round-1/pool" in dvc["cmd"]
    # on Kubeflow it runs through the generic stage component, wired to the last pool
    from ferd.pipeline.dag import compile_pipeline

    spec = yaml.safe_load(Path(compile_pipeline(tmp_path / "p.yaml", CI, image=IMAGE)).read_text().split("\n---\n")[0])
    (task,) = [t for t in spec["root"]["dag"]["tasks"].values() if t["componentRef"]["name"] == "comp-stage"]
    assert task["taskInfo"]["name"] == "pool summary"
    assert task["inputs"]["parameters"]["name"]["runtimeValue"]["constant"] == "pool-summary"
    assert task["inputs"]["artifacts"]["input_0"]["taskOutputArtifact"] == {"outputArtifactKey": "pool",
                                                                             "producerTask": "pool-store-2"}
    assert task["inputs"]["parameters"]["flags"]["runtimeValue"]["constant"] == ["pool"]
    a = run_task(cfg, "pool-summary", None, {"pool": split / "round-1" / "pool"}, tmp_path / "a")
    assert a.rows == len(load_pool(cfg, split / "round-1" / "pool")) > 0
    capsys.readouterr()
    assert main(["stage", "pool-summary", "--params", str(CI), "--pool", str(split / "round-1" / "pool"),
                 "--out", str(tmp_path / "b")]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == a.rows
    assert json.loads((tmp_path / "b" / "summary.json").read_text()) == {"rows": a.rows}
