"""A member of a stacked run ends exactly where the same config and seed ends alone.

The stacked job is composed with the real Hydra config, built with
``regstudy.job.build_module`` and trained by the Trainer of ``conf/trainer``; then
chosen members are trained alone (same config, ``members.strengths=[s]``,
``members.seeds=[seed]``) and every parameter and buffer slice of ``net.state_dict()``
(after ``restore_best``), the early-stopping epochs and the validation curves are
compared, to the bit.
"""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from regstudy.config import validate
from regstudy.data import load_npz
from regstudy.job import build_module, load_tensors, member_grid
from regstudy.stages.train import compose_job

from conftest import needs_exact  # noqa: E402

pytestmark = needs_exact  # the exact path's own kernels and their bits

# The members share no parameter, statistic or random number, every per-member operation
# is the same, and each member's products (regstudy.products) and optimizer update
# (regstudy.optimizers) are the same bits in any stack: so a member ends where it ends
# alone, to the bit. Grids of 9 or more members: below 8, a regression stack's output
# biases all fell in the fused optimizer's scalar tail, as a member's alone does.


def train(overrides: list[str]):
    cfg = compose_job(overrides)
    validate(cfg)
    members = member_grid(cfg)
    module = build_module(cfg, load_tensors(load_npz(cfg.data.path), [m["seed"] for m in members]), members)
    instantiate(cfg.trainer).fit(module)
    module.restore_best()
    return cfg, module


def check_members_alone(common: list[str], strengths: list[float], seeds: list[int],
                        chosen: list[tuple[float, int]]):
    """Each ``chosen`` (strength, seed) member of the stacked job trains to the bits of the
    same member trained alone; returns the stacked module."""
    grid = [f"members.strengths={strengths}", f"members.seeds={seeds}"]
    cfg, stack = train(common + grid)
    members = member_grid(cfg)
    assert len(members) == len(strengths) * len(seeds) == stack.net.n_members
    stacked_state = stack.net.state_dict()
    for strength, seed in chosen:
        k = next(m["member"] for m in members if m["strength"] == strength and m["seed"] == seed)
        _, alone = train(common + [f"members.strengths=[{strength}]", f"members.seeds=[{seed}]"])
        where = f"member {k} (strength={strength}, seed={seed})"
        # not vacuous: the same seed with another strength ends elsewhere
        j = next(m["member"] for m in members if m["strength"] != strength and m["seed"] == seed)
        assert any(not torch.equal(stacked_state[n][k], stacked_state[n][j]) for n in stacked_state), \
            f"{where} equals member {j}"
        for name, t in alone.net.state_dict().items():
            diff = (stacked_state[name][k] - t[0]).abs().max().item()
            assert torch.equal(stacked_state[name][k], t[0]), f"{where}: {name} differs by {diff:.3g}"
        assert stack.best_epoch[k] == alone.best_epoch[0], where
        assert stack.stopped_epoch[k] == alone.stopped_epoch[0], where
        assert stack.diverged_epoch[k] == alone.diverged_epoch[0] == 0, where
        # every per-epoch number up to the member's end (losses, metrics, norms, alive
        # units, penalty) is the same too
        end = int(alone.stopped_epoch[0]) or len(alone.history)
        for e in range(end):
            for key, t in alone.history[e].items():  # NaN where a number is not defined (a layer's effective lr)
                torch.testing.assert_close(stack.history[e][key][k], t[0], rtol=0, atol=0, equal_nan=True,
                                           msg=f"{where}, epoch {e + 1}: {key}")
    return stack


def test_stacked_member_equals_member_alone_regression(signal_npz):
    """signal, MSE: l2 swept with dropout, input noise, early stopping and batch norm."""
    common = ["data=signal", f"data.path={signal_npz}", "data.batch_size=16",
              "regularizer=[dropout,l2,noise,early_stopping]", "members.sweep=l2",
              "model.norm=batch", "model.hidden=[16,16]", "trainer.max_epochs=8",
              "regularizer.early_stopping.patience=1", "optim.lr=0.002", "logger.enabled=false"]
    # members (0.0, 0) run all 8 epochs, (0.001, 1) and (0.01, 2) stop early at different epochs
    stack = check_members_alone(common, [0.0, 0.001, 0.01], [0, 1, 2], chosen=[(0.0, 0), (0.001, 1), (0.01, 2)])
    # the early-stopping comparison is not vacuous
    assert (stack.stopped_epoch > 0).any() and (stack.stopped_epoch == 0).any(), stack.stopped_epoch


def test_stacked_member_equals_member_alone_classification(moons_npz):
    """moons, cross-entropy: layer norm + decoupled weight decay swept, with early stopping."""
    common = ["data=moons", f"data.path={moons_npz}", "data.batch_size=16",
              "experiment=layernorm_weight_decay", "regularizer=[weight_decay,early_stopping]",
              "regularizer.early_stopping.patience=3", "model.hidden=[16,16]",
              "trainer.max_epochs=8", "optim.lr=0.05", "logger.enabled=false"]
    # member (0.1, 0) stops early while the stack trains on (restore_best must undo that);
    # member (0.1, 1), on another draw of the data, runs all 8 epochs
    stack = check_members_alone(common, [0.0, 0.1, 1.0], [0, 1, 2], chosen=[(0.1, 0), (0.1, 1)])
    assert (stack.stopped_epoch > 0).any() and (stack.stopped_epoch == 0).any(), stack.stopped_epoch


def test_stacked_member_equals_member_alone_with_activity_max_norm_and_label_smoothing(moons_npz):
    """moons: label smoothing swept per member, with an activity penalty, the max-norm
    constraint and dropout on every member."""
    common = ["data=moons", f"data.path={moons_npz}", "data.batch_size=16",
              "regularizer=[label_smoothing,activity,max_norm,dropout]", "members.sweep=label_smoothing",
              "regularizer.activity.lam=0.01", "regularizer.max_norm.c=0.5", "regularizer.dropout.p=0.1",
              "model.hidden=[16,16]", "trainer.max_epochs=6", "optim.lr=0.01", "logger.enabled=false"]
    check_members_alone(common, [0.0, 0.2, 0.6], [0, 1, 2], chosen=[(0.2, 1), (0.6, 0)])


def test_stacked_member_equals_member_alone_with_batch_norm_on_widths_that_are_not_whole_vectors(moons_npz):
    """Batch norm's kernel runs along the (member, unit) channels in vectors: widths 12
    and 13 are padded to whole vectors, so members 0 and 8 of 9 are computed as alone."""
    common = ["data=moons", f"data.path={moons_npz}", "data.batch_size=16", "model.norm=batch",
              "model.hidden=[12,13]", "experiment=batchnorm_l2", "trainer.max_epochs=5", "optim.lr=0.01",
              "logger.enabled=false"]
    check_members_alone(common, [0.0, 0.001, 0.01], [0, 1, 2], chosen=[(0.0, 0), (0.01, 2)])


def test_stacked_member_equals_member_alone_with_max_norm_swept(signal_npz):
    common = ["data=signal", f"data.path={signal_npz}", "data.batch_size=16",
              "regularizer=[max_norm,activity]", "members.sweep=max_norm", "regularizer.activity.norm=l2",
              "model.hidden=[16,16]", "trainer.max_epochs=6", "optim.lr=0.01", "logger.enabled=false"]
    check_members_alone(common, [0.2, 1.0, 100.0], [0, 1, 2], chosen=[(0.2, 0), (1.0, 1)])


@pytest.mark.parametrize("family", ["l2", "l1", "l1_prox", "elastic_net", "group_lasso", "activity", "dropout", "noise"])
def test_a_member_at_strength_0_ends_where_the_baseline_ends(signal_npz, family):
    """Strength 0 is no regularization, to the bit: the same seed of family ``none`` (a
    stack of 3) and of a swept family (a stack of 9) end on the same weights. Dropout's
    masks and the input noise have their own random streams, so they leave the batch order
    alone; an l1, l2 or group gradient of 0, a proximal step of 0, an activity penalty of 0,
    a mask that keeps all and noise of std 0 change nothing."""
    common = ["data=signal", f"data.path={signal_npz}", "data.batch_size=16", "model.hidden=[16,16]",
              "trainer.max_epochs=6", "optim.lr=0.01", "logger.enabled=false", "members.seeds=[0,1,2]"]
    _, base = train(common + ["experiment=none"])
    cfg, stack = train(common + [f"experiment={family}", "members.strengths=[0.0,0.1,0.3]"])
    state, base_state = stack.net.state_dict(), base.net.state_dict()
    for m in member_grid(cfg):
        same = [torch.equal(state[n][m["member"]], base_state[n][m["seed"]]) for n in base_state]
        # at 0 the baseline's bits; not vacuous: a strength above 0 moves the member
        assert all(same) == (m["strength"] == 0.0), \
            f"{family} at {m['strength']}, seed {m['seed']}: differs in {[n for n, s in zip(base_state, same) if not s]}"


def test_the_leaky_relu_fused_into_the_products_trains_to_torchs_bits(moons_npz):
    """Where a hidden layer's leaky ReLU follows its product (no normalization), the
    product's kernel applies it (regstudy.products): the same job with torch's own leaky
    ReLU after the product ends on the same weights, with the same numbers every epoch:
    with dropout after the activation and an activity penalty on it."""
    overrides = ["data=moons", f"data.path={moons_npz}", "data.batch_size=16", "experiment=dropout",
                 "regularizer=[dropout,activity]", "regularizer.activity.lam=0.01", "members.strengths=[0.0,0.1]",
                 "members.seeds=[0,1]", "model.hidden=[16,13]", "trainer.max_epochs=4", "optim.lr=0.01",
                 "logger.enabled=false"]
    cfg = compose_job(overrides)
    validate(cfg)
    members = member_grid(cfg)
    runs = []
    for fused in (True, False):
        module = build_module(cfg, load_tensors(load_npz(cfg.data.path), [m["seed"] for m in members]), members)
        assert module.net.fused_slope == cfg.model.negative_slope
        if not fused:
            module.net.fused_slope = None  # torch's F.leaky_relu after each product
        instantiate(cfg.trainer).fit(module)
        runs.append(module)
    fused, plain = runs
    for name, t in plain.net.state_dict().items():
        assert torch.equal(fused.net.state_dict()[name], t), name
    for e, row in enumerate(plain.history):
        for key, t in row.items():
            torch.testing.assert_close(fused.history[e][key], t, rtol=0, atol=0, equal_nan=True,
                                       msg=f"epoch {e + 1}: {key}")
    assert not torch.equal(plain.net.kernels[0], build_module(
        cfg, load_tensors(load_npz(cfg.data.path), [m["seed"] for m in members]), members).net.kernels[0])
