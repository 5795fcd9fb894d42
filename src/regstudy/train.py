"""Hydra entry point: ``python -m regstudy.train [overrides]`` (or ``regstudy-train``).

One run trains one job (a grid of members); ``-m`` sweeps run one job per combination,
with the basic launcher or ``hydra/launcher=joblib`` for parallel jobs.

Exit codes: 0; 2 for bad input (a config value, a data file, a command line Hydra cannot
compose); 1 for a failure (a full disk, an MLflow store that cannot take the runs);
130, 143 or 129 for Ctrl-C, SIGTERM or SIGHUP. Each failure is one line, not a traceback.
"""

from __future__ import annotations

import sys
import time

import hydra
from omegaconf import DictConfig

from .config import register_configs
from .extras import MissingExtra, check_launcher
from .jobspec import CheckJob
from .lifecycle import report_interrupt
from .paths import CONFIG_DIR
from .preflight import BAD_INPUT, StoreError, refuse
from .tracking.store import PrepareStoreCallback

register_configs()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def train(cfg: DictConfig) -> float:
    # torch, Lightning and MLflow (8 s) only now: bad input was refused before them, by the
    # Hydra callback that prepared the job (regstudy.jobspec.CheckJob)
    from .console import job_line
    from .job import objective, run_job
    from .results import could_not_write
    from .tracking import TrackingFailed

    start = time.perf_counter()
    try:
        table = run_job(CheckJob.take(cfg))  # a single run's job, prepared once; a sweep's job prepares here
        print(job_line(table, time.perf_counter() - start), flush=True)
    except (*BAD_INPUT, StoreError) as e:  # bad input, or a store found unusable: before training
        sys.exit(refuse(e))
    except TrackingFailed as e:  # trained, but MLflow did not take the runs
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:  # a full disk or an unwritable folder: nothing was committed
        print(f"error: {could_not_write(e)}", file=sys.stderr)
        sys.exit(1)
    return objective(table)  # what an optimizing sweeper maximizes


def main() -> None:
    """The command line: :func:`train` under Hydra, with Hydra's exit 1 for a command line
    it cannot compose (``experiment=bogus``, a bad override) made the exit 2 of bad input,
    and a signal one line and the shell's exit code instead of a traceback and 1."""
    try:
        check_launcher(sys.argv[1:])
    except MissingExtra as e:  # Hydra's own error would name only the launcher's config
        sys.exit(refuse(e))
    try:
        train()
    except SystemExit as e:
        if e.code == 1 and not PrepareStoreCallback.composed:  # Hydra said why; no job started
            sys.exit(2)
        raise
    except KeyboardInterrupt as e:
        sys.exit(report_interrupt(e, "nothing of the job was committed; its MLflow runs end KILLED"))


if __name__ == "__main__":
    main()
