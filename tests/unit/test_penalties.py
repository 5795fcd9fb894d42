"""Every regularizer of ``regstudy.regularizers`` against hand computation.

The reference values are written out with plain Python loops over the entries of a small
stack of K=2 members (3 layers), each member with its own lam, and a non-trivial
``layer_scale``: ``coef[k, l] = lam_k * layer_scale[l]``.

:data:`HAND_COMPUTED` lists, per registered regularizer, the tests here that check it by
hand (``@hand_computed(name)``); ``tests/unit/test_registry.py`` fails for a regularizer without one.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from regstudy.randomness import Stream, member_generator
from regstudy.regularization import Regularization
from regstudy.stacked import StackedMLP
from regstudy.stages.train import compose_job

#: Registered regularizer -> the names of the tests below that check it against hand computation.
HAND_COMPUTED: dict[str, list[str]] = {}


def hand_computed(*names: str):
    """Mark a test as a hand computation of the regularizers ``names``."""
    def mark(test):
        for name in names:
            HAND_COMPUTED.setdefault(name, []).append(test.__name__)
        return test
    return mark


LAMS = [0.01, 0.03]  # per member (the swept strength)
SCALE = [0.5, 2.0, 3.0]  # per layer: hidden, hidden, output
REL = 1e-5  # float32 sums of ~60 terms against float64 loops


def make_net() -> StackedMLP:
    net = StackedMLP(2, 3, [4, 5], 2)
    net.reset_parameters([member_generator(s, Stream.INIT) for s in (0, 1)], "uniform", 0.5, "same")
    return net


def reg_for(family: str, lams=LAMS, **options) -> Regularization:
    """The real composed config of ``family``, with ``layer_scale`` and other options set."""
    overrides = [f"regularizer=[{family}]", f"regularizer.{family}.layer_scale={SCALE}"]
    overrides += [f"regularizer.{family}.{k}={str(v).lower() if isinstance(v, bool) else v}"
                  for k, v in options.items()]
    cfg = compose_job(overrides)
    return Regularization.build(cfg.regularizer, family, torch.tensor(lams), n_layers=3)


def entries(t: torch.Tensor, k: int) -> list[float]:
    """All entries of member ``k``'s slice as Python floats."""
    flat = []

    def walk(x):
        if isinstance(x, list):
            for y in x:
                walk(y)
        else:
            flat.append(float(x))

    walk(t[k].tolist())
    return flat


def selected(net: StackedMLP, l: int, k: int, bias: bool) -> list[float]:
    vals = entries(net.kernels[l].detach(), k)
    return vals + (entries(net.biases[l].detach(), k) if bias else [])


def hand_l1(net, k, bias=False, lams=LAMS):
    return sum(lams[k] * SCALE[l] * sum(abs(w) for w in selected(net, l, k, bias)) for l in range(3))


def hand_l2(net, k, bias=False, lams=LAMS):
    return sum(lams[k] * SCALE[l] * sum(w * w for w in selected(net, l, k, bias)) for l in range(3))


def hand_group_lasso(net, k, bias=False, lams=LAMS):
    total = 0.0
    for l in range(3):
        w = net.kernels[l].detach()[k].tolist()  # (fan_in, fan_out)
        b = net.biases[l].detach()[k].tolist()
        fan_in, fan_out = len(w), len(w[0])
        for j in range(fan_out):  # unit j: its incoming weights = column j
            group = [w[i][j] for i in range(fan_in)] + ([b[j]] if bias else [])
            total += lams[k] * SCALE[l] * math.sqrt(len(group)) * math.sqrt(sum(g * g for g in group))
    return total


def grads(net: StackedMLP, value: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(value.sum(), list(net.parameters()), allow_unused=True))


@hand_computed("l1", "l2", "group_lasso")
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("family,hand", [("l1", hand_l1), ("l2", hand_l2),
                                         ("group_lasso", hand_group_lasso)])
def test_penalty_matches_hand_computation(family, hand, bias):
    net = make_net()
    pen = reg_for(family, bias=bias).penalty(net)
    assert pen.shape == (2,)
    for k in range(2):
        assert pen[k].item() == pytest.approx(hand(net, k, bias), rel=REL)


def test_kernel_only_is_the_default_and_bias_true_adds_the_biases():
    net = make_net()
    default = reg_for("l2").penalty(net)
    with_bias = reg_for("l2", bias=True).penalty(net)
    for k in range(2):
        bias_part = sum(LAMS[k] * SCALE[l] * sum(b * b for b in entries(net.biases[l].detach(), k))
                        for l in range(3))
        assert bias_part > 1e-3  # the biases are not zero, so the selection is visible
        assert default[k].item() == pytest.approx(hand_l2(net, k, bias=False), rel=REL)
        assert (with_bias[k] - default[k]).item() == pytest.approx(bias_part, rel=1e-4)
    # the default penalty does not touch biases or normalization parameters at all
    g = dict(zip([n for n, _ in net.named_parameters()], grads(net, reg_for("l2").penalty(net))))
    touched = {name for name, gi in g.items() if gi is not None and torch.count_nonzero(gi) > 0}
    assert touched == {name for name in g if name.startswith("kernels")}


def test_kernel_false_bias_true_penalizes_only_biases():
    net = make_net()
    pen = reg_for("l1", kernel=False, bias=True).penalty(net)
    for k in range(2):
        expected = sum(LAMS[k] * SCALE[l] * sum(abs(b) for b in entries(net.biases[l].detach(), k))
                       for l in range(3))
        assert pen[k].item() == pytest.approx(expected, rel=REL)


def test_group_is_a_column_scaled_by_sqrt_of_its_size():
    """Zeroing one unit's incoming column removes exactly sqrt(fan_in)*coef*||column||."""
    net = make_net()
    reg = reg_for("group_lasso")
    before = reg.penalty(net)
    col = net.kernels[1].detach()[0, :, 2].clone()  # member 0, layer 1, unit 2: fan_in = 4
    with torch.no_grad():
        net.kernels[1][0, :, 2] = 0.0
    after = reg.penalty(net)
    expected_drop = LAMS[0] * SCALE[1] * math.sqrt(4) * math.sqrt(sum(c * c for c in col.tolist()))
    assert (before[0] - after[0]).item() == pytest.approx(expected_drop, rel=1e-4)
    assert after[1].item() == before[1].item()  # member 1 untouched
    # a row (the outgoing weights of an input) is not a group: the penalty is not a row norm
    rows = sum(LAMS[0] * SCALE[l] * math.sqrt(len(r)) * math.sqrt(sum(x * x for x in r))
               for l in range(3) for r in net.kernels[l].detach()[0].tolist())
    assert abs(after[0].item() - rows) > 1e-3


@hand_computed("elastic_net")
def test_elastic_net_matches_hand_computation():
    net = make_net()
    rho = 0.3
    pen = reg_for("elastic_net", rho=rho).penalty(net)
    for k in range(2):
        expected = rho * hand_l1(net, k) + (1 - rho) * hand_l2(net, k)
        assert pen[k].item() == pytest.approx(expected, rel=REL)


@pytest.mark.parametrize("rho,other", [(1.0, "l1"), (0.0, "l2")])
def test_elastic_net_edges_equal_l1_and_l2(rho, other):
    """rho=1 is exactly l1 and rho=0 exactly l2: value and gradient, to 1e-6."""
    net = make_net()
    en = reg_for("elastic_net", rho=rho).penalty(net)
    ref = reg_for(other).penalty(net)
    torch.testing.assert_close(en, ref, rtol=0, atol=1e-6)
    # a parameter the penalty does not reach has no gradient (None): a zero one
    dense = lambda g, p: torch.zeros_like(p) if g is None else g  # noqa: E731
    for p, ge, gr in zip(net.parameters(), grads(net, reg_for("elastic_net", rho=rho).penalty(net)),
                         grads(net, reg_for(other).penalty(net))):
        torch.testing.assert_close(dense(ge, p), dense(gr, p), rtol=0, atol=1e-6)


def test_l2_gradient_is_two_lam_w():
    net = make_net()
    g = grads(net, reg_for("l2").penalty(net))
    for l in range(3):
        w = net.kernels[l].detach()
        for k in range(2):
            torch.testing.assert_close(g[l][k], 2 * LAMS[k] * SCALE[l] * w[k], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("family", ["l1", "l2"])
def test_penalty_gradient_by_hand_is_autograds_bit_for_bit(family, bias):
    """The gradient add_penalty_grad_ adds after the data loss's backward pass equals the
    one autograd gives through the penalty: the same bits, with exact zeros among the
    weights (sgn 0), one member's penalty masked (weight 0) and a data-loss term."""
    reg = reg_for(family, bias=bias)
    assert reg.gradient_by_hand
    x = torch.randn(2, 7, 3, generator=torch.Generator().manual_seed(1))
    weight = torch.tensor([1.0, 0.0])  # member 1's loss not finite: no penalty gradient
    nets = []
    for by_hand in (False, True):
        net = make_net()
        with torch.no_grad():
            net.kernels[0][0, 0, :2] = 0.0
            net.kernels[0][0, 1, 0] = -0.0
        fit = net(x).square().mean((1, 2))
        if by_hand:
            fit.sum().backward()
            reg.add_penalty_grad_(net, weight)
        else:
            (fit + weight * reg.penalty(net)).sum().backward()
        nets.append(net)
    for a, b in zip(*(n.parameters() for n in nets)):
        assert torch.equal(a.grad, b.grad)
        assert torch.equal(a.grad.signbit(), b.grad.signbit())
    # and the penalty did add something to member 0
    plain = make_net()
    plain(x).square().mean((1, 2)).sum().backward()
    assert not torch.equal(plain.kernels[0].grad[0], nets[1].kernels[0].grad[0])
    assert torch.equal(plain.kernels[0].grad[1], nets[1].kernels[0].grad[1])


def test_penalty_gradient_by_hand_leaves_fixed_biases_without_gradient():
    """Batch norm fixes the biases before it (requires_grad False): autograd gives them no
    gradient from the penalty, and neither does the hand gradient."""
    reg = reg_for("l2", bias=True)
    x = torch.randn(2, 7, 3, generator=torch.Generator().manual_seed(2))
    nets = []
    for by_hand in (False, True):
        net = StackedMLP(2, 3, [4, 5], 2, norm="batch")
        net.reset_parameters([member_generator(s, Stream.INIT) for s in (0, 1)], "uniform", 0.5, "same")
        fit = net(x).square().mean((1, 2))
        if by_hand:
            fit.sum().backward()
            reg.add_penalty_grad_(net, torch.ones(2))
        else:
            (fit + reg.penalty(net)).sum().backward()
        nets.append(net)
    assert [b.grad is None for b in nets[1].biases] == [True, True, False]
    for a, b in zip(*(n.parameters() for n in nets)):
        assert (a.grad is None and b.grad is None) or torch.equal(a.grad, b.grad)


def test_only_a_lone_l1_or_l2_penalty_is_differentiated_by_hand():
    assert not reg_for("elastic_net").gradient_by_hand  # three gradient terms: autograd's order
    assert not reg_for("group_lasso").gradient_by_hand
    assert not reg_for("l1", proximal=True).gradient_by_hand  # not in the loss at all


def test_several_penalties_add_up():
    net = make_net()
    cfg = compose_job(["regularizer=[l1,l2]", "members.sweep=l1", "regularizer.l2.lam=0.02"])
    pen = Regularization.build(cfg.regularizer, "l1", torch.tensor(LAMS), 3).penalty(net)
    for k in range(2):
        l1 = LAMS[k] * sum(abs(w) for l in range(3) for w in selected(net, l, k, False))
        l2 = 0.02 * sum(w * w for l in range(3) for w in selected(net, l, k, False))
        assert pen[k].item() == pytest.approx(l1 + l2, rel=REL)


@hand_computed("l1")
def test_proximal_l1_soft_threshold_gives_exact_zeros():
    lams, lr = [0.1, 0.3], 0.5  # thresholds lr*lam*scale: 0.025 ... 0.45 against |w| <= 0.5
    net = make_net()
    before = copy.deepcopy(net)
    reg = reg_for("l1", lams=lams, proximal=True)
    assert torch.count_nonzero(reg.penalty(net)) == 0  # proximal l1 is not in the loss
    reg.after_step_(net, lr)
    n_zero = 0
    for l in range(3):
        for k in range(2):
            thr = lr * lams[k] * SCALE[l]
            w0 = entries(before.kernels[l].detach(), k)
            w1 = entries(net.kernels[l].detach(), k)
            for a, b in zip(w0, w1):
                expected = math.copysign(max(abs(a) - thr, 0.0), a) if a != 0 else 0.0
                assert b == pytest.approx(expected, abs=1e-7)
                assert b == 0.0 or abs(a) >= thr - 1e-6  # below the threshold: exact zero, not merely small
                n_zero += abs(a) < thr - 1e-6
        torch.testing.assert_close(net.biases[l], before.biases[l], rtol=0, atol=0)  # kernel only
    assert n_zero >= 10


@hand_computed("group_lasso")
def test_proximal_group_lasso_zeroes_whole_units():
    """g_j <- g_j * max(0, 1 - lr*coef*sqrt(|g|) / ||g_j||) for every unit column."""
    lams, lr = [0.1, 0.3], 0.5
    net = make_net()
    before = copy.deepcopy(net)
    reg_for("group_lasso", lams=lams, proximal=True).after_step_(net, lr)
    dead, alive = 0, 0
    for l in range(3):
        for k in range(2):
            w0 = before.kernels[l].detach()[k].tolist()
            w1 = net.kernels[l].detach()[k].tolist()
            fan_in, fan_out = len(w0), len(w0[0])
            for j in range(fan_out):
                col = [w0[i][j] for i in range(fan_in)]
                norm = math.sqrt(sum(c * c for c in col))
                factor = max(0.0, 1 - lr * lams[k] * SCALE[l] * math.sqrt(fan_in) / norm)
                assert factor > 0.0 or all(w1[i][j] == 0.0 for i in range(fan_in))  # a dead unit: exact zeros
                dead, alive = dead + (factor == 0.0), alive + (factor > 0.0)
                for i in range(fan_in):
                    assert w1[i][j] == pytest.approx(col[i] * factor, abs=1e-6)
    assert dead >= 3 and alive >= 3  # both cases occur


def test_group_lasso_kernel_false_is_not_silently_ignored():
    """kernel=false must either be rejected by validate or leave the kernels unpenalized."""
    from regstudy.config import ConfigError, validate

    cfg = compose_job(["experiment=group_lasso", "regularizer.group_lasso.kernel=false",
                       "regularizer.group_lasso.bias=true"])
    try:
        validate(cfg)
    except ConfigError as e:
        assert "regularizer.group_lasso.kernel" in str(e)
        return
    net = make_net()
    reg = Regularization.build(cfg.regularizer, "group_lasso", torch.tensor(LAMS), n_layers=3)
    g = grads(net, reg.penalty(net))
    for l in range(3):
        assert g[l] is None or torch.count_nonzero(g[l]) == 0, f"kernel {l} is penalized"


@hand_computed("elastic_net")
@pytest.mark.parametrize("rho", [0.3, 1.0, 0.0])
def test_proximal_elastic_net_matches_hand_computation(rho):
    """w <- sign(w) max(|w| - t*rho, 0) / (1 + 2*t*(1 - rho)), t = lr*coef: the minimizer of
    (v - w)^2 / 2 + t * (rho |v| + (1 - rho) v^2), checked entry by entry."""
    lams, lr = [0.1, 0.3], 0.5
    net = make_net()
    before = copy.deepcopy(net)
    reg = reg_for("elastic_net", lams=lams, proximal=True, rho=rho)
    assert torch.count_nonzero(reg.penalty(net)) == 0  # a proximal penalty is not in the loss
    reg.after_step_(net, lr)
    n_zero = 0
    for l in range(3):
        for k in range(2):
            t = lr * lams[k] * SCALE[l]
            for a, b in zip(entries(before.kernels[l].detach(), k), entries(net.kernels[l].detach(), k)):
                expected = math.copysign(max(abs(a) - t * rho, 0.0), a) / (1 + 2 * t * (1 - rho))
                # it is the minimizer: no v on a fine grid around it does better
                objective = lambda v: (v - a) ** 2 / 2 + t * (rho * abs(v) + (1 - rho) * v * v)  # noqa: E731
                assert objective(expected) <= min(objective(expected + d) for d in (-1e-3, 1e-3)) + 1e-12
                assert b == pytest.approx(expected, abs=1e-7)
                n_zero += b == 0.0
    assert (n_zero >= 10) == (rho > 0)  # exact zeros wherever |w| <= t*rho; none without an l1 part


def test_output_layer_false_leaves_the_output_kernel_unpenalized():
    lams = [0.01, 0.03]
    net = make_net()
    cfg = compose_job(["regularizer=[l2]", "regularizer.l2.output_layer=false"])
    reg = Regularization.build(cfg.regularizer, "l2", torch.tensor(lams), n_layers=3)
    for k in range(2):
        hand = sum(lams[k] * sum(w * w for w in selected(net, l, k, False)) for l in range(2))
        assert reg.penalty(net)[k].item() == pytest.approx(hand, rel=REL)
    g = grads(net, reg.penalty(net))
    assert g[2] is None or torch.count_nonzero(g[2]) == 0
    assert torch.count_nonzero(g[0]) > 0


# --- activity, max-norm and label smoothing ---


@hand_computed("activity")
def test_activity_penalty_is_the_hidden_outputs_norm_over_the_batch_size():
    """lam_k * scale_l * sum_{b,j} |h| / B (l1) or h^2 (l2), over the hidden layers only."""
    from regstudy.regularizers import activity_penalty

    net = make_net()
    x = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0))
    _, hidden = net(x, return_hidden=True)
    for norm, power in (("l1", abs), ("l2", lambda v: v * v)):
        cfg = compose_job(["regularizer=[activity]", f"regularizer.activity.norm={norm}",
                           "regularizer.activity.layer_scale=[0.5,2.0]"])
        reg = Regularization.build(cfg.regularizer, "activity", torch.tensor(LAMS), n_layers=3)
        got = reg.penalty(net, hidden)
        for k in range(2):
            hand = sum(LAMS[k] * scale * sum(power(v) for row in h[k].tolist() for v in row) / 5
                       for scale, h in zip((0.5, 2.0), hidden))
            assert got[k].item() == pytest.approx(hand, rel=REL)
        assert activity_penalty([h[:, :2] for h in hidden], reg.coefs["activity"], norm).shape == (2,)
    # divided by the batch size: the same examples twice give the same penalty
    doubled = [torch.cat([h, h], dim=1) for h in hidden]
    torch.testing.assert_close(reg.penalty(net, doubled), reg.penalty(net, hidden))


@hand_computed("label_smoothing")
def test_smoothed_cross_entropy_matches_torch_label_smoothing_member_by_member():
    from torch.nn import functional as F

    from regstudy.regularizers import smoothed_cross_entropy

    g = torch.Generator().manual_seed(1)
    logits, y = torch.randn(3, 7, 4, generator=g), torch.randint(0, 4, (3, 7), generator=g)
    eps = torch.tensor([0.0, 0.1, 0.5])
    got = smoothed_cross_entropy(logits, y, eps)
    for k in range(3):
        expected = F.cross_entropy(logits[k], y[k], label_smoothing=float(eps[k]))
        assert got[k].item() == pytest.approx(expected.item(), rel=1e-6)
        # by hand: - sum_c q_c log p_c with q = (1 - eps) one_hot + eps / C, averaged over the batch
        logp = logits[k].log_softmax(-1).tolist()
        hand = sum(-sum(((1 - eps[k].item()) * (c == y[k, b].item()) + eps[k].item() / 4) * logp[b][c]
                        for c in range(4)) for b in range(7)) / 7
        assert got[k].item() == pytest.approx(hand, rel=1e-5)


@hand_computed("max_norm")
def test_max_norm_rescales_only_the_units_above_c_to_norm_c():
    """w_j <- w_j * min(1, c / ||w_j||) for each hidden unit's incoming weights; the output
    layer is not touched; member k uses its own c."""
    net = make_net()
    before = copy.deepcopy(net)
    cs = [0.3, 10.0]
    cfg = compose_job(["regularizer=[max_norm]"])
    Regularization.build(cfg.regularizer, "max_norm", torch.tensor(cs), n_layers=3).after_step_(net, lr=0.1)
    clipped = 0
    for l in range(2):
        for k in range(2):
            w0, w1 = before.kernels[l].detach()[k].tolist(), net.kernels[l].detach()[k].tolist()
            for j in range(len(w0[0])):
                col = [row[j] for row in w0]
                norm = math.sqrt(sum(v * v for v in col))
                factor = min(1.0, cs[k] / norm)
                clipped += factor < 1
                for i, v in enumerate(col):
                    assert w1[i][j] == pytest.approx(v * factor, abs=1e-7)
    assert clipped >= 3
    torch.testing.assert_close(net.kernels[2], before.kernels[2], rtol=0, atol=0)


# --- weight decay, dropout, input noise and early stopping ---


@hand_computed("weight_decay")
def test_weight_decay_scales_the_pre_step_kernels_by_one_minus_lr_coef():
    """w <- w * (1 - lr * lam_k * scale_l) on the kernels before the step; biases untouched."""
    lr = 0.5
    net = make_net()
    before = copy.deepcopy(net)
    reg = reg_for("weight_decay")
    assert torch.count_nonzero(reg.penalty(net)) == 0  # not in the loss
    reg.after_step_(net, lr)  # nothing of weight decay acts after the step
    torch.testing.assert_close(net.kernels[0], before.kernels[0], rtol=0, atol=0)
    reg.before_step_(net, lr)
    for l in range(3):
        for k in range(2):
            factor = 1 - lr * LAMS[k] * SCALE[l]
            for a, b in zip(entries(before.kernels[l].detach(), k), entries(net.kernels[l].detach(), k)):
                assert b == pytest.approx(a * factor, abs=1e-7)
        torch.testing.assert_close(net.biases[l], before.biases[l], rtol=0, atol=0)


@hand_computed("dropout")
def test_dropout_keeps_a_unit_where_its_draw_is_at_least_p_and_scales_it_by_one_over_one_minus_p():
    """Each member's p from the sweep: h_j / (1 - p_k) where u_j >= p_k, else 0; p = 1 drops all."""
    from regstudy.stacked import inverted_dropout

    cfg = compose_job(["regularizer=[dropout]"])
    ps = [0.25, 1.0]
    reg = Regularization.build(cfg.regularizer, "dropout", torch.tensor(ps), n_layers=3)
    g = torch.Generator().manual_seed(3)
    h, u = torch.randn(2, 6, 5, generator=g), torch.rand(2, 6, 5, generator=g)
    out = inverted_dropout(h, u, reg.dropout_p)
    kept = 0
    for k, p in enumerate(ps):
        for hv, uv, ov in zip(entries(h, k), entries(u, k), entries(out, k)):
            expected = hv / (1 - p) if uv >= p and p < 1 else 0.0
            assert ov == pytest.approx(expected, rel=1e-6, abs=0)
            kept += expected != 0.0
    assert 0 < kept < 30  # member 0 keeps some, drops some; member 1 drops all


@hand_computed("noise")
def test_input_noise_adds_each_members_sigma_times_its_normal_draws():
    from regstudy.regularizers.noise import noisy_inputs

    cfg = compose_job(["regularizer=[noise]"])
    sigmas = [0.0, 0.5]
    reg = Regularization.build(cfg.regularizer, "noise", torch.tensor(sigmas), n_layers=3)
    g = torch.Generator().manual_seed(4)
    x, eps = torch.randn(2, 4, 3, generator=g), torch.randn(2, 4, 3, generator=g)
    out = noisy_inputs(x, reg.noise_sigma, eps)
    for k, sigma in enumerate(sigmas):
        for xv, ev, ov in zip(entries(x, k), entries(eps, k), entries(out, k)):
            assert ov == pytest.approx(xv + sigma * ev, abs=1e-7)
    assert torch.equal(out[0], x[0])  # sigma 0 is no noise, to the bit


@hand_computed("early_stopping")
def test_early_stopping_stops_after_patience_epochs_without_gain_and_keeps_the_best_epoch():
    """Validation losses by hand: member 0 (patience 1) improves at epochs 1, 2, then not:
    stopped at 3, best 2; member 1 (patience 2) improves at 1, 3, not at 2, 4, 5: stopped at 5, best 3."""
    from regstudy.module import MemberStackModule

    cfg = compose_job(["regularizer=[early_stopping]"])
    reg = Regularization.build(cfg.regularizer, "early_stopping", torch.tensor([1.0, 2.0]), n_layers=3)
    net = make_net()
    module = MemberStackModule(net, reg, {}, "regression", optimizer=None, batch_size=1, seeds=[0, 1])
    losses = [[1.0, 1.0], [0.5, 1.2], [0.6, 0.8], [0.7, 0.9], [0.4, 0.85]]
    for epoch, val in enumerate(losses, start=1):
        with torch.no_grad():
            net.kernels[0].fill_(float(epoch))  # the weights of this epoch, to see which are kept
        active = (module.stopped_epoch == 0) & (module.diverged_epoch == 0)
        module._early_stopping(torch.tensor(val), active, epoch)
    assert module.stopped_epoch.tolist() == [3, 5]
    assert module.best_epoch.tolist() == [2, 3]
    assert module.best_state["kernels.0"][0].unique().tolist() == [2.0]
    assert module.best_state["kernels.0"][1].unique().tolist() == [3.0]


def test_step_operators_act_in_their_phase_order():
    """Decoupled decay before the step; after it the proximal steps, then max-norm last (so
    the bound holds after every step, whatever the proximal step did)."""
    from regstudy.regularizers import Phase

    cfg = compose_job(["regularizer=[l1,weight_decay,max_norm]", "regularizer.l1.proximal=true",
                       "members.sweep=l1"])
    reg = Regularization.build(cfg.regularizer, "l1", torch.tensor(LAMS), n_layers=3)
    assert reg.phases == {"l1": Phase.AFTER_STEP, "weight_decay": Phase.BEFORE_STEP,
                          "max_norm": Phase.PROJECTION}
    assert reg._acting(Phase.AFTER_STEP, Phase.PROJECTION) == ["l1", "max_norm"]
    assert reg.loss_penalties == []


def test_the_loss_adds_activity_first_then_the_weight_penalties_in_registry_order():
    cfg = compose_job(["regularizer=[group_lasso,l2,activity,elastic_net,l1]", "members.sweep=l1"])
    reg = Regularization.build(cfg.regularizer, "l1", torch.tensor(LAMS), n_layers=3)
    assert reg.loss_penalties == ["activity", "l1", "l2", "elastic_net", "group_lasso"]


def test_an_unregistered_regularizer_fails_naming_itself():
    from omegaconf import OmegaConf

    from regstudy.regularizers import UnknownRegularizer, regularizer

    with pytest.raises(UnknownRegularizer, match="'orthogonality'"):
        regularizer("orthogonality")
    reg_cfg = OmegaConf.create({"l2": {"lam": 0.1}, "orthogonality": {"lam": 0.1}})
    with pytest.raises(UnknownRegularizer, match="'orthogonality'.*registered are"):
        Regularization.build(reg_cfg, "l2", torch.tensor(LAMS), n_layers=3)
