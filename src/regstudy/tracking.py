"""MLflow tracking: a parent run per train job, a child run per member.

Only ``MlflowClient`` is used (never the fluent API), so no active run or global
tracking state survives a job in a reused worker process. Every run a job opens is
terminated by the job, whatever happens: FINISHED, FAILED (a diverged member or a
failed job) or KILLED (interrupted).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.experimental.callback import Callback
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

MAX_PARAMS_PER_BATCH = 100  # MLflow's limits per log_batch call
MAX_METRICS_PER_BATCH = 1000
EPOCH_METRICS = ("train_loss", "val_loss", "test_loss", "train_metric", "val_metric",
                 "test_metric", "penalty", "weight_norm", "near_zero_fraction", "alive_neurons")
LAYER_METRICS = {"layer_norm": "weight_norm", "effective_lr": "effective_lr",
                 "layer_near_zero": "near_zero_fraction", "layer_alive": "alive_neurons"}


def project_root(cfg: DictConfig) -> Path:
    return Path(cfg.paths.root or ".").resolve()


def tracking_uri(cfg: DictConfig) -> str:
    """The configured URI, or the SQLite store ``mlflow.db`` at the project root."""
    return cfg.logger.tracking_uri or f"sqlite:///{project_root(cfg) / 'mlflow.db'}"


def prepare_store(uri: str, experiment_name: str, artifact_root: Path) -> str:
    """Create the store and the experiment if needed; return the experiment id.

    Must run before jobs fan out: parallel first writes to a fresh SQLite store race
    on its schema migration.
    """
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment_name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(experiment_name, artifact_location=artifact_root.as_uri())
    except Exception:  # created meanwhile by another process
        exp = client.get_experiment_by_name(experiment_name)
        if exp is None:
            raise
        return exp.experiment_id


def prepare_from_config(cfg: DictConfig) -> str | None:
    if not cfg.logger.enabled:
        return None
    return prepare_store(tracking_uri(cfg), cfg.logger.experiment_name,
                         project_root(cfg) / "mlartifacts")


class PrepareStoreCallback(Callback):
    """Hydra callback: create the MLflow store in the launching process, before any job."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from .config import ConfigError, validate

        try:
            validate(config)
        except ConfigError:
            return  # the job reports it; bad input must not create a store
        prepare_from_config(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        prepare_from_config(config)


def git_commit(root: Path) -> str:
    """HEAD's commit id (with ``-dirty`` if the tree has changes), or ``unknown``."""
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=root, capture_output=True,  # noqa: E731
                                        text=True, check=True).stdout.strip()
        commit = run("rev-parse", "HEAD")
        return commit + ("-dirty" if run("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; lists are kept whole as strings."""
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)[:6000]
    return out


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


class JobTracker:
    """The MLflow runs of one train job. Use as a context manager."""

    def __init__(self, cfg: DictConfig, members: list[dict[str, Any]], tags: dict[str, str]):
        self.cfg, self.members, self.tags = cfg, members, tags
        self.client = MlflowClient(tracking_uri(cfg))
        self.experiment_id = prepare_from_config(cfg)
        self.parent_id: str | None = None
        self.child_ids: list[str] = []
        self.closed = False

    def __enter__(self) -> "JobTracker":
        c, tags = self.client, self.tags
        self.parent_id = c.create_run(self.experiment_id, tags=tags,
                                      run_name=f"{tags['family']}-{tags['dataset']}").info.run_id
        params = flatten(OmegaConf.to_container(self.cfg, resolve=True))
        self._log(self.parent_id, params=params)
        for m in self.members:
            run = c.create_run(self.experiment_id, run_name=m["name"], tags={
                **tags, "mlflow.parentRunId": self.parent_id, "member": str(m["member"])})
            self.child_ids.append(run.info.run_id)
            self._log(run.info.run_id, params={**params, "member.strength": str(m["strength"]),
                                               "member.seed": str(m["seed"]),
                                               "member.strength_name": m["strength_name"]})
        return self

    def _log(self, run_id: str, params: dict[str, str] | None = None,
             metrics: list[Metric] | None = None, tags: dict[str, str] | None = None) -> None:
        ps = [Param(k, v) for k, v in (params or {}).items()]
        for chunk in _chunks(ps, MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=chunk)
        for chunk in _chunks(metrics or [], MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=chunk)
        if tags:
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def log_epochs(self, rows: list[dict]) -> None:
        """Log per-epoch rows (dicts of ``(K, ...)`` tensors) to each member's run."""
        now = int(time.time() * 1000)
        for k, run_id in enumerate(self.child_ids):
            metrics = []
            for row in rows:
                if bool(row["stopped"][k]):  # early stopping ended this member's curve
                    continue
                step = int(row["epoch"][k])
                for key in EPOCH_METRICS:
                    metrics.append(Metric(key, float(row[key][k]), now, step))
                for key, name in LAYER_METRICS.items():
                    for layer, v in enumerate(row[key][k].tolist()):
                        if v == v:  # NaN marks "not defined for this layer"
                            metrics.append(Metric(f"{name}/layer_{layer}", float(v), now, step))
            self._log(run_id, metrics=metrics)

    def log_artifacts(self, run_id: str, local_dir: Path) -> None:
        self.client.log_artifacts(run_id, str(local_dir))

    def finish_member(self, k: int, summary: dict[str, Any], diverged: bool) -> None:
        self._log(self.child_ids[k], tags={"status": "diverged" if diverged else "ok"},
                  metrics=[Metric(f"final_{key}", float(v), int(time.time() * 1000), 0)
                           for key, v in summary.items()])
        self.client.set_terminated(self.child_ids[k], "FAILED" if diverged else "FINISHED")

    def __exit__(self, exc_type, exc, tb) -> None:
        status = "FINISHED" if exc_type is None else (
            "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")
        for run_id in [*self.child_ids, self.parent_id]:
            if run_id is not None and self.client.get_run(run_id).info.status == "RUNNING":
                self.client.set_terminated(run_id, status)


class MLflowEpochLogger(pl.Callback):
    """Lightning callback: buffers the module's per-epoch rows, writes every ``flush_every``."""

    def __init__(self, tracker: JobTracker, flush_every: int):
        self.tracker, self.flush_every, self.logged = tracker, flush_every, 0

    def _flush(self, pl_module) -> None:
        rows = pl_module.history[self.logged:]
        if rows:
            self.tracker.log_epochs(rows)
            self.logged += len(rows)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if len(pl_module.history) - self.logged >= self.flush_every:
            self._flush(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._flush(pl_module)
