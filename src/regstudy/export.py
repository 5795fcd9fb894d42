"""The best member of a job as an ordinary PyTorch model on raw rows, for MLflow's registry.

A member of a stack becomes an ``nn.Sequential`` of PyTorch's own layers, so the logged
model loads with torch and MLflow alone, without regstudy. The member was trained on
standardized values (:func:`regstudy.data.splits.standardize`: its draw's training
statistics); the model takes rows in the data's own units and undoes that itself::

    x          (n, d_in) float32 rows in the data's own units (a CSV file's columns)
    Linear     z = (x - x_mean) / x_std      fixed, diagonal: the member's draw's statistics
    ...        the member's layers: Linear, LayerNorm/BatchNorm1d, activation (no dropout)
    Linear     y = y_mean + y_std * out      fixed; regression only
    ->         (n, d_out) float32: class scores (logits: the class is their argmax, its
               name the data file's ``class_names[argmax]``), or the regression target
               in its own units (d_out = 1)

Where nothing was standardized (signal, moons, sparse) the fixed layers are the identity;
digits' pixels are the counts 0..16 of scikit-learn's images (``x_std`` 16).

Its MLflow signature is in the same units. A data file that names its features
(diabetes, breast_cancer, a CSV file) gives a column per feature, named as in the file,
of type ``double`` (``long`` for a CSV column of whole numbers, which pandas reads as
integers): the pyfunc model takes a ``DataFrame`` of such rows, in any column order,
other columns (the target) ignored. Otherwise it takes a float32 array ``(n, d_in)``.

The job writes the model and its input example (:func:`write_best_model`) and its
tracking process logs them (:func:`read_best_model`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .data import seed_rows, standardization_of
from .results import best_strength, save_torch, write_text, writing
from .stacked import BN_MOMENTUM, NORM_EPS, StackedMLP

EXAMPLE_ROWS = 5  # test rows of the member's draw logged as the model's input example


def activation_module(name: str, negative_slope: float = 0.01) -> nn.Module:
    """PyTorch's module for the activation ``stacked.activation_fn(name)`` computes."""
    return {"identity": nn.Identity(), "relu": nn.ReLU(), "leaky_relu": nn.LeakyReLU(negative_slope),
            "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(), "gelu": nn.GELU(), "elu": nn.ELU()}[name]


@torch.no_grad()
def affine_layer(scale: np.ndarray, shift: np.ndarray) -> nn.Linear:
    """A fixed ``nn.Linear`` computing ``scale * v + shift`` per column (a diagonal weight;
    float32, no gradient)."""
    scale, shift = np.atleast_1d(scale), np.atleast_1d(shift)
    layer = nn.Linear(len(scale), len(scale))
    layer.weight.copy_(torch.diag(torch.from_numpy(scale.astype(np.float32))))
    layer.bias.copy_(torch.from_numpy(shift.astype(np.float32)))
    layer.requires_grad_(False)
    return layer


@torch.no_grad()
def member_model(net: StackedMLP, member: int, activation: str, negative_slope: float,
                 output_activation: str, standardization: dict[str, np.ndarray] | None = None) -> nn.Sequential:
    """Member ``member`` of ``net`` as an ``nn.Sequential`` in evaluation mode (dropout,
    applied only in training, has no layer).

    ``standardization`` (:func:`regstudy.data.standardization_of` of the member's draw)
    adds a first layer ``z = (x - x_mean) / x_std`` and, with ``y_mean`` and ``y_std``, a
    last layer ``y = y_mean + y_std * out``: the model then maps rows in the data's own
    units to targets in theirs. Without it the model maps the data file's values.
    """
    s = standardization or {}
    layers: list[nn.Module] = []
    if "x_mean" in s:
        # (x - mean) / std as x * (1 / std) + (-mean / std), the factors taken in float64
        layers.append(affine_layer(1.0 / s["x_std"], -s["x_mean"] / s["x_std"]))
    for i, (w, b) in enumerate(zip(net.kernels, net.biases)):
        linear = nn.Linear(*w.shape[1:])
        linear.weight.copy_(w[member].T)
        linear.bias.copy_(b[member])
        layers.append(linear)
        if i == net.n_layers - 1:
            layers.append(activation_module(output_activation, negative_slope))
            break
        if net.norm == "layer":
            norm = nn.LayerNorm(w.shape[2], eps=NORM_EPS)
        elif net.norm == "batch":
            norm = nn.BatchNorm1d(w.shape[2], eps=NORM_EPS, momentum=BN_MOMENTUM)
            norm.running_mean.copy_(getattr(net, f"running_mean_{i}")[member])
            norm.running_var.copy_(getattr(net, f"running_var_{i}")[member])
        if net.norm != "none":
            norm.weight.copy_(net.norm_weight[i][member])
            norm.bias.copy_(net.norm_bias[i][member])
            layers.append(norm)
        layers.append(activation_module(activation, negative_slope))
    if "y_mean" in s:
        layers.append(affine_layer(s["y_std"], s["y_mean"]))
    return nn.Sequential(*layers).eval()


def raw_rows(x: np.ndarray, standardization: dict[str, np.ndarray]) -> np.ndarray:
    """Rows of a data file back in the data's own units: ``x_mean + x_std * x`` (float64;
    ``x`` itself where the file records no standardization)."""
    x = np.asarray(x, dtype=np.float64)
    if "x_mean" not in standardization:
        return x
    return standardization["x_mean"] + standardization["x_std"] * x


def input_columns(arrays: dict[str, np.ndarray]) -> list[dict[str, str]] | None:
    """The model's input columns: ``{"name", "type"}`` per feature of a data file that
    names its features (type ``long`` for a CSV column of whole numbers, else
    ``double``); None for a file that does not name them (the input is then a tensor)."""
    if "feature_names" not in arrays:
        return None
    names = [str(n) for n in arrays["feature_names"]]
    integer = arrays.get("feature_integer", np.zeros(len(names), dtype=bool))
    return [{"name": n, "type": "long" if whole else "double"} for n, whole in zip(names, integer)]


def write_best_model(folder: Path, net: StackedMLP, member: int, model_cfg: Any,
                     arrays: dict[str, np.ndarray], seed: int) -> None:
    """Write member ``member`` (trained on draw ``seed`` of ``arrays``) as the model on
    raw rows (``model.pt``, a pickled ``nn.Sequential``), its input example (the draw's
    first test rows in the data's own units, float32 ``example.npy``) and, for a file that
    names its features, the input's columns (``columns.json``). ``model_cfg`` is the job's
    ``model`` config (``activation``, ``negative_slope``, ``output_activation``)."""
    standardization = standardization_of(arrays, seed)
    model = member_model(net, member, model_cfg.activation, model_cfg.negative_slope,
                         model_cfg.output_activation, standardization)
    save_torch(model, folder / "model.pt")
    (row,) = seed_rows(arrays, [seed], "the data file")
    example = raw_rows(arrays["x_test"][row, :EXAMPLE_ROWS], standardization).astype(np.float32)
    with writing(folder / "example.npy") as path:
        np.save(path, example)
    columns = input_columns(arrays)
    if columns is not None:
        write_text(folder / "columns.json", json.dumps(columns))


def read_best_model(folder: Path) -> tuple[nn.Module, np.ndarray | pd.DataFrame, Any]:
    """The model :func:`write_best_model` wrote, its input example and its MLflow
    signature: a ``DataFrame`` with the named columns where ``columns.json`` names them,
    else the float32 array."""
    from mlflow.models import infer_signature

    model = torch.load(folder / "model.pt", weights_only=False)
    rows = np.load(folder / "example.npy")
    example: np.ndarray | pd.DataFrame = rows
    if (folder / "columns.json").exists():
        columns = json.loads((folder / "columns.json").read_text())
        # float32 values written as their shortest decimals (2.7, not 2.700000047683716)
        example = pd.DataFrame({c["name"]: (np.rint(rows[:, j]).astype(np.int64) if c["type"] == "long"
                                            else np.array([float(str(v)) for v in rows[:, j]]))
                                for j, c in enumerate(columns)})
    with torch.no_grad():
        out = model(torch.from_numpy(rows)).numpy()
    return model, example, infer_signature(example, out)


def best_member(table: pd.DataFrame) -> int | None:
    """The member that represents the job's best strength: the strength with the highest
    mean validation metric over seeds (among members that did not diverge), at its
    first seed; None if every member diverged."""
    best = best_strength(table)
    if best is None:
        return None
    mine = table[(table.strength == best[0]) & (table.status == "ok")]
    return int(mine.sort_values("seed").iloc[0]["member"])
