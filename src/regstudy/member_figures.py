"""The figure logged to MLflow with each member: its loss curves and its kernel values."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import LogFormatter, NullLocator  # noqa: E402


def member_figure(curves: pd.DataFrame, params: pd.DataFrame, title: str, path: str | Path) -> None:
    """Left: train/val data loss per epoch (log y). Right: kernel values, init vs final.

    Drawn with a fixed layout and plain tick labels: a study draws hundreds of these.
    """
    fig = Figure(figsize=(8, 3), dpi=72)
    ax_loss, ax_w = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.16, top=0.82, wspace=0.25)
    for split in ("train", "val"):
        ax_loss.plot(curves["epoch"], curves[f"{split}_loss"], label=split)
    ax_loss.set(yscale="log", xlabel="epoch", ylabel="data loss", title="loss")
    ax_loss.yaxis.set_major_formatter(LogFormatter())
    ax_loss.yaxis.set_minor_locator(NullLocator())
    ax_loss.legend(frameon=False)
    kernels = params[params["kind"] == "kernel"]
    for when in ("init", "final"):
        values = kernels.loc[kernels["when"] == when, "value"].to_numpy()
        values = values[np.isfinite(values)]
        if len(values):
            density, edges = np.histogram(values, bins=40, density=True)
            ax_w.stairs(density, edges, label=when)
    ax_w.set(xlabel="kernel value", ylabel="density", title="parameters")
    ax_w.legend(frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, metadata={"Software": None})
