"""features.csv on a dataset whose relevant features are known, and early stopping's warm-up."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from regstudy.data import make_dataset, save_npz
from regstudy.job import build_module, load_tensors, member_grid, run_job
from regstudy.stages.train import compose_job

SPARSE = dict(n_train=60, n_val=30, n_test=30, n_features=24, n_blocks=2, block_size=3,
              correlation=0.9, noise=0.5)


def sparse_job(tmp_path, *overrides, n_features=24):
    path = tmp_path / "sparse.npz"
    save_npz(path, make_dataset("sparse", {**SPARSE, "n_features": n_features}, seeds=[0, 1]))
    cfg = compose_job(["data=sparse", f"data.path={path}", "experiment=l1_prox", "members.seeds=[0,1]",
                       "model.hidden=[16,16]", "trainer.max_epochs=40", "optim.lr=0.01",
                       "logger.enabled=false", f"paths.results={tmp_path / 'results'}", *overrides])
    return cfg, path


def test_features_csv_holds_each_features_first_layer_norm_and_relevance(tmp_path):
    cfg, _ = sparse_job(tmp_path, "members.strengths=[0.0,1.0]")
    run_job(cfg)
    features = pd.read_csv(tmp_path / "results" / "features.csv")
    members = pd.read_csv(tmp_path / "results" / "members.csv")
    assert list(features.columns) == ["member", "strength", "seed", "feature", "norm", "dropped", "relevant", "block"]
    assert len(features) == len(members) * 24
    one = features[features["member"] == 0].sort_values("feature")
    assert one["relevant"].tolist() == [True] * 6 + [False] * 18
    assert one["block"].iloc[:6].tolist() == [0, 0, 0, 1, 1, 1] and one["block"].iloc[6:].isna().all()
    assert (features["dropped"] == (features["norm"] == 0)).all()
    # the proximal lasso drops irrelevant inputs and keeps relevant ones; plain training drops none
    strong = features[features["strength"] == 1.0]
    assert strong.loc[~strong["relevant"], "dropped"].mean() > 0.5
    assert strong.loc[strong["relevant"], "norm"].mean() > 3 * strong.loc[~strong["relevant"], "norm"].mean()
    assert not features.loc[features["strength"] == 0.0, "dropped"].any()


def test_feature_norms_against_hand_computation(tmp_path):
    """norm = sqrt(sum_h W1[k, j, h]^2), from the trained weights, member by member."""
    from regstudy.metrics import feature_norms
    from regstudy.results import features_table
    from regstudy.data import load_npz

    cfg, path = sparse_job(tmp_path, "members.strengths=[0.0,0.1]", "trainer.max_epochs=3")
    members = member_grid(cfg)
    arrays = load_npz(path)
    module = build_module(cfg, load_tensors(arrays, [m["seed"] for m in members], path), members)
    table = features_table(feature_norms(module.net), members, arrays)
    w = module.net.kernels[0].detach().tolist()  # (K, d, hidden)
    for row in table.itertuples():
        hand = math.sqrt(sum(v * v for v in w[row.member][row.feature]))
        assert abs(row.norm - hand) <= 1e-6 * max(hand, 1.0)


def test_no_features_csv_above_256_inputs(tmp_path):
    cfg, _ = sparse_job(tmp_path, "members.strengths=[0.0]", "trainer.max_epochs=1", n_features=300)
    run_job(cfg)
    assert (tmp_path / "results" / "members.csv").is_file()
    assert not (tmp_path / "results" / "features.csv").exists()


def test_early_stopping_never_stops_on_the_initial_plateau(signal_npz):
    """Patience counts from the first epoch whose best validation loss is warmup_drop below
    the first epoch's; without a warm-up the same losses stop the member at once."""
    cfg = compose_job(["data=signal", f"data.path={signal_npz}", "experiment=early_stopping",
                       "members.strengths=[1,2]", "members.seeds=[0]", "logger.enabled=false",
                       "regularizer.early_stopping.warmup_drop=0.1", "model.hidden=[4]"])
    members = member_grid(cfg)
    module = build_module(cfg, load_tensors(np.load(signal_npz), [m["seed"] for m in members]), members)
    # a plateau (down 5% at most), then a real fall (0.85, 15% down), then a rise
    losses = [1.0, 1.01, 1.02, 0.95, 0.96, 0.97, 0.85, 0.86, 0.87, 0.88]
    for epoch, value in enumerate(losses, start=1):
        module._early_stopping(torch.full((2,), value), module.stopped_epoch == 0, epoch)
    # patience 1 stops at epoch 8, the first without gain after the fall; patience 2 at 9
    assert module.stopped_epoch.tolist() == [8, 9]
    assert module.best_epoch.tolist() == [7, 7]
    module.reg.warmup_drop = 0.0  # the same losses without a warm-up: stopped on the plateau
    module.stopped_epoch.zero_(), module.best_val.fill_(math.inf), module.wait.zero_()
    module.first_val = None
    for epoch, value in enumerate(losses, start=1):
        module._early_stopping(torch.full((2,), value), module.stopped_epoch == 0, epoch)
    assert module.stopped_epoch.tolist() == [2, 3]


def test_weight_stats_count_near_and_exact_zeros_and_removed_units_by_hand():
    from regstudy.metrics import weight_stats
    from regstudy.randomness import Stream, member_generator
    from regstudy.stacked import StackedMLP

    net = StackedMLP(2, 3, [4, 5], 2)
    net.reset_parameters([member_generator(s, Stream.INIT) for s in (0, 1)], "uniform", 0.5, "same")
    with torch.no_grad():
        net.kernels[0][0, :, 1] = 0.0  # member 0: unit 1 of layer 0 removed
        net.kernels[1][0, :, 3] = 0.0  # member 0: unit 3 of layer 1 removed
        net.kernels[1][1, 2, 0] = 0.0  # member 1: one weight zero, no unit removed
        net.kernels[2][1, :, 0] = 0.0  # member 1: an output unit's weights (not a hidden unit)
        net.kernels[0][1, 0, 0] = 5e-4  # near zero, not exactly zero
    stats = weight_stats(net, zero_threshold=1e-2, lr=0.1)
    for k in range(2):
        entries = [v for w in net.kernels for v in w[k].flatten().tolist()]
        assert stats["exact_zero_fraction"][k].item() == pytest.approx(sum(v == 0.0 for v in entries) / len(entries))
        # near zero: below 1e-2 times the rms of the entry's own layer (of this member)
        near = []
        for w in net.kernels:
            layer = w[k].flatten().tolist()
            rms = math.sqrt(sum(v * v for v in layer) / len(layer))
            near.append(sum(v == 0.0 or abs(v) < 1e-2 * rms for v in layer))
            assert stats["layer_near_zero"][k, len(near) - 1].item() == pytest.approx(near[-1] / len(layer))
        assert stats["near_zero_fraction"][k].item() == pytest.approx(sum(near) / len(entries))
        removed = sum(all(w[k][i][j] == 0.0 for i in range(w.shape[1]))
                      for w in net.kernels[:-1] for j in range(w.shape[2]))
        assert stats["removed_neurons"][k].item() == removed
    assert stats["removed_neurons"].tolist() == [2, 0]
    assert stats["near_zero_fraction"][1] > stats["exact_zero_fraction"][1]  # the 5e-4 entry
