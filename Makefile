# The two commands of the README. Each creates the environment it needs (.venv) on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
OUT    ?= runs/embedded

.PHONY: run run-single test test-fast env lock clean image

# Every dependency at the version constraints.txt locks (pyproject.toml holds only compatible ranges)
$(BIN)/ferd: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[all,dev]'
	@touch $@

env: $(BIN)/ferd

## make run: the main job, `dvc repro` of dvc.yaml on params.yaml (the embedded default: digits, CPU,
## a few minutes), then the student's metrics. A second `make run` does nothing. `ferd warm` forks
## each stage from one process that imported torch once (same results; plain `dvc repro` works too).
run: env
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/ferd warm -- $(BIN)/dvc repro
	@awk '/^## Summary/{f=1; next} /^## /{f=0} f && NF' out/evaluation/eval/report.md
	@echo "report: out/evaluation/eval/report.md; every metric: dvc metrics show; curves: dvc plots show"

## make run-single: the same algorithm in one process (`ferd run`, resumable; no DVC)
run-single: env
	$(BIN)/ferd run --params params/embedded.yaml --out $(OUT)

## make test: the whole test suite (what CI runs), on TEST_WORKERS processes (pytest-xdist; each test
## file stays in one worker, so its module fixtures are built once)
TEST_WORKERS ?= 2
test: env
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

## make test-fast: the unit lane only (tests/unit: in-process, no stage or pipeline run, no container or network
## stand-in; about a minute), on TEST_WORKERS processes like make test
test-fast: env
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests/unit

## make lock: rewrite constraints.txt from the environment (after changing pyproject.toml's ranges and
## upgrading .venv); review the diff, then make test
lock: env
	{ sed -n '/^#/p' constraints.txt; $(BIN)/pip freeze --exclude-editable --exclude ferd; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

## make image: the container image, built for real (image/build.sh: podman or docker, podman installed from
## the OS packages when neither works; a local Debian base when no registry is reachable); writes build/image.json
image:
	bash image/build.sh

clean:
	rm -rf $(OUT) .pytest_cache
