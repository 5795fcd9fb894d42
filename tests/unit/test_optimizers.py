"""A member's optimizer update is the same bits in a stack of any size as alone.

Each optimizer of ``conf/optim`` is built as a job builds it (the real Hydra composition,
``instantiate``, :func:`regstudy.optimizers.member_optimizers`) over a real network's
stacked parameters, and steps on gradients that belong to each member (drawn from the
member's own generator), over 60 steps with gradients of sizes from 1e-6 to 1.
"""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from regstudy.optimizers import member_optimizers, parameter_groups, whole_vectors
from regstudy.stacked import StackedMLP
from regstudy.stages.train import compose_job

STEPS = 60
# regression (1 output: one float of bias per member) and 10 classes; hidden widths whose
# biases are and are not whole vectors
NETS = [(1, [64, 64], 1), (3, [12, 16], 10)]
OPTIMIZERS = [["optim=adam"], ["optim=adamw"], ["optim=sgd", "optim.momentum=0.9"], ["optim=sgd"]]


def train(build, d_in, hidden, d_out, members: list[int]) -> list[torch.Tensor]:
    """The members' parameters (one flat tensor each) after ``STEPS`` steps as one stack."""
    torch.manual_seed(0)
    net = StackedMLP(len(members), d_in, hidden, d_out)
    params = list(net.parameters())
    with torch.no_grad():  # each member starts from its own values, whatever its stack
        for p in params:
            for i, m in enumerate(members):
                p[i] = torch.randn(p.shape[1:], generator=torch.Generator().manual_seed(1000 * m + p.numel() // len(members)))
    opts = build(parameter_groups(net))
    gens = [torch.Generator().manual_seed(m) for m in members]
    scale = [10.0 ** -(6 * m / 40) for m in members]
    for _ in range(STEPS):
        for p in params:
            p.grad = torch.stack([torch.randn(p.shape[1:], generator=g) * s for g, s in zip(gens, scale)])
        for opt in opts:
            opt.step()
    return [torch.cat([p[i].detach().flatten() for p in params]) for i in range(len(members))]


def factory(overrides: list[str]):
    return instantiate(compose_job(overrides).optim)


@pytest.mark.parametrize("overrides", OPTIMIZERS, ids=lambda o: " ".join(o))
@pytest.mark.parametrize("net", NETS, ids=["regression", "classes"])
def test_a_members_update_is_the_same_in_any_stack(overrides, net):
    opt = factory(overrides)
    build = lambda g: member_optimizers(opt, g)  # noqa: E731
    alone = {m: train(build, *net, [m])[0] for m in range(40)}
    for k in (5, 9, 35):  # stacks whose tails cut different members
        stacked = train(build, *net, list(range(k)))
        for m in range(k):
            assert torch.equal(stacked[m], alone[m]), f"{overrides}: member {m} of {k} differs from alone"


@pytest.mark.parametrize("overrides", [["optim=adam"], ["optim=adamw"]], ids=["adam", "adamw"])
def test_the_fused_kernel_alone_rounds_a_member_by_its_place(overrides):
    """What the split is for: torch's fused kernel over every parameter (the optimizer a
    job built before) gives a member of a 35-stack other bits than alone."""
    opt = factory(overrides)
    assert opt.keywords["fused"] is True  # conf/optim asks for the fused kernel
    build = lambda g: [opt(g)]  # noqa: E731
    alone = {m: train(build, *NETS[0], [m])[0] for m in range(35)}
    stacked = train(build, *NETS[0], list(range(35)))
    assert any(not torch.equal(stacked[m], alone[m]) for m in range(35))


def test_only_the_parameters_that_are_not_whole_vectors_leave_the_fused_kernel():
    net = StackedMLP(7, 3, [12, 16], 10)
    opts = member_optimizers(factory(["optim=adam"]), parameter_groups(net))
    assert [o.defaults["fused"] for o in opts] == [True, False] and opts[1].defaults["foreach"] is True
    shapes = [[tuple(p.shape) for g in o.param_groups for p in g["params"]] for o in opts]
    # kernels 3x12 (36) and 12x16 (192), 16x10 (160); biases 12, 16, 10
    assert shapes == [[(7, 12, 16), (7, 16, 10), (7, 16)], [(7, 3, 12), (7, 12), (7, 10)]]
    assert [g["weight_decay"] for g in opts[1].param_groups] == [0, 0.0]  # the groups' own settings kept
    assert not any(whole_vectors(p) for g in opts[1].param_groups for p in g["params"])


def test_more_threads_or_an_unfused_optimizer_give_one_optimizer():
    net = StackedMLP(7, 3, [12, 16], 10)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:  # the fused kernel would split tensors between the threads anywhere
        [opt] = member_optimizers(factory(["optim=adam"]), parameter_groups(net))
    finally:
        torch.set_num_threads(old)
    assert opt.defaults["fused"] is False and opt.defaults["foreach"] is True
    [opt] = member_optimizers(factory(["optim=adam", "optim.fused=false"]), parameter_groups(net))
    assert not opt.defaults["fused"]
