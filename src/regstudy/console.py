"""What a job prints: one line when it ends, and no third-party chatter.

Lightning's start-up notes and tips, MLflow's store messages and a known Lightning
deprecation warning say nothing about the study; they are silenced. Warnings and
errors still show.
"""

from __future__ import annotations

import logging
import warnings

import pandas as pd

NOISY_LOGGERS = ("pytorch_lightning", "lightning", "lightning_fabric", "mlflow", "alembic")


def quiet() -> None:
    """Third-party loggers at WARNING, and Lightning's own LeafSpec deprecation hidden."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # inside Lightning, not ours


def job_line(table: pd.DataFrame, seconds: float) -> str:
    """``signal/l2: 35 members in 4.6 s, best lam=0.001 (val r2 0.62), 2 diverged``.

    The best strength has the highest mean validation metric over the seeds, among
    members that did not diverge.
    """
    first = table.iloc[0]
    line = f"{first.dataset}/{first.family}: {len(table)} members in {seconds:.1f} s"
    ok = table[table["status"] == "ok"]
    if len(ok):
        means = ok.groupby("strength")["val_metric"].mean()
        line += (f", best {first.strength_name}={means.idxmax():g}"
                 f" (val {first.metric_name} {means.max():.3g})")
    diverged = int((table["status"] == "diverged").sum())
    return line + (f", {diverged} diverged" if diverged else "")
