# Two commands on a bare machine with Python 3.11: `make study` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed
# Stages run `python -m regstudy...`: put the project's environment first on PATH.
RUN    := PATH="$(BIN):$$PATH"

.PHONY: env study test bench ui clean

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

bench: env
	$(RUN) $(BIN)/python -m benchmarks.run

ui: env
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --port 5000

clean:
	rm -rf outputs multirun
