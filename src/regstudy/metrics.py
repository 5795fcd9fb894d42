"""Losses, metrics and weight statistics, per member (every result has shape ``(K, ...)``)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from .reductions import column_extrema, kernel_counts
from .stacked import StackedMLP


def data_loss(out: Tensor, y: Tensor, task: str) -> Tensor:
    """Mean data loss ``L0`` per member: MSE (units of y^2) or cross-entropy (nats).

    ``out``: ``(K, B, d_out)``; ``y``: ``(K, B)`` or ``(B,)`` shared by all members.
    """
    y = y.expand(out.shape[:2])
    if task == "regression":
        return (out.squeeze(-1) - y).square().mean(1)
    k, b, c = out.shape
    return F.cross_entropy(out.reshape(k * b, c), y.reshape(k * b), reduction="none").view(k, b).mean(1)


def metric(out: Tensor, y: Tensor, task: str) -> Tensor:
    """R^2 ``= 1 - sum (y - f)^2 / sum (y - mean y)^2`` for regression, accuracy otherwise."""
    y = y.expand(out.shape[:2])
    if task == "regression":
        sse = (out.squeeze(-1) - y).square().sum(1)
        sst = (y - y.mean(1, keepdim=True)).square().sum(1)
        return 1 - sse / sst
    return (out.argmax(-1) == y).float().mean(1)


METRIC_NAME = {"regression": "r2", "classification": "accuracy"}


@torch.no_grad()
def weight_stats(net: StackedMLP, zero_threshold: float, lr: float) -> dict[str, Tensor]:
    """Kernel statistics per member and layer.

    ``layer_norm`` ``(K, L)``: Frobenius norm ``||W_l||``; ``weight_norm`` ``(K,)``:
    ``sqrt(sum_l ||W_l||^2)``; ``layer_near_zero`` / ``near_zero_fraction``: fraction
    of kernel entries with ``|w| < zero_threshold``; ``effective_lr`` ``(K, L)``:
    ``lr / ||W_l||^2`` for layers followed by normalization, NaN elsewhere;
    ``exact_zero_fraction`` ``(K,)``: fraction of kernel entries exactly 0.0;
    ``removed_neurons`` ``(K,)``: hidden units whose incoming kernel weights are all
    exactly 0.0 (a unit a proximal group lasso step removed).
    """
    norms = torch.stack([torch.linalg.vector_norm(w.flatten(1), dim=1) for w in net.kernels], 1)
    sizes = torch.tensor([w[0].numel() for w in net.kernels], dtype=torch.float32)
    small, exact, removed = zero_counts(net, zero_threshold)
    normalized = torch.tensor(net.normalized_layers())
    eff = torch.where(normalized, lr / norms.square(), torch.full_like(norms, float("nan")))
    return {"layer_norm": norms, "weight_norm": norms.square().sum(1).sqrt(),
            "layer_near_zero": small / sizes, "near_zero_fraction": small.sum(1) / sizes.sum(),
            "exact_zero_fraction": exact.sum(1) / sizes.sum(), "removed_neurons": removed,
            "effective_lr": eff}


def zero_counts(net: StackedMLP, zero_threshold: float) -> tuple[Tensor, Tensor, Tensor]:
    """Per member: kernel entries with ``|w| < zero_threshold`` and entries exactly 0.0,
    per layer (``(K, L)``, float: exact below 2^24), and hidden units whose incoming
    kernel weights (a column of the kernel) are all exactly 0.0 (``(K,)``, int64); one
    pass over each kernel."""
    counts = torch.stack([kernel_counts(w, zero_threshold) for w in net.kernels], 1)
    return counts[..., 0].float(), counts[..., 1].float(), counts[:, :-1, 2].sum(1)


@torch.no_grad()
def feature_norms(net: StackedMLP) -> Tensor:
    """``||W_1[j, :]||_2`` per member and input feature ``j``, ``(K, d_in)``: the size of
    everything feature ``j`` sends into the first hidden layer (0 = the feature is dropped)."""
    return torch.linalg.vector_norm(net.kernels[0], dim=2)


def alive_units(hidden: list[Tensor], threshold: float) -> Tensor:
    """Hidden units per layer whose output varies over the inputs, ``(K, L-1)``.

    A unit is alive if ``max - min`` of its output over the inputs exceeds ``threshold``:
    a pruned unit (all incoming weights zero), a dead ReLU and a collapsed layer all
    output a constant.
    """
    spans = [(hi - lo > threshold).sum(-1) for hi, lo in map(column_extrema, hidden)]
    return torch.stack(spans, 1)
