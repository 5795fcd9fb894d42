"""Train/validation/test splits and the statistics taken from the training split only."""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "val", "test")


def split(x: np.ndarray, y: np.ndarray, n_val: int, n_test: int, seed: int,
          stratify: bool) -> dict[str, np.ndarray]:
    """``n_test`` rows to test, then ``n_val`` of the rest to validation, the rest to train;
    seeded, and stratified by ``y`` for classification (scikit-learn's train_test_split)."""
    from sklearn.model_selection import train_test_split

    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=n_test, random_state=seed, stratify=y if stratify else None)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=n_val, random_state=seed + 1,
        stratify=y_rest if stratify else None)
    return {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val,
            "x_test": x_test, "y_test": y_test}


def split_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """Rows of train, validation and test for ``n`` rows."""
    n_val, n_test = round(val_fraction * n), round(test_fraction * n)
    return n - n_val - n_test, n_val, n_test


#: The statistics a draw was standardized with, per draw: ``z = (v - mean) / std``, so
#: ``v = mean + std * z`` maps the file's values back to the data's own units. ``x_*`` has
#: one value per feature, ``y_*`` one for a regression target (none for class labels).
STANDARDIZATION = ("x_mean", "x_std", "y_mean", "y_std")


def standardize(arrays: dict[str, np.ndarray], target: bool) -> dict[str, np.ndarray]:
    """Features (and, with ``target``, a regression target) to zero mean and unit variance,
    with the training split's mean and std applied to every split:
    ``z = (v - mean_train) / std_train`` (``std`` the population standard deviation). A
    constant training column is only centred (its std is taken as 1).

    The statistics applied are returned too (float64), as ``x_mean``, ``x_std`` (``(d,)``)
    and, with ``target``, ``y_mean``, ``y_std`` (scalars): see :data:`STANDARDIZATION`.
    """
    out = dict(arrays)
    keys = [("x", 0)] + ([("y", None)] if target else [])
    for name, axis in keys:
        train = np.asarray(arrays[f"{name}_train"], dtype=np.float64)
        mean, std = train.mean(axis=0), train.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        for s in SPLITS:
            out[f"{name}_{s}"] = (np.asarray(arrays[f"{name}_{s}"], dtype=np.float64) - mean) / std
        out[f"{name}_mean"], out[f"{name}_std"] = mean, std
    return out


def fill_standardization(draw: dict[str, np.ndarray], regression: bool) -> dict[str, np.ndarray]:
    """``draw`` with the identity standardization (mean 0, std 1) recorded wherever it
    records none: the file's values are then the data's own units."""
    out = dict(draw)
    d = np.shape(draw["x_train"])[-1]
    out.setdefault("x_mean", np.zeros(d))
    out.setdefault("x_std", np.ones(d))
    if regression:
        out.setdefault("y_mean", np.float64(0.0))
        out.setdefault("y_std", np.float64(1.0))
    return out


def correlated_blocks(x: np.ndarray, threshold: float = 0.9) -> np.ndarray:
    """Blocks of features whose absolute pairwise correlation is at least ``threshold``
    (connected components; 0-based block numbers in order of first feature); -1 for a
    feature correlated that strongly with no other."""
    corr = np.abs(np.corrcoef(np.asarray(x, dtype=np.float64), rowvar=False))
    d = corr.shape[0]
    block = np.full(d, -1, dtype=np.int64)
    n_blocks = 0
    for start in range(d):
        if block[start] >= 0 or not (corr[start] >= threshold).sum() > 1:
            continue
        stack, block[start] = [start], n_blocks
        while stack:
            i = stack.pop()
            for j in np.flatnonzero(corr[i] >= threshold):
                if block[j] < 0:
                    block[j] = n_blocks
                    stack.append(j)
        n_blocks += 1
    return block
