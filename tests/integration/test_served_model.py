"""The logged model serves raw rows: each data draw records the standardization it went
through, and the best member's model undoes it, so that rows in the data's own units (a
user's CSV rows as pandas reads them) give targets in the target's own units."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from regstudy.data import draw_seed, make_csv_dataset, make_dataset, standardization_of
from regstudy.data.splits import split, split_sizes
from regstudy.export import member_model
from regstudy.stacked import StackedMLP

SPLITS = ("train", "val", "test")
# The model runs in float32 on raw values (a column in thousands): its predictions are
# the study's to about 1e-6 relative; the metrics recomputed from them agree to this.
METRIC_TOLERANCE = 1e-4


def houses(n: int = 150, seed: int = 0) -> pd.DataFrame:
    """A user's CSV, nothing standardized: areas in thousands of square feet (whole
    numbers), ages in years, room counts, prices in hundreds of thousands."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"area_sqft": rng.integers(600, 4000, n), "age_years": rng.uniform(0, 80, n).round(1),
                       "rooms": rng.integers(1, 7, n), "lot_acres": rng.gamma(2.0, 0.2, n).round(3)})
    df["price"] = (40_000 + 150 * df.area_sqft - 900 * df.age_years + 5_000 * df.rooms
                   + 30_000 * df.lot_acres + rng.normal(0, 20_000, n)).round(2)
    df["band"] = np.where(df.price > df.price.median(), "high", "low")
    return df


# --- the data files record their standardization --------------------------------------


def test_a_bundled_draw_maps_back_to_scikit_learns_rows_and_targets():
    """diabetes: ``x_mean + x_std * x`` is the split's raw rows and ``y_mean + y_std * y``
    its raw targets; the statistics are the training split's (population std)."""
    from sklearn.datasets import load_diabetes

    raw = load_diabetes(scaled=False)
    params = dict(val_fraction=0.2, test_fraction=0.2)
    arrays = make_dataset("diabetes", params, seeds=[0, 3])
    _, n_val, n_test = split_sizes(len(raw.target), 0.2, 0.2)
    for row, seed in enumerate([0, 3]):
        parts = split(raw.data, raw.target, n_val, n_test, draw_seed(0, seed), stratify=False)
        s = standardization_of(arrays, seed)
        np.testing.assert_allclose(s["x_mean"], parts["x_train"].mean(0), rtol=1e-12)
        np.testing.assert_allclose(s["x_std"], parts["x_train"].std(0), rtol=1e-12)
        assert float(s["y_std"]) == pytest.approx(parts["y_train"].std(), rel=1e-12)
        for name in SPLITS:
            np.testing.assert_allclose(s["x_mean"] + s["x_std"] * arrays[f"x_{name}"][row], parts[f"x_{name}"],
                                       rtol=1e-6, atol=1e-6 * np.abs(raw.data).max())
            np.testing.assert_allclose(s["y_mean"] + s["y_std"] * arrays[f"y_{name}"][row], parts[f"y_{name}"],
                                       rtol=1e-6)
    assert arrays["x_mean"].dtype == np.float64 and arrays["x_mean"].shape == (2, 10)


def test_each_dataset_records_what_maps_its_values_back():
    """Identity where the values are the data's own; digits' pixels are counts / 16;
    classification files have no target statistics."""
    small = dict(n_train=10, n_val=5, n_test=5)
    identity = {"signal": dict(small, noise=0.2, n_components=3, phase_std=1.0),
                "moons": dict(small, noise=0.3),
                "sparse": dict(small, n_features=8, n_blocks=1, block_size=2, correlation=0.5, noise=1.0)}
    for name, params in identity.items():
        s = standardization_of(make_dataset(name, params, seeds=[1]), 1)
        d = 1 if name == "signal" else 2 if name == "moons" else 8
        np.testing.assert_array_equal(s["x_mean"], np.zeros(d))
        np.testing.assert_array_equal(s["x_std"], np.ones(d))
        assert ("y_mean" in s) == (name != "moons")
    digits = make_dataset("digits", dict(val_fraction=0.2, test_fraction=0.2), seeds=[0])
    s = standardization_of(digits, 0)
    pixels = s["x_mean"] + s["x_std"] * digits["x_test"][0]
    np.testing.assert_array_equal(pixels, np.round(pixels))  # scikit-learn's counts 0..16
    assert pixels.max() == 16 and "y_mean" not in s
    cancer = standardization_of(make_dataset("breast_cancer", dict(val_fraction=0.2, test_fraction=0.2), seeds=[0]), 0)
    assert set(cancer) == {"x_mean", "x_std"} and cancer["x_mean"].shape == (30,)


def test_a_csv_draw_records_its_columns_statistics_and_whole_number_columns(tmp_path):
    df = houses()
    df.drop(columns="band").to_csv(tmp_path / "houses.csv", index=False)
    arrays = make_csv_dataset({"path": tmp_path / "houses.csv", "target": "price"}, seeds=[0, 2])
    assert list(arrays["feature_names"]) == ["area_sqft", "age_years", "rooms", "lot_acres"]
    np.testing.assert_array_equal(arrays["feature_integer"], [True, False, True, False])
    features = df[["area_sqft", "age_years", "rooms", "lot_acres"]].to_numpy(dtype=np.float64)
    for row, seed in enumerate([0, 2]):
        parts = split(features, df.price.to_numpy(), 30, 30, draw_seed(0, seed), stratify=False)
        s = standardization_of(arrays, seed)
        np.testing.assert_allclose(s["x_mean"], parts["x_train"].mean(0), rtol=1e-12)
        assert float(s["y_mean"]) == pytest.approx(parts["y_train"].mean(), rel=1e-12)
        np.testing.assert_allclose(s["x_mean"] + s["x_std"] * arrays["x_val"][row], parts["x_val"], rtol=1e-6)


def test_member_model_with_the_standardization_takes_raw_rows_and_gives_raw_targets():
    torch.manual_seed(0)
    net = StackedMLP(2, 3, [5], 1, norm="layer")
    net.reset_parameters([torch.Generator().manual_seed(k) for k in range(2)], "uniform", 0.5, "same")
    net.eval()
    s = {"x_mean": np.array([2500.0, -3.0, 0.5]), "x_std": np.array([900.0, 2.0, 1.0]),
         "y_mean": np.array(310_000.0), "y_std": np.array(80_000.0)}
    raw = torch.tensor([[600.0, -1.0, 0.0], [3999.0, -7.5, 2.0], [2500.0, -3.0, 0.5]])
    z = (raw.double() - torch.from_numpy(s["x_mean"])) / torch.from_numpy(s["x_std"])
    stacked = net(z.float().expand(2, -1, -1)).detach().double()
    for k in range(2):
        single = member_model(net, k, "leaky_relu", 0.01, "identity", s)
        assert all(type(m).__module__.startswith("torch.nn") for m in single.modules())
        expected = float(s["y_mean"]) + float(s["y_std"]) * stacked[k]
        torch.testing.assert_close(single(raw).detach().double(), expected, rtol=1e-5, atol=0.0)
    plain = member_model(net, 0, "leaky_relu", 0.01, "identity")  # no standardization: the file's values
    torch.testing.assert_close(plain(z.float()).detach(), stacked[0].float(), rtol=1e-6, atol=1e-6)


# --- the logged model, end to end: a user's CSV through regstudy-train -----------------


def train_cli(cwd: Path, *overrides: str) -> pd.DataFrame:
    """``regstudy-train`` as a user runs it, logging to a SQLite store in ``cwd``."""
    env = {k: v for k, v in os.environ.items() if k not in ("REGSTUDY_CONF", "MLFLOW_TRACKING_URI")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    proc = subprocess.run(["regstudy-train", "data=csv", "experiment=l2", "members.strengths=[0,0.001]",
                           "members.seeds=[0,1]", "trainer.max_epochs=30", "model.hidden=[16]",
                           f"logger.tracking_uri=sqlite:///{cwd / 'mlflow.db'}", "logger.log_figures=false",
                           "paths.results=res", *overrides],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return pd.read_csv(cwd / "res" / "members.csv")


def best_model_uri(cwd: Path) -> tuple[str, int]:
    """The parent run's ``best_model_uri`` and the member its run logged."""
    client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("regstudy").experiment_id], max_results=100)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    (best,) = [r for r in runs if r.data.tags.get("best_member") == "true"]
    return parent.data.tags["best_model_uri"], int(best.data.tags["member"])


def load_without_regstudy(cwd: Path, uri: str, rows: pd.DataFrame) -> tuple[np.ndarray, dict]:
    """Load the logged model in a fresh Python where regstudy cannot be imported, predict
    ``rows``; return the predictions and the model's signature and input example."""
    rows.to_pickle(cwd / "rows.pkl")
    script = f"""
import json, sys
sys.modules["regstudy"] = None  # any import of regstudy now fails
import mlflow, numpy as np, pandas as pd
mlflow.set_tracking_uri({f"sqlite:///{cwd / 'mlflow.db'}"!r})
model = mlflow.pyfunc.load_model({uri!r})
np.save("predictions.npy", np.asarray(model.predict(pd.read_pickle("rows.pkl"))))
example = model.input_example
json.dump({{"inputs": model.metadata.get_input_schema().to_dict(),
           "outputs": model.metadata.get_output_schema().to_dict(),
           "example": example.to_dict("list") if example is not None else None}}, open("model.json", "w"))
"""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.load(cwd / "predictions.npy"), json.loads((cwd / "model.json").read_text())


@pytest.mark.slow  # 16 s: a logged job, its model loaded in a fresh Python
def test_the_logged_model_predicts_a_users_csv_rows_in_their_own_units(tmp_path):
    """Regression on a CSV of unstandardized columns: the logged model, loaded with
    MLflow alone, takes the test rows of the member's draw as pandas reads them from the
    file (int64 and float64 columns, the target among them) and predicts prices whose R²
    and loss (in units of the training prices' std) are the study's own test numbers."""
    df = houses()
    df.drop(columns="band").to_csv(tmp_path / "houses.csv", index=False)
    table = train_cli(tmp_path, "data.path=houses.csv", "data.target=price", "data.name=houses")
    uri, k = best_model_uri(tmp_path)
    member = table.set_index("member").loc[k]

    rows = pd.read_csv(tmp_path / "houses.csv")  # the user's rows as pandas reads them
    assert rows.area_sqft.dtype == np.int64 and rows.age_years.dtype == np.float64
    n_train, n_val, n_test = split_sizes(len(rows), 0.2, 0.2)  # conf/data/csv.yaml's fractions
    index = split(np.arange(len(rows))[:, None], rows.price.to_numpy(), n_val, n_test,
                  draw_seed(0, int(member.seed)), stratify=False)
    test, train = rows.iloc[index["x_test"][:, 0]], rows.iloc[index["x_train"][:, 0]]
    predictions, meta = load_without_regstudy(tmp_path, uri, test)

    assert predictions.shape == (n_test, 1)
    price, pred = test.price.to_numpy(), predictions[:, 0].astype(np.float64)
    assert abs(pred.mean() - price.mean()) < price.std()  # in dollars, not standardized units
    r2 = 1 - ((pred - price) ** 2).sum() / ((price - price.mean()) ** 2).sum()
    assert r2 == pytest.approx(member.test_metric, abs=METRIC_TOLERANCE)
    loss = (((pred - price) / train.price.std(ddof=0)) ** 2).mean()
    assert loss == pytest.approx(member.test_loss, rel=METRIC_TOLERANCE)

    columns = {c["name"]: c["type"] for c in meta["inputs"]}
    assert columns == {"area_sqft": "long", "age_years": "double", "rooms": "long", "lot_acres": "double"}
    example = pd.DataFrame(meta["example"])  # the draw's first test rows, as in the file
    pd.testing.assert_frame_equal(example, test.iloc[:5][list(columns)].reset_index(drop=True),
                                  check_exact=False, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # 15 s: as above
def test_the_logged_classifier_scores_a_users_rows_and_its_argmax_is_the_class(tmp_path):
    """Classification on the same columns (a string target): class scores whose argmax,
    named by the data's classes (sorted: high, low), has the study's test accuracy."""
    df = houses(seed=1)
    df.drop(columns="price").to_csv(tmp_path / "houses.csv", index=False)
    table = train_cli(tmp_path, "data.path=houses.csv", "data.target=band", "data.name=bands")
    uri, k = best_model_uri(tmp_path)
    member = table.set_index("member").loc[k]

    rows = pd.read_csv(tmp_path / "houses.csv")
    labels = rows.band.map({"high": 0, "low": 1}).to_numpy()
    _, n_val, n_test = split_sizes(len(rows), 0.2, 0.2)
    index = split(np.arange(len(rows))[:, None], labels, n_val, n_test, draw_seed(0, int(member.seed)),
                  stratify=True)
    test = rows.iloc[index["x_test"][:, 0]]
    scores, meta = load_without_regstudy(tmp_path, uri, test)

    assert scores.shape == (n_test, 2)
    predicted = np.array(["high", "low"])[scores.argmax(1)]
    # members.csv holds float32; one flipped row would move the accuracy by 1/30
    assert float((predicted == test.band.to_numpy()).mean()) == pytest.approx(member.test_metric, abs=1e-6)
    assert [c["name"] for c in meta["inputs"]] == ["area_sqft", "age_years", "rooms", "lot_acres"]
