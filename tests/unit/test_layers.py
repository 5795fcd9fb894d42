"""Inverted dropout and the normalization layers of ``regstudy.stacked``."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from regstudy.metrics import alive_units
from regstudy.randomness import Stream, member_generator
from regstudy.stacked import BN_MOMENTUM, NORM_EPS, StackedMLP, inverted_dropout

# --- inverted dropout ---

P = [0.0, 0.3, 0.7]


def test_inverted_dropout_keeps_the_expectation():
    """E[output] = h for every member's own p: sample mean within 4 standard errors."""
    n, units = 20_000, 10
    g = torch.Generator().manual_seed(0)
    h = 0.5 + torch.rand(len(P), 1, units, generator=g)  # a fixed positive value per unit
    h = h.expand(len(P), n, units)
    u = torch.rand(len(P), n, units, generator=g)
    out = inverted_dropout(h, u, torch.tensor(P))
    for k, p in enumerate(P):
        for j in range(units):
            c = h[k, 0, j].item()
            col = out[k, :, j].double()
            kept = col != 0
            # kept units are scaled by exactly 1/(1-p); the rate of keeping is 1-p
            assert torch.allclose(col[kept], torch.full_like(col[kept], c / (1 - p)), rtol=1e-6)
            se_keep = math.sqrt(p * (1 - p) / n)
            assert abs(kept.double().mean().item() - (1 - p)) <= 4 * se_keep + 1e-12
            # output is c/(1-p) w.p. 1-p, else 0: variance c^2 p/(1-p)
            se = c * math.sqrt(p / (1 - p) / n)
            assert abs(col.mean().item() - c) <= 4 * se + 1e-6, (p, j)


def test_inverted_dropout_edges():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(2, 50, 7, generator=g) * 3
    u = torch.rand(2, 50, 7, generator=g)
    out = inverted_dropout(h, u, torch.tensor([0.0, 1.0]))
    assert torch.equal(out[0], h[0])  # p = 0: the identity
    assert torch.isfinite(out).all()  # p = 1: no 1/0, no 0*inf = NaN
    assert torch.count_nonzero(out[1]) == 0
    # u = 0 exactly (a possible draw) is still kept at p = 0 and dropped at p = 1
    zero_u = inverted_dropout(h, torch.zeros_like(u), torch.tensor([0.0, 1.0]))
    assert torch.equal(zero_u[0], h[0]) and torch.count_nonzero(zero_u[1]) == 0


def test_inverted_dropout_has_the_bits_of_mask_then_scale():
    """``(h * keep) * scale`` with a bool mask, the formula as first written, gives the same
    bits forward and backward: signed zeros, infinities and NaN included, on a strided u."""
    g = torch.Generator().manual_seed(3)
    p = torch.tensor([0.0, 0.3, 0.7, 1.0])
    h = (torch.randn(4, 9, 6, generator=g) * 3).requires_grad_()
    with torch.no_grad():
        h[0, 0, :3] = torch.tensor([float("inf"), float("nan"), -0.0])
        h[2, 1, :2] = torch.tensor([-float("inf"), -2.0])
    u = torch.rand(4, 9, 20, generator=g)[..., 5:11]  # a slice, as each layer gets
    u[2, 1, :2] = 0.9  # those two kept... and these two dropped:
    u[1, 2, :2] = 0.1
    p3 = p.view(-1, 1, 1)
    scale = torch.where(p3 < 1, 1.0 / (1.0 - p3).clamp_min(1e-12), torch.zeros_like(p3))
    first = h * (u >= p3) * scale
    out = inverted_dropout(h, u, p)
    grad = torch.randn(4, 9, 6, generator=g)
    grad[3, 0, 0] = -1.0
    for a, b in [(first, out), *zip(torch.autograd.grad(first, h, grad), torch.autograd.grad(out, h, grad))]:
        assert torch.equal(a.isnan(), b.isnan())
        a, b = a.nan_to_num(), b.nan_to_num()  # (a NaN's sign is the CPU's)
        assert torch.equal(a, b) and torch.equal(a.signbit(), b.signbit())


def test_dropout_inside_the_net_uses_each_members_own_p():
    """In a StackedMLP, member k's hidden layers see dropout at its p only."""
    net = StackedMLP(3, 2, [6, 5], 1, activation="tanh")
    net.reset_parameters([member_generator(s, Stream.INIT) for s in range(3)], "uniform", 0.5, "same")
    x = torch.randn(4, 2).expand(3, 4, 2)
    u = torch.rand(3, 4, net.n_dropout_units, generator=torch.Generator().manual_seed(2))
    p = torch.tensor([0.0, 0.5, 1.0])
    out = net(x, u, p)
    plain = net(x)
    torch.testing.assert_close(out[0], plain[0], rtol=0, atol=0)  # p = 0 is no dropout
    # p = 1: the hidden layers carry nothing; the output is the output bias
    torch.testing.assert_close(out[2], net.biases[-1][2].expand(4, 1), rtol=0, atol=0)
    # p = 0.5 by hand: mask each hidden layer with its slice of u, scale by 2
    h = x[1]
    for i, width in enumerate([6, 5]):
        h = torch.tanh(h @ net.kernels[i][1] + net.biases[i][1])
        off = [0, 6][i]
        h = h * (u[1, :, off:off + width] >= 0.5) * 2.0
    torch.testing.assert_close(out[1], h @ net.kernels[2][1] + net.biases[2][1], rtol=1e-5, atol=1e-6)


# --- normalization ---


def scaled_first_layer(net: StackedMLP, alpha: float) -> StackedMLP:
    other = copy.deepcopy(net)
    with torch.no_grad():
        other.kernels[0].mul_(alpha)
        other.biases[0].mul_(alpha)
    return other


def norm_net(norm: str) -> tuple[StackedMLP, torch.Tensor]:
    # pre-activations of variance ~50: eps = 1e-5 stays negligible even after alpha = 0.1
    net = StackedMLP(2, 4, [6, 5], 2, norm=norm)
    net.reset_parameters([member_generator(s, Stream.INIT) for s in (0, 1)], "uniform", 2.0, "same")
    with torch.no_grad():  # non-trivial affine parameters of the norm layers
        for w, b in zip(*((net.norm_weight, net.norm_bias) if norm != "none" else ((), ()))):
            w.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(3))
            b.uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(4))
    x = 3 * torch.randn(2, 32, 4, generator=torch.Generator().manual_seed(5))
    return net, x


def assert_rel_close(a: torch.Tensor, b: torch.Tensor, rel: float):
    err = ((a - b).norm() / b.norm()).item()
    assert err <= rel, f"relative error {err:.3g} > {rel}"


@pytest.mark.parametrize("alpha", [0.1, 10.0])
@pytest.mark.parametrize("norm,mode", [("batch", "train"), ("layer", "train"), ("layer", "eval")])
def test_normalization_is_invariant_to_scaling_the_incoming_kernel(norm, mode, alpha):
    net, x = norm_net(norm)
    other = scaled_first_layer(net, alpha)
    net.train(mode == "train")
    other.train(mode == "train")
    assert_rel_close(other(x), net(x), 1e-4)


@pytest.mark.parametrize("alpha", [0.1, 10.0])
def test_without_normalization_scaling_changes_the_output(alpha):
    """The invariance is the norm layer's doing (the test above can fail)."""
    net, x = norm_net("none")
    out, scaled = net(x), scaled_first_layer(net, alpha)(x)
    assert ((out - scaled).norm() / out.norm()).item() > 0.1


def test_batch_norm_eval_with_running_stats_is_not_invariant():
    """In eval mode the running statistics were gathered at the old scale."""
    net, x = norm_net("batch")
    net.train()
    net(x)  # gather running stats once at scale 1
    other = scaled_first_layer(net, 10.0)
    net.eval()
    other.eval()
    assert ((other(x) - net(x)).norm() / net(x).norm()).item() > 0.1


def test_batch_norm_matches_torch_batchnorm1d():
    """K=1: output (train and eval mode) and running stats after a few steps, incl. a batch of 2."""
    torch.manual_seed(0)
    net = StackedMLP(1, 3, [5], 1, activation="identity", norm="batch")
    net.reset_parameters([member_generator(0, Stream.INIT)], "uniform", 1.0, "same")
    with torch.no_grad():
        net.norm_weight[0].uniform_(0.5, 1.5)
        net.norm_bias[0].uniform_(-0.5, 0.5)
    bn = torch.nn.BatchNorm1d(5, eps=NORM_EPS, momentum=BN_MOMENTUM)
    with torch.no_grad():
        bn.weight.copy_(net.norm_weight[0][0])
        bn.bias.copy_(net.norm_bias[0][0])
    w, b = net.kernels[0][0].detach(), net.biases[0][0].detach()
    for n in (16, 7, 2, 16):
        x = torch.randn(n, 3) * 2 + 1
        _, hidden = net(x[None], return_hidden=True)
        torch.testing.assert_close(hidden[0][0], bn(x @ w + b), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(net.running_mean_0[0], bn.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net.running_var_0[0], bn.running_var, rtol=1e-5, atol=1e-6)
    net.eval()
    bn.eval()
    x = torch.randn(9, 3)
    _, hidden = net(x[None], return_hidden=True)
    torch.testing.assert_close(hidden[0][0], bn(x @ w + b), rtol=1e-5, atol=1e-5)


def test_batch_norm_statistics_are_per_member():
    """Member 1's batch statistics and running stats do not depend on member 0's batch."""
    net = StackedMLP(2, 3, [5], 1, norm="batch")
    net.reset_parameters([member_generator(s, Stream.INIT) for s in (0, 1)], "uniform", 1.0, "same")
    other = copy.deepcopy(net)
    x = torch.randn(2, 8, 3)
    y = x.clone()
    y[0] = 100 * torch.randn(8, 3)  # member 0 sees something else entirely
    torch.testing.assert_close(net(x)[1], other(y)[1], rtol=0, atol=0)
    torch.testing.assert_close(net.running_mean_0[1], other.running_mean_0[1], rtol=0, atol=0)
    torch.testing.assert_close(net.running_var_0[1], other.running_var_0[1], rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_layer_norm_matches_torch_layernorm(mode):
    net = StackedMLP(2, 3, [6], 1, activation="identity", norm="layer")
    net.reset_parameters([member_generator(s, Stream.INIT) for s in (0, 1)], "uniform", 1.0, "same")
    with torch.no_grad():
        for t in (net.norm_weight[0], net.norm_bias[0]):
            t.uniform_(-1.0, 1.5, generator=torch.Generator().manual_seed(7))
    net.train(mode == "train")
    x = torch.randn(2, 10, 3) * 2
    _, hidden = net(x, return_hidden=True)
    for k in range(2):
        ln = torch.nn.LayerNorm(6, eps=NORM_EPS)
        with torch.no_grad():
            ln.weight.copy_(net.norm_weight[0][k])
            ln.bias.copy_(net.norm_bias[0][k])
        ref = ln(x[k] @ net.kernels[0][k].detach() + net.biases[0][k].detach())
        torch.testing.assert_close(hidden[0][k], ref, rtol=1e-5, atol=1e-5)


# --- alive units ---


def test_alive_units_counts_units_whose_output_varies_over_the_rows_of_a_strided_slice():
    """At threshold 0 a unit is alive unless max - min of its output over the inputs is 0.
    The evaluation passes slices h[:, :n_train] (strided); rows past n_train must not count."""
    h = torch.zeros(2, 6, 4)  # (K, rows, units); the first 4 rows are the training split
    h[0, :4, 0] = torch.tensor([0.0, 1.0, 2.0, 3.0])  # alive
    h[0, :4, 1] = 5.0  # constant: dead
    h[0, :4, 2] = torch.tensor([0.0, 0.0, 0.0, 1e-30])  # a tiny spread: alive
    h[0, 4:, 3] = 9.0  # varies only outside the slice: dead
    h[1, :4, :] = torch.arange(16.0).view(4, 4)  # every unit alive
    sliced = h[:, :4]
    assert not sliced.is_contiguous()
    counts = alive_units([sliced, h[:, :4, :2]], threshold=0.0)
    assert counts.tolist() == [[2, 1], [4, 2]]


def test_alive_threshold_is_a_fraction_of_the_largest_range_of_the_units_layer():
    """A unit is alive if its range exceeds threshold x the largest range among its layer's
    units, of its own member: ranges 4, 0.5, 0.3, 0 at 0.1 keep 4 and 0.5 (bound 0.4);
    the same ranges x 1e-8 keep the same units. At 0, an infinite range (a diverging
    member) leaves the others alive; a NaN range is not alive."""
    spans = torch.tensor([[4.0, 0.5, 0.3, 0.0], [4e-8, 5e-9, 3e-9, 0.0], [math.inf, 1.0, 0.0, math.nan]])
    h = torch.stack([torch.zeros_like(spans), spans], 1)  # (K, 2 rows, units): max - min = spans
    assert alive_units([h[:2]], threshold=0.1)[:, 0].tolist() == [2, 2]
    assert alive_units([h], threshold=0.0)[:, 0].tolist() == [3, 3, 2]


# --- evaluation without autograd: activations in place ---

ACTIVATIONS = ["identity", "relu", "leaky_relu", "tanh", "sigmoid", "gelu", "elu"]


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_a_forward_pass_without_autograd_gives_the_same_bits_and_leaves_its_inputs(activation, norm):
    """Under no_grad the activations write over their input (a new tensor each layer):
    output and hidden layers are bit-identical to the autograd pass, and neither the input
    nor any parameter or running statistic changes."""
    net = StackedMLP(3, 4, [16, 8], 2, activation=activation, output_activation="sigmoid", norm=norm)
    net.reset_parameters([member_generator(s, Stream.INIT) for s in range(3)], "uniform", 0.7, "same")
    x = torch.randn(3, 25, 4, generator=torch.Generator().manual_seed(3))
    x_before, state_before = x.clone(), copy.deepcopy(net.state_dict())
    net.eval()
    out, hidden = net(x, return_hidden=True)  # autograd on: the activations make new tensors
    with torch.no_grad():
        out_ng, hidden_ng = net(x, return_hidden=True)
    assert torch.equal(out_ng, out.detach())
    assert all(torch.equal(a, b.detach()) for a, b in zip(hidden_ng, hidden))
    assert torch.equal(x, x_before)
    assert all(torch.equal(t, state_before[name]) for name, t in net.state_dict().items())


def test_batch_norm_of_one_training_example_without_autograd_leaves_its_shift():
    """With one example in training mode, batch norm outputs its shift beta: the in-place
    activation that follows must not write into beta itself."""
    net = StackedMLP(2, 3, [5], 1, activation="relu", norm="batch")
    net.reset_parameters([member_generator(s, Stream.INIT) for s in range(2)], "uniform", 0.5, "same")
    with torch.no_grad():
        net.norm_bias[0].copy_(torch.linspace(-1, 1, 10).view(2, 5))
    beta = net.norm_bias[0].detach().clone()
    with torch.no_grad():
        _, hidden = net(torch.randn(2, 1, 3), return_hidden=True)
    assert torch.equal(net.norm_bias[0].detach(), beta)  # negative shifts kept, not set to 0
    assert torch.equal(hidden[0], beta.clamp_min(0).unsqueeze(1))
