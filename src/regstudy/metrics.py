"""Losses, metrics and weight statistics, per member (every result has shape ``(K, ...)``)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from .compute import ops_for
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
    of kernel entries near zero relative to their layer (:func:`near_zero_counts`);
    ``effective_lr`` ``(K, L)``: ``lr / ||W_l||^2`` for layers followed by
    normalization, NaN elsewhere; ``exact_zero_fraction`` ``(K,)``: fraction of kernel
    entries exactly 0.0; ``removed_neurons`` ``(K,)``: hidden units whose incoming kernel
    weights are all exactly 0.0 (a unit a proximal group lasso step removed).
    """
    norms = torch.stack([torch.linalg.vector_norm(w.flatten(1), dim=1) for w in net.kernels], 1)
    sizes = kernel_sizes(net)
    small, exact, removed = zero_counts(net, zero_threshold)
    normalized = torch.tensor(net.normalized_layers(), device=norms.device)
    eff = torch.where(normalized, lr / norms.square(), torch.full_like(norms, float("nan")))
    return {"layer_norm": norms, "weight_norm": norms.square().sum(1).sqrt(),
            "layer_near_zero": small / sizes, "near_zero_fraction": small.sum(1) / sizes.sum(),
            "exact_zero_fraction": exact.sum(1) / sizes.sum(), "removed_neurons": removed,
            "effective_lr": eff}


def kernel_sizes(net: StackedMLP) -> Tensor:
    """Entries of one member's kernel of each layer, ``(L,)`` float."""
    return torch.tensor([w[0].numel() for w in net.kernels], dtype=torch.float32, device=net.kernels[0].device)


def near_zero_counts(w: Tensor, zero_threshold: float, ops=None) -> Tensor:
    """Per member of a stacked kernel ``w`` ``(K, fan_in, fan_out)``, the entries near zero
    relative to the member's kernel, ``(K,)`` int64: ``|w| / rms(W) < zero_threshold``
    with ``rms(W) = sqrt(mean w^2) = ||W|| / sqrt(fan_in * fan_out)``
    (:func:`regstudy.compute.kernel_rms`): in exact arithmetic, ``w == 0`` or
    ``|w| < zero_threshold * rms(W)``; in float32 as the compute path ``ops`` rounds it
    (``zero_counts`` of :mod:`regstudy.compute`).

    Scale-free: multiplying a kernel by a power of two (exact in floating point) leaves
    the count unchanged, so a layer that L2 merely shrinks is not counted as pruned. A
    kernel of zeros counts all its entries; one holding a NaN (a diverged member), none.
    """
    return (ops or ops_for()).zero_counts(w, zero_threshold)[:, 0]


def zero_counts(net: StackedMLP, zero_threshold: float) -> tuple[Tensor, Tensor, Tensor]:
    """Per member: kernel entries near zero (:func:`near_zero_counts`) and entries exactly
    0.0, per layer (``(K, L)``, float: exact below 2^24), and hidden units whose incoming
    kernel weights (a column of the kernel) are all exactly 0.0 (``(K,)``, int64). The
    exact zeros are the kernel's own (a quotient ``w / rms`` can underflow to 0)."""
    counts = torch.stack([net.ops.zero_counts(w, zero_threshold) for w in net.kernels], 1)
    return counts[..., 0].float(), counts[..., 1].float(), counts[:, :-1, 2].sum(1)


# members.csv's near-zero fraction at a tenth and at ten times metrics.zero_threshold, of
# the kept weights: whether a verdict on sparsity hangs on the threshold.
THRESHOLD_SENSITIVITY = {"near_zero_fraction_strict": 0.1, "near_zero_fraction_loose": 10.0}


@torch.no_grad()
def near_zero_sensitivity(net: StackedMLP, zero_threshold: float) -> dict[str, Tensor]:
    """``near_zero_fraction`` ``(K,)`` at each factor of :data:`THRESHOLD_SENSITIVITY`
    times ``zero_threshold``, keyed by its column name."""
    total = kernel_sizes(net).sum()
    return {name: sum(near_zero_counts(w, factor * zero_threshold, net.ops) for w in net.kernels).float() / total
            for name, factor in THRESHOLD_SENSITIVITY.items()}


@torch.no_grad()
def feature_norms(net: StackedMLP) -> Tensor:
    """``||W_1[j, :]||_2`` per member and input feature ``j``, ``(K, d_in)``: the size of
    everything feature ``j`` sends into the first hidden layer (0 = the feature is dropped)."""
    return torch.linalg.vector_norm(net.kernels[0], dim=2)


def alive_units(hidden: list[Tensor], threshold: float, ops=None) -> Tensor:
    """Hidden units per layer whose output varies over the inputs (:func:`alive_count` of
    each layer's ranges ``max - min`` over the rows of ``hidden``), ``(K, L-1)``; the
    extrema by the compute path ``ops`` (:mod:`regstudy.compute`)."""
    extrema = (ops or ops_for()).column_extrema
    return torch.stack([alive_count(hi - lo, threshold) for hi, lo in map(extrema, hidden)], 1)


def alive_count(span: Tensor, threshold: float) -> Tensor:
    """Alive units per member of one layer, ``(K,)``, from its units' output ranges
    ``span`` ``(K, units)``.

    A unit is alive if its range exceeds ``threshold`` times the largest range among the
    units of its layer (of that member): scale-free, so units that L2 merely shrinks stay
    alive. At ``threshold = 0`` a unit is alive unless its output is exactly constant: a
    pruned unit (all incoming weights zero), a dead ReLU, a collapsed layer. A NaN range
    is not alive.
    """
    # 0, not 0 x the largest: a diverged member's infinite range would make it NaN
    bound = threshold * span.amax(-1, keepdim=True) if threshold > 0 else 0.0
    return (span > bound).sum(-1)
