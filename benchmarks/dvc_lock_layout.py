"""What DVC itself costs for the embedded default's stage graph: one ``dvc.lock`` for every stage against
one per round (the layout :mod:`ferd.stages.dvc_yaml` writes).

Builds two throw-away DVC projects with the stages, ``deps``, ``params`` and ``outs`` of ``params.yaml``'s
graph, each stage's command replaced by one that writes a 200 kB file into its output directory, so
the time measured is DVC's alone (graph, hashing, lock files, run cache): ``single`` puts every stage in
``dvc.yaml``, ``split`` is :func:`ferd.stages.dvc_yaml.dvc_files`. Each layout runs ``dvc repro`` from
scratch ``--repeats`` times, alternating; the medians and every run go to ``--out``.

Run from the repository root::

    .venv/bin/python benchmarks/dvc_lock_layout.py --repeats 3 --out benchmarks/results/dvc_lock_layout.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from ferd.plan.resolve import load_config
from ferd.stages.dvc_yaml import ROOT_FILE, dvc_files

BIN = Path(sys.executable).parent


def _stub(stage: dict) -> dict:
    out = stage["outs"][0]
    return {**stage, "cmd": f"mkdir -p {out} && head -c 200000 /dev/zero > {out}/blob && echo {out} > {out}/id"}


def layouts(params: Path) -> dict[str, dict[str, dict]]:
    """``single`` and ``split``: relative path → pipeline document, commands stubbed."""
    files = dvc_files(load_config(params))
    split = {path: {"stages": {k: _stub(v) for k, v in doc["stages"].items()}} for path, doc in files.items()}
    single = {ROOT_FILE: {"stages": {k: {n: v for n, v in st.items() if n != "wdir"}
                                     for doc in split.values() for k, st in doc["stages"].items()}}}
    return {"single": single, "split": split}


def _project(root: Path, files: dict[str, dict], params: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    shutil.copy(params, root / "params.yaml")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=root, check=True)
    for path, doc in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(yaml.safe_dump(doc, sort_keys=False))


def _repro(root: Path) -> float:
    t = time.perf_counter()
    subprocess.run([str(BIN / "dvc"), "repro", "-q"], cwd=root, check=True, env={"DVC_NO_ANALYTICS": "1",
                   "PATH": "/usr/bin:/bin", "HOME": str(root)})
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    runs: dict[str, list[float]] = {"single": [], "split": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for name, files in layouts(args.params).items():
                _project(Path(tmp) / name, files, args.params)
                runs[name].append(round(_repro(Path(tmp) / name), 2))
                print(f"{name}: {runs[name][-1]:.1f} s", flush=True)
    stages = sum(len(d["stages"]) for d in layouts(args.params)["split"].values())
    result = {"command": "benchmarks/dvc_lock_layout.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "stages": stages, "seconds": runs, "median_s": {k: statistics.median(v) for k, v in runs.items()}}
    print(json.dumps(result["median_s"]))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
