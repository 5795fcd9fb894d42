"""MLflow's asynchronous logging against the study's tracking process, per member.

One train job as the study runs it (l2 on moons: 7 strengths x 5 seeds = 35 members, 40
epochs, the study's logger overrides, a SQLite store), its MLflow work done two ways:

- **process**: as the study does it, :class:`regstudy.tracking.process.TrackingProcess`,
  a forked process that batches the writes (:class:`~regstudy.tracking.writer.DatabaseWriter`,
  one transaction per step of all the runs) on the second core;
- **async**: no process: the job's own :class:`~regstudy.tracking.runs.JobTracker`, each
  logged epoch sent at once with ``MlflowClient.log_batch(..., synchronous=False)`` (MLflow's
  queue, a thread of the job's process), the runs' end after its queue has drained.

The two alternate in one process (the first job of each is a warm-up, left out), each
way in a store of its own; a job with MLflow off gives the cost of training alone. A job's
wall time runs until its runs are finished (``logger.background_finish=false`` both ways);
CPU is the job's and its children's (the tracking process). Usage:
``python -m benchmarks.async_logging [--repeats 3] [--async-threads N]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from regstudy.tracking.writer import ClientWriter

STRENGTHS = [0.0, 1.0e-5, 1.0e-4, 1.0e-3, 1.0e-2, 1.0e-1, 1.0]  # the study's grid of l2
SEEDS = [0, 1, 2, 3, 4]
EPOCHS = 40
WAYS = ("process", "async", "off")


class AsyncClientWriter(ClientWriter):
    """:class:`~regstudy.tracking.writer.ClientWriter` with every ``log_batch``
    asynchronous; a run is ended once its queued batches are written.

    ``MlflowClient.set_terminated`` shuts MLflow's queue down (its thread polls the queue
    each second, so a shutdown waits up to 1 s) and the next ``log_batch`` starts it again:
    one call's runs are ended together, after all of its batches, so that the queue is
    shut down once per call, not once per run."""

    def __init__(self, client):
        super().__init__(client)
        self.queued: dict[str, list] = {}  # run id -> its batches' RunOperations

    def log(self, entries) -> None:
        for e in entries:
            self.queued.setdefault(e.run_id, []).extend(
                self.client.log_batch(e.run_id, **batch, synchronous=False) for batch in self.batches(e))
        ends = [e for e in entries if e.status is not None]
        for e in ends:
            for operation in self.queued.pop(e.run_id, []):
                operation.wait()
        for e in ends:
            self.client.set_terminated(e.run_id, e.status)


class AsyncTracking:
    """The job's side of tracking without a process: what
    :class:`~regstudy.tracking.process.TrackingProcess` offers the job, done in place."""

    def __init__(self, cfg, members, tags, dataset=None):
        from regstudy.tracking.runs import JobTracker

        self.tracker = JobTracker(cfg, members, tags, dataset)
        self.tracker.writer = AsyncClientWriter(self.tracker.client)
        self.tracker.__enter__()

    def log_epoch(self, row) -> None:
        self.tracker.log_epochs([{k: v.numpy() for k, v in row.items()}])

    def runs(self) -> dict:
        t = self.tracker
        return {"experiment_id": t.experiment_id, "parent_run_id": t.parent_id, "member_run_ids": t.child_ids}

    def finish(self, members, artifacts: Path, background: bool) -> None:
        try:
            self.tracker.finish(members, str(Path(artifacts) / "parent"))
        finally:
            shutil.rmtree(artifacts, ignore_errors=True)
        self.tracker.__exit__(None, None, None)

    def abort(self, exc: BaseException) -> None:
        self.tracker.__exit__(type(exc), exc, None)


def moons_data(folder: Path) -> Path:
    from benchmarks.stacks import study_params
    from regstudy.data import make_dataset, save_npz

    params = study_params()["data"]
    path = folder / "moons.npz"
    save_npz(path, make_dataset("moons", params["moons"], SEEDS, params["seed"]))
    return path


def job_config(root: Path, data: Path, way: str, n: int):
    from benchmarks.stacks import study_params
    from regstudy.stages.train import compose_job

    overrides = study_params()["study"]["overrides"]
    return compose_job([f"paths.root={root}", f"paths.results={root}/results-{n}", "experiment=l2",
                        "data=moons", f"data.path={data}", f"members.strengths={STRENGTHS}",
                        f"members.seeds={SEEDS}", f"trainer.max_epochs={EPOCHS}", "threads=1",
                        f"logger.enabled={str(way != 'off').lower()}", "logger.background_finish=false",
                        *overrides])


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_one(root: Path, data: Path, way: str, n: int) -> tuple[float, float]:
    """(wall, CPU) seconds of one job done ``way``, until its runs are finished."""
    import regstudy.job as job
    from regstudy.tracking.process import TrackingProcess

    job.TrackingProcess = AsyncTracking if way == "async" else TrackingProcess
    # a best model logged in this process (the async way) exports its store's URI, which
    # the next job's config would read (logger.tracking_uri)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    cfg = job_config(root, data, way, n)
    wall, cpu = time.perf_counter(), cpu_seconds()
    job.run_job(cfg)
    return time.perf_counter() - wall, cpu_seconds() - cpu


def measure(repeats: int) -> dict[str, dict[str, list[float]]]:
    import mlflow

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="regstudy-async-"))
    try:
        data = moons_data(tmp)
        roots = {way: tmp / way for way in WAYS}
        out = {way: {"wall": [], "cpu": []} for way in WAYS}
        for n in range(repeats + 1):  # round 0: the warm-up of each way
            for way in (WAYS if n % 2 == 0 else WAYS[::-1]):
                wall, cpu = run_one(roots[way], data, way, n)
                if n:
                    out[way]["wall"].append(wall)
                    out[way]["cpu"].append(cpu)
                print(f"{way:8s} round {n}: {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)
        mlflow.flush_async_logging()
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.async_logging", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--async-threads", type=int, default=None,
                   help="MLflow's async logging threads (MLFLOW_ASYNC_LOGGING_THREADPOOL_SIZE; MLflow's default 10)")
    args = p.parse_args(argv)
    if args.async_threads is not None:  # read when MLflow starts its queue, in the first async call
        os.environ["MLFLOW_ASYNC_LOGGING_THREADPOOL_SIZE"] = str(args.async_threads)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    out = measure(args.repeats)
    members = len(STRENGTHS) * len(SEEDS)
    median = {way: {k: statistics.median(v) / members * 1000 for k, v in out[way].items()} for way in WAYS}
    threads = os.environ.get("MLFLOW_ASYNC_LOGGING_THREADPOOL_SIZE", "10 (MLflow's default)")
    print(f"\n{members} members, {EPOCHS} epochs, async logging threads {threads}, medians of {args.repeats} "
          "(ms per member); "
          f"load average at start {load:.2f}; {time.perf_counter() - start:.0f} s in all")
    print("| way | wall | CPU | wall over MLflow off |")
    print("|---|---|---|---|")
    for way in WAYS:
        extra = median[way]["wall"] - median["off"]["wall"]
        print(f"| {way} | {median[way]['wall']:.1f} | {median[way]['cpu']:.1f} | {extra:+.1f} |")
    print(f"async / process, wall per member: {median['async']['wall'] / median['process']['wall']:.3f}; "
          f"CPU per member: {median['async']['cpu'] / median['process']['cpu']:.3f}")


if __name__ == "__main__":
    main()
