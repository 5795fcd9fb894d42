"""The bulk writer writes what MLflow's own client writes: the same calls through
``DatabaseWriter`` and ``ClientWriter`` give runs that read back the same through
``MlflowClient`` (a real SQLite store), in far fewer transactions; and it is chosen only
for the MLflow versions it is tested with."""

from __future__ import annotations

import math

import mlflow
import numpy as np
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from regstudy.stages.train import compose_job
from regstudy.tracking.runs import JobTracker
from regstudy.tracking.store import prepare_store
from regstudy.tracking.writer import TESTED_MLFLOW, ClientWriter, DatabaseWriter, NewRun, RunData, writer_for

DATASET = {"name": "signal", "digest": "0123abcd", "source_type": "local", "source": '{"uri": "data/signal.npz"}',
           "schema": '{"mlflow_tensorspec": {}}', "profile": '{"train_rows": 30}'}


def write_study(writer, experiment_id: str) -> list[str]:
    """One job's life: a parent and two members, a flush of epochs, a later flush that
    overtakes the first (NaN and inf included), the end with a status each."""
    [(parent, _)] = writer.create_runs(experiment_id, [NewRun("l2-signal", {"family": "l2"}, {"optim.lr": "0.004"})])
    writer.log([RunData(parent)])
    kids = writer.create_runs(experiment_id, [
        NewRun(f"m{k}", {"family": "l2", "mlflow.parentRunId": parent, "member": str(k)},
               {"member.strength": str(0.1 * k), "member.seed": "0"}) for k in range(2)])
    ids = [r for r, _ in kids]
    writer.log_inputs([parent, *ids], DATASET, "training")
    writer.log([RunData(r, metrics=[Metric("val_loss", 1.0 + k, 1000, 1), Metric("val_loss", 0.5 + k, 1000, 3),
                                    Metric("val_loss", 0.5 + k, 1000, 3)])  # a repeat, dropped
                for k, r in enumerate(ids)])
    writer.log([RunData(ids[0], metrics=[Metric("val_loss", float("nan"), 1001, 6), Metric("final_gap", math.inf, 1001, 0)],
                        tags={"status": "ok"}, status="FINISHED"),
                RunData(ids[1], metrics=[Metric("val_loss", 0.25, 999, 2)],  # older step: not the latest
                        tags={"status": "diverged"}, status="FAILED")])
    writer.log([RunData(parent, tags={"mlflow.note.content": "first"})])
    writer.log([RunData(parent, tags={"mlflow.note.content": "**l2** on signal"}, status="FINISHED")])
    return [parent, *ids]


def snapshot(client: MlflowClient, run_id: str) -> dict:
    run = client.get_run(run_id)
    tags = {k: v for k, v in run.data.tags.items() if k != "mlflow.parentRunId"}
    history = [(m.step, m.timestamp, m.value if m.value == m.value else "nan")
               for m in client.get_metric_history(run_id, "val_loss")]
    return {"name": run.info.run_name, "status": run.info.status, "stage": run.info.lifecycle_stage,
            "user": run.info.user_id, "ended": run.info.end_time is not None,
            "artifacts": run.info.artifact_uri.endswith(f"{run_id}/artifacts"),
            "params": run.data.params, "tags": tags,
            "metrics": {k: (v if v == v else "nan") for k, v in run.data.metrics.items()},
            "history": sorted(history), "parented": "mlflow.parentRunId" in run.data.tags,
            "inputs": [(d.dataset.name, d.dataset.digest, d.dataset.profile, [(t.key, t.value) for t in d.tags])
                       for d in run.inputs.dataset_inputs]}


@pytest.fixture
def stores(tmp_path):
    out = {}
    for name in ("client", "database"):
        uri = f"sqlite:///{tmp_path / name}.db"
        out[name] = (MlflowClient(uri), prepare_store(uri, "regstudy", tmp_path / f"{name}-artifacts"))
    return out


def test_writer_for_a_database_store_is_the_bulk_one(stores, tmp_path):
    client, _ = stores["database"]
    uri = f"sqlite:///{tmp_path / 'database'}.db"
    assert isinstance(writer_for(client, uri), DatabaseWriter)
    assert isinstance(writer_for(MlflowClient("http://127.0.0.1:9"), "http://127.0.0.1:9"), ClientWriter)


def test_the_installed_mlflow_is_within_the_tested_range():
    """pyproject.toml pins the same range: an install outside it is a broken environment."""
    from packaging.specifiers import SpecifierSet

    assert mlflow.__version__ in SpecifierSet(",".join(TESTED_MLFLOW))


@pytest.mark.parametrize("version", ["3.18.0", "3.18.0rc1", "3.16.2", "3.17.0rc1", "4.0.0"])
def test_an_mlflow_outside_the_tested_range_writes_through_the_client(stores, tmp_path, capfd, version):
    client, _ = stores["database"]
    writer = writer_for(client, f"sqlite:///{tmp_path / 'database'}.db", mlflow_version=version)
    assert isinstance(writer, ClientWriter)
    said = capfd.readouterr().err.strip().splitlines()
    assert len(said) == 1 and f"MLflow {version}" in said[0] and ",".join(TESTED_MLFLOW) in said[0], said


def test_a_database_it_is_not_tested_on_writes_through_the_client(stores, tmp_path):
    """MySQL is a SqlAlchemyStore too, but not one the bulk writer is tested on (the rule
    reads the URI's scheme: the store itself here is SQLite)."""
    client, _ = stores["database"]
    assert isinstance(writer_for(client, "mysql+pymysql://u@host/db", mlflow_version=mlflow.__version__),
                      ClientWriter)


def test_both_writers_give_the_same_runs(stores):
    seen = {}
    for name, (client, experiment) in stores.items():
        writer = ClientWriter(client) if name == "client" else DatabaseWriter(client._tracking_client.store)
        seen[name] = [snapshot(client, r) for r in write_study(writer, experiment)]
    assert seen["database"] == seen["client"]
    parent, first, second = seen["database"]
    assert first["history"] == [(1, 1000, 1.0), (3, 1000, 0.5), (6, 1001, "nan")]
    assert first["metrics"] == {"val_loss": "nan", "final_gap": 1.7976931348623157e308}  # MLflow's rules
    assert second["metrics"] == {"val_loss": 1.5} and second["status"] == "FAILED"
    assert parent["tags"]["mlflow.note.content"] == "**l2** on signal" and parent["status"] == "FINISHED"
    assert first["inputs"] == [("signal", "0123abcd", '{"train_rows": 30}', [("mlflow.data.context", "training")])]


def test_bulk_runs_are_found_by_the_searches_the_ui_makes(stores):
    client, experiment = stores["database"]
    parent, first, second = write_study(DatabaseWriter(client._tracking_client.store), experiment)
    find = lambda query: {r.info.run_id for r in client.search_runs([experiment], query)}  # noqa: E731
    assert find("params.`member.strength` = '0.1'") == {second}
    assert find("metrics.val_loss > 1") == {second}
    assert find("tags.status = 'ok'") == {first}
    assert find(f"tags.mlflow.parentRunId = '{parent}'") == {first, second}
    assert find("dataset.name = 'signal' and dataset.digest = '0123abcd'") == {parent, first, second}
    assert find("attributes.status = 'FAILED'") == {second}


def test_a_second_job_on_the_same_data_links_the_same_dataset(stores):
    client, experiment = stores["database"]
    writer = DatabaseWriter(client._tracking_client.store)
    runs = [writer.create_runs(experiment, [NewRun(f"job{i}", {})])[0][0] for i in range(2)]
    for run_id in runs:
        writer.log_inputs([run_id], DATASET, "training")
    digests = {client.get_run(r).inputs.dataset_inputs[0].dataset.digest for r in runs}
    assert digests == {"0123abcd"}
    from mlflow.store.tracking.dbmodels.models import SqlDataset

    with client._tracking_client.store.ManagedSessionMaker() as session:
        assert session.query(SqlDataset).count() == 1  # one row, linked to both runs


def test_bad_values_are_refused_by_mlflows_own_checks_before_anything_is_written(stores):
    from mlflow.exceptions import MlflowException

    client, experiment = stores["database"]
    writer = DatabaseWriter(client._tracking_client.store)
    [(run_id, _)] = writer.create_runs(experiment, [NewRun("r", {})])
    with pytest.raises(MlflowException, match="Invalid value"):
        writer.log([RunData(run_id, metrics=[Metric("ok", 1.0, 1, 0)]),
                    RunData(run_id, metrics=[Metric("bad", "not a number", 1, 0)])])
    assert client.get_run(run_id).data.metrics == {}


def test_bulk_runs_written_to_postgresql_read_back_through_the_tracking_server(tracking_server):
    """The bulk writer on the shared server's PostgreSQL database (a job given
    logger.tracking_uri=postgresql+psycopg://...): the server serves the runs as written."""
    direct = MlflowClient(tracking_server.database_uri)
    writer = writer_for(direct, tracking_server.database_uri)
    assert isinstance(writer, DatabaseWriter)
    experiment = prepare_store(tracking_server.database_uri, "bulk-on-postgres", tracking_server.folder / "unused")
    ids = write_study(writer, experiment)
    served = MlflowClient(tracking_server.url)
    assert [snapshot(served, r) for r in ids] == [snapshot(direct, r) for r in ids]
    parent, first, second = (served.get_run(r) for r in ids)
    assert parent.info.status == "FINISHED" and second.info.status == "FAILED"
    assert [m.step for m in served.get_metric_history(first.info.run_id, "val_loss")] == [1, 3, 6]


# --- one small job through JobTracker, with each writer ---

K, EPOCHS, LAYERS = 4, 6, 2


def job_rows(cfg) -> list[dict]:
    """The rows a job's module keeps per epoch (``(K, ...)`` arrays): member 3 stopped
    early after epoch 4, and layer 1's effective_lr undefined (NaN) throughout."""
    gen = np.random.default_rng(0)
    rows = []
    for epoch in range(1, EPOCHS + 1):
        row = {"epoch": np.full(K, epoch), "stopped": np.array([False, False, False, epoch > 4])}
        row.update({key: gen.normal(size=K).astype(np.float32) for key in cfg.logger.epoch_metrics})
        row["layer_norm"] = gen.uniform(size=(K, LAYERS)).astype(np.float32)
        row["effective_lr"] = np.stack([gen.uniform(size=K), np.full(K, np.nan)], axis=1).astype(np.float32)
        rows.append(row)
    return rows


def track_job(root, use_client: bool, tmp_path) -> MlflowClient:
    """The runs of one job of K members, as its tracking process writes them: opened,
    two flushes of epochs, the finish with the last epochs, artifacts and final numbers."""
    from regstudy.job import member_grid

    cfg = compose_job([f"paths.root={root}", "experiment=l2", "members.strengths=[0.0,0.001]",
                       "members.seeds=[0,1]", f"trainer.max_epochs={EPOCHS}", "logger.max_points_per_curve=3",
                       "model.hidden=[8,8]"])
    members = member_grid(cfg)
    dataset = {"name": "signal", "digest": "0123abcd", "source_type": "local", "source": '{"uri": "x.npz"}'}
    tags = {"dataset": "signal", "family": "l2", "git_commit": "abc"}
    rows = job_rows(cfg)
    folder = tmp_path / f"artifacts-{use_client}"
    (folder / "parent").mkdir(parents=True)
    (folder / "parent" / "config.yaml").write_text("family: l2\n")
    (folder / "best").mkdir()
    (folder / "best" / "description.md").write_text("**l2** on signal")
    final = []
    for m in members:
        own = folder / f"member-{m['member']}"
        own.mkdir()
        (own / "members.csv").write_text(f"member\n{m['member']}\n")
        final.append({"artifacts": str(own), "summary": {"val_metric": 0.5 + m["member"], "test_metric": 0.25},
                      "diverged": m["member"] == 2, "results_digest": "d1g"})
    tracker = JobTracker(cfg, members, tags, dataset)
    if use_client:  # the writer a tracking server, or an untested MLflow, gets
        tracker.writer = ClientWriter(tracker.client)
    assert isinstance(tracker.writer, ClientWriter if use_client else DatabaseWriter)
    with tracker:
        tracker.log_epochs(rows[:2])
        tracker.log_epochs(rows[2:4])
        tracker.finish(final, str(folder / "parent"), rows[4:])
    return tracker.client


def store_contents(client: MlflowClient) -> dict:
    """Every run of the store's experiment by name: status, params (but the project's
    folder), tags (run ids named by their run's name), each metric's history as (step,
    value), the latest values, the dataset inputs."""
    [experiment] = [e for e in client.search_experiments() if e.name == "regstudy"]
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    names = {r.info.run_id: r.info.run_name for r in runs}
    out = {}
    for r in runs:
        tags = {k: names.get(v, v) for k, v in r.data.tags.items() if k != "regstudy.owner"}
        history = {key: [(m.step, m.value if m.value == m.value else "nan")
                         for m in sorted(client.get_metric_history(r.info.run_id, key), key=lambda m: m.step)]
                   for key in r.data.metrics}
        params = {k: v for k, v in r.data.params.items() if k != "paths.root"}  # each store's own project
        out[r.info.run_name] = {"status": r.info.status, "params": params, "tags": tags,
                                "history": history, "latest": r.data.metrics,
                                "inputs": [d.dataset.digest for d in r.inputs.dataset_inputs]}
    return out


def test_one_jobs_runs_through_either_writer_fill_the_same_store(tmp_path):
    stores = {}
    for use_client in (False, True):
        root = tmp_path / ("client" if use_client else "database")
        root.mkdir()
        stores[use_client] = store_contents(track_job(root, use_client, tmp_path))
    database, client = stores[False], stores[True]
    assert database == client
    assert len(database) == 1 + K
    member = database["l2-signal-lam=0.001-seed=1"]
    # logged epochs: the first and every 2nd (6 epochs, 3 points a curve); member 3 stopped after epoch 4
    assert [step for step, _ in member["history"]["val_loss"]] == [1, 2, 4]
    assert [step for step, _ in database["l2-signal-lam=0-seed=0"]["history"]["val_loss"]] == [1, 2, 4, 6]
    assert "effective_lr/layer_0" in member["history"] and "effective_lr/layer_1" not in member["history"]
    assert member["latest"]["final_val_metric"] == 3.5 and member["tags"]["results_digest"] == "d1g"
    assert database["l2-signal-lam=0.001-seed=0"]["status"] == "FAILED"  # diverged
    assert member["tags"]["mlflow.parentRunId"] == "l2-signal" and member["params"]["member.seed"] == "1"
    assert database["l2-signal"]["tags"]["mlflow.note.content"] == "**l2** on signal"
    assert {run["status"] for name, run in database.items() if name != "l2-signal-lam=0.001-seed=0"} == {"FINISHED"}
