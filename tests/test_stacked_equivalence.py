"""A member of a stacked run ends exactly where the same config and seed ends alone.

The stacked job is composed with the real Hydra config, built with
``regstudy.job.build_module`` and trained by the Trainer of ``conf/trainer``; then
chosen members are trained alone (same config, ``members.strengths=[s]``,
``members.seeds=[seed]``) and every parameter and buffer slice of ``net.state_dict()``
(after ``restore_best``), and the early-stopping epochs, are compared.
"""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from regstudy.config import validate
from regstudy.data import load_npz
from regstudy.job import build_module, load_tensors, member_grid
from regstudy.stages.train import compose_job

# Tolerance of the comparison. The members share no parameter, statistic or random
# number, and every per-member operation is the same; only the batched matmul over K
# members against K=1 may round differently (float32), so differences must stay at the
# level of accumulated rounding after a few dozen Adam steps. (Observed on CPU with one
# thread: bit-identical, difference 0.)
ATOL = 1e-5


def train(overrides: list[str]):
    cfg = compose_job(overrides)
    validate(cfg)
    members = member_grid(cfg)
    module = build_module(cfg, load_tensors(load_npz(cfg.data.path), [m["seed"] for m in members]), members)
    instantiate(cfg.trainer).fit(module)
    module.restore_best()
    return cfg, module


def check_members_alone(common: list[str], strengths: list[float], seeds: list[int],
                        chosen: list[tuple[float, int]], expect_stop: bool):
    grid = [f"members.strengths={strengths}", f"members.seeds={seeds}"]
    cfg, stack = train(common + grid)
    members = member_grid(cfg)
    assert len(members) == len(strengths) * len(seeds) == stack.net.n_members
    if expect_stop:  # the early-stopping comparison must not be vacuous
        assert (stack.stopped_epoch > 0).any() and (stack.stopped_epoch == 0).any(), stack.stopped_epoch
    stacked_state = stack.net.state_dict()
    for strength, seed in chosen:
        k = next(m["member"] for m in members if m["strength"] == strength and m["seed"] == seed)
        _, alone = train(common + [f"members.strengths=[{strength}]", f"members.seeds=[{seed}]"])
        where = f"member {k} (strength={strength}, seed={seed})"
        # not vacuous: the same seed with another strength ends elsewhere
        j = next(m["member"] for m in members if m["strength"] != strength and m["seed"] == seed)
        assert max((stacked_state[n][k] - stacked_state[n][j]).abs().max().item()
                   for n in stacked_state) > 10 * ATOL, f"{where} equals member {j}"
        for name, t in alone.net.state_dict().items():
            diff = (stacked_state[name][k] - t[0]).abs().max().item()
            assert diff <= ATOL, f"{where}: {name} differs by {diff:.3g} > {ATOL}"
        assert stack.best_epoch[k] == alone.best_epoch[0], where
        assert stack.stopped_epoch[k] == alone.stopped_epoch[0], where
        assert stack.diverged_epoch[k] == alone.diverged_epoch[0] == 0, where
        # the per-epoch validation curve up to the member's end is the same too
        end = int(alone.stopped_epoch[0]) or len(alone.history)
        for e in range(end):
            s_val, a_val = stack.history[e]["val_loss"][k].item(), alone.history[e]["val_loss"][0].item()
            assert s_val == pytest.approx(a_val, rel=1e-4, abs=1e-6), f"{where}, epoch {e + 1}"


def test_stacked_member_equals_member_alone_regression(signal_npz):
    """signal, MSE: l2 swept with dropout, input noise, early stopping and batch norm."""
    common = ["data=signal", f"data.path={signal_npz}", "data.batch_size=16",
              "regularizer=[dropout,l2,noise,early_stopping]", "members.sweep=l2",
              "model.norm=batch", "model.hidden=[16,16]", "trainer.max_epochs=8",
              "regularizer.early_stopping.patience=2", "optim.lr=0.002", "logger.enabled=false"]
    # members (0.0, 0) run all 8 epochs, (0.001, 1) and (0.01, 0) stop early at different epochs
    check_members_alone(common, [0.0, 0.001, 0.01], [0, 1],
                        chosen=[(0.0, 0), (0.001, 1), (0.01, 0)], expect_stop=True)


def test_stacked_member_equals_member_alone_classification(moons_npz):
    """moons, cross-entropy: layer norm + decoupled weight decay swept, with early stopping."""
    common = ["data=moons", f"data.path={moons_npz}", "data.batch_size=16",
              "experiment=layernorm_weight_decay", "regularizer=[weight_decay,early_stopping]",
              "regularizer.early_stopping.patience=3", "model.hidden=[16,16]",
              "trainer.max_epochs=8", "optim.lr=0.05", "logger.enabled=false"]
    # member (0.1, 0) stops early while the stack trains on (restore_best must undo that);
    # member (0.1, 1), on another draw of the data, runs all 8 epochs
    check_members_alone(common, [0.0, 0.1, 1.0], [0, 1], chosen=[(0.1, 0), (0.1, 1)],
                        expect_stop=True)


def test_stacked_member_equals_member_alone_with_activity_max_norm_and_label_smoothing(moons_npz):
    """moons: label smoothing swept per member, with an activity penalty, the max-norm
    constraint and dropout on every member."""
    common = ["data=moons", f"data.path={moons_npz}", "data.batch_size=16",
              "regularizer=[label_smoothing,activity,max_norm,dropout]", "members.sweep=label_smoothing",
              "regularizer.activity.lam=0.01", "regularizer.max_norm.c=0.5", "regularizer.dropout.p=0.1",
              "model.hidden=[16,16]", "trainer.max_epochs=6", "optim.lr=0.01", "logger.enabled=false"]
    check_members_alone(common, [0.0, 0.2, 0.6], [0, 1], chosen=[(0.2, 1), (0.6, 0)], expect_stop=False)


def test_stacked_member_equals_member_alone_with_max_norm_swept(signal_npz):
    common = ["data=signal", f"data.path={signal_npz}", "data.batch_size=16",
              "regularizer=[max_norm,activity]", "members.sweep=max_norm", "regularizer.activity.norm=l2",
              "model.hidden=[16,16]", "trainer.max_epochs=6", "optim.lr=0.01", "logger.enabled=false"]
    check_members_alone(common, [0.2, 1.0, 100.0], [0, 1], chosen=[(0.2, 0), (1.0, 1)], expect_stop=False)
