"""The physical limit: floating-point work per training step against a measured matmul rate."""

from __future__ import annotations

import time

import torch

from benchmarks.throughput import REFERENCE


def flops_per_step(batch: int = 32, d_in: int = 1, d_out: int = 1) -> int:
    """Multiply-adds of the dense layers of one training step, counted as 2 FLOPs each.

    Forward: ``2 B sum(in*out)``; backward: the same twice (gradients of inputs and of
    weights), so ``6 B sum(in*out)``. Elementwise work (activations, Adam) is left out:
    it is small and memory-bound, so this is the most optimistic limit.
    """
    sizes = [d_in, *REFERENCE, d_out]
    return 6 * batch * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def eval_flops_per_step(rows: int, steps_per_epoch: int, d_in: int = 1, d_out: int = 1) -> float:
    """FLOPs of the per-epoch evaluation a train job does, per training step: one forward
    pass (``2 rows sum(in*out)``) of the ``rows`` examples of the train and validation
    splits, once an epoch, shared by the epoch's ``steps_per_epoch`` steps."""
    sizes = [d_in, *REFERENCE, d_out]
    return 2 * rows * sum(a * b for a, b in zip(sizes[:-1], sizes[1:])) / steps_per_epoch


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
