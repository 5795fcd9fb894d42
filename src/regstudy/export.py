"""The best member of a job as an ordinary PyTorch model, for MLflow's model registry.

A member of a stack becomes an ``nn.Sequential`` of PyTorch's own layers (``Linear``,
``LayerNorm``/``BatchNorm1d``, the activation), so the logged model loads with torch
and MLflow alone, without regstudy. It maps ``(n, d_in)`` standardized features
(float32) to ``(n, d_out)`` outputs: class scores (logits; the class is their argmax) or
the regression target in the units of the data file (diabetes: standardized).
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from .results import best_strength
from .stacked import BN_MOMENTUM, NORM_EPS, StackedMLP


def activation_module(name: str, negative_slope: float = 0.01) -> nn.Module:
    """PyTorch's module for the activation ``stacked.activation_fn(name)`` computes."""
    return {"identity": nn.Identity(), "relu": nn.ReLU(), "leaky_relu": nn.LeakyReLU(negative_slope),
            "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(), "gelu": nn.GELU(), "elu": nn.ELU()}[name]


@torch.no_grad()
def member_model(net: StackedMLP, member: int, activation: str, negative_slope: float,
                 output_activation: str) -> nn.Sequential:
    """Member ``member`` of ``net`` as an ``nn.Sequential`` in evaluation mode (dropout,
    applied only in training, has no layer)."""
    layers: list[nn.Module] = []
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
    return nn.Sequential(*layers).eval()


def best_member(table: pd.DataFrame) -> int | None:
    """The member that represents the job's best strength: the strength with the highest
    mean validation metric over seeds (among members that did not diverge), at its
    first seed; None if every member diverged."""
    best = best_strength(table)
    if best is None:
        return None
    mine = table[(table.strength == best[0]) & (table.status == "ok")]
    return int(mine.sort_values("seed").iloc[0]["member"])
