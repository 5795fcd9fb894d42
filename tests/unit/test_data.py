"""Seeded draws of the datasets: a seed draws new data, the task stays the same."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from regstudy.config import ConfigError
from regstudy.data import draw_seed, make_dataset, make_signal, save_npz, load_npz
from regstudy.job import load_tensors

SIGNAL = dict(n_train=30, n_val=20, n_test=20, noise=0.2, n_components=3, phase_std=1.0)
SPARSE = dict(n_train=20, n_val=10, n_test=10, n_features=30, n_blocks=3, block_size=4,
              correlation=0.9, noise=1.0)


def test_each_seed_draws_new_data_and_adding_seeds_keeps_the_old_draws():
    few = make_dataset("signal", SIGNAL, seeds=[0, 1])
    more = make_dataset("signal", SIGNAL, seeds=[2, 0, 1])
    assert few["x_train"].shape == (2, 30, 1) and few["y_train"].shape == (2, 30)
    assert not np.array_equal(few["x_train"][0], few["x_train"][1])  # a new sample per seed
    np.testing.assert_array_equal(more["x_train"][1], few["x_train"][0])  # seed 0 unchanged
    np.testing.assert_array_equal(more["y_val"][2], few["y_val"][1])  # seed 1 unchanged
    np.testing.assert_array_equal(more["seeds"], [2, 0, 1])


def test_the_signal_function_is_the_same_for_every_draw():
    """Only x and the noise are redrawn: y - noise-free f(x) is pure noise of the stated std."""
    arrays = make_dataset("signal", {**SIGNAL, "noise": 0.0}, seeds=[0, 1, 2])
    np.testing.assert_array_equal(arrays["grid_f"], make_dataset("signal", SIGNAL, seeds=[5])["grid_f"])
    one = make_signal(**{**SIGNAL, "noise": 0.0}, seed=draw_seed(0, 1), task_seed=0)
    np.testing.assert_allclose(arrays["y_train"][1], one["y_train"], rtol=1e-6)
    # a draw's noise-free targets lie on the grid's function
    x, y = arrays["x_train"][2][:, 0], arrays["y_train"][2]
    grid_x, grid_f = arrays["grid_x"][:, 0], arrays["grid_f"]
    np.testing.assert_allclose(y, np.interp(x, grid_x, grid_f), atol=0.05)


def test_digits_seeds_are_new_splits_of_the_same_images():
    arrays = make_dataset("digits", dict(val_fraction=0.2, test_fraction=0.2), seeds=[0, 1])
    rows = lambda s: {tuple(r) for r in arrays["x_test"][s]}  # noqa: E731
    assert rows(0) != rows(1)
    every = lambda s: {tuple(r) for split in ("train", "val", "test") for r in arrays[f"x_{split}"][s]}  # noqa: E731
    assert every(0) == every(1)  # the same images, split differently
    assert sorted(np.unique(arrays["y_test"][0])) == list(range(10))  # stratified


def test_sparse_records_which_features_are_relevant_and_their_blocks():
    arrays = make_dataset("sparse", SPARSE, seeds=[0, 1])
    relevant, block = arrays["feature_relevant"], arrays["feature_block"]
    assert relevant.dtype == bool and relevant.sum() == 12 and relevant[:12].all()
    np.testing.assert_array_equal(block, [0] * 4 + [1] * 4 + [2] * 4 + [-1] * 18)
    # within a block the features are correlated at about 0.9; across blocks not
    x = np.concatenate([arrays["x_train"][0], arrays["x_val"][0], arrays["x_test"][0]])
    corr = np.corrcoef(x[:, :12].T)
    assert corr[0, 1] > 0.7 and abs(corr[0, 4]) < 0.5


def test_members_get_their_own_seeds_draw_and_a_missing_seed_is_a_clear_error(tmp_path):
    path = tmp_path / "signal.npz"
    save_npz(path, make_dataset("signal", SIGNAL, seeds=[0, 1]))
    arrays = load_npz(path)
    data = load_tensors(arrays, [1, 0, 1], path)
    assert data["x_train"].shape == (3, 30, 1)
    torch.testing.assert_close(data["x_train"][0], torch.from_numpy(arrays["x_train"][1]))
    torch.testing.assert_close(data["y_test"][1], torch.from_numpy(arrays["y_test"][0]))
    with pytest.raises(ConfigError) as info:
        load_tensors(arrays, [0, 3], path)
    message = str(info.value)
    assert "members.seeds" in message and "[0, 1]" in message and "3" in message and str(path) in message
