"""What MLflow shows of a job besides its numbers: its data as a dataset input, MLflow's
own source tags, and the parent run's description."""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from .results import best_strength


def job_description(cfg: DictConfig, table: pd.DataFrame) -> str:
    """The parent run's description (markdown): family, dataset, grid, seeds, and the best
    strength's test metric: mean over seeds with its 95% t-interval."""
    first = table.iloc[0]
    strengths = ", ".join(f"{s:g}" for s in sorted(table.strength.unique()))
    seeds = ", ".join(str(s) for s in sorted(table.seed.unique()))
    lines = [f"**{cfg.family}** on **{cfg.data.name}** ({first.task}): {first.strength_name} "
             f"in [{strengths}], seeds [{seeds}]; {len(table)} members, {cfg.trainer.max_epochs} epochs."]
    best = best_strength(table)
    if best is None:
        lines.append("Every member diverged.")
    else:
        test = table[(table.strength == best[0]) & (table.status == "ok")].test_metric.to_numpy(float)
        test = test[np.isfinite(test)]
        lo, hi = t_interval(test)
        interval = f" (95% interval {lo:.3f} to {hi:.3f}, {len(test)} seeds)" if np.isfinite([lo, hi]).all() else ""
        lines.append(f"Best {first.strength_name} = {best[0]:g} by mean validation {first.metric_name} "
                     f"({best[1]:.3f}); its test {first.metric_name}: {test.mean():.3f}{interval}. "
                     "Its first seed's model is logged to its run (tag best_member).")
    diverged = int((table.status == "diverged").sum())
    if diverged:
        lines.append(f"{diverged} members diverged.")
    return "\n\n".join(lines)


def t_interval(x: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The t-interval of the mean of ``x`` (scipy's one-sample t-test's), in the units of
    ``x``; NaN bounds for fewer than two values or no spread."""
    import warnings

    from scipy import stats

    if len(x) < 2:
        return math.nan, math.nan
    with warnings.catch_warnings():  # identical values: scipy warns
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = stats.ttest_1samp(x, 0.0).confidence_interval(confidence)
    return float(ci.low), float(ci.high)


def source_tags(root: Path, commit: str) -> dict[str, str]:
    """MLflow's own source tags: the entry point (relative to the project) and the commit."""
    entry = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else Path("regstudy")
    try:
        entry = entry.relative_to(root)
    except ValueError:
        pass
    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": str(entry)}
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit.removesuffix("-dirty")
    return tags


def dataset_entity(cfg: DictConfig, path: Path, arrays: dict[str, np.ndarray]) -> dict[str, str]:
    """The job's data as an MLflow dataset: name, digest (md5 of the file, as DVC hashes
    it, first 8 hex digits), source (the file), schema and profile (split sizes)."""

    from mlflow.data.schema import TensorDatasetSchema
    from mlflow.types.schema import Schema, TensorSpec

    x, y = arrays["x_train"], arrays["y_train"]
    schema = TensorDatasetSchema(features=Schema([TensorSpec(np.dtype(np.float32), (-1, x.shape[-1]))]),
                                 targets=Schema([TensorSpec(y.dtype, (-1,))]))
    profile = {f"{split}_rows": int(arrays[f"x_{split}"].shape[-2]) for split in ("train", "val", "test")}
    profile.update(features=int(x.shape[-1]), task=cfg.data.task, seeds=[int(s) for s in cfg.members.seeds])
    return {"name": cfg.data.name, "digest": hashlib.md5(path.read_bytes()).hexdigest()[:8],
            "source_type": "local", "source": json.dumps({"uri": str(path)}),
            "schema": json.dumps(schema.to_dict()), "profile": json.dumps(profile)}
