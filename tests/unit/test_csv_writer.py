"""The results' CSV writer writes what pandas' ``to_csv`` writes, byte for byte: the
tables' hashes (dvc.lock) must not depend on which of the two wrote them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from regstudy.results import FLOAT_FORMAT, write_csv


def pandas_bytes(df: pd.DataFrame, tmp_path) -> bytes:
    df.to_csv(tmp_path / "pandas.csv", index=False, float_format=FLOAT_FORMAT)
    return (tmp_path / "pandas.csv").read_bytes()


def ours(df: pd.DataFrame, tmp_path) -> bytes:
    write_csv(df, tmp_path / "ours.csv")
    return (tmp_path / "ours.csv").read_bytes()


def test_edge_values_are_written_as_pandas_writes_them(tmp_path):
    df = pd.DataFrame({
        "x": [0.0, -0.0, np.nan, np.inf, -np.inf, 1e-300, 1.23456789e20, 0.1 + 0.2, 5e-324, -2.5e-7],
        "n": np.arange(-5, 5), "flag": [True, False] * 5, "f32": np.float32(1.1) * np.arange(10, dtype=np.float32),
        "u8": np.arange(10, dtype=np.uint8)})
    expected = pandas_bytes(df, tmp_path)
    assert ours(df, tmp_path) == expected
    assert b"\n-0,-4," in expected and b"\n,-3," in expected  # -0.0 keeps its sign; NaN is empty


def test_random_tables_with_repeats_match(tmp_path):
    rng = np.random.default_rng(0)
    for _ in range(5):
        n = int(rng.integers(1, 3000))
        df = pd.DataFrame({"member": rng.integers(0, 35, n), "strength": rng.choice([0.0, 1e-5, 1e-4, 0.1], n),
                           "loss": rng.lognormal(0, 3, n) * rng.choice([1, -1], n),
                           "alive": rng.choice([np.nan, 64.0, 192.0], n), "stopped": rng.random(n) < 0.5})
        assert ours(df, tmp_path) == pandas_bytes(df, tmp_path)


@pytest.mark.parametrize("df", [
    pd.DataFrame({"name": ["a", "b,c"], "x": [1.0, 2.0]}),  # text: pandas quotes it
    pd.DataFrame({"e": pd.array([1, None], dtype="Int64")}),  # a nullable integer
    pd.DataFrame({"x": np.array([], dtype=float)}),  # no rows
], ids=["text", "nullable", "empty"])
def test_other_tables_are_left_to_pandas_and_still_match(df, tmp_path):
    assert ours(df, tmp_path) == pandas_bytes(df, tmp_path)
