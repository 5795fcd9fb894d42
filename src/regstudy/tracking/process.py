"""The job's tracking process: all MLflow work of a job, forked at its start.

Writing to the store (tens of thousands of per-epoch metrics) runs on the second core
while the job trains on the first. The job sends it one message per logged epoch and
one at the end, through a pipe; the tracking process batches the writes
(:class:`~regstudy.tracking.runs.JobTracker`).

The pipe's messages, job to tracking process: ``("epoch", row)``, then one of
``("finish", (members, artifacts, background))``, ``("interrupted", why)`` or
``("failed", why)``; a closed pipe reads as ``("eof", None)``. Tracking process to job:
``("runs", ids)`` once the runs are open, then ``("done", None)``, or ``("error", why)``
at any point.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ..lifecycle import interrupt_on_signals
from ..paths import store_root
from .runs import JobFailed, JobInterrupted, JobTracker, TrackingFailed


# A background tracking process's last line in mlflow-tracking.log: its dataset/family,
# runs and CPU seconds (``time.process_time``: the fork's own, all its threads).
CPU_LINE = "regstudy tracking: finished"


def _tracking_main(cfg: DictConfig, members: list, tags: dict, dataset: dict | None, inbox, outbox,
                   job_ends: tuple) -> None:
    """The tracking process: runs opened first, then epochs batched, then the finish.

    Forked (:func:`start_method`), its arguments (the job's config among them) are the
    job's own objects as they were at the fork; spawned, copies of them.

    The finish carries the members' final numbers and an artifact folder, which this
    process owns from then on (it draws the figures left to it and deletes the folder).
    In the background, its output goes to ``mlflow-tracking.log`` beside the store, at the
    project root (not to the stage's stdout, which DVC reads until every writer has closed
    it; nor into a DVC temporary workspace, which DVC may delete before it ends).
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
                        _detach_output(store_root(cfg) / "mlflow-tracking.log")
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


def start_method() -> str:
    """How the tracking process starts: forked on Linux, before the job touches a GPU (it
    shares the job's imports: no second start-up); started fresh (``spawn``, MLflow
    imported again, a few seconds) where a fork is unsafe: on macOS and Windows, and in a
    process that already initialised CUDA (a sweep's second job on a GPU)."""
    import torch

    return "fork" if sys.platform.startswith("linux") and not torch.cuda.is_initialized() else "spawn"


class TrackingProcess:
    """The job's side of the tracking process (forked, so it shares the imports)."""

    def __init__(self, cfg: DictConfig, members: list[dict[str, Any]], tags: dict[str, str],
                 dataset: dict[str, str] | None = None):
        ctx = multiprocessing.get_context(start_method())
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
            self._send.send(("epoch", {k: v.cpu().numpy() for k, v in row.items()}))
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
