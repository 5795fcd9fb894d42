"""The four datasets of the study, generated deterministically from seeds.

A seed draws new data: a new sample of the synthetic sets (signal, moons, sparse) from
the same underlying task, or a new train/validation/test split of digits. So the seeds
of a study cover data variation, not only initialization.

Each dataset is one ``.npz`` file holding one draw per seed: ``seeds`` ``(S,)`` and
``x_train, y_train, x_val, y_val, x_test, y_test`` with a leading seed axis (float32
features ``(S, n, d)``; float32 targets ``(S, n)`` for regression, int64 class labels
for classification). ``signal`` also holds ``grid_x`` and ``grid_f``, the noise-free
function on a plotting grid (the same for every seed); ``sparse`` holds, per feature,
``feature_relevant`` (bool) and ``feature_block`` (the block of correlated relevant
features it belongs to, -1 for none).
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")


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
    return _split(x, y, n_val, n_test, seed, stratify=True)


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
    out = _split(x, y, n_val, n_test, seed, stratify=False)
    out["feature_relevant"] = beta != 0
    out["feature_block"] = np.concatenate([block_of, np.full(n_features - n_relevant, -1)])
    return out


def make_digits(val_fraction: float, test_fraction: float, seed: int,
                task_seed: int = 0) -> dict[str, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (1,797 images), pixels scaled to [0, 1].

    A draw is a stratified split of the images, seeded by ``seed``.
    """
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


def draw_seed(task_seed: int, seed: int) -> int:
    """The generator seed of draw ``seed``: independent across seeds, fixed by both.

    Below 2**31, so that scikit-learn's ``random_state`` takes it (and ``seed + 1``).
    """
    return int(np.random.SeedSequence([int(task_seed), int(seed)]).generate_state(1)[0] % 2**31)


#: Per-draw arrays (stacked along a leading seed axis); the rest is shared by all draws.
DRAWN = tuple(f"{v}_{s}" for s in SPLITS for v in ("x", "y"))


def make_dataset(name: str, params: dict, seeds=(0,), task_seed: int = 0) -> dict[str, np.ndarray]:
    """One draw of dataset ``name`` per seed, stacked, cast to the stored dtypes.

    Draw ``s`` uses the generator seed ``draw_seed(task_seed, s)``, so adding seeds to a
    study leaves the draws of the existing seeds unchanged.
    """
    seeds = [int(s) for s in seeds]
    draws = [GENERATORS[name](**params, seed=draw_seed(task_seed, s), task_seed=task_seed)
             for s in seeds]
    classification = TASK[name] == "classification"
    arrays = {"seeds": np.array(seeds, dtype=np.int64)}
    for key, value in draws[0].items():
        if key in DRAWN:
            dtype = np.int64 if key.startswith("y_") and classification else np.float32
            arrays[key] = np.stack([d[key] for d in draws]).astype(dtype)
        elif value.dtype == bool or key == "feature_block":
            arrays[key] = value if value.dtype == bool else value.astype(np.int64)
        else:
            arrays[key] = value.astype(np.float32)
    return arrays


def seed_rows(arrays: dict[str, np.ndarray], seeds: list[int], path: str | os.PathLike) -> list[int]:
    """Index into the file's draws of each of ``seeds``; a clear error for a missing one."""
    from .config import ConfigError

    if "seeds" not in arrays:
        raise ConfigError("data.path", str(path), "a data file with one draw per seed (this one "
                          "predates seeded draws): run `dvc repro generate` again")
    have = [int(s) for s in arrays["seeds"]]
    missing = sorted(set(seeds) - set(have))
    if missing:
        raise ConfigError("members.seeds", list(seeds),
                          f"seeds drawn in {path}: {have} (missing {missing}; add them to "
                          f"study.seeds in params.yaml and run `dvc repro generate`)")
    return [have.index(s) for s in seeds]


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
