"""What a job prints: one line when it ends, and no third-party chatter.

Lightning's start-up notes and tips, MLflow's store messages and run links, and a known
Lightning deprecation warning say nothing about the study; they are silenced. Warnings and
errors still show.
"""

from __future__ import annotations

import logging
import os
import warnings

import pandas as pd

from .results import best_strength

NOISY_LOGGERS = ("pytorch_lightning", "lightning", "lightning_fabric", "mlflow", "alembic")


def quiet() -> None:
    """Third-party loggers at WARNING, and Lightning's own LeafSpec deprecation hidden."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # inside Lightning, not ours
    # With a tracking server, MLflow prints "View run ... at: <url>" for every run it ends.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def job_line(table: pd.DataFrame, seconds: float) -> str:
    """``signal/l2: 35 members in 4.6 s, best lam=0.001 (val r2 0.62), 2 diverged``.

    The best strength has the highest mean validation metric over the seeds, among
    members that did not diverge.
    """
    first = table.iloc[0]
    line = f"{first.dataset}/{first.family}: {len(table)} members in {seconds:.1f} s"
    best = best_strength(table)
    if best:
        line += f", best {first.strength_name}={best[0]:g} (val {first.metric_name} {best[1]:.3g})"
    diverged = int((table["status"] == "diverged").sum())
    return line + (f", {diverged} diverged" if diverged else "")
