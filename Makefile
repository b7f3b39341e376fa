# The two commands of the README. Each creates the environment it needs (.venv) on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
OUT    ?= runs/embedded

.PHONY: run run-single test env clean

$(BIN)/ferd: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

env: $(BIN)/ferd

## make run: the main job, `dvc repro` of dvc.yaml on params.yaml (the embedded default: digits, CPU,
## a few minutes), then the student's metrics. A second `make run` does nothing. `ferd warm` forks
## each stage from one process that imported torch once (same results; plain `dvc repro` works too).
run: env
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/ferd warm -- $(BIN)/dvc repro
	$(BIN)/dvc metrics show

## make run-single: the same algorithm in one process (`ferd run`, resumable; no DVC)
run-single: env
	$(BIN)/ferd run --params params/embedded.yaml --out $(OUT)

## make test: the whole test suite (what CI runs), on TEST_WORKERS processes (pytest-xdist; each test
## file stays in one worker, so its module fixtures are built once)
TEST_WORKERS ?= 2
test: env
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf $(OUT) .pytest_cache
