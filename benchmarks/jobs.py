"""Wall time of one train job (what a train stage runs, minus process start-up)."""

from __future__ import annotations

import logging
import time
from pathlib import Path


def job_seconds(tmp: Path, data_path: Path, k: int = 18, epochs: int = 100,
                logging_on: bool = True, threads: int = 1, background: bool = False) -> float:
    """Seconds of ``run_job`` for the l2 family on signal with K members (k = strengths x 3 seeds).

    ``tmp`` is the project root: jobs sharing it share one MLflow store, as a study does.
    With ``background`` the job returns before its tracking process ends the runs (as
    DVC stages do); that process then finishes beside whatever runs next.
    """
    from regstudy.job import run_job
    from regstudy.stages.train import compose_job

    seeds = [0, 1, 2] if k % 3 == 0 else [0]
    n = k // len(seeds)
    strengths = [round(1e-4 * i / max(n - 1, 1), 10) for i in range(n)]
    cfg = compose_job([f"paths.root={tmp}", f"paths.results={tmp}/results-{k}-{epochs}",
                       "experiment=l2", f"data.path={data_path}", f"members.strengths={strengths}",
                       f"members.seeds={seeds}", f"trainer.max_epochs={epochs}",
                       f"logger.enabled={str(logging_on).lower()}", f"threads={threads}",
                       f"logger.background_finish={str(background).lower()}"])
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    start = time.perf_counter()
    run_job(cfg)
    return time.perf_counter() - start


def profile_job(tmp: Path, data_path: Path, out: Path, k: int = 18, epochs: int = 100) -> str:
    """pyinstrument's call tree of one train job (MLflow on); written to ``out``."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001)
    profiler.start()
    job_seconds(tmp, data_path, k, epochs, True)
    profiler.stop()
    text = profiler.output_text(unicode=True, color=False, show_all=False)
    out.write_text(text)
    return text
