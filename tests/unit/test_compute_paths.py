"""The two compute paths (regstudy.compute): torch's own operations and the exact C kernels.

The torch path runs anywhere torch does (any CPU, CUDA, MPS); the exact path where its C
kernels are built (x86 with AVX2 and FMA). They compute the same formulas in another
order, so they agree to rounding: the operations to float32's precision, a job of a few
epochs to the tolerance stated below, never to the bit.
"""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from conftest import needs_exact, needs_gpu
from regstudy.compute import ExactOps, TorchOps, ops_for, resolve_accelerator
from regstudy.config import validate
from regstudy.data import load_npz
from regstudy.errors import ConfigError
from regstudy.job import build_module, load_tensors, member_grid
from regstudy.kernels import exact_unavailable, resolve_compute
from regstudy.metrics import alive_units, zero_counts
from regstudy.stages.train import compose_job

# A job of 10 epochs on each path: losses and metrics agree to this (relative to 1 + |value|).
JOB_TOLERANCE = 1e-4
GPU_TOLERANCE = 1e-3  # benchmarks/gpu.py's LOSS_RTOL


def test_the_torch_path_needs_no_extension_and_runs_on_any_device_type():
    assert resolve_compute("torch", "cpu") == resolve_compute("torch", "cuda") == "torch"
    assert resolve_compute("auto", "cuda") == resolve_compute("auto", "mps") == "torch"
    assert resolve_compute("auto", "cpu") == ("torch" if exact_unavailable() else "exact")


def test_exact_where_it_cannot_run_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"compute='exact'.*torch or auto on a cuda device"):
        resolve_compute("exact", "cuda")
    with pytest.raises(ConfigError, match=r"compute='fast'.*one of \('auto', 'torch', 'exact'\)"):
        resolve_compute("fast", "cpu")


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="a GPU is here")
def test_asking_for_a_gpu_where_there_is_none_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"trainer.accelerator='gpu'.*no CUDA or MPS device"):
        resolve_accelerator("gpu")
    assert resolve_accelerator("auto") == resolve_accelerator("cpu") == "cpu"


@needs_exact
@pytest.mark.parametrize("slope", [None, 0.01])
def test_the_paths_products_and_gradients_agree_to_float32_rounding(slope):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 32, 24, generator=g, requires_grad=True)
    w = torch.randn(5, 24, 16, generator=g, requires_grad=True)
    b = torch.randn(5, 16, generator=g, requires_grad=True)
    outs, grads = [], []
    for ops in (TorchOps, ExactOps):
        out = ops.affine(x, w, b, slope)
        (gx, gw, gb) = torch.autograd.grad(out.square().sum(), (x, w, b))
        outs.append(out)
        grads.append((gx, gw, gb))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    for a, e in zip(*grads):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)


@needs_exact
def test_the_paths_statistics_are_the_same_numbers():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(4, 50, 12, generator=g)
    h[1, :, 3] = 0.5  # a constant unit: not alive
    for a, e in zip(TorchOps.column_extrema(h), ExactOps.column_extrema(h)):
        assert torch.equal(a, e)  # comparisons round nothing
    w = torch.randn(4, 12, 6, generator=g)
    w[2, :, 1] = 0.0  # a removed unit
    w[0, 3, 2] = 0.0
    w[3, :, 4] = 0.0
    w[3, 0, 4] = float("nan")  # a diverged entry: not near zero, not zero, its column not removed
    assert torch.equal(TorchOps.kernel_counts(w, 0.3), ExactOps.kernel_counts(w, 0.3))
    assert torch.equal(TorchOps.zero_counts(w, 0.3), ExactOps.zero_counts(w, 0.3))
    assert torch.equal(TorchOps.zero_counts(w, 0.3)[:, 1:], TorchOps.kernel_counts(w, 0.3)[:, 1:])
    assert TorchOps.kernel_counts(w, 0.0)[:, 1:].tolist() == [[1, 0], [0, 0], [12, 1], [11, 0]]
    dense = torch.randn(4, 12, 6, generator=g)  # no entry 0 in any member: the zeros' pass is skipped
    assert torch.equal(TorchOps.zero_counts(dense, 0.3), ExactOps.zero_counts(dense, 0.3))
    assert TorchOps.zero_counts(dense, 0.3)[:, 1:].tolist() == [[0, 0]] * 4
    assert torch.equal(alive_units([h], 0.0, TorchOps), alive_units([h], 0.0, ExactOps))


def train(signal_npz: str, compute: str, extra: list[str], accelerator: str = "cpu"):
    cfg = compose_job(["data=signal", f"data.path={signal_npz}", "trainer.max_epochs=10", f"compute={compute}",
                       "members.seeds=[0,1]", f"trainer.accelerator={accelerator}", *extra])
    validate(cfg)
    members = member_grid(cfg)
    module = build_module(cfg, load_tensors(load_npz(cfg.data.path), [m["seed"] for m in members]), members)
    assert module.net.ops is {"torch": TorchOps, "exact": ExactOps}[compute]
    instantiate(cfg.trainer).fit(module)
    module.to_cpu()
    return module


@needs_exact
@pytest.mark.parametrize("extra", [
    ["regularizer=[l2]", "members.sweep=l2", "members.strengths=[0.0,1e-3]"],
    ["regularizer=[dropout,l1]", "regularizer.l1.proximal=true", "members.sweep=dropout", "members.strengths=[0.1,0.3]", "model.norm=batch"],
], ids=["l2", "dropout-l1_prox-batchnorm"])
def test_a_job_of_10_epochs_agrees_on_both_paths(signal_npz, extra):
    torch_job, exact_job = train(signal_npz, "torch", extra), train(signal_npz, "exact", extra)
    assert len(torch_job.history) == len(exact_job.history) == 10
    for epoch, (a, e) in enumerate(zip(torch_job.history, exact_job.history), 1):
        for key in ("train_loss", "val_loss", "train_metric", "val_metric", "penalty", "weight_norm"):
            torch.testing.assert_close(a[key], e[key], rtol=JOB_TOLERANCE, atol=JOB_TOLERANCE,
                                       msg=f"epoch {epoch}: {key}")
        assert torch.equal(a["alive_neurons"], e["alive_neurons"]), f"epoch {epoch}"
    assert not torch.equal(torch_job.history[-1]["train_loss"], torch_job.history[0]["train_loss"])  # it trained


@needs_gpu
def test_a_job_of_10_epochs_on_the_gpu_agrees_with_the_cpus_torch_path(signal_npz):
    """The members, their data and the per-epoch evaluation on the device (TF32 off), to
    benchmarks/gpu.py's tolerance: cuBLAS and cuDNN round otherwise than the CPU's kernels."""
    torch.backends.cuda.matmul.allow_tf32 = False
    extra = ["regularizer=[dropout,l2]", "members.sweep=l2", "members.strengths=[0.0,1e-3]", "model.norm=batch"]
    gpu_job, cpu_job = train(signal_npz, "torch", extra, "gpu"), train(signal_npz, "torch", extra)
    assert len(gpu_job.history) == len(cpu_job.history) == 10
    for epoch, (a, e) in enumerate(zip(gpu_job.history, cpu_job.history), 1):
        for key in ("train_loss", "val_loss", "train_metric", "val_metric", "penalty", "weight_norm"):
            torch.testing.assert_close(a[key], e[key], rtol=GPU_TOLERANCE, atol=GPU_TOLERANCE,
                                       msg=f"epoch {epoch}: {key}")
    assert gpu_job.net.kernels[0].device.type == "cpu"  # back on the CPU for the tables


def test_a_stack_takes_its_path_from_the_ops_it_is_given():
    from regstudy.stacked import StackedMLP

    net = StackedMLP(2, 3, [4], 1, ops=TorchOps)
    assert net.ops is TorchOps and net.fused_slope == 0.01  # the leaky ReLU computed with the product
    assert ops_for("torch") is TorchOps
    counts = zero_counts(net, 0.1)
    assert [c.shape for c in counts] == [(2, 2), (2, 2), (2,)]
