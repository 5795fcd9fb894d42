# Two commands on a bare machine with Python 3.11: `make study` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed
# Stages run `python -m regstudy...`: put the project's environment first on PATH.
RUN    := PATH="$(BIN):$$PATH"

.PHONY: lint test-unit env env-all study test docs test-slow bench bench-gpu ui postgres server server-stop server-status clean

# `make env`: the base install and pytest (requirements.lock); `make env-all` adds every
# extra (regstudy[all]: Ray, SLURM, the PostgreSQL server; requirements-extras.lock), what CI
# tests. Their tests skip, naming the extra, in an environment without it.
env: $(STAMP)

env-all: $(STAMP)-all

# torch first: `torch==2.13.0` is the local CPU wheel; anything else pulls CUDA builds.
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

$(STAMP)-all: $(STAMP) requirements-extras.lock
	$(BIN)/pip install --quiet -r requirements.lock -r requirements-extras.lock
	touch $(STAMP)-all

study: env
	$(RUN) $(BIN)/dvc repro
	@echo "Report: $(CURDIR)/reports/index.html"

# The layers of the code (pyproject.toml's [tool.importlinter]): no import cycle, no
# import upward, the report apart from the training code.
lint: env
	$(BIN)/lint-imports --no-cache

test: env
	$(RUN) $(BIN)/python -m pytest

# tests/unit alone: no subprocess, no database (under a minute); tests/integration holds the rest
test-unit: env
	$(RUN) $(BIN)/python -m pytest tests/unit

# The slow tier (a Ray sweep, a server that dies mid-job, a benchmark): about 2 minutes.
test-slow: env
	$(RUN) $(BIN)/python -m pytest -m slow

# The docs site (mkdocs.yml, docs/) into site/; --strict: a broken link or a nav page
# that is missing fails the build. mkdocs-material is not in requirements.lock: installed once here.
docs: env
	@$(BIN)/python -c "import material" 2>/dev/null || $(BIN)/pip install --quiet mkdocs-material==9.8.1
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir $(CURDIR)/site

bench: env
	$(RUN) $(BIN)/python -m benchmarks.run

# The torch path on a GPU (benchmarks/gpu.py): the same training as the CPU's, and its speed.
# Needs torch only, no install: `make bench-gpu PYTHON=python` on a GPU machine; OUT=dir
# also writes dir/gpu.json.
bench-gpu:
	PYTHONPATH=$(CURDIR)/src $(PYTHON) -m benchmarks.gpu

ui: env
	$(BIN)/python -m regstudy.ui --store $(CURDIR)/mlflow.db --port 5000

# A shared tracking server: PostgreSQL + `mlflow server` in SERVER_DIR, on 127.0.0.1.
# Jobs log to it with MLFLOW_TRACKING_URI=http://127.0.0.1:$(SERVER_PORT) (see the README).
SERVER_DIR  ?= $(CURDIR)/.server
SERVER_PORT ?= 5001
SERVER_HOST ?= 127.0.0.1
PG_PORT     ?= 5433
SERVER      := $(BIN)/python -m regstudy.server --dir $(SERVER_DIR)

# PostgreSQL from the OS's package manager (Debian/Ubuntu), if no pg_ctl is found.
postgres:
	@command -v pg_ctl >/dev/null || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 \
	  || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql)

server: env postgres
	$(SERVER) start --port $(SERVER_PORT) --pg-port $(PG_PORT) --host $(SERVER_HOST)

server-stop: env
	$(SERVER) stop

server-status: env
	$(SERVER) status

clean:
	rm -rf outputs multirun
