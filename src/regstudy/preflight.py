"""What a job checks before it starts, importing neither torch, Lightning nor MLflow.

A typo on the command line (``python -m regstudy.train members.seeds=[]``) or a bad data
file is refused in about a second, with nothing written, instead of after the eight
seconds those imports take. The Hydra callback here runs these checks in the launching
process, then creates the MLflow store before any job starts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .config import ConfigError, validate, validate_task
from .data import CsvError, load_npz, make_csv_dataset, seed_rows, task_of, text_of


def project_root(cfg: DictConfig) -> Path:
    return Path(cfg.paths.root or ".").resolve()


def tracking_uri(cfg: DictConfig) -> str:
    """The configured URI, or the SQLite store ``mlflow.db`` at the project root."""
    return cfg.logger.tracking_uri or f"sqlite:///{project_root(cfg) / 'mlflow.db'}"


def is_server(uri: str) -> bool:
    """Whether ``uri`` is a tracking server's (which keeps the artifacts itself)."""
    return uri.startswith(("http://", "https://"))


def check_server(cfg: DictConfig) -> None:
    """A job logging to a tracking server stops before it trains if no server answers
    there (MLflow itself would retry each request for minutes); raises ConfigError."""
    uri = tracking_uri(cfg)
    if cfg.logger.enabled and is_server(uri):
        from .server import server_answers

        if not server_answers(uri, timeout=5.0):
            raise ConfigError("logger.tracking_uri", uri,
                              "the URL of a running MLflow server (none answers there: start it "
                              "with `make server`), or null for the local store mlflow.db")


def data_path(cfg: DictConfig) -> Path:
    """The absolute data file of the job (relative paths are from the project root)."""
    path = Path(cfg.data.path)
    return path if path.is_absolute() else project_root(cfg) / path


def load_arrays(cfg: DictConfig, path: Path, seeds: list[int],
                say: bool = True) -> tuple[dict[str, np.ndarray], str]:
    """The data of the job's seeds (a data file's draws, or a CSV file checked and split)
    and its task (inferred for a CSV, and said on stderr if ``say``), with what depends on
    the task checked; raises ConfigError, CsvError or FileNotFoundError.
    """
    if path.suffix == ".csv":
        entry = {"path": path, **{k: cfg.data[k] for k in ("target", "task", "val_fraction", "test_fraction")}}
        arrays = make_csv_dataset(entry, sorted(set(seeds)))
        if say:
            print(f"data: {text_of(arrays, 'note')}", file=sys.stderr)
    else:
        arrays = load_npz(path)
    task = task_of(arrays) or cfg.data.task
    if cfg.data.task is not None and task != cfg.data.task:
        raise ConfigError("data.task", cfg.data.task, f"{task!r}, the task of {path}")
    validate_task(cfg, task)
    return arrays, task


def preflight(cfg: DictConfig) -> None:
    """Everything a job checks before it starts: the config, then its data (the file, its
    task, the members' seeds). Raises ConfigError, CsvError or FileNotFoundError."""
    validate(cfg)
    check_server(cfg)
    seeds = [int(s) for s in cfg.members.seeds]
    arrays, _ = load_arrays(cfg, data_path(cfg), seeds, say=False)  # the job says it
    seed_rows(arrays, seeds, data_path(cfg))


class PrepareStoreCallback(Callback):
    """Hydra callback: create the MLflow store in the launching process, before any job."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A single run: check the config and the data first. Hydra has not written its
        output folder yet, so bad input stops here with nothing written (exit code 2)."""
        try:
            preflight(config)
        except (ConfigError, CsvError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        self.on_multirun_start(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from .tracking import prepare_from_config  # MLflow: only once the input is known good

        prepare_from_config(config)
