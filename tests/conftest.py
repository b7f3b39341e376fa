"""Shared fixtures: a moto S3 server (started by the tests themselves) and one torch thread.

The tests are in three lanes: ``unit/`` (fast, in-process: ``make test-fast``), ``integration/`` (several
modules together: stage runs on the CI preset, S3, DVC, Kubeflow local runners, faults, hostile input) and
``e2e/`` (whole ``ferd run``/``ferd compare`` runs, the image, the wheel, the golden bytes); ``support/`` holds
what they share (``from support.inputs import TINY``; pyproject's ``pythonpath = ["tests"]``)."""

from __future__ import annotations

import builtins
import contextlib
import os

import pytest
import torch

from support.s3server import ENV, MotoServer


@pytest.fixture
def s3(tmp_path_factory, monkeypatch):
    """A fresh moto S3 server on 127.0.0.1 with bucket ``ferd``; AWS_* dummies in the environment."""
    server = MotoServer(tmp_path_factory.mktemp("moto"))
    server.start()
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
    server.client().create_bucket(Bucket="ferd")
    yield server
    server.stop()


_PRINT = builtins.print


@pytest.fixture(autouse=True)
def _print_restored():
    """kfp.local indents task output by swapping ``builtins.print`` (not thread-safe); a swapped ``print``
    left behind by a local pipeline run breaks later tests that pickle ``print`` by name."""
    yield
    builtins.print = _PRINT


@contextlib.contextmanager
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def single_thread():
    """torch on one thread for the test (reproducible rounding, no oversubscription on 2 cores)."""
    with _one_torch_thread():
        yield


@pytest.fixture(scope="module")
def one_thread_module():
    """torch on one thread for a whole module (``pytestmark = pytest.mark.usefixtures("one_thread_module")``):
    tiny models run much faster on one intra-op thread, above all on a busy 2-core machine."""
    with _one_torch_thread():
        yield


STARTED_FIRST = ("test_container.py", "test_wheel.py")  # e2e/: the longest files (the image build: minutes) start first


def pytest_collection_modifyitems(config, items):
    """Start the longest files first (two xdist workers: the image build then runs beside the rest, not after it);
    skip ``@pytest.mark.acceptance`` runs (full-size, minutes each) unless ``FERD_ACCEPTANCE=1``."""
    first = {name: i for i, name in enumerate(STARTED_FIRST)}
    items.sort(key=lambda item: first.get(item.path.name, len(first)))  # stable: the rest keep their order
    if os.environ.get("FERD_ACCEPTANCE") == "1":
        return
    skip = pytest.mark.skip(reason="full-size acceptance run: set FERD_ACCEPTANCE=1 to run it")
    for item in items:
        if "acceptance" in item.keywords:
            item.add_marker(skip)


def pytest_sessionfinish(session):
    """Under pytest-xdist (``make test`` runs two workers): a worker hands its fault rows to the controller."""
    from support.faultlog import ROWS

    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["fault_rows"] = [list(r) for r in ROWS]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """The controller collects each worker's fault rows for the summary table."""
    from support.faultlog import ROWS

    ROWS.extend(tuple(r) for r in getattr(node, "workeroutput", {}).get("fault_rows", []))


def pytest_terminal_summary(terminalreporter):
    """The fault suite's table (tests/integration/test_faults.py): fault, injected, survived, artifacts lost."""
    from support.faultlog import ROWS, table

    if ROWS:
        terminalreporter.write_sep("=", "fault suite")
        terminalreporter.write_line(table())
