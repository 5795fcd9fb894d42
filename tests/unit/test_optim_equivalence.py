"""Our l2 and decoupled weight decay against torch's own optimizers, step for step.

The stack (K=2 members, each with its own lam) is trained by the real
``MemberStackModule`` under a real Lightning Trainer (a subclass records every
parameter after every optimizer step). The reference trains each member alone, as a
K=1 net started from the same weights, on the same minibatches, with a torch optimizer
that does the regularization itself (``SGD(weight_decay=...)`` / ``AdamW``) on kernels
only, and an MSE written out in the test.
"""

from __future__ import annotations

import copy
import functools

import torch

from regstudy.module import MemberStackModule
from regstudy.randomness import Stream, member_generator
from regstudy.regularization import Regularization
from regstudy.stacked import StackedMLP
from regstudy.stages.train import compose_job

SEEDS = [0, 1]
EPOCHS = 5  # 48 examples / batch 16 = 3 steps per epoch: 15 steps
TOL = 1e-6  # max |difference| of any parameter after any step
LR = {"sgd": 0.05, "adam": 0.01}


def small_data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    out = {}
    for split, n in (("train", 48), ("val", 16), ("test", 16)):
        x = torch.randn(n, 3, generator=g)
        y = torch.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2] + 0.1 * torch.randn(n, generator=g)
        # every member trains on the same data here: (K, n, ...)
        out[f"x_{split}"], out[f"y_{split}"] = x.expand(len(SEEDS), *x.shape), y.expand(len(SEEDS), n)
    return out


def make_net(k: int = len(SEEDS)) -> StackedMLP:
    net = StackedMLP(k, 3, [8, 8], 1)
    net.reset_parameters([member_generator(s, Stream.INIT) for s in SEEDS[:k]], "uniform", 0.5, "same")
    return net


class RecordingModule(MemberStackModule):
    """The real module, keeping a copy of every parameter after each optimizer step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.states: list[dict[str, torch.Tensor]] = []

    def train_on_batch(self, batch):
        loss = super().train_on_batch(batch)
        self.states.append({n: t.detach().clone() for n, t in self.net.state_dict().items()})
        return loss


def train_stack(family: str, lams: list[float], optim: str, make_trainer):
    """Train the K-member stack with our regularizer ``family``; return initial net,
    the minibatches it saw and the state after every step."""
    cfg = compose_job([f"regularizer=[{family}]", f"optim={optim}"])
    reg = Regularization.build(cfg.regularizer, family, torch.tensor(lams), n_layers=3)
    optimizer = functools.partial({"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optim], lr=LR[optim])
    net = make_net()
    init = copy.deepcopy(net)
    module = RecordingModule(net, reg, small_data(), "regression", optimizer, batch_size=16, seeds=SEEDS)
    loader = module.minibatches()  # fresh generators: the same batches the Trainer will draw
    batches = [b for _ in range(EPOCHS) for b in loader]
    make_trainer(EPOCHS).fit(module)
    assert len(module.states) == len(batches) == EPOCHS * 3
    return init, batches, module.states


def member_alone(init: StackedMLP, k: int) -> StackedMLP:
    net = make_net(1)
    net.load_state_dict({n: t[k:k + 1].clone() for n, t in init.state_dict().items()})
    return net


def reference_run(init, batches, k, make_opt):
    """Member ``k`` alone with a torch optimizer; returns its state after every step."""
    net = member_alone(init, k)
    opt = make_opt(list(net.kernels), list(net.biases))
    states = []
    for b in batches:
        x, y = b["x"][k:k + 1], b["y"][k:k + 1]
        loss = ((net(x).squeeze(-1) - y) ** 2).mean()  # MSE, no penalty
        opt.zero_grad()
        loss.backward()
        opt.step()
        states.append({n: t.detach().clone() for n, t in net.state_dict().items()})
    return states


def max_diff(stack_states, ref_states, k) -> float:
    return max((s[n][k] - r[n][0]).abs().max().item()
               for s, r in zip(stack_states, ref_states) for n in r)


def assert_same_steps(stack_states, ref_states, k, tol=TOL):
    for step, (s, r) in enumerate(zip(stack_states, ref_states)):
        for name in r:
            diff = (s[name][k] - r[name][0]).abs().max().item()
            assert diff <= tol, f"member {k}, step {step + 1}, {name}: max |diff| {diff:.3g} > {tol}"


def test_l2_with_sgd_equals_torch_sgd_weight_decay(make_trainer):
    """Our l2 (lam * sum w^2 in the loss) == SGD(weight_decay=2*lam) on kernels only."""
    lams = [0.01, 0.05]
    init, batches, states = train_stack("l2", lams, "sgd", make_trainer)
    for k, lam in enumerate(lams):
        ref = reference_run(init, batches, k, lambda kern, bias, lam=lam: torch.optim.SGD(
            [{"params": kern, "weight_decay": 2 * lam}, {"params": bias, "weight_decay": 0.0}], lr=LR["sgd"]))
        assert_same_steps(states, ref, k)
    # the penalty mattered: without weight decay the reference ends elsewhere
    plain = reference_run(init, batches, 1, lambda kern, bias: torch.optim.SGD(kern + bias, lr=LR["sgd"]))
    assert max_diff(states, plain, 1) > 100 * TOL


def test_decoupled_decay_with_adam_equals_adamw(make_trainer):
    """Our weight_decay (decay_ before Adam's step) == AdamW(weight_decay=lam) on kernels only."""
    lams = [0.1, 1.0]
    init, batches, states = train_stack("weight_decay", lams, "adam", make_trainer)
    for k, lam in enumerate(lams):
        ref = reference_run(init, batches, k, lambda kern, bias, lam=lam: torch.optim.AdamW(
            [{"params": kern, "weight_decay": lam}, {"params": bias, "weight_decay": 0.0}], lr=LR["adam"]))
        assert_same_steps(states, ref, k)
    plain = reference_run(init, batches, 1, lambda kern, bias: torch.optim.Adam(kern + bias, lr=LR["adam"]))
    assert max_diff(states, plain, 1) > 100 * TOL


def test_sgd_decoupled_decay_equals_l2_with_half_lam(make_trainer):
    """With plain SGD: weight_decay lam == l2 lam/2, for every member and step."""
    lams = [0.1, 1.0]
    _, _, decay = train_stack("weight_decay", lams, "sgd", make_trainer)
    _, _, l2 = train_stack("l2", [lam / 2 for lam in lams], "sgd", make_trainer)
    for k in range(len(lams)):
        assert_same_steps(decay, [{n: t[k:k + 1] for n, t in s.items()} for s in l2], k)


def test_adam_l2_is_not_decoupled_decay(make_trainer):
    """With Adam the same pair (weight_decay lam vs l2 lam/2) ends far apart: the study's point."""
    lams = [0.1, 1.0]
    _, _, decay = train_stack("weight_decay", lams, "adam", make_trainer)
    _, _, l2 = train_stack("l2", [lam / 2 for lam in lams], "adam", make_trainer)
    for k in range(len(lams)):
        diff = max((decay[-1][n][k] - l2[-1][n][k]).abs().max().item() for n in decay[-1])
        assert diff > 1000 * TOL, f"member {k}: Adam+l2 and AdamW-style decay differ by only {diff:.3g}"
