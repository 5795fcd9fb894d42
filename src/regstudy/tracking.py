"""MLflow tracking: a parent run per train job, a child run per member.

All MLflow work of a job happens in a tracking process forked at the start of the job,
so that writing to the store (tens of thousands of per-epoch metrics) runs on the
second core while the job trains on the first. The job sends it one message per
epoch and one at the end; the tracking process batches the writes.

Only ``MlflowClient`` is used (never the fluent API), so no active run or global
tracking state survives a job in a reused worker process. Every run a job opens is
terminated, whatever happens: FINISHED, FAILED (a diverged member or a failed job) or
KILLED (the job was interrupted or died).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from .console import quiet
from .lifecycle import interrupt_on_signals, owner, owner_alive
from .preflight import is_server, project_root, store_lock, tracking_uri
from .results import RESULTS_DIGEST_TAG
from .run_writer import NewRun, RunData, writer_for

OWNER_TAG = "regstudy.owner"  # host:pid:start of the process that ends the run
# The key of each per-layer curve in an epoch's row.
LAYER_ROW_KEY = {"weight_norm": "layer_norm", "effective_lr": "effective_lr"}


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
    if not cfg.logger.enabled:
        return None
    return prepare_store(tracking_uri(cfg), cfg.logger.experiment_name,
                         project_root(cfg) / "mlartifacts")


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

    sqlalchemy.orm.configure_mappers()
    try:
        from mlflow.utils.requirements_utils import _init_modules_to_packages_map
    except ImportError:  # a private helper: without it, each job pays the scan itself
        return
    _init_modules_to_packages_map()


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


# The params of a member's run: what tells members apart and what a reader filters by.
# Its parent run has the whole config (and every run has config.yaml as an artifact):
# each param is a row of the store, and copying all of them to every member doubled
# the cost of opening its runs.
MEMBER_PARAMS = ("family", "data.name", "data.task", "data.batch_size", "model.hidden",
                 "model.activation", "model.norm", "optim._target_", "optim.lr",
                 "trainer.max_epochs", "regularizer.")


def member_params(params: dict[str, str]) -> dict[str, str]:
    """The config params a member's run repeats: :data:`MEMBER_PARAMS` (a key, or a
    prefix ending in ``.``), leaving out regularizers that are off."""
    return {k: v for k, v in params.items()
            if any(k == p or (p.endswith(".") and k.startswith(p)) for p in MEMBER_PARAMS)
            and not (k.startswith("regularizer.") and v == "None")}


class JobInterrupted(Exception):
    """The job stopped before it finished (its runs end KILLED)."""


class JobFailed(Exception):
    """The job raised (its runs end FAILED)."""


class TrackingFailed(RuntimeError):
    """MLflow could not take the job's runs (a store or server gone): the message says why."""


def logged_every(cfg: DictConfig) -> int:
    """Every n-th epoch (and the first) goes to MLflow: at most ``max_points_per_curve``
    points per curve (results/ keeps every epoch)."""
    return max(1, math.ceil(cfg.trainer.max_epochs / cfg.logger.max_points_per_curve))


def is_logged(epoch: int, every: int) -> bool:
    return epoch == 1 or epoch % every == 0


class JobTracker:
    """The MLflow runs of one train job, written synchronously. Use as a context manager.

    Every write goes through a :mod:`regstudy.run_writer`: all the member runs of one
    step (opening them, a flush of epochs, the finish) in one call, so that a store that
    is a database takes them in one transaction.
    """

    def __init__(self, cfg: DictConfig, members: list[dict[str, Any]], tags: dict[str, str],
                 dataset: dict[str, str] | None = None):
        self.cfg, self.members, self.tags, self.dataset = cfg, members, tags, dataset
        self.experiment_id = prepare_from_config(cfg)  # first: it may create the store
        # Resolved once: each resolution of the config's interpolations costs about 1 ms.
        self.uri = tracking_uri(cfg)
        self.client = MlflowClient(self.uri)
        self.writer = writer_for(self.client)
        self.artifact_uris: dict[str, str] = {}  # run id -> its artifact root, from create_run
        self.parent_id: str | None = None
        self.child_ids: list[str] = []
        self.every = logged_every(cfg)
        self.epoch_metrics = list(cfg.logger.epoch_metrics)
        self.layer_metrics = list(cfg.logger.layer_metrics)
        self.terminated: set[str] = set()

    def close_stale_runs(self) -> list[str]:
        """End ``KILLED`` the experiment's ``RUNNING`` runs whose owner process is dead
        (killed outright, so it could not end them); returns their ids."""
        candidates = [r.info.run_id for r in self.client.search_runs(
            [self.experiment_id], "attributes.status = 'RUNNING'", max_results=50000)
            if OWNER_TAG in r.data.tags and not owner_alive(r.data.tags[OWNER_TAG])]
        # The search is a moment old: the owner may have ended the run and exited since.
        # Its death is final, so a run still RUNNING now stays so unless we end it.
        stale = [i for i in candidates if self.client.get_run(i).info.status == "RUNNING"]
        for run_id in stale:
            self.client.set_terminated(run_id, "KILLED")
        if stale:
            print(f"regstudy tracking: ended {len(stale)} runs left RUNNING by a dead process as KILLED",
                  file=sys.stderr, flush=True)
        return stale

    def __enter__(self) -> "JobTracker":
        self.close_stale_runs()
        tags = {**self.tags, OWNER_TAG: owner()}
        nest = {"mlflow.parentRunId": self.cfg.logger.parent_run_id} if self.cfg.logger.parent_run_id else {}
        params = flatten(OmegaConf.to_container(self.cfg, resolve=True))
        [(self.parent_id, uri)] = self.writer.create_runs(self.experiment_id, [NewRun(
            f"{tags['family']}-{tags['dataset']}", {**tags, **nest}, params)])
        self.artifact_uris[self.parent_id] = uri
        self.writer.log([RunData(self.parent_id)])  # its params now, whatever the writer
        shared = member_params(params)
        children = self.writer.create_runs(self.experiment_id, [NewRun(
            m["name"], {**tags, "mlflow.parentRunId": self.parent_id, "member": str(m["member"])},
            {**shared, "member.strength": str(m["strength"]), "member.seed": str(m["seed"]),
             "member.strength_name": m["strength_name"]}) for m in self.members])
        self.child_ids = [run_id for run_id, _ in children]
        self.artifact_uris.update(children)
        if self.dataset is not None:  # the job's data as each run's dataset input (MLflow's Dataset column)
            self.writer.log_inputs([self.parent_id, *self.child_ids], self.dataset, "training")
        return self

    def _end(self, entries: list[RunData]) -> None:
        self.writer.log(entries)
        self.terminated.update(e.run_id for e in entries if e.status is not None)

    def logged(self, epoch: int) -> bool:
        """Whether ``epoch`` is one of the points that go to MLflow."""
        return is_logged(epoch, self.every)

    def log_epochs(self, rows: list[dict]) -> None:
        """Log per-epoch rows (dicts of ``(K, ...)`` arrays) to each member's run."""
        self.writer.log([RunData(run_id, metrics=self._epoch_metrics(rows, k))
                         for k, run_id in enumerate(self.child_ids)])

    def _epoch_metrics(self, rows: list[dict], k: int) -> list[Metric]:
        """Member ``k``'s metrics of the logged epochs among ``rows``."""
        now = int(time.time() * 1000)
        metrics = []
        for row in rows:
            if row["stopped"][k]:  # early stopping ended this member's curve
                continue
            step = int(row["epoch"][k])
            if not self.logged(step):
                continue
            metrics += [Metric(key, float(row[key][k]), now, step) for key in self.epoch_metrics]
            for name in self.layer_metrics:
                for layer, v in enumerate(row[LAYER_ROW_KEY[name]][k].tolist()):
                    if v == v:  # NaN marks "not defined for this layer"
                        metrics.append(Metric(f"{name}/layer_{layer}", float(v), now, step))
        return metrics

    def finish(self, members: list[dict[str, Any]], parent_dir: str, pending: list[dict] = ()) -> None:
        """The best member's model; every member's artifacts, then its last epochs
        (``pending``), final numbers and status (all members in one write); then the
        parent's artifacts and description."""
        now = int(time.time() * 1000)
        best = Path(parent_dir).parent / "best"
        if (best / "model.pt").exists():
            self._log_best_model(best)
        entries = []
        for k, m in enumerate(members):
            if "figure" in m:  # left for this process to draw
                from .member_figures import member_figure

                member_figure(*m["figure"])
            self._log_artifacts(self.child_ids[k], m["artifacts"])
            final = [Metric(f"final_{key}", float(v), now, 0) for key, v in m["summary"].items()]
            digest = {k: v for k, v in m.items() if k == RESULTS_DIGEST_TAG}  # the results folder, by content
            entries.append(RunData(self.child_ids[k], metrics=self._epoch_metrics(list(pending), k) + final,
                                   tags={"status": "diverged" if m["diverged"] else "ok", **digest},
                                   status="FAILED" if m["diverged"] else "FINISHED"))
        self._end(entries)
        self._log_artifacts(self.parent_id, parent_dir)
        parent_tags = {k: v for k, v in (members[0] if members else {}).items() if k == RESULTS_DIGEST_TAG}
        if (best / "description.md").exists():
            parent_tags["mlflow.note.content"] = (best / "description.md").read_text()
        if parent_tags:
            self.writer.log([RunData(self.parent_id, tags=parent_tags)])

    def _log_artifacts(self, run_id: str, folder: str) -> None:
        """``MlflowClient.log_artifacts`` without its ``get_run`` (a query per run): the
        artifact root came with the run."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        get_artifact_repository(self.artifact_uris[run_id], tracking_uri=self.uri).log_artifacts(folder)

    def _log_best_model(self, best: Path) -> None:
        """Log the best member's model (``best/model.pt``, an ``nn.Sequential``) to its run
        as an MLflow PyTorch model, with a signature and an input example."""
        import mlflow
        import numpy as np
        import torch
        from mlflow.models import infer_signature

        model = torch.load(best / "model.pt", weights_only=False)
        example = np.load(best / "example.npy")
        with torch.no_grad():
            signature = infer_signature(example, model(torch.from_numpy(example)).numpy())
        run_id = self.child_ids[int((best / "member.txt").read_text())]
        # The fluent API, in this process only (a fresh fork per job): log_model needs an active
        # run. The URI goes where the fluent calls read it, the environment: set_tracking_uri
        # would also reset MLflow's tracing set-up (20 ms a job).
        os.environ["MLFLOW_TRACKING_URI"] = self.uri
        if mlflow.get_tracking_uri() != self.uri:  # set in this process before
            mlflow.set_tracking_uri(self.uri)
        with mlflow.start_run(run_id=run_id):
            # Pickled, not torch.export-ed (pt2): an nn.Sequential of torch's own layers loads
            # wherever torch does, and export traced the model anew in every job (0.1-0.2 s).
            # The requirements are given: inferring them costs seconds.
            info = mlflow.pytorch.log_model(
                model, name="model", signature=signature, input_example=example, serialization_format="pickle",
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
        self.writer.log([RunData(self.parent_id, tags={"best_model_uri": info.model_uri}),
                         RunData(run_id, tags={"best_member": "true"})])

    def __exit__(self, exc_type, exc, tb) -> None:
        status = "FINISHED" if exc_type is None else (
            "KILLED" if issubclass(exc_type, (KeyboardInterrupt, JobInterrupted)) else "FAILED")
        self._end([RunData(run_id, status=status) for run_id in [*self.child_ids, self.parent_id]
                   if run_id is not None and run_id not in self.terminated])


# A background tracking process's last line in mlflow-tracking.log: its dataset/family,
# runs and CPU seconds (``time.process_time``: the fork's own, all its threads).
CPU_LINE = "regstudy tracking: finished"


def _tracking_main(cfg: DictConfig, members: list, tags: dict, dataset: dict | None, inbox, outbox,
                   job_ends: tuple) -> None:
    """The tracking process: runs opened first, then epochs batched, then the finish.

    It is forked, so its arguments (the job's config among them) are the job's own
    objects as they were at the fork, not copies sent through a pipe.

    The finish carries the members' final numbers and an artifact folder, which this
    process owns from then on (it draws the figures left to it and deletes the folder).
    In the background, its output goes to ``mlflow-tracking.log`` at the project root
    (not to the stage's stdout, which DVC reads until every writer has closed it).
    """
    # The job's ends of the pipes came with the fork: close them, or the inbox never
    # reports EOF when the job dies.
    for end in job_ends:
        end.close()
    interrupt_on_signals()
    flush_every = cfg.logger.flush_every
    messages = _drain_in_background(inbox)
    background = False
    try:
        with JobTracker(cfg, members, tags, dataset) as tracker:
            outbox.send(("runs", {"experiment_id": tracker.experiment_id,
                                  "parent_run_id": tracker.parent_id,
                                  "member_run_ids": tracker.child_ids}))
            pending: list[dict] = []
            while True:
                kind, payload = messages.get()
                if kind == "eof":  # the job process is gone without a word
                    raise JobInterrupted("the job process ended before finishing")
                if kind == "epoch":
                    if tracker.logged(int(payload["epoch"][0])):
                        pending.append(payload)
                    if flush_every is not None and len(pending) >= flush_every:
                        tracker.log_epochs(pending)
                        pending = []
                elif kind == "finish":
                    members_final, artifacts, background = payload
                    if background:
                        _detach_output(project_root(cfg) / "mlflow-tracking.log")
                    try:
                        tracker.finish(members_final, str(Path(artifacts) / "parent"), pending)
                    finally:
                        shutil.rmtree(artifacts, ignore_errors=True)
                    break
                elif kind == "interrupted":
                    raise JobInterrupted(payload)
                else:
                    raise JobFailed(payload)
        if background:  # the job is gone: nobody to tell; the log says what this cost
            print(f"{CPU_LINE} {cfg.data.name}/{cfg.family}: {len(members)} member runs, "
                  f"{time.process_time():.2f} s CPU", flush=True)
        else:
            outbox.send(("done", None))
    except BaseException as e:  # noqa: BLE001 - reported to the job, runs already terminated
        if background or not isinstance(e, (KeyboardInterrupt, JobInterrupted, JobFailed)):  # else the job says why
            print(f"regstudy tracking: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        try:
            outbox.send(("error", f"{type(e).__name__}: {e}"))
        except OSError:
            pass  # the job no longer listens (background finish)


def _detach_output(log: Path) -> None:
    """Send this process's stdout and stderr to ``log`` from now on."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _drain_in_background(inbox) -> queue.Queue:
    """Read the pipe in a thread, so the job never waits on a full pipe while we write."""
    messages: queue.Queue = queue.Queue()

    def read() -> None:
        while True:
            try:
                messages.put(inbox.recv())
            except EOFError:
                messages.put(("eof", None))
                return

    threading.Thread(target=read, daemon=True).start()
    return messages


class TrackingProcess:
    """The job's side of the tracking process (forked, so it shares the imports)."""

    def __init__(self, cfg: DictConfig, members: list[dict[str, Any]], tags: dict[str, str],
                 dataset: dict[str, str] | None = None):
        ctx = multiprocessing.get_context("fork")
        inbox, self._send = ctx.Pipe(duplex=False)
        self._recv, outbox = ctx.Pipe(duplex=False)
        # Not a daemon: an exiting job waits for it (a warm fork exits with os._exit
        # and leaves it to finish in the background).
        self.process = ctx.Process(target=_tracking_main, daemon=False, name="regstudy-tracking",
                                   args=(cfg, members, tags, dataset,
                                         inbox, outbox, (self._send, self._recv)))
        self.process.start()
        inbox.close()  # so the tracking process sees EOF if this one dies
        outbox.close()
        self._runs: dict[str, Any] | None = None
        self._lost = False  # the tracking process failed (its store or server is gone)
        self._failure: str | None = None  # and why, once known

    def log_epoch(self, row: dict) -> None:
        """Send an epoch; if the tracking process has failed, train on without it (the
        results are still written, and the job fails after them, saying why)."""
        if self._lost:
            return
        try:
            self._send.send(("epoch", {k: v.numpy() for k, v in row.items()}))
        except (BrokenPipeError, ConnectionResetError):
            self._lost = True

    def _reply(self) -> tuple[str, Any]:
        try:
            return self._recv.recv()
        except EOFError:
            return "error", f"the tracking process died (exit code {self.process.exitcode})"

    def runs(self) -> dict[str, Any]:
        """Experiment and run ids (the tracking process opens the runs first thing)."""
        if self._runs is None:
            kind, payload = self._reply()
            if kind != "runs":
                self._failure = payload
                raise TrackingFailed(f"MLflow logging failed: {payload}")
            self._runs = payload
        return self._runs

    def finish(self, members: list[dict[str, Any]], artifacts: Path, background: bool) -> None:
        """Hand over the final numbers and the artifact folder (the tracking process owns it).

        With ``background``, return at once: the tracking process logs the artifacts
        and ends the runs on its own. Otherwise wait until it has.
        """
        if self._failure is None:
            self.runs()
            try:
                self._send.send(("finish", (members, str(artifacts), background)))
            except (BrokenPipeError, ConnectionResetError):
                self._lost = True
            if self._lost:
                self._failure = self._reply()[1]
        if self._failure is not None:
            self.process.join()
            raise TrackingFailed(f"MLflow logging failed: {self._failure}")
        if background:
            return
        kind, message = self._reply()
        self.process.join()
        if kind != "done":
            raise TrackingFailed(f"MLflow logging failed: {message}")

    def abort(self, exc: BaseException) -> None:
        """The job failed: its runs end FAILED (KILLED if interrupted)."""
        interrupted = isinstance(exc, (KeyboardInterrupt, JobInterrupted))
        try:
            self._send.send(("interrupted" if interrupted else "failed", repr(exc)))
        except OSError:
            pass
        self.process.join(timeout=60)
        if self.process.is_alive():
            self.process.terminate()


class MLflowEpochLogger(pl.Callback):
    """Lightning callback: sends the tracking process the rows of the epochs that go to
    MLflow (every ``every``-th and the first; pickling the others cost about 1 ms an epoch)."""

    def __init__(self, tracking: TrackingProcess, every: int):
        self.tracking, self.every, self.sent = tracking, every, 0

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._send(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._send(pl_module)  # the last epoch's row is added after the callbacks ran

    def _send(self, pl_module) -> None:
        for row in pl_module.history[self.sent:]:
            if is_logged(int(row["epoch"][0]), self.every):
                self.tracking.log_epoch(row)
        self.sent = len(pl_module.history)
