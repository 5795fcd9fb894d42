"""The real datasets that ship with scikit-learn (offline): digits, diabetes, breast_cancer.

A draw is a new seeded train/validation/test split (stratified for classification).
Tabular features are standardized with the training split's statistics; diabetes'
target too, so that its losses are in units of the target's standard deviation. Each
draw records what maps its values back to the data's own units (``x_mean``, ``x_std``,
``y_mean``, ``y_std``; digits: ``x_std`` 16).
"""

from __future__ import annotations

import numpy as np

from .splits import correlated_blocks, split, split_sizes, standardize


def make_digits(val_fraction: float, test_fraction: float, seed: int,
                task_seed: int = 0) -> dict[str, np.ndarray]:
    """The 8x8 handwritten digits (1,797 images, 10 classes), pixels scaled to [0, 1]:
    ``x = raw / 16`` of scikit-learn's counts 0..16 (recorded as ``x_std`` 16)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    _, n_val, n_test = split_sizes(len(y), val_fraction, test_fraction)
    out = split(x / 16.0, y, n_val, n_test, seed, stratify=True)
    out["x_mean"], out["x_std"] = np.zeros(x.shape[1]), np.full(x.shape[1], 16.0)
    out["class_names"] = np.array([str(c) for c in range(10)])
    return out


def make_diabetes(val_fraction: float, test_fraction: float, seed: int,
                  task_seed: int = 0) -> dict[str, np.ndarray]:
    """Diabetes progression one year after baseline (442 patients x 10 measurements):
    regression, the classic lasso data set (Efron et al. 2004)."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes(scaled=False)
    _, n_val, n_test = split_sizes(len(data.target), val_fraction, test_fraction)
    out = standardize(split(data.data, data.target, n_val, n_test, seed, stratify=False), target=True)
    out["feature_names"] = np.array(data.feature_names)
    return out


def make_breast_cancer(val_fraction: float, test_fraction: float, seed: int,
                       task_seed: int = 0) -> dict[str, np.ndarray]:
    """Wisconsin breast cancer (569 tumours x 30 features, malignant or benign).

    Many features are strongly correlated (radius, perimeter and area, their means and
    worst values): ``feature_block`` groups the features whose absolute correlation over
    the whole data set is at least 0.9 (connected components), -1 for the others.
    """
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    _, n_val, n_test = split_sizes(len(data.target), val_fraction, test_fraction)
    out = standardize(split(data.data, data.target, n_val, n_test, seed, stratify=True), target=False)
    out["class_names"] = np.array(data.target_names)
    out["feature_names"] = np.array(data.feature_names)
    out["feature_block"] = correlated_blocks(data.data)
    return out
