"""The generated datasets: signal, moons and sparse (see docs/science.md).

Each generator makes one draw from ``seed``; ``task_seed`` fixes what is the same for
every draw (the signal's function).
"""

from __future__ import annotations

import numpy as np

from .splits import SPLITS, split


def make_signal(n_train: int, n_val: int, n_test: int, noise: float, n_components: int,
                phase_std: float, seed: int, task_seed: int = 0,
                grid_size: int = 200) -> dict[str, np.ndarray]:
    """1-D periodic signal: ``f(x) = sum_j a_j sin(2 pi k_j x + phi_j)`` on ``x in [-1, 1]``.

    Component ``j`` (1-based) has frequency ``k_j = j`` and amplitude ``a_j = 1/j``; its
    phase lag ``phi_j ~ N(0, phase_std^2)`` is drawn from ``task_seed`` (the function is
    the same for every draw). Each split's ``x`` is stratified on ``[-1, 1]`` (one
    uniform draw in each of ``n`` equal bins, shuffled), so that every draw covers the
    interval and no draw must extrapolate; ``y = f(x) + noise * e``, ``e ~ N(0, 1)``.
    Both are drawn from ``seed``.
    """
    k = np.arange(1, n_components + 1, dtype=np.float64)
    phase = np.random.default_rng(task_seed).normal(0.0, phase_std, size=n_components)
    rng = np.random.default_rng(seed)

    def f(x: np.ndarray) -> np.ndarray:
        return (np.sin(2 * np.pi * k * x[:, None] + phase) / k).sum(axis=1)

    out: dict[str, np.ndarray] = {}
    for split, n in zip(SPLITS, (n_train, n_val, n_test)):
        x = rng.permutation(-1.0 + 2.0 * (np.arange(n) + rng.uniform(size=n)) / n)
        y = f(x) + noise * rng.normal(size=n)
        out[f"x_{split}"], out[f"y_{split}"] = x[:, None], y
    grid = np.linspace(-1.0, 1.0, grid_size)
    out["grid_x"], out["grid_f"] = grid[:, None], f(grid)
    return out


def make_moons_split(n_train: int, n_val: int, n_test: int, noise: float,
                     seed: int, task_seed: int = 0) -> dict[str, np.ndarray]:
    """Two interleaving half-moons with Gaussian noise of std ``noise`` (scikit-learn)."""
    from sklearn.datasets import make_moons  # imported here: train jobs never need sklearn

    x, y = make_moons(n_samples=n_train + n_val + n_test, noise=noise, random_state=seed)
    return split(x, y, n_val, n_test, seed, stratify=True)


def make_sparse(n_train: int, n_val: int, n_test: int, n_features: int, n_blocks: int,
                block_size: int, correlation: float, noise: float,
                seed: int, task_seed: int = 0) -> dict[str, np.ndarray]:
    """Sparse linear regression with correlated relevant features (``p >> n``).

    ``n_blocks`` blocks of ``block_size`` relevant features each; within a block,
    ``x_j = sqrt(c) z_b + sqrt(1 - c) e_j`` so two features of a block have correlation
    ``c``. All other features are independent N(0, 1) and irrelevant. The target is
    ``y = X beta + noise * e`` with ``beta_j = 1`` on relevant features and 0 elsewhere.
    The relevant features are the first ``n_blocks * block_size`` (block ``b`` holds
    features ``b*block_size`` to ``(b+1)*block_size - 1``); the structure is the same for
    every draw, so ``task_seed`` is unused.
    """
    n = n_train + n_val + n_test
    n_relevant = n_blocks * block_size
    if n_relevant > n_features:
        raise ValueError(f"data.sparse: n_blocks*block_size={n_relevant} exceeds "
                         f"n_features={n_features}")
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_features))
    z = rng.normal(size=(n, n_blocks))
    block_of = np.repeat(np.arange(n_blocks), block_size)
    x[:, :n_relevant] = np.sqrt(correlation) * z[:, block_of] + np.sqrt(1 - correlation) * x[:, :n_relevant]
    beta = np.zeros(n_features)
    beta[:n_relevant] = 1.0
    y = x @ beta + noise * rng.normal(size=n)
    out = split(x, y, n_val, n_test, seed, stratify=False)
    out["feature_relevant"] = beta != 0
    out["feature_block"] = np.concatenate([block_of, np.full(n_features - n_relevant, -1)])
    return out
