"""Your own CSV file: every bad file is a clear error before any work; good files are split,
standardized with training statistics, and their task inferred."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from regstudy.data import CsvError, draw_seed, make_csv_dataset, read_csv_table

ROOT = Path(__file__).resolve().parents[2]


def table(n=60, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"a": rng.normal(3, 2, n), "b": rng.uniform(0, 10, n), "c": rng.normal(size=n)})
    df["price"] = 2 * df["a"] - df["c"] + rng.normal(0, 0.3, n)
    df["kind"] = np.where(df["a"] > 3, "big", "small")
    return df


def write(tmp_path: Path, text: str, name: str = "my.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


BAD_FILES = {
    # case: (file text or None for no file, target, what the message must name)
    "missing file": (None, "y", ["does not exist"]),
    "empty file": ("", "y", ["is empty"]),
    "header only": ("a,b,y\n", "y", ["no data rows"]),
    "missing target column": ("a,b,z\n1,2,3\n4,5,6\n", "y", ["no column 'y'", "['a', 'b', 'z']"]),
    "non-numeric feature": ("a,b,y\n1,2,0\n3,x7,1\n" + "4,5,0\n" * 20, "y",
                            ["column 'b' is not numeric", "row 2 (line 3)", "'x7'"]),
    "empty cell": ("a,b,y\n1,2,0\n3,,1\n" + "4,5,1\n" * 20, "y", ["row 2 (line 3)", "column 'b'", "empty or NaN"]),
    "NaN cell": ("a,b,y\n1,2,0\n3,4,1\n5,NaN,0\n" + "4,5,1\n" * 20, "y", ["row 3 (line 4)", "column 'b'"]),
    "single class": ("a,b,y\n" + "1,2,yes\n" * 30, "y", ["target 'y'", "single value 'yes'"]),
    "too few rows": ("a,b,y\n" + "".join(f"{i},{i % 3},{i * 0.5}\n" for i in range(8)), "y",
                     ["has 8 rows", "too few"]),
    "duplicate column names": ("a,b,a,y\n1,2,3,4\n", "y", ["'a'", "more than once"]),
    "a class too small": ("a,b,y\n" + "1,2,p\n" * 20 + "3,4,q\n" * 2, "y", ["class 'q'", "2 row(s)"]),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_is_a_clear_error_naming_file_column_and_row(tmp_path, case):
    text, target, mentions = BAD_FILES[case]
    path = tmp_path / "my.csv" if text is None else write(tmp_path, text)
    with pytest.raises(CsvError) as info:
        read_csv_table(path, target)
    message = str(info.value)
    assert str(path) in message
    for fragment in mentions:
        assert fragment in message, (case, message)


def test_regression_asked_for_a_string_target_is_an_error(tmp_path):
    path = tmp_path / "my.csv"
    table().to_csv(path, index=False)
    with pytest.raises(CsvError, match=r"data.task=regression but target 'kind' is not numeric"):
        read_csv_table(path, "kind", task="regression")


def test_the_task_is_inferred_and_said(tmp_path):
    path = tmp_path / "my.csv"
    df = table()
    df["rating"] = (df["a"] > 3).astype(int) + (df["b"] > 5).astype(int)  # 0, 1, 2: few whole numbers
    df.drop(columns="kind").to_csv(path, index=False)
    reg = read_csv_table(path, "price")
    assert reg.task == "regression" and "real numbers" in reg.note and "inferred data.task=regression" in reg.note
    ints = read_csv_table(path, "rating")
    assert ints.task == "classification" and "3 distinct whole numbers" in ints.note
    assert ints.class_names == ["0", "1", "2"] and sorted(set(ints.y)) == [0, 1, 2]
    assert read_csv_table(path, "rating", task="regression").task == "regression"  # asked for: kept
    df.drop(columns="rating").to_csv(path, index=False)
    strings = read_csv_table(path, "kind")
    assert strings.task == "classification" and strings.class_names == ["big", "small"]
    assert "2 classes: big, small" in strings.note
    assert strings.features == ["a", "b", "c", "price"]


def test_draws_are_seeded_splits_standardized_with_training_statistics(tmp_path):
    """Each draw is the seeded split of the file's rows, every split mapped by the training
    split's mean and std (by hand here), the regression target too."""
    from regstudy.data.splits import split

    path = tmp_path / "my.csv"
    df = table(n=100)
    df.drop(columns="kind").to_csv(path, index=False)
    arrays = make_csv_dataset({"path": path, "target": "price"}, seeds=[0, 1])
    assert arrays["x_train"].shape == (2, 60, 3) and arrays["x_val"].shape == (2, 20, 3)
    assert str(arrays["task"]) == "regression" and list(arrays["feature_names"]) == ["a", "b", "c"]
    raw_x, raw_y = df[["a", "b", "c"]].to_numpy(), df["price"].to_numpy()
    for s, seed in enumerate([0, 1]):
        parts = split(raw_x, raw_y, 20, 20, draw_seed(0, seed), stratify=False)
        mean, std = parts["x_train"].mean(0), parts["x_train"].std(0)
        y_mean, y_std = parts["y_train"].mean(), parts["y_train"].std()
        for name in ("train", "val", "test"):
            np.testing.assert_allclose(arrays[f"x_{name}"][s], (parts[f"x_{name}"] - mean) / std, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(arrays[f"y_{name}"][s], (parts[f"y_{name}"] - y_mean) / y_std,
                                       rtol=1e-5, atol=1e-5)
        assert np.abs(arrays["x_val"][s].mean(0)).max() > 1e-3  # not the validation rows' own statistics
    assert not np.array_equal(arrays["x_test"][0], arrays["x_test"][1])  # a seed redraws the split
    again = make_csv_dataset({"path": path, "target": "price"}, seeds=[1])
    np.testing.assert_array_equal(again["x_test"][0], arrays["x_test"][1])


def run_cli(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "REGSTUDY_CONF"}
    return subprocess.run([sys.executable, "-m", "regstudy.train", "data=csv", *overrides],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("case", ["non-numeric feature", "empty cell"])
def test_the_cli_stops_before_any_work_and_writes_nothing(tmp_path, case):
    text, target, mentions = BAD_FILES[case]
    write(tmp_path, text)
    proc = run_cli(tmp_path, "data.path=my.csv", f"data.target={target}", "experiment=l2")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in [str(tmp_path / "my.csv"), *mentions]:
        assert fragment in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my.csv"]  # no outputs/, no mlflow.db


def test_a_good_csv_trains_from_the_cli_and_says_the_inferred_task(tmp_path):
    df = table(n=60)
    df.drop(columns="price").to_csv(tmp_path / "my.csv", index=False)
    proc = run_cli(tmp_path, "data.path=my.csv", "data.target=kind", "data.name=mine", "experiment=label_smoothing",
                   "members.strengths=[0.0,0.2]", "members.seeds=[0,1]", "trainer.max_epochs=3",
                   "logger.enabled=false", "model.hidden=[8]", "paths.results=res")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("inferred data.task=classification") == 1 and "2 classes: big, small" in proc.stderr
    members = pd.read_csv(tmp_path / "res" / "members.csv")
    assert set(members.dataset) == {"mine"} and set(members.task) == {"classification"} and len(members) == 4
    features = pd.read_csv(tmp_path / "res" / "features.csv")
    assert len(features) == 4 * 3  # a, b, c


def test_the_generate_stage_refuses_a_bad_csv_entry_and_writes_nothing(tmp_path):
    write(tmp_path, BAD_FILES["empty cell"][0])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "data": {"seed": 0}, "study": {"seeds": [0, 1]}, "csv": {"mine": {"path": "my.csv", "target": "y"}}}))
    proc = subprocess.run([sys.executable, "-m", "regstudy.stages.generate", "--csv", "mine", "--out", "out"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "row 2 (line 3), column 'b'" in proc.stderr
    assert not (tmp_path / "out").exists()
