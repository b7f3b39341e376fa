"""Malformed input of every kind fed to the CLI (issue 19): each is refused with exit status 2 (4 for
storage) and one line naming the file or key, no traceback, nothing changed outside the scratch
directory, and the process's peak memory within 0.5 GiB of ``ferd --help``'s."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from support.faultlog import record
from ferd.core.checkpoint import save_state_dict, sha256_file
from ferd.plan.resolve import load_config
from ferd.models import create_model
from ferd.data.pool import Shard, shard_table
from ferd.core.provenance import seal
from support.inputs import BOMB

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "params" / "ci.yaml"


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def _shard(images: torch.Tensor) -> Shard:
    n = images.shape[0]
    return Shard(round=0, images=images, labels=torch.zeros(n, dtype=torch.int64), teacher_logits=torch.zeros(n, 10),
                 class_weight=torch.full((n,), 0.1, dtype=torch.float64), epochs=torch.zeros(n, dtype=torch.int32))


def _cases(d: Path, s3_endpoint: str) -> list[dict]:
    """Build the malformed inputs under ``d``; return [{name, argv, rc, says}]."""
    import pyarrow.parquet as pq

    from ferd.stages import teacher_fetch
    from ferd.stages.artifacts import write_manifest

    torch.manual_seed(0)
    teacher_file = d / "cnn4.safetensors"
    save_state_dict(create_model("cnn-4", num_classes=10).state_dict(), teacher_file)
    params = d / "params.yaml"
    data = yaml.safe_load(CI.read_text())
    data["teacher"] = {**data.get("teacher", {}), "source": str(teacher_file), "arch": "cnn-4"}
    params.write_text(yaml.safe_dump(data))
    cfg = load_config(params)
    teacher_dir = teacher_fetch(cfg, d / "teacher").dir
    f = lambda name, content: (d / name).write_bytes(content) * 0 or d / name  # noqa: E731

    def artifact(name: str, stage: str, files: dict[str, bytes], round_index: int | None = None) -> Path:
        a = d / name
        for rel, content in files.items():
            (a / rel).parent.mkdir(parents=True, exist_ok=True)
            (a / rel).write_bytes(content)
        write_manifest(a, stage, cfg, round_index=round_index)
        return a

    def parquet(shard: Shard) -> bytes:
        buf = io.BytesIO()
        pq.write_table(shard_table(shard), buf)
        return buf.getvalue()

    run = ["run", "--params", str(params), "--out", str(d / "run-out"), "--no-progress"]
    ev = ["evaluate", "--teacher-arch", "cnn-4", "--dataset", "cifar10", "--attacks", "clean", "--out",
          str(d / "ev-out"), "--no-progress"]
    npz = lambda name, **arrays: (np.savez(d / name, **arrays), d / name)[1]  # noqa: E731
    nan = {k: v.clone() for k, v in create_model("cnn-4", num_classes=10).state_dict().items()}
    next(v for v in nan.values() if v.is_floating_point()).fill_(float("nan"))
    save_state_dict(nan, d / "nan.safetensors")
    wrong = d / "wrong-arch.safetensors"
    save_state_dict(create_model("cnn-8", num_classes=10).state_dict(), wrong)
    stage_pool = lambda syn: ["stage", "pool-store", "--params", str(params), "--round", "0",  # noqa: E731
                              "--synthesis", str(syn), "--out", str(d / "pool-out"), "--no-progress"]
    stage_syn = lambda teacher: ["stage", "synthesis", "--params", str(params), "--round", "0",  # noqa: E731
                                 "--teacher", str(teacher), "--out", str(d / "syn-out"), "--no-progress"]
    ckpt = d / "resume"
    (ckpt / "checkpoint").mkdir(parents=True)
    (ckpt / "params.json").write_text(json.dumps(cfg.model_dump(mode="json")))
    (ckpt / "checkpoint" / "generator.pt").write_bytes(b"PK\x03\x04 not a torch file")
    from ferd.plan.fingerprint import params_fingerprint

    pool0 = ckpt / "pool" / "round=0" / "part-0.parquet"
    pool0.parent.mkdir(parents=True)
    pool0.write_bytes(parquet(_shard(torch.rand(4, 3, 32, 32))))
    (ckpt / "checkpoint" / "round.json").write_text(json.dumps(seal({
        "next_round": 1, "rounds": cfg.num_rounds, "params_fingerprint": params_fingerprint(cfg, "distillation"),
        "files": {"generator.pt": sha256_file(ckpt / "checkpoint" / "generator.pt")},
        "pool": {"0": sha256_file(pool0)}, "pinned": {}})))
    bad_record = d / "resume2"
    (bad_record / "checkpoint").mkdir(parents=True)
    (bad_record / "params.json").write_text(json.dumps(cfg.model_dump(mode="json")))
    (bad_record / "checkpoint" / "round.json").write_text("{not json")
    s3 = ["-S", "storage.uri=s3://ferd/hostile", "-S", f"storage.endpoint_url={s3_endpoint}"]

    cases = [
        ("params: YAML alias bomb", ["run", "--params", str(f("bomb.yaml", BOMB.encode())), "--out", str(d / "o")],
         2, "aliases (*name) are not allowed"),
        ("params: empty file", ["run", "--params", str(f("empty.yaml", b"")), "--out", str(d / "o")], 2,
         "empty.yaml: empty"),
        ("params: a list", ["run", "--params", str(f("list.yaml", b"- 1\n")), "--out", str(d / "o")], 2,
         "list.yaml: expected a mapping"),
        ("params: invalid YAML", ["run", "--params", str(f("bad.yaml", b"a: [1,\n")), "--out", str(d / "o")], 2,
         "bad.yaml: not valid parameter YAML"),
        ("params: binary garbage", ["run", "--params", str(f("bin.yaml", bytes(range(256)) * 4)), "--out",
                                    str(d / "o")], 2, "bin.yaml"),
        ("params: 2 MiB", ["run", "--params", str(f("big.yaml", b"# x\n" * (1 << 19))), "--out", str(d / "o")], 2,
         "big.yaml"),
        ("params: unknown key", ["run", "--params", str(f("typo.yaml", b"synthesis: {lamda_uni: 1}\n")), "--out",
                                 str(d / "o")], 2, "synthesis.lamda_uni: unknown key"),
        ("params: missing file", ["run", "--params", str(d / "nope.yaml"), "--out", str(d / "o")], 2, "nope.yaml"),
        ("-S: alias bomb", [*run, "-S", "seed=&a [1, *a]"], 2, "override seed"),
        ("-S: no '='", [*run, "-S", "seed"], 2, "expected KEY=VALUE"),
        ("-S: epochs 2 200 000", [*run, "-S", "epochs=2200000"], 2, "epochs"),
        ("-S: device cuda:abc", [*run, "-S", "device=cuda:abc"], 2, "device"),
        ("-S: 10 000-character value", [*run, "-S", "seed=" + "x" * 10_000], 2, "seed"),
        ("-S: a value as a group", [*run, "-S", "seed.x=1"], 2, "seed"),
        ("-S: negative ε", [*run, "-S", "threat.eps=-1"], 2, "threat.eps"),
        ("npz: not a zip", [*ev, "--teacher", str(teacher_file), "--data-root", str(f("x.npz", b"garbage"))], 2,
         "x.npz"),
        ("npz: missing arrays", [*ev, "--teacher", str(teacher_file), "--data-root", str(npz("k.npz", a=np.zeros(3)))],
         2, "k.npz"),
        ("npz: a pickled object", [*ev, "--teacher", str(teacher_file), "--data-root",
                                   str(npz("p.npz", images=np.array([_Evil()], dtype=object),
                                           labels=np.zeros(1, dtype=np.int64)))], 2, "p.npz"),
        ("safetensors: garbage", [*ev, "--teacher", str(f("g.safetensors", b"\x10" * 64))], 2, "g.safetensors"),
        ("safetensors: truncated", [*ev, "--teacher", str(f("t.safetensors", teacher_file.read_bytes()[:300]))], 2,
         "t.safetensors"),
        ("safetensors: NaN weights", [*ev, "--teacher", str(d / "nan.safetensors")], 2, "NaN"),
        ("safetensors: another architecture", [*ev, "--teacher", str(wrong)], 2, "wrong-arch.safetensors"),
        ("checkpoint: a pickle that runs code", [*ev, "--teacher", str(f("evil.pt", pickle.dumps(_Evil())))], 2,
         "evil.pt"),
        ("parquet: garbage shard", stage_pool(artifact("syn-garbage", "synthesis",
                                                       {"shard/round=0/part-0.parquet": b"PAR1 garbage"}, 0)), 2,
         "part-0.parquet"),
        ("parquet: images ×255", stage_pool(artifact("syn-255", "synthesis", {"shard/round=0/part-0.parquet": parquet(
            _shard(torch.rand(4, 3, 32, 32) * 255))}, 0)), 2, "images outside [0, 1]"),
        ("state: a garbage generator.pt", ["run", "--params", str(params), "--out", str(ckpt), "--no-progress"], 2,
         "generator.pt"),
        ("state: round.json not JSON", ["run", "--params", str(params), "--out", str(bad_record), "--no-progress"], 2,
         "round.json"),
        ("manifest: not JSON", stage_syn(_garbage_manifest(d / "m1", b"{oops")), 2, "manifest.json"),
        ("manifest: a JSON list", stage_syn(_garbage_manifest(d / "m2", b"[1, 2]")), 2, "manifest.json"),
        ("manifest: a path outside the artifact", stage_syn(_escaping_manifest(teacher_dir, d / "m3")), 2,
         "not a path inside the artifact"),
        ("--out: a 5000-character path", ["run", "--params", str(params), "--out", str(d / ("x" * 5000))], 2,
         "File name too long"),
        ("--out: below a file", ["run", "--params", str(params), "--out", str(teacher_file / "sub")], 2,
         "cnn4.safetensors"),
        ("teacher.source: no such file", [*run, "-S", f"teacher.source={d / 'absent.safetensors'}"], 2,
         "teacher.source: no checkpoint file"),
        ("data_root: no test set", [*run, "-S", "dataset=cifar10", "-S", f"data_root={d / 'no-data'}"], 2,
         "data_root: cifar10/test not found"),
        ("S3: a garbage manifest object", [*stage_syn("s3://ferd/garbage"), *s3], 2, "s3://ferd/garbage"),
        ("S3: no such artifact", [*stage_syn("s3://ferd/absent"), *s3], 4, "s3://ferd/absent"),
    ]
    if not torch.cuda.is_available():  # a GPU asked for on a machine without one: refused before any work
        cases.append(("-S: device cuda without a GPU", [*run, "-S", "device=cuda"], 2, "CUDA is not available"))
    return [{"name": n, "argv": a, "rc": rc, "says": says} for n, a, rc, says in cases]


def _garbage_manifest(a: Path, content: bytes) -> Path:
    a.mkdir(parents=True, exist_ok=True)
    (a / "manifest.json").write_bytes(content)
    return a


def _escaping_manifest(teacher_dir: Path, a: Path) -> Path:
    import shutil

    from ferd.core.provenance import seal

    shutil.copytree(teacher_dir, a)
    m = json.loads((a / "manifest.json").read_text())
    m["outputs"]["../../outside.txt"] = {"sha256": "0" * 64, "bytes": 1}
    (a / "manifest.json").write_text(json.dumps(seal(m)))
    return a


def _peak_kib(argv: list[str]) -> int:
    code = ("import resource, sys\nfrom ferd.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n"
            "    pass\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def test_malformed_inputs_are_refused_in_one_line(s3, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    client = s3.client()
    client.put_object(Bucket="ferd", Key="garbage/manifest.json", Body=b"\xff\xfe not json")
    cases = _cases(scratch, s3.endpoint)
    assert len(cases) >= 25
    before = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    inputs = {p: sha256_file(p) for p in scratch.rglob("*") if p.is_file()}
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    subprocess.run([sys.executable, str(ROOT / "tests" / "support" / "hostile_driver.py"), str(tmp_path / "cases.json"),
                    str(tmp_path / "results.json")], cwd=scratch, check=True, timeout=900,
                   env={**__import__("os").environ, "FERD_CACHE": str(scratch / "cache")})
    results = {r["name"]: r for r in json.loads((tmp_path / "results.json").read_text())}
    help_kib = _peak_kib(["--help"])
    bad = []
    for case in cases:
        r = results[case["name"]]
        lines = [ln for ln in r["stderr"].splitlines() if ln.strip()]
        ok = (r["rc"] == case["rc"] and len(lines) == 1 and case["says"] in lines[0]
              and "Traceback" not in r["stderr"] and len(lines[0]) < 600)
        record(f"hostile input: {case['name']}", f"exit {r['rc']}", ok, 0)
        if not ok:
            bad.append((case["name"], r["rc"], r["stderr"][-400:]))
    peak_over = (max(r["peak_kib"] for r in results.values()) - help_kib) / 1024
    changed = [str(p) for p, h in inputs.items() if not p.is_file() or sha256_file(p) != h]
    after = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    assert not bad, bad
    assert not changed and before == after, (changed, before, after)
    assert peak_over < 512, f"peak memory {peak_over:.0f} MiB above `ferd --help`"
