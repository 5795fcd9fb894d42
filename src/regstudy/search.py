"""A batched Optuna search that fits the stacked design: ``python -m regstudy.search``.

Optuna is asked for ``search.batch`` trials at once; their strengths (of
``members.sweep``) become the members of one stacked job (a member per trial and seed),
trained together; each trial is told the mean validation metric of its members over
the seeds (higher is better: accuracy or R²), or FAIL if one diverged. Then the next
batch. One job per batch instead of one per trial is what makes it fast (see
``benchmarks/search.py``).

- The Optuna study is stored beside the MLflow store, in a database of its own
  (``optuna.db`` beside ``mlflow.db``, or the shared server's ``optuna`` database via
  ``search.storage``), so a search can be continued and browsed beside its runs. Not in
  MLflow's database: Optuna and MLflow both keep their schema's revision in a table
  ``alembic_version``, so each would read the other's and refuse it.
- MLflow: a ``search-<family>-<dataset>`` run, with each batch's job run nested under it
  and each trial's member runs under that (tagged ``optuna.trial``); the search run gets
  ``best_value`` per batch and the best strength.
- Files: the hydra output folder holds ``trials.csv`` and each batch's ``results/``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Callable

import hydra
import pandas as pd
from omegaconf import DictConfig

from .config import register_configs, validate
from .paths import CONFIG_DIR, STUDIES_DB, storage_url  # noqa: F401 - where a study lives

register_configs()


def open_study(cfg: DictConfig):
    """The Optuna study (created, or continued if one of that name exists)."""
    import optuna

    from .extras import check_database_uri

    url = storage_url(cfg)
    check_database_uri(url, "search.storage")  # a PostgreSQL study needs psycopg (regstudy[server])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(url) if url else None
    name = cfg.search.study_name or f"{cfg.family}-{cfg.data.name}"
    sampler = optuna.samplers.TPESampler(seed=cfg.search.sampler_seed)
    return optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                               direction="maximize", load_if_exists=True)


def batch_config(cfg: DictConfig, strengths: list[float], results: Path, parent: str | None) -> DictConfig:
    """The stacked job of one batch: the trials' strengths as members."""
    job = cfg.copy()
    job.search = None
    job.members.strength = None
    job.members.strengths = strengths
    job.paths.results = str(results)
    job.logger.parent_run_id = parent
    return job


#: Trains one batch: ``(batch number, strengths, the search's MLflow run id or None)`` ->
#: (the job's members table, its member run ids). See :func:`run_search`.
BatchTrainer = Callable[[int, list[float], "str | None"], tuple[pd.DataFrame, list[str]]]


def train_in_process(cfg: DictConfig, out: Path) -> BatchTrainer:
    """Each batch trained here, as one stacked job (:func:`regstudy.job.run_job`), its
    results in ``out/batch_<b>/results``."""
    from .job import run_job

    def train(b: int, strengths: list[float], parent: str | None) -> tuple[pd.DataFrame, list[str]]:
        results = out / f"batch_{b}" / "results"
        return run_job(batch_config(cfg, strengths, results, parent)), member_run_ids(results)

    return train


def run_search(cfg: DictConfig, out: Path, train_batch: BatchTrainer | None = None) -> pd.DataFrame:
    """Run the search; return its trials (number, batch, strength, value, state, runs).

    ``train_batch`` trains each batch's strengths as one job (default
    :func:`train_in_process`; the Hydra sweeper ``hydra/sweeper=search`` launches it with
    Hydra's launcher instead); ``out`` takes ``trials.csv``."""
    from optuna.trial import TrialState

    from mlflow.tracking import MlflowClient

    from .lifecycle import owner
    from .preflight import tracking_uri
    from .tracking import OWNER_TAG, prepare_from_config

    study = open_study(cfg)  # a bad storage URI fails here, before any training
    train_batch = train_batch or train_in_process(cfg, out)
    s, key = cfg.search, cfg.members.sweep
    client = parent = None
    if cfg.logger.enabled:
        client = MlflowClient(tracking_uri(cfg))
        experiment = prepare_from_config(cfg)
        parent = client.create_run(experiment, run_name=f"search-{cfg.family}-{cfg.data.name}", tags={
            "family": cfg.family, "dataset": cfg.data.name, "sweep": key, "optuna.study": study.study_name,
            OWNER_TAG: owner()}).info.run_id
        client.log_batch(parent, params=[_param(f"search.{k}", v) for k, v in s.items()])
    rows: list[dict[str, Any]] = []
    status = "FAILED"
    try:
        for b in range(math.ceil(s.trials / s.batch)):
            trials = [study.ask() for _ in range(min(s.batch, s.trials - b * s.batch))]
            strengths = [t.suggest_float("strength", s.low, s.high, log=s.log) for t in trials]
            table, runs = train_batch(b, sorted(set(strengths)), parent)
            for t, strength in zip(trials, strengths):
                mine = table[table.strength == strength]
                diverged = bool((mine.status == "diverged").any())
                value = None if diverged else float(mine.val_metric.mean())
                if diverged:
                    study.tell(t, state=TrialState.FAIL)
                else:
                    study.tell(t, value)
                ids = [runs[i] for i in mine.member] if runs else []
                for run_id in ids:
                    client.set_tag(run_id, "optuna.trial", str(t.number))
                rows.append({"trial": t.number, "batch": b, "strength": strength, "value": value,
                             "state": "FAIL" if diverged else "COMPLETE", "run_ids": " ".join(ids)})
            best = _best(study)
            print(f"search {study.study_name}: batch {b + 1}: {len(trials)} trials, best "
                  f"{key} strength {best[0]:.4g} (val {best[1]:.4g})" if best else
                  f"search {study.study_name}: batch {b + 1}: every trial failed", flush=True)
            if client and best:
                client.log_metric(parent, "best_value", best[1], step=b)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        trials_table = pd.DataFrame(rows)
        out.mkdir(parents=True, exist_ok=True)
        trials_table.to_csv(out / "trials.csv", index=False)
        if client:
            best = _best(study)
            if best:
                client.log_batch(parent, params=[_param("best_strength", best[0])])
                client.log_metric(parent, "best_value", best[1], step=math.ceil(s.trials / s.batch))
            client.log_artifact(parent, str(out / "trials.csv"))
            client.set_terminated(parent, status)
    return trials_table


def _best(study) -> tuple[float, float] | None:
    try:
        return study.best_params["strength"], study.best_value
    except ValueError:  # no completed trial
        return None


def _param(key: str, value: Any):
    from mlflow.entities import Param

    return Param(key, str(value))


def member_run_ids(results: Path) -> list[str]:
    """The MLflow run ids of a job's members, in member order, from its ``run.json`` (none
    when logging was off)."""
    import json

    path = results / "run.json"
    return json.loads(path.read_text())["member_run_ids"] if path.exists() else []


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="search")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from .preflight import BAD_INPUT

    try:
        validate(cfg)
        trials = run_search(cfg, Path(HydraConfig.get().runtime.output_dir))
    except BAD_INPUT as e:  # a bad value or data file: one line naming it
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    done = trials[trials.state == "COMPLETE"]
    return float(done.value.max()) if len(done) else float("-inf")


if __name__ == "__main__":
    main()
