"""The study's datasets, drawn deterministically from seeds, and the files that hold them.

A seed draws new data: a new sample of the generated sets (signal, moons, sparse) from
the same underlying task, or a new train/validation/test split of the real ones (digits,
diabetes, breast_cancer, and your own CSV files). So the seeds of a study cover data
variation, not only initialization.

Each dataset is one ``.npz`` file holding one draw per seed: ``seeds`` ``(S,)`` and
``x_train, y_train, x_val, y_val, x_test, y_test`` with a leading seed axis (float32
features ``(S, n, d)``; float32 targets ``(S, n)`` for regression, int64 class labels
for classification), and ``task``. Per draw too, the standardization that draw's values
went through (float64, :data:`STANDARDIZATION`): ``x_mean``, ``x_std`` ``(S, d)`` and, for
regression, ``y_mean``, ``y_std`` ``(S,)``, so that ``x_mean + x_std * x`` is a row in the
data's own units (mean 0 and std 1 where the values are the data's own). Where known:
``grid_x``/``grid_f`` (signal's noise-free function), ``class_names``, ``feature_names``,
and per feature ``feature_relevant`` (bool), ``feature_block`` (block of correlated
features, -1 for none) and ``feature_integer`` (a CSV column of whole numbers, which
pandas reads as integers).

- ``generated``: signal, moons, sparse; ``bundled``: scikit-learn's digits, diabetes,
  breast_cancer; ``tabular``: CSV files, with their checks; ``splits``: splits and
  training-split statistics; ``files``: reading a data file, whatever fails a
  :class:`DataFileError` naming it.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .bundled import make_breast_cancer, make_diabetes, make_digits
from .files import DataFileError, open_npz
from .generated import make_moons_split, make_signal, make_sparse
from .splits import SPLITS, STANDARDIZATION, fill_standardization
from .tabular import CsvError, make_csv, read_csv_table

GENERATORS = {"signal": make_signal, "moons": make_moons_split, "sparse": make_sparse,
              "digits": make_digits, "diabetes": make_diabetes, "breast_cancer": make_breast_cancer}
TASK = {"signal": "regression", "sparse": "regression", "diabetes": "regression",
        "moons": "classification", "digits": "classification", "breast_cancer": "classification"}

#: Per-draw arrays (stacked along a leading seed axis); the rest is shared by all draws.
DRAWN = tuple(f"{v}_{s}" for s in SPLITS for v in ("x", "y"))

__all__ = ["CsvError", "DRAWN", "DataFileError", "GENERATORS", "SPLITS", "STANDARDIZATION", "TASK", "draw_seed",
           "load_npz", "make_csv_dataset", "make_dataset", "open_npz", "read_csv_table", "save_npz", "seed_rows",
           "standardization_of", "task_of", "text_of"]


def draw_seed(task_seed: int, seed: int) -> int:
    """The generator seed of draw ``seed``: independent across seeds, fixed by both.

    Below 2**31, so that scikit-learn's ``random_state`` takes it (and ``seed + 1``).
    """
    return int(np.random.SeedSequence([int(task_seed), int(seed)]).generate_state(1)[0] % 2**31)


def stack_draws(draws: list[dict[str, np.ndarray]], seeds: list[int], task: str) -> dict[str, np.ndarray]:
    """One dict of arrays from per-seed draws, cast to the stored dtypes; a draw that
    records no standardization gets the identity's."""
    draws = [fill_standardization(d, regression=task == "regression") for d in draws]
    arrays = {"seeds": np.array(seeds, dtype=np.int64), "task": np.array(task)}
    for key, value in draws[0].items():
        value = np.asarray(value)
        if key in DRAWN:
            dtype = np.int64 if key.startswith("y_") and task == "classification" else np.float32
            arrays[key] = np.stack([d[key] for d in draws]).astype(dtype)
        elif key in STANDARDIZATION:
            arrays[key] = np.stack([d[key] for d in draws]).astype(np.float64)
        elif value.dtype.kind in "bU" or key == "feature_block":
            arrays[key] = value if value.dtype.kind in "bU" else value.astype(np.int64)
        else:
            arrays[key] = value.astype(np.float32)
    return arrays


def make_dataset(name: str, params: dict, seeds=(0,), task_seed: int = 0) -> dict[str, np.ndarray]:
    """One draw of the built-in dataset ``name`` per seed, stacked.

    Draw ``s`` uses the generator seed ``draw_seed(task_seed, s)``, so adding seeds to a
    study leaves the draws of the existing seeds unchanged.
    """
    seeds = [int(s) for s in seeds]
    draws = [GENERATORS[name](**params, seed=draw_seed(task_seed, s), task_seed=task_seed) for s in seeds]
    return stack_draws(draws, seeds, TASK[name])


def make_csv_dataset(entry: dict, seeds=(0,), task_seed: int = 0) -> dict[str, np.ndarray]:
    """One draw per seed of a CSV file: ``entry`` holds ``path``, ``target`` and optionally
    ``task``, ``val_fraction``, ``test_fraction``. The file is checked first (CsvError)."""
    options = {k: entry[k] for k in ("task", "val_fraction", "test_fraction") if entry.get(k) is not None}
    table = read_csv_table(entry["path"], entry["target"], **options)
    seeds = [int(s) for s in seeds]
    draws = [make_csv(str(table.path), table.target, draw_seed(task_seed, s), table=table, **options)
             for s in seeds]
    arrays = stack_draws(draws, seeds, table.task)
    arrays["note"] = np.array(table.note)
    return arrays


def text_of(arrays: dict[str, np.ndarray], key: str) -> str | None:
    """A text a data file records (``task``, ``note``), or None."""
    return str(np.asarray(arrays[key]).reshape(-1)[0]) if key in arrays else None


def task_of(arrays: dict[str, np.ndarray]) -> str | None:
    """The task a data file records (None for a file written before tasks were recorded)."""
    return text_of(arrays, "task")


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write an ``.npz`` byte-for-byte reproducibly (numpy's savez stamps the time).

    Written to a temporary file and renamed, so a crash or a full disk leaves no
    half-written file (a failed write removes its temporary file).
    """
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name in sorted(arrays):
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, buf.getvalue())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a dataset file: a missing file is a FileNotFoundError, and any other failure
    (not an .npz, truncated, pickled, not a dataset) a DataFileError, each naming the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"data file {path} does not exist; run `dvc repro generate` (or "
            f"`python -m regstudy.stages.generate`) first, or set data.path")
    with open_npz(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    missing = [k for k in DRAWN if k not in arrays]
    if missing:
        raise DataFileError(f"data file {path} is not a dataset: it has no {', '.join(missing)} "
                            f"(it holds {', '.join(sorted(arrays)) or 'nothing'}); run `dvc repro generate`, "
                            f"or set data.path")
    return arrays


def standardization_of(arrays: dict[str, np.ndarray], seed: int,
                       path: str | os.PathLike = "the data file") -> dict[str, np.ndarray]:
    """The statistics draw ``seed`` of a data file was standardized with: ``x_mean``,
    ``x_std`` ``(d,)`` and, for regression, ``y_mean``, ``y_std`` (0-d), float64; a row
    ``x`` of the file is ``(raw - x_mean) / x_std``. Empty for a file written before they
    were recorded (``dvc repro generate`` writes them): its values are then taken as the
    data's own."""
    (row,) = seed_rows(arrays, [seed], path)
    return {k: np.asarray(arrays[k][row], dtype=np.float64) for k in STANDARDIZATION if k in arrays}


def seed_rows(arrays: dict[str, np.ndarray], seeds: list[int], path: str | os.PathLike) -> list[int]:
    """Index into the file's draws of each of ``seeds``; a clear error for a missing one."""
    if "seeds" not in arrays:
        raise ConfigError("data.path", str(path), "a data file with one draw per seed (this one "
                          "predates seeded draws): run `dvc repro generate` again")
    have = [int(s) for s in arrays["seeds"]]
    missing = sorted(set(seeds) - set(have))
    if missing:
        raise ConfigError("members.seeds", list(seeds),
                          f"seeds drawn in {path}: {have} (missing {missing}; add them to the "
                          f"dataset's seeds in params.yaml, study.by_dataset.<name>.seeds or "
                          f"study.seeds, and run `dvc repro`)")
    return [have.index(s) for s in seeds]
