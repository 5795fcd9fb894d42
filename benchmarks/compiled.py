"""The stacked training step under ``torch.compile`` (inductor, CPU) against the same step
run eagerly, as a train job runs it: one lever of the speed issue against Python's
per-step overhead, measured.

Both sides train the ensemble benchmark's K reference networks (:mod:`benchmarks.ensemble`:
same initial weights, same minibatches, MSE summed over members) with the study's
optimizers, stepped eagerly on both sides. The compiled side compiles the forward pass and
the loss (AOTAutograd then compiles their backward pass), with the study's products as an
opaque custom operator (:func:`affine_op`, the same kernel, so the products' bits are the
study's): inductor cannot read a call into a C extension, and would otherwise break the
graph at every layer. What it may fuse and generate is the rest (activations, the loss,
their gradients).

Reported: the compile time of a new shape with an empty inductor cache (a first job) and
with a warm one (every later job, each a fresh process), the steady time of a step on
each side, and the largest difference of the per-member losses.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional as F

from benchmarks.ensemble import _step, batches, members, stacked_from, study_optimizers, train_stacked
from regstudy.products import _product
from regstudy.stacked import StackedMLP


@torch.library.custom_op("regstudy_bench::product", mutates_args=())
def product_op(left: Tensor, right: Tensor) -> Tensor:
    """``left[k] @ right[k]`` by the study's kernel, opaque to the compiler."""
    return _product(left, right, None)


@product_op.register_fake
def _(left: Tensor, right: Tensor) -> Tensor:
    return left.new_empty(left.shape[0], left.shape[1], right.shape[2])


@torch.library.custom_op("regstudy_bench::affine", mutates_args=())
def affine_op(x: Tensor, w: Tensor, bias: Tensor) -> Tensor:
    """``bias[k] + x[k] @ w[k]`` by the study's kernel (:func:`regstudy.products.affine`),
    opaque to the compiler; its gradients are the same kernel's, as the study's."""
    return _product(x, w, bias)


@affine_op.register_fake
def _(x: Tensor, w: Tensor, bias: Tensor) -> Tensor:
    return x.new_empty(x.shape[0], x.shape[1], w.shape[2])


def _save_inputs(ctx, inputs, output) -> None:
    x, w, _ = inputs
    ctx.save_for_backward(x, w)


def _affine_backward(ctx, grad: Tensor):
    x, w = ctx.saved_tensors
    return product_op(grad, w.transpose(1, 2)), product_op(x.transpose(1, 2), grad), grad.sum(1)


affine_op.register_autograd(_affine_backward, setup_context=_save_inputs)


def member_losses(net: StackedMLP, x: Tensor, y: Tensor) -> Tensor:
    """Per-member MSE ``(K,)`` of the reference network (LeakyReLU 0.01 between its
    layers), written with :func:`affine_op`: the stacked net's forward pass and loss."""
    h = x
    last = len(net.kernels) - 1
    for i, (w, b) in enumerate(zip(net.kernels, net.biases)):
        h = affine_op(h, w, b)
        if i < last:
            h = F.leaky_relu(h, 0.01)
    return (h.squeeze(-1) - y).square().mean(1)


def train_compiled(net: StackedMLP, xs, ys, loss_fn) -> Tensor:
    """Per-member losses ``(steps, K)``: ``loss_fn`` (compiled) forward and backward, the
    study's optimizers stepped eagerly."""
    opts = study_optimizers(net.parameters())
    losses = []
    for x, y in zip(xs, ys):
        loss = loss_fn(net, x, y)
        _step(opts, loss.sum())
        losses.append(loss.detach())
    return torch.stack(losses)


def first_step_seconds(k: int) -> float:
    """Seconds of the first compiled training step of ``k`` members in this process (the
    compile included; the inductor cache is ``$TORCHINDUCTOR_CACHE_DIR``)."""
    xs, ys = batches(k, 1)
    net = stacked_from(members(k))
    start = time.perf_counter()
    train_compiled(net, xs, ys, torch.compile(member_losses))
    return time.perf_counter() - start


def _first_step_in_new_process(k: int, cache: str) -> float:
    """:func:`first_step_seconds` in a fresh interpreter, as a new train job would pay it."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
    done = subprocess.run([sys.executable, "-m", "benchmarks.compiled", "--first-step", str(k)], env=env,
                          cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def compare(k: int, steps: int = 300, repeats: int = 3) -> dict:
    """Seconds of the first compiled step in a new process, with an empty and with a warm
    inductor cache (``compile_cold``, ``compile_warm``); ms per step of each side, best of
    ``repeats`` (``eager``, ``compiled``); the largest loss difference between them (``diff``)."""
    with tempfile.TemporaryDirectory() as cache:
        compile_cold = _first_step_in_new_process(k, cache)
        compile_warm = _first_step_in_new_process(k, cache)
        saved = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # nothing left behind in the default cache
        try:
            eager_ms, compiled_ms, diff = _steady_steps(k, steps, repeats)
        finally:
            torch._dynamo.reset()
            if saved is None:
                os.environ.pop("TORCHINDUCTOR_CACHE_DIR")
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = saved
    return {"k": k, "compile_cold": compile_cold, "compile_warm": compile_warm, "eager": eager_ms,
            "compiled": compiled_ms, "diff": diff}


def _steady_steps(k: int, steps: int, repeats: int) -> tuple[float, float, float]:
    """ms per step of the eager and the compiled side (best of ``repeats``, each side's
    first steps untimed) and the largest difference of their losses."""
    xs, ys = batches(k, steps)
    train_stacked(stacked_from(members(k)), xs[:5], ys[:5])
    compiled = torch.compile(member_losses)
    train_compiled(stacked_from(members(k)), xs[:1], ys[:1], compiled)
    eager_ms = compiled_ms = float("inf")
    diff = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        eager = train_stacked(stacked_from(members(k)), xs, ys)
        eager_ms = min(eager_ms, (time.perf_counter() - start) / steps * 1e3)
        start = time.perf_counter()
        fast = train_compiled(stacked_from(members(k)), xs, ys, compiled)
        compiled_ms = min(compiled_ms, (time.perf_counter() - start) / steps * 1e3)
        diff = max(diff, float((eager - fast).abs().max()))
    return eager_ms, compiled_ms, diff


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="torch.compile of the stacked step against eager")
    parser.add_argument("--first-step", type=int, metavar="K", help="print the first compiled step's seconds")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.first_step:
        print(first_step_seconds(args.first_step))
    else:
        for k in (32, 128):
            print(compare(k))
