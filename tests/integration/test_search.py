"""Search, not only grids: the batched stacked search (`python -m regstudy.search`) with
its study beside the MLflow store, and the same search as a Hydra sweeper of ours
(`hydra/sweeper=search`, any launcher)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import need_extra
from regstudy.job import run_job
from regstudy.stages.train import compose_job

SMALL = ["model.hidden=[8]", "trainer.max_epochs=5", "logger.log_figures=false"]


def python(workdir: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "REGSTUDY_CONF"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=workdir, env=env,
                          capture_output=True, text=True)


def study_of(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def batched(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return python(workdir, "regstudy.search", "experiment=l2", "search.trials=6", "search.batch=3", *SMALL, *args)


def test_batched_search_trains_each_batch_as_one_job_and_stores_the_study_beside_mlflow(workdir):
    proc = batched(workdir)
    assert proc.returncode == 0, proc.stderr
    out = next(workdir.glob("outputs/search/l2/signal/*"))
    trials = pd.read_csv(out / "trials.csv")
    assert trials.trial.tolist() == list(range(6)) and trials.batch.tolist() == [0, 0, 0, 1, 1, 1]
    # Each trial's value is its member's validation metric, in its batch's stacked job.
    for b in (0, 1):
        members = pd.read_csv(out / f"batch_{b}" / "results" / "members.csv")
        assert len(members) == 3
        mine = trials[trials.batch == b]
        for _, t in mine.iterrows():
            row = members[(members.strength - t.strength).abs() <= 1e-6 * t.strength]  # the CSV keeps 8 digits
            assert len(row) == 1
            assert t.value == pytest.approx(row.val_metric.mean(), rel=1e-6)
    # The Optuna study lives beside the MLflow store, in a database of its own.
    study = study_of(f"sqlite:///{workdir / 'optuna.db'}", "l2-signal")
    assert [t.value for t in study.trials] == pytest.approx(trials.value.tolist(), rel=1e-6)
    assert study.best_value == pytest.approx(trials.value.max(), rel=1e-6)
    # MLflow: the search run, a nested run per batch, a child run per trial.
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("regstudy").experiment_id], max_results=100)
    search = [r for r in runs if r.info.run_name == "search-l2-signal"]
    assert len(search) == 1 and search[0].info.status == "FINISHED"
    assert float(search[0].data.params["best_strength"]) == pytest.approx(study.best_params["strength"])
    batches = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == search[0].info.run_id]
    trial_runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in {b.info.run_id for b in batches}]
    assert len(batches) == 2
    assert sorted(int(r.data.tags["optuna.trial"]) for r in trial_runs) == list(range(6))
    for r in trial_runs:
        t = trials[trials.trial == int(r.data.tags["optuna.trial"])].iloc[0]
        assert r.data.metrics["final_val_metric"] == pytest.approx(t.value, rel=1e-6)


def test_the_same_search_proposes_and_measures_the_same_and_a_batch_changes_no_number(workdir):
    """Same seed, same trials; and a trial trained in a batch scores what it scores alone."""
    assert batched(workdir, "search.study_name=a", "logger.enabled=false", "hydra.run.dir=a").returncode == 0
    assert batched(workdir, "search.study_name=b", "logger.enabled=false", "hydra.run.dir=b").returncode == 0
    a, b = pd.read_csv(workdir / "a" / "trials.csv"), pd.read_csv(workdir / "b" / "trials.csv")
    pd.testing.assert_frame_equal(a, b)
    t = a.iloc[4]  # a trial of the second batch, which TPE proposed from the first
    alone = run_job(compose_job([f"paths.root={workdir}", "paths.results=alone", "experiment=l2",
                                 f"members.strength={float(t.strength)!r}", "logger.enabled=false", *SMALL]))
    assert float(alone.val_metric.iloc[0]) == pytest.approx(t.value, abs=1e-5)


def swept(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return python(workdir, "regstudy.train", "-m", "hydra/sweeper=search", "experiment=l2", "hydra.sweeper.trials=6",
                  "hydra.sweeper.batch=3", *SMALL, *args)


@pytest.mark.slow  # 11 s: the sweeper's search and the batched one
def test_the_search_sweeper_launches_each_batch_as_one_job_and_searches_as_the_batched_search(workdir):
    """`hydra/sweeper=search`: each batch one job of the sweep (a member per trial and seed);
    the same trials, strengths and values as `python -m regstudy.search` (the values to
    members.csv's 8 digits, which the sweeper reads)."""
    proc = swept(workdir, "logger.enabled=false", "members.seeds=[0,1]")
    assert proc.returncode == 0, proc.stderr
    sweep = next(workdir.glob("multirun/*"))
    trials = pd.read_csv(sweep / "trials.csv")
    assert trials.trial.tolist() == list(range(6)) and trials.batch.tolist() == [0, 0, 0, 1, 1, 1]
    for b in (0, 1):
        job = sweep / f"{b}_l2_signal"
        cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        mine = trials[trials.batch == b]
        assert cfg["members"]["strengths"] == sorted(mine.strength) and cfg["members"]["strength"] is None
        assert all(1e-5 <= s <= 1.0 for s in mine.strength)
        members = pd.read_csv(job / "results" / "members.csv")
        assert len(members) == 3 * 2
        for t in mine.itertuples():
            seeds = members[(members.strength - t.strength).abs() <= 1e-6 * t.strength]
            assert len(seeds) == 2 and t.value == pytest.approx(seeds.val_metric.mean(), rel=1e-7)
    best = trials.loc[trials.value.idxmax()]
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert result["best_value"] == pytest.approx(best.value, rel=1e-12)
    assert result["best_params"] == {"members.strength": pytest.approx(best.strength, rel=1e-12)}
    assert batched(workdir, "logger.enabled=false", "members.seeds=[0,1]", "hydra.run.dir=cli").returncode == 0
    cli = pd.read_csv(workdir / "cli" / "trials.csv")
    assert trials.strength.tolist() == cli.strength.tolist()  # the same proposals, to the bit
    assert trials.value.tolist() == pytest.approx(cli.value.tolist(), rel=1e-7)


@pytest.mark.slow  # 10 s: a sweep logged to MLflow
def test_the_search_sweeper_nests_each_batch_job_under_the_search_run(workdir):
    """MLflow: the search's run, a nested run per batch job, a child per trial and seed,
    tagged with its trial; the study beside the store."""
    proc = swept(workdir, "hydra.sweeper.trials=4", "hydra.sweeper.batch=2", "members.seeds=[0]")
    assert proc.returncode == 0, proc.stderr
    trials = pd.read_csv(next(workdir.glob("multirun/*/trials.csv")))
    study = study_of(f"sqlite:///{workdir / 'optuna.db'}", "l2-signal")
    assert [t.value for t in study.trials] == pytest.approx(trials.value.tolist(), rel=1e-12)
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("regstudy").experiment_id], max_results=100)
    [search] = [r for r in runs if r.info.run_name == "search-l2-signal"]
    assert search.info.status == "FINISHED"
    assert float(search.data.params["best_strength"]) == pytest.approx(study.best_params["strength"], rel=1e-12)
    batches = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == search.info.run_id]
    members = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in {b.info.run_id for b in batches}]
    assert len(batches) == 2 and len(runs) == 1 + 2 + 4
    assert sorted(int(r.data.tags["optuna.trial"]) for r in members) == [0, 1, 2, 3]


SLOW = pytest.mark.slow  # 5 s each: two cases in the default tier, the rest in the slow one


@pytest.mark.parametrize("override, key", [("hydra.sweeper.batch=0", "hydra.sweeper.batch"),
                                           pytest.param("hydra.sweeper.low=0", "hydra.sweeper.low", marks=SLOW),
                                           ("experiment=none", "members.sweep"),
                                           pytest.param("members.seeds=[0],[1]", "members.seeds", marks=SLOW),
                                           pytest.param("members.strengths=[0.1]", "members.strengths", marks=SLOW)])
def test_bad_sweeper_input_is_refused_before_any_job(workdir, override, key):
    proc = swept(workdir, override)
    assert proc.returncode == 2, proc.stderr
    assert f"invalid config: {key}=" in proc.stderr
    assert not list(workdir.glob("multirun/*/*"))  # no job, no trials.csv


@pytest.mark.parametrize("override, key", [("search.batch=0", "search.batch"), ("search.low=0", "search.low"),
                                           ("experiment=none", "members.sweep"),
                                           ("logger.tracking_uri=http://127.0.0.1:9", "search.storage"),
                                           ("search.storage=sqlite:///mlflow.db", "search.storage")])
def test_bad_search_input_is_refused_before_anything_is_written(workdir, override, key):
    proc = batched(workdir, override)
    assert proc.returncode == 2
    assert f"invalid config: {key}=" in proc.stderr
    assert not (workdir / "outputs").exists() and not (workdir / "mlflow.db").exists()


@pytest.mark.slow  # 23 s: the shared server, PostgreSQL
def test_a_search_on_the_shared_server_keeps_its_study_in_postgresql(workdir, tracking_server):
    proc = batched(workdir, f"logger.tracking_uri={tracking_server.url}", "logger.experiment_name=search",
                   f"search.storage={tracking_server.studies_uri}", "search.study_name=pg")
    assert proc.returncode == 0, proc.stderr
    study = study_of(tracking_server.studies_uri, "pg")
    assert len(study.trials) == 6
    psycopg = need_extra("server")
    with psycopg.connect(host="127.0.0.1", port=tracking_server.pg_port, user="regstudy", dbname="optuna") as conn:
        (count,) = conn.execute("SELECT count(*) FROM trials t JOIN studies s ON s.study_id = t.study_id "
                                "WHERE s.study_name = 'pg'").fetchone()
    assert count == 6
    client = MlflowClient(tracking_server.url)
    runs = client.search_runs([client.get_experiment_by_name("search").experiment_id], max_results=100)
    assert len(runs) == 1 + 2 + 6 and all(r.info.status == "FINISHED" for r in runs)
