"""Hydra entry point: ``python -m regstudy.train [overrides]`` (or ``regstudy-train``).

One run trains one job (a grid of members); ``-m`` sweeps run one job per combination,
with the basic launcher or ``hydra/launcher=joblib`` for parallel jobs.
"""

from __future__ import annotations

import sys
import time

import hydra
from omegaconf import DictConfig

from .config import ConfigError, register_configs
from .data import CsvError
from .paths import CONFIG_DIR

register_configs()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float:
    # torch, Lightning and MLflow (8 s) only now: bad input was refused before them, by the
    # Hydra callback that checks it (regstudy.preflight)
    from .console import job_line
    from .job import objective, run_job
    from .tracking import TrackingFailed

    start = time.perf_counter()
    try:
        table = run_job(cfg)
        print(job_line(table, time.perf_counter() - start), flush=True)
    except (ConfigError, CsvError, FileNotFoundError) as e:  # bad input: a message, not a traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except TrackingFailed as e:  # trained, but MLflow did not take the runs
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    return objective(table)  # what an optimizing sweeper (hydra/sweeper=optuna) maximizes


if __name__ == "__main__":
    main()
