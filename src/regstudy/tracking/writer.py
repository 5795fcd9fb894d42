"""How a job's MLflow runs reach the store: run by run through the client, or in bulk.

A train job opens a parent and dozens of member runs, and ends them all at once. Through
``MlflowClient`` each run costs about five transactions (create, dataset input, a batch
of params and metrics, end), 15-20 ms of CPU each: a third of a study's time was there.
MLflow has no call that writes many runs at once, so for a store that is a database
(``sqlite:///...``, ``postgresql://...``) :class:`DatabaseWriter` writes the rows MLflow's
own store writes (its tables, its column rules) for all the runs of one call in one
transaction. It relies on MLflow's private parts (the store's tables and sessions, its
validation helpers), so it is used only with the MLflow versions it is tested with
(:data:`TESTED_MLFLOW`). A tracking server (``http://...``) keeps its database to
itself: there, and with any other MLflow, :class:`ClientWriter` makes MLflow's per-run
calls. :func:`writer_for` picks one; both take the same calls, and the runs read back
the same through ``MlflowClient``.
"""

from __future__ import annotations

import math
import sys
import time
import uuid
from dataclasses import dataclass, field

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from packaging.specifiers import SpecifierSet
from packaging.version import Version

# The MLflow versions whose tables, sessions and validation DatabaseWriter is tested
# against (tests/integration/test_run_writer.py); pyproject.toml pins the same range.
TESTED_MLFLOW = (">=3.17", "<3.18")
DATABASE_SCHEMES = ("sqlite", "postgresql")  # the databases it is tested on (+driver allowed)

MAX_PARAMS_PER_BATCH = 100  # MLflow's limits per log_batch call
MAX_METRICS_PER_BATCH = 1000
QUERY_CHUNK = 500  # ids per IN (...) clause


@dataclass
class NewRun:
    """A run to create: its name, tags and params (written when the run is created, or
    with its first batch, whichever the writer does in fewer transactions)."""

    name: str
    tags: dict[str, str]
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class RunData:
    """What to write to one run: metrics, params, tags, and ``status`` to end it with
    (``FINISHED``, ``FAILED``, ``KILLED``), or None to leave it running."""

    run_id: str
    metrics: list[Metric] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    status: str | None = None


def _now_ms() -> int:
    return int(time.time() * 1000)


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


class ClientWriter:
    """Run by run through ``MlflowClient`` (any store, a tracking server included). A new
    run's params wait for its first batch: one ``log_batch`` less per run."""

    def __init__(self, client: MlflowClient):
        self.client = client
        self._pending: dict[str, dict[str, str]] = {}

    def create_runs(self, experiment_id: str, runs: list[NewRun]) -> list[tuple[str, str]]:
        """Create ``runs`` (RUNNING); return each one's ``(run_id, artifact_uri)``."""
        created = []
        for run in runs:
            info = self.client.create_run(experiment_id, run_name=run.name, tags=run.tags).info
            self._pending[info.run_id] = dict(run.params)
            created.append((info.run_id, info.artifact_uri))
        return created

    def batches(self, e: RunData) -> list[dict]:
        """The ``log_batch`` keyword arguments of an entry (its run's params still to
        write first): as few calls as MLflow's limits allow."""
        params = {**self._pending.pop(e.run_id, {}), **e.params}
        ps = list(_chunks([Param(k, v) for k, v in params.items()], MAX_PARAMS_PER_BATCH))
        ts = list(_chunks([RunTag(k, v) for k, v in e.tags.items()], MAX_PARAMS_PER_BATCH))
        ms = list(_chunks(e.metrics, MAX_METRICS_PER_BATCH - 2 * MAX_PARAMS_PER_BATCH))
        return [dict(params=ps[i] if i < len(ps) else [], metrics=ms[i] if i < len(ms) else [],
                     tags=ts[i] if i < len(ts) else []) for i in range(max(len(ps), len(ts), len(ms)))]

    def log(self, entries: list[RunData]) -> None:
        """Each entry's metrics, params and tags in as few ``log_batch`` calls as MLflow's
        limits allow, then its end if it has a status."""
        for e in entries:
            for batch in self.batches(e):
                self.client.log_batch(e.run_id, **batch)
            if e.status is not None:
                self.client.set_terminated(e.run_id, e.status)

    def log_inputs(self, run_ids: list[str], dataset: dict[str, str], context: str) -> None:
        """The same dataset as an input of every run, tagged ``mlflow.data.context``."""
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.exceptions import MlflowException

        inputs = [DatasetInput(Dataset(**dataset), [InputTag("mlflow.data.context", context)])]
        for i, run_id in enumerate(run_ids):
            try:
                self.client.log_inputs(run_id, datasets=inputs)
            except MlflowException:
                # The first run inserts the experiment's dataset row unless it exists. Two jobs
                # on the same data racing there make one fail a unique constraint (seen on a
                # server, 4 jobs at once); once the row exists, the retry only links it.
                if i > 0:
                    raise
                time.sleep(0.2)
                self.client.log_inputs(run_id, datasets=inputs)


class DatabaseWriter:
    """All the runs of one call in one transaction, straight into the store's database.

    The rows are those ``SqlAlchemyStore`` writes for ``create_run``, ``log_batch``,
    ``log_inputs`` and ``set_terminated``, in its own tables (``mlflow.store.tracking.
    dbmodels``) and through its own sessions; values are checked by MLflow's own
    validation first. Unlike the store, it does not re-read each run to check that it is
    still active: the runs are the job's own.
    """

    def __init__(self, store):
        from mlflow.store.tracking.dbmodels import models

        self.store, self.m = store, models
        self._artifact_roots: dict[str, str] = {}

    def _session(self):
        return self.store.ManagedSessionMaker(read_only=False)

    def _artifact_root(self, session, experiment_id: str) -> str:
        if experiment_id not in self._artifact_roots:
            from sqlalchemy import select

            t = self.m.SqlExperiment.__table__
            location = session.execute(select(t.c.artifact_location).where(
                t.c.experiment_id == int(experiment_id))).scalar_one()
            self._artifact_roots[experiment_id] = location
        return self._artifact_roots[experiment_id]

    def create_runs(self, experiment_id: str, runs: list[NewRun]) -> list[tuple[str, str]]:
        """Create ``runs`` (RUNNING) with their tags and params; return each one's
        ``(run_id, artifact_uri)``."""
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_USER
        from mlflow.utils.uri import append_to_uri_path
        from mlflow.utils.validation import _validate_batch_log_data, _validate_param_keys_unique

        now, rows, tags, params, created = _now_ms(), [], [], [], []
        with self._session() as session:
            root = self._artifact_root(session, experiment_id)
            for run in runs:
                run_id = uuid.uuid4().hex
                uri = append_to_uri_path(root, run_id, "artifacts")
                run_tags = {**run.tags, MLFLOW_RUN_NAME: run.name}
                _, ps, ts = _validate_batch_log_data([], [Param(k, v) for k, v in run.params.items()],
                                                     [RunTag(k, v) for k, v in run_tags.items()])
                _validate_param_keys_unique(ps)
                rows.append(dict(run_uuid=run_id, name=run.name, artifact_uri=uri, experiment_id=int(experiment_id),
                                 source_type="UNKNOWN", source_name="", entry_point_name="",
                                 user_id=run.tags.get(MLFLOW_USER, "unknown"), status="RUNNING", start_time=now,
                                 end_time=None, deleted_time=None, source_version="", lifecycle_stage="active"))
                tags += [dict(run_uuid=run_id, key=t.key, value=t.value) for t in ts]
                params += [dict(run_uuid=run_id, key=p.key, value=p.value) for p in ps]
                created.append((run_id, uri))
            self._insert(session, self.m.SqlRun, rows)
            self._insert(session, self.m.SqlTag, tags)
            self._insert(session, self.m.SqlParam, params)
        return created

    def log(self, entries: list[RunData]) -> None:
        """Every entry's metrics, params and tags, and the ends, in one transaction."""
        from mlflow.utils.validation import _validate_batch_log_data

        metrics, params, tags, ends, seen = [], [], [], [], set()
        for e in entries:
            ms, ps, ts = _validate_batch_log_data(e.metrics, [Param(k, v) for k, v in e.params.items()],
                                                  [RunTag(k, v) for k, v in e.tags.items()])
            for m in ms:
                is_nan, value = _sanitized(m.value)
                row = dict(run_uuid=e.run_id, key=m.key, value=value, timestamp=m.timestamp,
                           step=m.step, is_nan=is_nan)
                identity = tuple(row.values())
                if identity not in seen:  # MLflow drops repeats of a metric within a batch
                    seen.add(identity)
                    metrics.append(row)
            params += [dict(run_uuid=e.run_id, key=p.key, value=p.value) for p in ps]
            tags += [dict(run_uuid=e.run_id, key=t.key, value=t.value) for t in ts]
            if e.status is not None:
                ends.append(dict(id=e.run_id, status=e.status))
        if not (metrics or params or tags or ends):
            return
        with self._session() as session:
            self._insert(session, self.m.SqlMetric, metrics)
            self._update_latest(session, metrics)
            self._insert(session, self.m.SqlParam, params)
            self._set_tags(session, tags)
            self._end(session, ends)

    def log_inputs(self, run_ids: list[str], dataset: dict[str, str], context: str) -> None:
        """The same dataset as an input of every run (one dataset row per experiment, name
        and digest, as MLflow keeps it), tagged ``mlflow.data.context``."""
        from mlflow.exceptions import MlflowException
        from sqlalchemy import select

        d, i, it = (self.m.SqlDataset.__table__, self.m.SqlInput.__table__, self.m.SqlInputTag.__table__)
        runs = self.m.SqlRun.__table__
        for attempt in (0, 1):
            try:
                with self._session() as session:
                    experiment = session.execute(select(runs.c.experiment_id).where(
                        runs.c.run_uuid == run_ids[0])).scalar_one()
                    found = session.execute(select(d.c.dataset_uuid).where(
                        d.c.experiment_id == experiment, d.c.name == dataset["name"],
                        d.c.digest == dataset["digest"])).scalar()
                    if found is None:
                        found = uuid.uuid4().hex
                        session.execute(d.insert(), [dict(
                            dataset_uuid=found, experiment_id=experiment, name=dataset["name"],
                            digest=dataset["digest"], dataset_source_type=dataset["source_type"],
                            dataset_source=dataset["source"], dataset_schema=dataset.get("schema"),
                            dataset_profile=dataset.get("profile"))])
                    inputs = [dict(input_uuid=uuid.uuid4().hex, source_type="DATASET", source_id=found,
                                   destination_type="RUN", destination_id=run_id) for run_id in run_ids]
                    session.execute(i.insert(), inputs)
                    session.execute(it.insert(), [dict(input_uuid=row["input_uuid"], name="mlflow.data.context",
                                                       value=context) for row in inputs])
                return
            except MlflowException:
                # Two jobs on the same data may both insert its dataset row (its key is the
                # experiment, name and digest); the loser links the winner's on the retry.
                if attempt:
                    raise
                time.sleep(0.2)

    # --- the rows ---

    @staticmethod
    def _insert(session, model, rows: list[dict]) -> None:
        if rows:
            session.execute(model.__table__.insert(), rows)

    def _update_latest(self, session, metrics: list[dict]) -> None:
        """``latest_metrics``: per run and key, the point with the largest (step, timestamp,
        value), as MLflow keeps it for the runs table."""
        from sqlalchemy import bindparam, select

        newest: dict[tuple[str, str], dict] = {}
        for row in metrics:
            key = (row["run_uuid"], row["key"])
            old = newest.get(key)
            if old is None or _order(row) > _order(old):
                newest[key] = row
        if not newest:
            return
        t = self.m.SqlLatestMetric.__table__
        stored: dict[tuple[str, str], dict] = {}
        run_ids = sorted({r for r, _ in newest})
        for chunk in _chunks(run_ids, QUERY_CHUNK):
            for r in session.execute(select(t).where(t.c.run_uuid.in_(chunk))).mappings():
                stored[(r["run_uuid"], r["key"])] = dict(r)
        inserts = [row for key, row in newest.items() if key not in stored]
        updates = [{**row, "b_run": row["run_uuid"], "b_key": row["key"]} for key, row in newest.items()
                   if key in stored and _order(row) > _order(stored[key])]
        self._insert(session, self.m.SqlLatestMetric, inserts)
        if updates:
            session.execute(t.update().where(t.c.run_uuid == bindparam("b_run"), t.c.key == bindparam("b_key"))
                            .values(value=bindparam("value"), timestamp=bindparam("timestamp"),
                                    step=bindparam("step"), is_nan=bindparam("is_nan")),
                            [{k: u[k] for k in ("b_run", "b_key", "value", "timestamp", "step", "is_nan")}
                             for u in updates])

    def _set_tags(self, session, tags: list[dict]) -> None:
        """Tags replace a tag of the same key (the last one given wins)."""
        from sqlalchemy import bindparam

        if not tags:
            return
        last = {(t["run_uuid"], t["key"]): t for t in tags}
        table = self.m.SqlTag.__table__
        session.execute(table.delete().where(table.c.run_uuid == bindparam("r"), table.c.key == bindparam("k")),
                        [dict(r=r, k=k) for r, k in last])
        self._insert(session, self.m.SqlTag, list(last.values()))

    def _end(self, session, ends: list[dict]) -> None:
        from sqlalchemy import bindparam

        if ends:
            t = self.m.SqlRun.__table__
            session.execute(t.update().where(t.c.run_uuid == bindparam("id"))
                            .values(status=bindparam("status"), end_time=_now_ms()), ends)


def _sanitized(value: float) -> tuple[bool, float]:
    """MLflow's rule: NaN is stored as 0 with is_nan, +-inf as the largest finite double."""
    if math.isnan(value):
        return True, 0.0
    if math.isinf(value):
        return False, math.copysign(1.7976931348623157e308, value)
    return False, value


def _order(row: dict) -> tuple:
    return row["step"], row["timestamp"], row["value"]


def database_writer_applies(uri: str, mlflow_version: str) -> str | None:
    """Why :class:`DatabaseWriter` does not apply to the store at ``uri`` under MLflow
    ``mlflow_version``, or None when it does: a SQLite or PostgreSQL database, and a
    version within :data:`TESTED_MLFLOW`."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0]
    if scheme not in DATABASE_SCHEMES:
        return f"the store {uri.split('://', 1)[0]}:// is not a database it writes"
    if Version(mlflow_version) not in SpecifierSet(",".join(TESTED_MLFLOW)):
        return (f"MLflow {mlflow_version} is outside the versions its direct SQL writer is tested with "
                f"({','.join(TESTED_MLFLOW)})")
    return None


def writer_for(client: MlflowClient, uri: str, mlflow_version: str | None = None) -> ClientWriter | DatabaseWriter:
    """:class:`DatabaseWriter` for a SQLite or PostgreSQL store under a tested MLflow
    (``mlflow_version``, default the installed one), else :class:`ClientWriter`; a
    database store written through the client says why, in one line on stderr."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    if mlflow_version is None:
        import mlflow

        mlflow_version = mlflow.__version__
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if not isinstance(store, SqlAlchemyStore):
        return ClientWriter(client)
    why = database_writer_applies(uri, mlflow_version)
    if why is not None:
        print(f"regstudy tracking: {why}: writing runs through MlflowClient, run by run", file=sys.stderr,
              flush=True)
        return ClientWriter(client)
    return DatabaseWriter(store)
