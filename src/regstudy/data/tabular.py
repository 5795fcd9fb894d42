"""Your own data: a CSV file with numeric feature columns and one target column.

:func:`read_csv_table` checks the whole file before anything is trained or written and
raises :class:`CsvError`, naming the file, the column and, where it applies, the row, for:
a missing or empty file, a file that is not UTF-8 text (binary, Latin-1) or not well-formed
CSV (a row with more fields than the header), duplicate column names, a missing target
column, a non-numeric feature column, an empty (NaN) cell, a target with a single value, a
class too small to be in every split, and too few rows for three splits.

The task is ``regression`` or ``classification``; left out, it is inferred: a target of
strings, or of whole numbers with at most ``MAX_CLASSES`` distinct values, is a class
label; any other numeric target is a regression target. A draw (:func:`make_csv`) is a
seeded split (stratified for classification) with the features, and a regression target,
standardized with the training split's statistics, which it records (``x_mean``,
``x_std``, ``y_mean``, ``y_std``), with the columns' names (``feature_names``) and which
of them hold whole numbers (``feature_integer``): what a model served on the file's own
rows needs.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import ZIP_MAGIC, DataFileError, unreadable
from .splits import split, split_sizes, standardize

MAX_CLASSES = 20  # whole-number targets with at most this many values are class labels
MIN_SPLIT_ROWS = 3  # rows every split needs (a metric over fewer means little)


class CsvError(DataFileError):
    """A CSV file that cannot be used: the message names the file, column and row."""


@dataclass
class CsvTable:
    path: Path
    target: str
    task: str
    features: list[str]
    integer: list[bool]  # per feature: whole numbers without a decimal point (pandas reads int64)
    x: np.ndarray  # (n, d) float64
    y: np.ndarray  # (n,) float64 targets, or int64 class indices
    class_names: list[str]  # classification: the label of each class index
    note: str  # what was inferred, in words


def read_text(path: Path) -> str:
    """The whole of the text file ``path``, which must be UTF-8 (a byte-order mark is
    dropped); raises CsvError for a binary or otherwise encoded file, naming the line."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise unreadable(path, e, CsvError) from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise CsvError(f"{path} is not UTF-8 text: it is UTF-16; save the file as UTF-8")
    if b"\x00" in raw:
        what = "a zip archive (an .npz file?)" if raw.startswith(ZIP_MAGIC) else "binary data"
        raise CsvError(f"{path} is not a text file: it holds {what}, not comma-separated text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise CsvError(f"{path} is not UTF-8 text: line {line} holds the byte 0x{raw[e.start]:02x} "
                       f"(Latin-1 or Windows-1252 text?); save the file as UTF-8") from None


def _row(i: int) -> str:
    """Data row ``i`` (0-based) as the reader sees it: 1-based, and its line in the file."""
    return f"row {i + 1} (line {i + 2})"


def read_csv_table(path: str | Path, target: str, task: str | None = None,
                   val_fraction: float = 0.2, test_fraction: float = 0.2) -> CsvTable:
    """Read and check ``path``; raise :class:`CsvError` for anything unusable."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise CsvError(f"data file {path} does not exist")
    text = read_text(path)
    try:
        header = next(csv.reader(io.StringIO(text, newline="")), None)
    except csv.Error as e:
        raise CsvError(f"{path} is not well-formed CSV: {e}") from None
    if not header or all(not h.strip() for h in header):
        raise CsvError(f"{path} is empty: it needs a header row and data rows")
    seen = set()
    for name in header:
        if name in seen:
            raise CsvError(f"{path}: column name {name!r} appears more than once; names must be unique")
        seen.add(name)
    if target not in header:
        raise CsvError(f"{path} has no column {target!r} (data.target); its columns: {header}")
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.ParserError as e:
        fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(e))
        why = (f"line {fields[2]} has {fields[3]} fields, the header {fields[1]}" if fields
               else " ".join(str(e).split()))
        raise CsvError(f"{path} is not well-formed CSV: {why}") from None
    if len(frame) == 0:
        raise CsvError(f"{path} is empty: it has a header but no data rows")
    for name in header:
        blank = frame[name].str.strip().isin(["", "NA", "NaN", "nan", "N/A", "null"])
        if blank.any():
            i = int(np.flatnonzero(blank.to_numpy())[0])
            raise CsvError(f"{path}: {_row(i)}, column {name!r} is empty or NaN; fill or drop it")
    features = [h for h in header if h != target]
    if not features:
        raise CsvError(f"{path}: no feature columns besides the target {target!r}")
    x = np.empty((len(frame), len(features)))
    integer = []
    for j, name in enumerate(features):
        values = pd.to_numeric(frame[name], errors="coerce")
        if values.isna().any():
            i = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise CsvError(f"{path}: column {name!r} is not numeric ({_row(i)} holds "
                           f"{frame[name].iloc[i]!r}); feature columns must be numbers")
        x[:, j] = values.to_numpy(dtype=np.float64)
        integer.append(values.dtype.kind in "iu")
    raw = frame[target].str.strip()
    numbers = pd.to_numeric(raw, errors="coerce")
    numeric = not numbers.isna().any()
    whole = numeric and bool(np.all(np.mod(numbers.to_numpy(dtype=np.float64), 1) == 0))
    distinct = raw.nunique() if not numeric else numbers.nunique()
    if task is None:
        task = "classification" if (not numeric or (whole and distinct <= MAX_CLASSES)) else "regression"
        why = ("strings" if not numeric else f"{distinct} distinct whole numbers" if whole
               else "real numbers")
        note = (f"{path}: target {target!r} holds {why}: inferred data.task={task} "
                f"(set data.task to choose)")
    elif task == "regression" and not numeric:
        i = int(np.flatnonzero(numbers.isna().to_numpy())[0])
        raise CsvError(f"{path}: data.task=regression but target {target!r} is not numeric "
                       f"({_row(i)} holds {raw.iloc[i]!r})")
    else:
        note = f"{path}: target {target!r}, data.task={task}"
    if distinct < 2:
        raise CsvError(f"{path}: target {target!r} has a single value {raw.iloc[0]!r}: nothing to learn")
    n_train, n_val, n_test = split_sizes(len(frame), val_fraction, test_fraction)
    if min(n_train, n_val, n_test) < MIN_SPLIT_ROWS:
        need = max(MIN_SPLIT_ROWS / min(val_fraction, test_fraction, 1 - val_fraction - test_fraction), 0)
        raise CsvError(f"{path} has {len(frame)} rows: too few for train/validation/test splits of "
                       f"at least {MIN_SPLIT_ROWS} rows each with fractions {val_fraction}/{test_fraction} "
                       f"(about {int(np.ceil(need))} rows needed)")
    if task == "classification":
        keys = numbers if numeric else raw
        order = sorted(keys.unique())
        labels = keys.map({v: i for i, v in enumerate(order)}).to_numpy(dtype=np.int64)
        names = [(f"{v:g}" if numeric else str(v)) for v in order]
        counts = np.bincount(labels, minlength=len(order))
        if counts.min() < MIN_SPLIT_ROWS:
            small = names[int(counts.argmin())]
            raise CsvError(f"{path}: class {small!r} of target {target!r} has {counts.min()} row(s); each "
                           f"class needs at least {MIN_SPLIT_ROWS}, one per split")
        note += f"; {len(names)} classes: {', '.join(names)}"
        return CsvTable(path, target, task, features, integer, x, labels, names, note)
    return CsvTable(path, target, task, features, integer, x, numbers.to_numpy(dtype=np.float64), [], note)


def make_csv(path: str, target: str, seed: int, task: str | None = None, val_fraction: float = 0.2,
             test_fraction: float = 0.2, task_seed: int = 0, table: CsvTable | None = None) -> dict[str, np.ndarray]:
    """One draw of a CSV dataset: a seeded split, standardized with training statistics.

    ``table`` is the already checked file (read once for all draws)."""
    table = table or read_csv_table(path, target, task, val_fraction, test_fraction)
    _, n_val, n_test = split_sizes(len(table.y), val_fraction, test_fraction)
    classification = table.task == "classification"
    out = standardize(split(table.x, table.y, n_val, n_test, seed, stratify=classification),
                      target=not classification)
    out["feature_names"] = np.array(table.features)
    out["feature_integer"] = np.array(table.integer, dtype=bool)
    if classification:
        out["class_names"] = np.array(table.class_names)
    return out
