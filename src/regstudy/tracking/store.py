"""The MLflow store and its experiment: created once, whoever comes first; and the Hydra
callback that checks a job, then creates them, in the launching process.

MLflow is imported only inside the functions: the callback is instantiated by every
``python -m regstudy.train``, which refuses bad input before MLflow, torch or Lightning.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ..paths import artifact_root, is_server, tracking_uri
from ..preflight import (BAD_INPUT, CopiedStoreError, StoreError, check_own_store, check_store, refuse,
                         store_lock)

EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")  # MLflow 3's "Machine learning" view


def prepare_store(uri: str, experiment_name: str, artifact_root: Path) -> str:
    """Create the store and the experiment if needed; return the experiment id.

    Jobs that start together may all call it: for a SQLite store they take turns, under a
    lock file beside the database (:func:`regstudy.preflight.store_lock`, a bounded wait),
    because parallel first writes to a fresh store race on its schema migration
    ("duplicate column name"). The experiment is marked a
    model-training experiment, so that MLflow's UI opens it on its runs table, not on its
    GenAI views.
    """
    from mlflow.tracking import MlflowClient

    from ..console import quiet

    quiet()  # MLflow announces each schema migration at INFO
    with store_lock(uri):
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment_name)
        if exp is None:
            # A server chooses where artifacts go (it serves them); a local store keeps them here.
            location = None if is_server(uri) else artifact_root.as_uri()
            try:
                return client.create_experiment(experiment_name, artifact_location=location,
                                                tags=dict([EXPERIMENT_KIND]))
            except Exception:  # created meanwhile by another process
                exp = client.get_experiment_by_name(experiment_name)
                if exp is None:
                    raise
        if exp.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:  # a store made before this
            client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
        return exp.experiment_id


def prepare_from_config(cfg: DictConfig) -> str | None:
    """:func:`prepare_store` of a job's config (None with logging off); a copied
    project's store is refused first (:func:`regstudy.preflight.check_own_store`)."""
    if not cfg.logger.enabled:
        return None
    check_own_store(cfg)
    return prepare_store(tracking_uri(cfg), cfg.logger.experiment_name, artifact_root(cfg))


def warm_up() -> None:
    """Pay once, in the warm server (:mod:`regstudy.warm`), what each job and its tracking
    process would pay on their first use of MLflow and pandas: SQLAlchemy's mapper set-up of
    MLflow's tables, the modules ``log_model`` imports lazily (the pyfunc flavour, its input
    check, GitPython for its source tags), pyarrow's parquet writer, and MLflow's map of
    installed packages (a scan of site-packages, for its requirements check)."""
    import git  # noqa: F401
    import mlflow.pyfunc  # noqa: F401
    import mlflow.pytorch  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import sqlalchemy.orm
    from mlflow.models import utils  # noqa: F401
    from mlflow.store.tracking.dbmodels import models  # noqa: F401

    from . import callback, process, runs, writer  # noqa: F401 - what a job imports

    sqlalchemy.orm.configure_mappers()
    try:
        from mlflow.utils.requirements_utils import _init_modules_to_packages_map
    except ImportError:  # a private helper: without it, each job pays the scan itself
        return
    _init_modules_to_packages_map()


class PrepareStoreCallback(Callback):
    """Hydra callback: create the MLflow store in the launching process, before any job
    (a single run's job was checked by :class:`regstudy.jobspec.CheckJob`, the callback
    before). Hydra turns an exception here into a warning and runs the job anyway, so a
    failure ends the process here (exit code 2 for bad input, 1 for a store that cannot
    take the runs), with Hydra's output folder not yet written."""

    composed = False  # whether Hydra composed the config: it exits 1 for a bad command line

    def __init__(self) -> None:
        PrepareStoreCallback.composed = True

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A single run: the job was checked by the callback before this one
        (:class:`regstudy.jobspec.CheckJob`); the store is created here."""
        self._prepare(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A sweep: each job checks its own config and data; the store is checked here
        (MLflow retries a store it cannot open for minutes)."""
        try:
            check_store(config)
        except (*BAD_INPUT, StoreError) as e:
            sys.exit(refuse(e))
        self._prepare(config)

    def _prepare(self, config: DictConfig) -> None:
        if not config.logger.enabled:
            return
        try:
            prepare_from_config(config)
        except (CopiedStoreError, StoreError) as e:
            sys.exit(refuse(e))
        except Exception as e:  # noqa: BLE001 - MLflow's own: one line, not a warning and a job
            sys.exit(refuse(StoreError(f"the MLflow store {tracking_uri(config)} could not be prepared: "
                                       f"{type(e).__name__}: {' '.join(str(e).split())}")))
