"""The weight statistics' criteria are scale-free, and the initialization's perturbation knob.

Near zero (``metrics.near_zero_counts``) is relative to the rms of the entry's own layer,
alive (``metrics.alive_count``) to the largest output range of the unit's layer: a network
that is merely shrunk, as L2 shrinks it, keeps its counts, while a unit whose incoming
weights are exactly 0 (a proximal group-lasso step) is not alive. Real networks of
``regstudy.stacked`` and their real activations.
"""

from __future__ import annotations

import math

import pytest
import torch

from conftest import needs_exact
from regstudy.compute import PATHS
from regstudy.config import validate
from regstudy.data import load_npz
from regstudy.job import build_module, load_tensors, member_grid
from regstudy.metrics import alive_units, near_zero_counts, near_zero_sensitivity, weight_stats
from regstudy.randomness import Stream, member_generator
from regstudy.stacked import StackedMLP
from regstudy.stages.train import compose_job


def reference_net(hidden=(64, 64, 64), bias: str = "same", k: int = 3) -> StackedMLP:
    """The study's network (LeakyReLU, uniform(-0.1, 0.1)) on 2 inputs, 1 output."""
    net = StackedMLP(k, 2, list(hidden), 1)
    net.reset_parameters([member_generator(s, Stream.INIT) for s in range(k)], "uniform", 0.1, bias)
    return net


def inputs(k: int = 3, n: int = 50) -> torch.Tensor:
    return torch.randn(k, n, 2, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def scale_(net: StackedMLP, factor: float) -> None:
    for p in [*net.kernels, *net.biases]:
        p.mul_(factor)


# --- near zero: below a fraction of the layer's rms ---


@pytest.mark.parametrize("path", ["torch", pytest.param("exact", marks=needs_exact)])
def test_near_zero_counts_entries_below_a_fraction_of_their_kernels_rms_by_hand(path):
    """On each compute path. Member 0: rms = sqrt((0.5² + 0.5² + 1e-2² + 3e-3² + 2e-3²) / 6) = 0.2887, so at 1e-2
    the bound is 2.887e-3: 0 and 2e-3 are near zero, 3e-3 is not; at 5e-2 (bound 1.44e-2)
    -1e-2 and 3e-3 join them. Member 1, all zeros: all 6 (its rms is 0). Member 2 is
    member 0 times 2**-13: the same counts."""
    m0 = [[0.0, 3e-3, -1e-2], [0.5, -0.5, 2e-3]]
    w = torch.tensor([m0, [[0.0] * 3] * 2, m0])
    w[2] *= 2.0**-13
    ops = PATHS[path]
    assert near_zero_counts(w, 1e-2, ops).tolist() == [2, 6, 2]
    assert near_zero_counts(w, 5e-2, ops).tolist() == [4, 6, 4]
    for threshold in (1e-2, 5e-2, 1.0):  # the definition, in double precision
        for k in range(3):
            entries = w[k].flatten().tolist()
            rms = math.sqrt(sum(v * v for v in entries) / len(entries))
            expected = sum(v == 0.0 or abs(v) < threshold * rms for v in entries)
            assert near_zero_counts(w, threshold, ops)[k].item() == expected, (threshold, k)
    assert near_zero_counts(w, 1e-2, ops).dtype == torch.int64  # counts, exact


def test_near_zero_fraction_is_unchanged_when_every_weight_is_scaled_by_a_power_of_two():
    """2**-13 is exact in floating point: every layer's rms scales by it too, and every
    count stays, per layer and in total, at the default threshold and at a tenth and ten
    times it (members.csv's strict and loose columns). An absolute bound of 1e-3 would
    count every entry after it (|w| <= 0.1 x 2**-13 = 1.2e-5)."""
    net = reference_net()
    before = weight_stats(net, 1e-2, lr=0.1)
    sens_before = near_zero_sensitivity(net, 1e-2)
    scale_(net, 2.0**-13)
    after = weight_stats(net, 1e-2, lr=0.1)
    assert before["layer_near_zero"].sum() > 0  # not vacuous: some entries are near zero
    assert torch.equal(before["layer_near_zero"], after["layer_near_zero"])
    assert torch.equal(before["near_zero_fraction"], after["near_zero_fraction"])
    for name, value in near_zero_sensitivity(net, 1e-2).items():
        assert torch.equal(value, sens_before[name]), name
    strict, loose = sens_before["near_zero_fraction_strict"], sens_before["near_zero_fraction_loose"]
    assert (strict <= before["near_zero_fraction"]).all() and (before["near_zero_fraction"] <= loose).all()
    assert (loose > strict).all()
    assert all((w.abs() < 1e-3).all() for w in net.kernels)


# --- alive: a range above a fraction of the layer's largest ---


def hidden_before_and_after_shrinking(hidden, bias, factor=1e-4):
    """The hidden layers' outputs on :func:`inputs` of a reference network, before and after
    every weight and bias is multiplied by ``factor``."""
    net, x = reference_net(hidden, bias), inputs()
    with torch.no_grad():
        _, h = net(x, return_hidden=True)
        scale_(net, factor)
        _, h_small = net(x, return_hidden=True)
    return h, h_small


@pytest.mark.parametrize("bias, hidden", [("zeros", (64, 64, 64)), ("same", (16, 16))])
def test_shrinking_every_weight_and_bias_by_1e_4_removes_no_unit(bias, hidden):
    """A random initialization has every unit alive, and so has the same network with every
    weight and bias times 1e-4, although the last layer's ranges then fall below 1e-6 (the
    old absolute bound). With biases, three layers so shrunk leave the last one's
    variation (1e-12 of the input's) below the float32 spacing of its bias (~1e-12 at
    1e-5): its output is then truly constant in float32, so the biased case has two."""
    h, h_small = hidden_before_and_after_shrinking(hidden, bias)
    alive = alive_units(h, 0.0)
    assert alive.tolist() == [list(hidden)] * 3
    assert torch.equal(alive_units(h_small, 0.0), alive)
    assert (h_small[-1].amax(1) - h_small[-1].amin(1)).max() < 1e-6  # not vacuous


@pytest.mark.parametrize("threshold", [1e-3, 0.1])
def test_without_biases_shrinking_every_weight_keeps_the_alive_units_at_any_threshold(threshold):
    """Positively homogeneous: each layer's ranges scale alike, so do its bounds."""
    h, h_small = hidden_before_and_after_shrinking((64, 64, 64), "zeros")
    assert torch.equal(alive_units(h_small, threshold), alive_units(h, threshold))


def test_a_unit_whose_incoming_weights_are_all_exactly_zero_is_not_alive():
    """Member 0's unit 5 of the second hidden layer: its output is its bias's activation
    for every input, a constant; every other unit stays alive, and weight_stats counts it
    as removed."""
    net = reference_net()
    with torch.no_grad():
        net.kernels[1][0, :, 5] = 0.0
        _, h = net(inputs(), return_hidden=True)
    assert alive_units(h, 0.0).tolist() == [[64, 63, 64], [64, 64, 64], [64, 64, 64]]
    assert weight_stats(net, 1e-2, lr=0.1)["removed_neurons"].tolist() == [1, 0, 0]


# --- model.init.perturb_ulps ---


def study_module(signal_npz: str, *overrides: str):
    cfg = compose_job([f"data.path={signal_npz}", "experiment=l2", "members.strengths=[0.0,0.1]",
                       "members.seeds=[0,1]", "model.hidden=[8,8]", *overrides])
    validate(cfg)
    members = member_grid(cfg)
    return build_module(cfg, load_tensors(load_npz(cfg.data.path), [m["seed"] for m in members]), members).net


@pytest.mark.parametrize("ulps", [1, 3])
def test_perturb_ulps_moves_every_initial_parameter_that_many_ulps_up(signal_npz, ulps):
    """Every kernel and bias entry of every member is torch.nextafter towards +inf of the
    unperturbed one, ``ulps`` times; with 0 the bits are the draw's own."""
    plain, moved = study_module(signal_npz), study_module(signal_npz, f"model.init.perturb_ulps={ulps}")
    drawn = StackedMLP(plain.n_members, 1, [8, 8], 1)
    drawn.reset_parameters([member_generator(s, Stream.INIT) for s in (0, 1, 0, 1)], "uniform", 0.1, "same")
    up = torch.tensor(math.inf)
    for name, p in plain.named_parameters():
        assert torch.equal(p, dict(drawn.named_parameters())[name]), name  # 0: the bits of the draw
        expected = p.detach()
        for _ in range(ulps):
            expected = torch.nextafter(expected, up)
        got = dict(moved.named_parameters())[name].detach()
        assert torch.equal(got, expected), name
        assert (got > p).all(), name


def test_perturb_ulps_leaves_the_biases_before_batch_norm_at_zero(signal_npz):
    """Those biases are fixed at 0 (batch norm removes them; they would only carry noise):
    the knob moves the kernels and the output bias, not them."""
    plain, moved = (study_module(signal_npz, "model.norm=batch", *extra) for extra in ([], ["model.init.perturb_ulps=1"]))
    assert all((b == 0).all() for b in moved.biases[:-1])
    for w0, w1 in zip([*plain.kernels, plain.biases[-1]], [*moved.kernels, moved.biases[-1]]):
        assert torch.equal(w1, torch.nextafter(w0, torch.tensor(math.inf)))
