"""The MLflow runs of one train job: a parent run, a child run per member.

Only ``MlflowClient`` is used (the fluent API only for the best model's ``log_model``, in
the tracking process), so no active run or global tracking state survives a job in a
reused worker process. Every run a job opens is terminated, whatever happens: FINISHED, FAILED (a
diverged member or a failed job) or KILLED (the job was interrupted or died).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from ..lifecycle import owner, owner_alive
from ..paths import tracking_uri
from ..results import RESULTS_DIGEST_TAG
from .params import flatten, member_params
from .store import prepare_from_config
from .writer import NewRun, RunData, writer_for

OWNER_TAG = "regstudy.owner"  # host:pid:start of the process that ends the run
# The key of each per-layer curve in an epoch's row.
LAYER_ROW_KEY = {"weight_norm": "layer_norm", "effective_lr": "effective_lr"}


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
    """Whether ``epoch`` (from 1) goes to MLflow: the first, and every ``every``-th."""
    return epoch == 1 or epoch % every == 0


class JobTracker:
    """The MLflow runs of one train job, written synchronously. Use as a context manager.

    Every write goes through a :mod:`regstudy.tracking.writer`: all the member runs of one
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
        self.writer = writer_for(self.client, self.uri)
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
                from ..member_figures import member_figure

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
        import torch

        from ..export import read_best_model

        model, example, signature = read_best_model(best)
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
