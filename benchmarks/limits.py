"""The physical limit: floating-point work per training step against a measured matmul rate."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from benchmarks.throughput import REFERENCE
from regstudy.stages.train import dataset_sizes


def macs(d_in: int = 1, d_out: int = 1) -> int:
    """Multiply-adds of one example through the reference network's dense layers."""
    sizes = [d_in, *REFERENCE, d_out]
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def flops_per_step(batch: int = 32, d_in: int = 1, d_out: int = 1) -> int:
    """Multiply-adds of the dense layers of one training step, counted as 2 FLOPs each.

    Forward: ``2 B sum(in*out)``; backward: the same twice (gradients of inputs and of
    weights), so ``6 B sum(in*out)``. Elementwise work (activations, Adam) is left out:
    it is small and memory-bound, so this is the most optimistic limit.
    """
    return 6 * batch * macs(d_in, d_out)


def eval_flops_per_step(rows: int, steps_per_epoch: int, d_in: int = 1, d_out: int = 1) -> float:
    """FLOPs of the per-epoch evaluation a train job does, per training step: one forward
    pass (``2 rows sum(in*out)``) of the ``rows`` examples of the train and validation
    splits, once an epoch, shared by the epoch's ``steps_per_epoch`` steps."""
    return 2 * rows * macs(d_in, d_out) / steps_per_epoch


def study_flops(repo: Path) -> tuple[float, int]:
    """FLOPs of a finished study's layer products, training and per-epoch evaluation, and
    its member-epochs, from its result tables (a row of curves.csv per member and epoch
    computed) and data files: per member-epoch, ``3 n_train`` examples' worth of
    multiply-adds to train (the forward product and the backward pass's two) and
    ``n_train + n_val`` to evaluate, each 2 FLOPs. The final test-split evaluation and
    elementwise work are left out."""
    flops, member_epochs = 0.0, 0
    for curves in sorted(repo.glob("results/*/*/curves.csv")):
        n_train, n_val, d_in, d_out = dataset_sizes(repo / "data" / f"{curves.parent.name}.npz")
        rows = len(curves.read_text().splitlines()) - 1
        flops += rows * 2 * (3 * n_train + n_train + n_val) * macs(d_in, d_out)
        member_epochs += rows
    return flops, member_epochs


def matmul_rate(n: int = 512, seconds: float = 1.0) -> float:
    """FLOP/s of a dense ``n x n`` float32 matrix product on the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - start)


def batched_rate(k: int, batch: int = 32, width: int = 64, seconds: float = 1.0, product=torch.bmm) -> float:
    """FLOP/s of ``product`` (``torch.bmm``, or the study's :func:`regstudy.products.product`)
    at the sizes a stacked hidden layer really has."""
    a, b = torch.randn(k, batch, width), torch.randn(k, width, width)
    product(a, b)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        product(a, b)
        reps += 1
    return 2 * k * batch * width * width * reps / (time.perf_counter() - start)
