# Two commands on a bare machine with Python 3.11: `make study` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed
# Stages run `python -m regstudy...`: put the project's environment first on PATH.
RUN    := PATH="$(BIN):$$PATH"

.PHONY: env study test test-slow bench ui postgres server server-stop server-status clean

env: $(STAMP)

# torch first: `torch==2.13.0` is the local CPU wheel; anything else pulls CUDA builds.
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

study: env
	$(RUN) $(BIN)/dvc repro
	@echo "Report: $(CURDIR)/reports/index.html"

test: env
	$(RUN) $(BIN)/python -m pytest

# The slow tier (a Ray sweep, a server that dies mid-job, a benchmark): about 2 minutes.
test-slow: env
	$(RUN) $(BIN)/python -m pytest -m slow

bench: env
	$(RUN) $(BIN)/python -m benchmarks.run

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
