"""The figure logged to MLflow with each member: its loss curves and its kernel values."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def member_figure(curves: pd.DataFrame, params: pd.DataFrame, title: str, path: Path) -> None:
    """Left: train/val data loss per epoch (log y). Right: kernel values, init vs final."""
    fig, (ax_loss, ax_w) = plt.subplots(1, 2, figsize=(8, 3), dpi=80)
    for split in ("train", "val"):
        ax_loss.plot(curves["epoch"], curves[f"{split}_loss"], label=split)
    ax_loss.set(yscale="log", xlabel="epoch", ylabel="data loss", title="loss")
    ax_loss.legend()
    kernels = params[params["kind"] == "kernel"]
    for when in ("init", "final"):
        values = kernels.loc[kernels["when"] == when, "value"].dropna()
        if len(values):
            ax_w.hist(values, bins=40, histtype="step", density=True, label=when)
    ax_w.set(xlabel="kernel value", ylabel="density", title="parameters")
    ax_w.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
