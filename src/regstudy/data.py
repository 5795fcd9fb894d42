"""The four datasets of the study, generated deterministically from a seed.

Each dataset is one ``.npz`` file holding ``x_train, y_train, x_val, y_val, x_test,
y_test`` (float32 features of shape ``(n, d)``; float32 targets of shape ``(n,)`` for
regression, int64 class labels for classification). ``signal`` also holds ``grid_x``
and ``grid_f``, the noise-free function on a plotting grid.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")


def make_signal(n_train: int, n_val: int, n_test: int, noise: float, n_components: int,
                phase_std: float, seed: int, grid_size: int = 200) -> dict[str, np.ndarray]:
    """1-D periodic signal: ``f(x) = sum_j a_j sin(2 pi k_j x + phi_j)`` on ``x in [-1, 1]``.

    Component ``j`` (1-based) has frequency ``k_j = j`` and amplitude ``a_j = 1/j``; its
    phase lag ``phi_j ~ N(0, phase_std^2)``. ``y = f(x) + noise * e``, ``e ~ N(0, 1)``.
    """
    rng = np.random.default_rng(seed)
    k = np.arange(1, n_components + 1, dtype=np.float64)
    phase = rng.normal(0.0, phase_std, size=n_components)

    def f(x: np.ndarray) -> np.ndarray:
        return (np.sin(2 * np.pi * k * x[:, None] + phase) / k).sum(axis=1)

    out: dict[str, np.ndarray] = {}
    for split, n in zip(SPLITS, (n_train, n_val, n_test)):
        x = rng.uniform(-1.0, 1.0, size=n)
        y = f(x) + noise * rng.normal(size=n)
        out[f"x_{split}"], out[f"y_{split}"] = x[:, None], y
    grid = np.linspace(-1.0, 1.0, grid_size)
    out["grid_x"], out["grid_f"] = grid[:, None], f(grid)
    return out


def make_moons_split(n_train: int, n_val: int, n_test: int, noise: float,
                     seed: int) -> dict[str, np.ndarray]:
    """Two interleaving half-moons with Gaussian noise of std ``noise`` (scikit-learn)."""
    from sklearn.datasets import make_moons  # imported here: train jobs never need sklearn

    x, y = make_moons(n_samples=n_train + n_val + n_test, noise=noise, random_state=seed)
    return _split(x, y, n_val, n_test, seed, stratify=True)


def make_sparse(n_train: int, n_val: int, n_test: int, n_features: int, n_blocks: int,
                block_size: int, correlation: float, noise: float,
                seed: int) -> dict[str, np.ndarray]:
    """Sparse linear regression with correlated relevant features (``p >> n``).

    ``n_blocks`` blocks of ``block_size`` relevant features each; within a block,
    ``x_j = sqrt(c) z_b + sqrt(1 - c) e_j`` so two features of a block have correlation
    ``c``. All other features are independent N(0, 1) and irrelevant. The target is
    ``y = X beta + noise * e`` with ``beta_j = 1`` on relevant features and 0 elsewhere.
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
    return _split(x, y, n_val, n_test, seed, stratify=False)


def make_digits(val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (1,797 images), pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    n = len(y)
    return _split(x / 16.0, y, round(val_fraction * n), round(test_fraction * n), seed,
                  stratify=True)


def _split(x: np.ndarray, y: np.ndarray, n_val: int, n_test: int, seed: int,
           stratify: bool) -> dict[str, np.ndarray]:
    from sklearn.model_selection import train_test_split

    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=n_test, random_state=seed, stratify=y if stratify else None)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=n_val, random_state=seed + 1,
        stratify=y_rest if stratify else None)
    return {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val,
            "x_test": x_test, "y_test": y_test}


GENERATORS = {"signal": make_signal, "moons": make_moons_split, "sparse": make_sparse,
              "digits": make_digits}
TASK = {"signal": "regression", "sparse": "regression", "moons": "classification",
        "digits": "classification"}


def make_dataset(name: str, params: dict, seed: int) -> dict[str, np.ndarray]:
    """Generate dataset ``name`` with its params and cast to the stored dtypes."""
    arrays = GENERATORS[name](**params, seed=seed)
    classification = TASK[name] == "classification"
    for key, value in arrays.items():
        is_label = key.startswith("y_") and classification
        arrays[key] = value.astype(np.int64 if is_label else np.float32)
    return arrays


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write an ``.npz`` byte-for-byte reproducibly (numpy's savez stamps the time).

    Written to a temporary file and renamed, so a crash leaves no half-written file.
    """
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())
    os.replace(tmp, path)


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a dataset file; a missing file is a clear error naming the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"data file {path} does not exist; run `dvc repro generate` (or "
            f"`python -m regstudy.stages.generate`) first, or set data.path")
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}
