"""Stacked training against a ``torch.func`` ensemble, the method of PyTorch's
model-ensembling tutorial: ``stack_module_state`` + ``vmap(functional_call)`` + one Adam
over the stacked parameters.

Both train the same K reference networks (1 -> 64 -> 64 -> 64 -> 1, LeakyReLU) from the
same initial weights on the same minibatches (each member its own), with the study's
optimizer (``conf/optim/adam.yaml``: Adam, fused, one for all members) on both sides and the
MSE summed over members. Their products round differently (the stacked side's are
regstudy's fused multiply-adds in a fixed order, vmap's are MKL's), and Adam amplifies the
last bits step after step: the benchmark reports the largest loss difference over the
first ``EARLY_STEPS`` steps and over all of them, measured. The core of each is timed
(forward, backward, optimizer step), without Lightning or evaluation on either side.
"""

from __future__ import annotations

import copy
import functools
import time

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from benchmarks.throughput import reference_mlp
from regstudy.stacked import StackedMLP


def members(k: int, seed: int = 0) -> list[nn.Sequential]:
    torch.manual_seed(seed)
    return [reference_mlp(1) for _ in range(k)]


def stacked_from(models: list[nn.Sequential]) -> StackedMLP:
    """A StackedMLP whose member k is ``models[k]``."""
    linears = [[m for m in model if isinstance(m, nn.Linear)] for model in models]
    net = StackedMLP(len(models), 1, [64, 64, 64], 1)
    with torch.no_grad():
        for i, (w, b) in enumerate(zip(net.kernels, net.biases)):
            w.copy_(torch.stack([layers[i].weight.T for layers in linears]))
            b.copy_(torch.stack([layers[i].bias for layers in linears]))
    return net


def batches(k: int, steps: int, n: int = 200, batch: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` minibatches of each member: x ``(steps, K, batch, 1)``, y ``(steps, K, batch)``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g) * 2 - 1
    y = torch.sin(3 * x[:, 0]) + 0.1 * torch.randn(n, generator=g)
    idx = torch.randint(0, n, (steps, k, batch), generator=g)
    return x[idx], y[idx]


@functools.lru_cache(maxsize=1)
def _study_optimizer_factory():
    """``conf/optim/adam.yaml`` composed (Hydra) once: not inside the timed loops."""
    from hydra.utils import instantiate

    from regstudy.stages.train import compose_job

    return instantiate(compose_job([]).optim)


def study_optimizer(params) -> torch.optim.Optimizer:
    """The optimizer a train job builds from ``conf/optim/adam.yaml``, over ``params``."""
    return _study_optimizer_factory()(list(params))


def train_stacked(net: StackedMLP, xs, ys) -> torch.Tensor:
    """Per-member losses ``(steps, K)`` of stacked training."""
    opt = study_optimizer(net.parameters())
    losses = []
    for x, y in zip(xs, ys):
        loss = (net(x).squeeze(-1) - y).square().mean(1)
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
        losses.append(loss.detach())
    return torch.stack(losses)


def train_vmap(models: list[nn.Sequential], xs, ys) -> torch.Tensor:
    """Per-member losses ``(steps, K)`` of the torch.func ensemble."""
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def forward(p, b, x):
        return functional_call(base, (p, b), (x,))

    batched = vmap(forward)
    opt = study_optimizer(params.values())
    losses = []
    for x, y in zip(xs, ys):
        loss = (batched(params, buffers, x).squeeze(-1) - y).square().mean(1)
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
        losses.append(loss.detach())
    return torch.stack(losses)


EARLY_STEPS = 40  # steps of tests/test_benchmarks.py's check that both sides train the same members


def compare(k: int, steps: int = 300, repeats: int = 3) -> dict:
    """Model-steps/s of each (best of ``repeats``), the largest loss difference, and the
    largest over the first ``EARLY_STEPS`` steps."""
    xs, ys = batches(k, steps)
    best = {"stacked": 0.0, "vmap": 0.0}
    diff = early = 0.0
    _study_optimizer_factory()  # Hydra's compose, once, before any timing
    # Warm-up, untimed: each side's first steps pay one-time costs (the dispatcher's and
    # the allocator's first calls: the first K=32 run was 10x slower than the next).
    train_stacked(stacked_from(members(k)), xs[:5], ys[:5])
    train_vmap(members(k), xs[:5], ys[:5])
    for _ in range(repeats):
        # Each side's own set-up (stacking the members' parameters) is timed; making the
        # members is not, for either.
        for_stacked, for_vmap = members(k), members(k)
        start = time.perf_counter()
        a = train_stacked(stacked_from(for_stacked), xs, ys)
        best["stacked"] = max(best["stacked"], k * steps / (time.perf_counter() - start))
        start = time.perf_counter()
        b = train_vmap(for_vmap, xs, ys)
        best["vmap"] = max(best["vmap"], k * steps / (time.perf_counter() - start))
        diff = max(diff, float((a - b).abs().max()))
        early = max(early, float((a[:EARLY_STEPS] - b[:EARLY_STEPS]).abs().max()))
    return {"k": k, **best, "max_loss_diff": diff, "early_loss_diff": early}


if __name__ == "__main__":
    torch.set_num_threads(1)
    for k in (32, 128):
        print(compare(k))
