"""The bulk writer writes what MLflow's own client writes: the same calls through
``DatabaseWriter`` and ``ClientWriter`` give runs that read back the same through
``MlflowClient`` (a real SQLite store), in far fewer transactions."""

from __future__ import annotations

import math

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from regstudy.run_writer import ClientWriter, DatabaseWriter, NewRun, RunData, writer_for
from regstudy.tracking import prepare_store

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
    assert isinstance(writer_for(client), DatabaseWriter)
    assert isinstance(writer_for(MlflowClient("http://127.0.0.1:9")), ClientWriter)


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
    writer = writer_for(direct)
    assert isinstance(writer, DatabaseWriter)
    experiment = prepare_store(tracking_server.database_uri, "bulk-on-postgres", tracking_server.folder / "unused")
    ids = write_study(writer, experiment)
    served = MlflowClient(tracking_server.url)
    assert [snapshot(served, r) for r in ids] == [snapshot(direct, r) for r in ids]
    parent, first, second = (served.get_run(r) for r in ids)
    assert parent.info.status == "FINISHED" and second.info.status == "FAILED"
    assert [m.step for m in served.get_metric_history(first.info.run_id, "val_loss")] == [1, 3, 6]
