"""The tidy tables a train job writes (schema: ``docs/results.md``), and how a failed
write (a full disk) is said: as such, naming the file."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .lifecycle import alive as process_alive
from .metrics import METRIC_NAME, THRESHOLD_SENSITIVITY
from .config import CURVE_METRICS

FLOAT_FORMAT = "%.8g"
PARAM_SAMPLE = 512  # entries kept per member, layer and kind in params.parquet


def _stack(history: list[dict[str, Tensor]], key: str) -> np.ndarray:
    """``(epochs, K, ...)`` array of one history key."""
    return torch.stack([row[key] for row in history]).double().numpy()


def member_index(members: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(members)[["member", "strength", "seed"]]


def _epoch_index(history: list[dict[str, Tensor]], members: list[dict[str, Any]]) -> pd.DataFrame:
    """``member, strength, seed, epoch``: one row per member per epoch, epochs outer."""
    index = member_index(members)
    # the members' rows repeated by position (a concat of one frame per epoch took 0.17 s at 400 epochs)
    df = index.iloc[np.tile(np.arange(len(index)), len(history))].reset_index(drop=True)
    df["epoch"] = np.repeat(_stack(history, "epoch")[:, 0].astype(int), len(members))
    return df


def curves_table(history: list[dict[str, Tensor]], members: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per member per epoch."""
    df = _epoch_index(history, members)
    for key in CURVE_METRICS:
        df[key] = _stack(history, key).reshape(-1)
    df["stopped"] = _stack(history, "stopped").reshape(-1).astype(bool)
    return df


def layers_table(history: list[dict[str, Tensor]], members: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per member per epoch per layer (the output layer last)."""
    curves = _epoch_index(history, members)
    norms = _stack(history, "layer_norm")  # (E, K, L)
    n_layers = norms.shape[-1]
    df = curves.loc[curves.index.repeat(n_layers)].reset_index(drop=True)
    df["layer"] = np.tile(np.arange(n_layers), len(curves))
    df["weight_norm"] = norms.reshape(-1)
    df["effective_lr"] = _stack(history, "effective_lr").reshape(-1)
    df["near_zero_fraction"] = _stack(history, "layer_near_zero").reshape(-1)
    alive = _stack(history, "layer_alive")  # (E, K, L-1): hidden layers only
    alive = np.concatenate([alive, np.full(alive.shape[:2] + (1,), np.nan)], axis=-1)
    df["alive_neurons"] = alive.reshape(-1)
    return df


def sample_indices(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """The fixed subset of a member's tensor entries that ``params.parquet`` keeps."""
    n = int(np.prod(shape))
    return torch.randperm(n, generator=generator)[:PARAM_SAMPLE].sort().values


def params_table(init: dict[str, Tensor], final: dict[str, Tensor],
                 members: list[dict[str, Any]], indices: dict[str, Tensor]) -> pd.DataFrame:
    """Sampled parameter values at initialization and at the end, per member.

    ``init``/``final`` map ``kernel_<l>`` / ``bias_<l>`` to ``(K, ...)`` tensors.
    """
    idx = member_index(members)
    frames = []
    for name, sel in indices.items():
        kind, layer = name.split("_")
        for when, state in (("init", init), ("final", final)):
            values = state[name].flatten(1)[:, sel].double().numpy()  # (K, S)
            f = idx.loc[idx.index.repeat(values.shape[1])].reset_index(drop=True)
            f["layer"], f["kind"], f["when"] = int(layer), kind, when
            f["value"] = values.reshape(-1)
            frames.append(f)
    return pd.concat(frames, ignore_index=True)


def predictions_table(grid: np.ndarray, preds: dict[str, Tensor],
                      members: list[dict[str, Any]], task: str) -> pd.DataFrame:
    """The function of every member on the plotting grid (signal: x; moons: x0, x1)."""
    idx = member_index(members)
    g = len(grid)
    df = idx.loc[idx.index.repeat(g)].reset_index(drop=True)
    if grid.shape[1] == 1:
        df["x"] = np.tile(grid[:, 0], len(idx))
    else:
        df["x0"], df["x1"] = np.tile(grid[:, 0], len(idx)), np.tile(grid[:, 1], len(idx))
    df["y_pred" if task == "regression" else "p1"] = preds["pred"].double().numpy().reshape(-1)
    df["mc_mean"] = preds["mc_mean"].double().numpy().reshape(-1)
    df["mc_std"] = preds["mc_std"].double().numpy().reshape(-1)
    return df


MAX_FEATURES = 256  # features.csv is written for datasets with at most this many inputs


def features_table(norms: Tensor, members: list[dict[str, Any]],
                   arrays: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per member per input feature: the norm of its first-layer weights.

    ``norms`` ``(K, d)`` is :func:`regstudy.metrics.feature_norms` of the kept weights;
    ``relevant`` and ``block`` come from the data file where its generator knows them
    (``feature_relevant``, ``feature_block``), else they are left empty.
    """
    idx = member_index(members)
    k, d = norms.shape
    df = idx.loc[idx.index.repeat(d)].reset_index(drop=True)
    df["feature"] = np.tile(np.arange(d), k)
    values = norms.double().numpy().reshape(-1)
    df["norm"] = values
    df["dropped"] = values == 0.0
    relevant, block = arrays.get("feature_relevant"), arrays.get("feature_block")
    unknown = [pd.NA] * len(df)
    df["relevant"] = pd.array(unknown if relevant is None else np.tile(relevant, k), dtype="boolean")
    df["block"] = pd.array(unknown if block is None else np.tile(block, k), dtype="Int64")
    df.loc[df["block"] < 0, "block"] = pd.NA  # -1: a feature outside every block
    return df


def members_table(history: list[dict[str, Tensor]], final: dict[str, Tensor],
                  members: list[dict[str, Any]], info: dict[str, Any]) -> pd.DataFrame:
    """One row per member: its final numbers (at its kept epoch) and its fate.

    ``final`` is the evaluation of the kept weights on every split after training (the
    only one of the test split), with their near-zero fractions at other thresholds
    (:data:`regstudy.metrics.THRESHOLD_SENSITIVITY`); ``info`` holds ``dataset, family,
    sweep, strength_name, task, optimizer, lr, zero_threshold`` and the per-member
    tensors ``best_epoch, diverged_epoch, stopped_epoch``.
    """
    k, last = len(members), len(history)
    diverged = info["diverged_epoch"] > 0
    # A diverged member reports its last (non-finite) numbers; others their kept epoch.
    row_of = torch.where(diverged | (info["best_epoch"] == 0), last, info["best_epoch"]) - 1
    df = pd.DataFrame(members)[["member", "strength", "seed"]]
    for key in ("dataset", "family", "sweep", "strength_name", "task", "optimizer", "lr"):
        df[key] = info[key]
    df["metric_name"] = METRIC_NAME[info["task"]]
    df["status"] = np.where(diverged.numpy(), "diverged", "ok")
    df["diverged_epoch"] = pd.array([int(e) if e > 0 else None for e in info["diverged_epoch"]],
                                    dtype="Int64")
    stopped = info["stopped_epoch"]
    df["epochs_trained"] = [int(s) if s > 0 else (int(d) if d > 0 else last)
                            for s, d in zip(stopped, info["diverged_epoch"])]
    df["best_epoch"] = (row_of + 1).numpy()
    pick = lambda key: np.array([float(history[int(r)][key][m]) for m, r in enumerate(row_of)])  # noqa: E731
    for key in ("train_loss", "val_loss", "train_metric", "val_metric", "penalty", "weight_norm",
                "near_zero_fraction", "exact_zero_fraction", "alive_neurons", "removed_neurons"):
        df[key] = pick(key)
    for key in ("test_loss", "test_metric", *THRESHOLD_SENSITIVITY):
        df[key] = final[key].double().numpy()
    df["gap"] = df["val_loss"] - df["train_loss"]
    df["zero_threshold"] = info["zero_threshold"]
    df["total_neurons"] = info["total_neurons"]
    cols = ["member", "dataset", "family", "sweep", "strength_name", "strength", "seed", "status",
            "diverged_epoch", "epochs_trained", "best_epoch", "task", "metric_name", "optimizer", "lr",
            "train_loss", "val_loss", "test_loss", "train_metric", "val_metric", "test_metric",
            "gap", "penalty", "weight_norm", "near_zero_fraction", "zero_threshold",
            *THRESHOLD_SENSITIVITY, "exact_zero_fraction", "alive_neurons", "removed_neurons", "total_neurons"]
    assert len(df) == k
    return df[cols]


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """``df.to_csv(path, index=False, float_format=FLOAT_FORMAT)``, byte for byte.

    A job's curves and layers tables hold up to a million numbers, and pandas formats each
    through a Python call with a missing-value check (0.6 s for signal's). A table of
    numbers and booleans is written here instead: each float column formatted once per
    distinct value (its bits, so that -0.0 stays "-0"; NaN is empty, as pandas writes it),
    integers and booleans as ``str`` does. Anything else goes to pandas.
    """
    kinds = [df[c].dtype.kind if isinstance(df[c].dtype, np.dtype) else "O" for c in df.columns]
    if not df.columns.is_unique or not all(k in "iubf" for k in kinds) or \
            any(not isinstance(c, str) or any(ch in c for ch in ',"\r\n') for c in df.columns):
        df.to_csv(path, index=False, float_format=FLOAT_FORMAT)
        return
    columns = []
    for name, kind in zip(df.columns, kinds):
        values = df[name].to_numpy()
        if kind == "f":
            bits, inverse = np.unique(values.astype(np.float64).view(np.int64), return_inverse=True)
            text = np.array(["" if v != v else FLOAT_FORMAT % v for v in bits.view(np.float64).tolist()], dtype=object)
            columns.append(text[inverse.ravel()].tolist())
        else:
            columns.append([str(v) for v in values.tolist()])
    lines = [",".join(df.columns), *map(",".join, zip(*columns))] if len(df) else [",".join(df.columns)]
    Path(path).write_text("\n".join(lines) + "\n")


@contextlib.contextmanager
def writing(path: Path):
    """Write ``path`` in the block: an OSError there (a full disk) names the path, which a
    file's write, pandas and pyarrow leave out."""
    try:
        yield path
    except OSError as e:
        if e.filename is not None:
            raise
        raise OSError(e.errno, os.strerror(e.errno) if e.errno else str(e), str(path)) from e


def write_text(path: Path, text: str) -> None:
    """``path.write_text(text)``, a failure naming the path (:func:`writing`)."""
    with writing(path):
        path.write_text(text)


def save_torch(obj: Any, path: Path) -> None:
    """``torch.save``, serialized in memory and then written: torch's own writer, given a
    path or a file that fills up, reports a full disk as ``enforce fail at
    inline_container.cc:672``, naming neither the disk nor the file."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with writing(path):
        path.write_bytes(buffer.getbuffer())


def could_not_write(e: OSError) -> str:
    """One line for a failed write: a full disk said as such, with the file. A job commits
    nothing that failed (:class:`ResultsWriter`)."""
    why = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded"}.get(e.errno)
    why = f"{why} ({e.strerror})" if why else e.strerror or str(e)
    return f"could not write {e.filename or 'a file'}: {why}; nothing of the job was committed"


RESULTS_DIGEST_TAG = "results_digest"


def results_digest(folder: Path) -> str:
    """A job's results by content: the first 16 hex digits of the SHA-256 of its
    members.csv. Each of its MLflow runs carries it (tag ``results_digest``), so the runs
    behind a results folder are found from the folder alone, also after DVC restored it
    from its cache (which keeps no run.json): ``python -m regstudy.runs <folder>``."""
    import hashlib

    return hashlib.sha256((Path(folder) / "members.csv").read_bytes()).hexdigest()[:16]


class ResultsWriter:
    """Writes a job's tables into a temporary folder, renamed into place only on success."""

    def __init__(self, target: Path):
        self.target = target
        self.tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        for old in target.parent.glob(f".{target.name}.tmp-*"):  # left by a killed job
            pid = old.name.rsplit("-", 1)[1]
            if old == self.tmp or not (pid.isdigit() and process_alive(int(pid))):
                shutil.rmtree(old, ignore_errors=True)
        self.tmp.mkdir(parents=True)

    def table(self, name: str, df: pd.DataFrame) -> None:
        with writing(self.tmp / name) as path:
            if name.endswith(".csv"):
                write_csv(df, path)
            else:
                df.to_parquet(path, index=False)

    def text(self, name: str, text: str) -> None:
        write_text(self.tmp / name, text)

    def json(self, name: str, obj: Any) -> None:
        self.text(name, json.dumps(obj, indent=2, sort_keys=True) + "\n")

    def digest(self) -> str:
        """The :func:`results_digest` of the tables written so far."""
        return results_digest(self.tmp)

    def commit(self) -> None:
        if self.target.exists():
            shutil.rmtree(self.target)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.tmp, self.target)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def best_strength(table: pd.DataFrame) -> tuple[float, float] | None:
    """The job's best strength and its mean validation metric over seeds (higher is better
    for every task: accuracy, R²), among members that did not diverge; None if all did."""
    ok = table[table["status"] == "ok"]
    if not len(ok):
        return None
    means = ok.groupby("strength")["val_metric"].mean()
    return float(means.idxmax()), float(means.max())
