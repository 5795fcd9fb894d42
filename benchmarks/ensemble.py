"""Stacked training against a ``torch.func`` ensemble, the method of PyTorch's
model-ensembling tutorial: ``stack_module_state`` + ``vmap(functional_call)`` + one Adam
over the stacked parameters.

The ensemble is timed twice: as the tutorial writes it (``nn.Linear``, whose batched
products vmap hands to MKL), and with the study's products (:class:`StudyLinear`, whose
vmap rule is the stacked layer, :func:`regstudy.products.affine`). The second computes
what the stacked side computes, to the bit, so it isolates the method (one stacked
module against vmap over a functional call) from the kernels.

Every side trains the same K reference networks (1 -> 64 -> 64 -> 64 -> 1, LeakyReLU)
from the same initial weights on the same minibatches (each member its own), with the
study's optimizer (``conf/optim/adam.yaml`` as a job builds it, :mod:`regstudy.optimizers`:
fused Adam for all members, foreach for the output biases) and the MSE
summed over members. The tutorial's products round differently from the stacked side's
(regstudy's fused multiply-adds in a fixed order against MKL's), and Adam amplifies the
last bits step after step: the benchmark reports each vmap side's largest loss difference
from the stacked side over the first ``EARLY_STEPS`` steps and over all of them, measured.
The core of each is timed (forward, backward, optimizer step), without Lightning or
evaluation on any side.
"""

from __future__ import annotations

import copy
import functools
import time

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from benchmarks.throughput import reference_mlp
from regstudy.compute import ops_for
from regstudy.optimizers import member_optimizers
from regstudy.products import affine
from regstudy.stacked import StackedMLP


def members(k: int, seed: int = 0) -> list[nn.Sequential]:
    torch.manual_seed(seed)
    return [reference_mlp(1) for _ in range(k)]


class _MemberAffine(torch.autograd.Function):
    """``bias + x @ weight.T`` (``nn.Linear``'s layout) of one member, defined by its vmap
    rule: the members' batch is the stacked layer :func:`regstudy.products.affine`, whose
    own autograd then records the backward pass."""

    @staticmethod
    def forward(x, weight, bias):
        raise NotImplementedError("StudyLinear runs under torch.func.vmap only")

    @staticmethod
    def setup_context(ctx, inputs, output):
        raise NotImplementedError("StudyLinear runs under torch.func.vmap only")

    @staticmethod
    def vmap(info, in_dims, x, weight, bias):
        def members_first(t, dim):
            return t.movedim(dim, 0) if dim is not None else t.expand(info.batch_size, *t.shape)

        x, weight, bias = (t if t is None else members_first(t, d) for t, d in zip((x, weight, bias), in_dims))
        return affine(x, weight.transpose(1, 2), bias), 0


class StudyLinear(nn.Linear):
    """``nn.Linear`` computed, under ``vmap``, with the study's products."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _MemberAffine.apply(x, self.weight, self.bias)


def with_study_products(models: list[nn.Sequential]) -> list[nn.Sequential]:
    """The same models (same parameters) with every ``nn.Linear`` a :class:`StudyLinear`."""
    for model in models:
        for i, layer in enumerate(model):
            if type(layer) is nn.Linear:
                study = StudyLinear(layer.in_features, layer.out_features, bias=layer.bias is not None)
                study.load_state_dict(layer.state_dict())
                model[i] = study
    return models


def stacked_from(models: list[nn.Sequential], compute: str = "auto") -> StackedMLP:
    """A StackedMLP whose member k is ``models[k]``, on the compute path ``compute``."""
    linears = [[m for m in model if isinstance(m, nn.Linear)] for model in models]
    net = StackedMLP(len(models), 1, [64, 64, 64], 1, ops=ops_for(compute, "cpu"))
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


def study_optimizers(params) -> list[torch.optim.Optimizer]:
    """The optimizers a train job builds from ``conf/optim/adam.yaml``, over ``params``."""
    return member_optimizers(_study_optimizer_factory(), [{"params": list(params)}])


def _step(opts: list[torch.optim.Optimizer], loss: torch.Tensor) -> None:
    for opt in opts:
        opt.zero_grad()
    loss.backward()
    for opt in opts:
        opt.step()


def train_stacked(net: StackedMLP, xs, ys) -> torch.Tensor:
    """Per-member losses ``(steps, K)`` of stacked training."""
    opts = study_optimizers(net.parameters())
    losses = []
    for x, y in zip(xs, ys):
        loss = (net(x).squeeze(-1) - y).square().mean(1)
        _step(opts, loss.sum())
        losses.append(loss.detach())
    return torch.stack(losses)


def train_vmap(models: list[nn.Sequential], xs, ys) -> torch.Tensor:
    """Per-member losses ``(steps, K)`` of the torch.func ensemble."""
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def forward(p, b, x):
        return functional_call(base, (p, b), (x,))

    batched = vmap(forward)
    opts = study_optimizers(params.values())
    losses = []
    for x, y in zip(xs, ys):
        loss = (batched(params, buffers, x).squeeze(-1) - y).square().mean(1)
        _step(opts, loss.sum())
        losses.append(loss.detach())
    return torch.stack(losses)


EARLY_STEPS = 40  # steps of tests/integration/test_benchmarks.py's check that both sides train the same members


def compare(k: int, steps: int = 300, repeats: int = 3, compute: str = "auto") -> dict:
    """Model-steps/s of each side (best of ``repeats``): ``stacked`` (on the compute path
    ``compute``), ``vmap`` (the tutorial's ``nn.Linear``) and, on the exact path,
    ``vmap_study`` (:class:`StudyLinear`: the exact path's products, which the torch path
    leaves out); and each vmap side's largest loss difference from the stacked side's,
    over all steps (``diff``) and over the first ``EARLY_STEPS`` (``early``)."""
    xs, ys = batches(k, steps)
    sides = {"stacked": lambda ms: train_stacked(stacked_from(ms, compute), xs, ys),
             "vmap": lambda ms: train_vmap(ms, xs, ys),
             "vmap_study": lambda ms: train_vmap(with_study_products(ms), xs, ys)}
    if ops_for(compute, "cpu").name == "torch":
        del sides["vmap_study"]
    best = dict.fromkeys(sides, 0.0)
    diff, early = ({name: 0.0 for name in sides if name != "stacked"} for _ in range(2))
    _study_optimizer_factory()  # Hydra's compose, once, before any timing
    # Warm-up, untimed: each side's first steps pay one-time costs (the dispatcher's and
    # the allocator's first calls: the first K=32 run was 10x slower than the next).
    train_stacked(stacked_from(members(k), compute), xs[:5], ys[:5])
    train_vmap(members(k), xs[:5], ys[:5])
    if "vmap_study" in sides:
        train_vmap(with_study_products(members(k)), xs[:5], ys[:5])
    for _ in range(repeats):
        losses = {}
        for name, train in sides.items():
            # Each side's own set-up (stacking the members' parameters) is timed; making
            # the members is not, for any.
            models = members(k)
            start = time.perf_counter()
            losses[name] = train(models)
            best[name] = max(best[name], k * steps / (time.perf_counter() - start))
        for name in diff:
            gap = (losses["stacked"] - losses[name]).abs()
            diff[name] = max(diff[name], float(gap.max()))
            early[name] = max(early[name], float(gap[:EARLY_STEPS].max()))
    return {"k": k, **best, "diff": diff, "early": early}


if __name__ == "__main__":
    torch.set_num_threads(1)
    for k in (32, 128):
        print(compare(k))
