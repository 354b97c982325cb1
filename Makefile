# Two entry points on a fresh machine with Python 3.11: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.timoe-installed
CORES ?= 2
# Snakemake through `timoe study`: params.yaml and every --configfile are validated as data before
# Snakemake opens them (bare `snakemake --configfile` runs the Python of a YTE file, see README).
SNAKEMAKE := $(BIN)/timoe study --cores $(CORES) --profile workflow/profiles/default

.PHONY: setup run test lint smoke push pull report ui clean server

LOCK := requirements.lock
# The locked set first, exactly and hash-checked (data carriers included, still without their
# dependencies); then timoe and torch, whose own dependencies the lock already holds (the lock's
# pins as constraints keep them there; without its hashes, which would demand one for torch and
# the editable timoe too). torch is the one distribution outside the lock: see `lock` below.
# The lock goes in through uv (the version `make lock` uses), hash-checked as with pip: 44 s
# against pip's 95 s on this 2-core machine. Both compile every module's bytecode at install:
# where PYTHONDONTWRITEBYTECODE is set (this machine class) nothing is cached at import, and
# without the compile each of the study's ~150 jobs paid 4-11 s recompiling its imports (measured).
# pip stays the fallback.
$(STAMP): pyproject.toml requirements-data.txt $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q uv==$(UV_VERSION) && \
	  $(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python --require-hashes --no-deps -r $(LOCK) || \
	  { echo "uv could not install the lock; installing it with pip" >&2; \
	    $(BIN)/python -m pip install -q --require-hashes --no-deps -r $(LOCK); }
	$(BIN)/python src/timoe/environment.py constraints > $(VENV)/lock-constraints.txt
	$(BIN)/python -m pip install -q -c $(VENV)/lock-constraints.txt -e ".[test]"
	$(BIN)/python src/timoe/environment.py verify
	touch $@

setup: $(STAMP)

# Regenerate $(LOCK) from pyproject.toml (with the extra setup installs, test) and
# requirements-data.txt, for Linux x86_64 and Python 3.11, with hashes; versions already in the
# lock are kept unless UPGRADE=1 (`make lock UPGRADE=1`).
# torch is resolved against its CPU build, so the lock holds torch's own dependencies but none of
# the CUDA runtime wheels (nvidia-*, triton) of PyPI's Linux build, and is left out of it: setup
# installs torch from pyproject's exact pin, which gives the CPU wheel where pip is pointed at it
# (this machine's pip find-links) and PyPI's CUDA build elsewhere, whose CUDA wheels torch itself
# pins exactly. TORCH_WHEELS (default: pip's PIP_FIND_LINKS) is where uv finds the CPU wheel;
# elsewhere e.g. `make lock TORCH_WHEELS=https://download.pytorch.org/whl/cpu/torch/`.
UV_VERSION := 0.13.8
TORCH_WHEELS ?= $(PIP_FIND_LINKS)
LOCK_ARGS = --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes -q
.PHONY: lock
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q uv==$(UV_VERSION)
	cp $(LOCK) $(LOCK).new 2>/dev/null || true
	$(BIN)/uv pip compile pyproject.toml --extra test $(LOCK_ARGS) $(if $(UPGRADE),--upgrade) \
	  $(foreach d,$(TORCH_WHEELS),--find-links $(d)) --no-emit-package torch \
	  --custom-compile-command "make lock" -o $(LOCK).new
	$(BIN)/uv pip compile requirements-data.txt --no-deps $(LOCK_ARGS) --no-header >> $(LOCK).new
	echo "# timoe-spec-sha256: $$($(BIN)/python src/timoe/environment.py spec-hash)" >> $(LOCK).new
	@if grep -qiE '^(nvidia-|triton==)' $(LOCK).new; then \
	  echo "CUDA wheels in the lock: torch's CPU wheel was not found (set TORCH_WHEELS)" >&2; \
	  rm $(LOCK).new; exit 1; fi
	mv $(LOCK).new $(LOCK)

# The whole study: prepare -> quantify -> sweep -> train -> evaluate, then push to the DVC remote.
run: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(SNAKEMAKE)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(MAKE) --no-print-directory push

# The test suite (slow tests included; `make test PYTEST_ARGS="-m 'not slow'"` skips them).
PYTEST_ARGS ?=
test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

# ruff's checks and formatting; Snakemake's own lints (`timoe lint-workflow`: any lint fails but
# the one that asks for a conda env per rule, see there); dvc.yaml as generated from the stage
# declarations (`timoe dvc-yaml` rewrites it).
lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	@PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m timoe lint-workflow
	$(BIN)/timoe dvc-yaml --check

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

report: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(SNAKEMAKE) --report results/snakemake-report.zip

ui: setup
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --workers 1 --backend-store-uri sqlite:///mlflow.db

# A shared tracking server for many machines (docs/cluster.md): runs in PostgreSQL, artifacts served.
# `make server MLFLOW_BACKEND_STORE_URI=postgresql://user@dbhost/mlflow [SERVER_ARGS="--host 0.0.0.0"]`
SERVER_ARGS ?=
server: setup
	MLFLOW_BACKEND_STORE_URI="$(MLFLOW_BACKEND_STORE_URI)" $(BIN)/python -m timoe server $(SERVER_ARGS)

clean:
	rm -rf .snakemake/timoe logs
