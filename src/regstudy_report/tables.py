"""Load every train job's result tables, and reduce them to the summary and headline metrics.

The layout and the columns are those of docs/results.md: one folder
`results/<family>/<dataset>/` per job (`results/csv/<name>/<family>/` for a CSV file's
own stage); its members.csv says which dataset and family.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from regstudy_report.stats import mean_interval

DATASET_ORDER = ("signal", "moons", "sparse", "digits", "diabetes", "breast_cancer")
FAMILY_ORDER = (
    "none",
    "l1",
    "l1_prox",
    "l2",
    "elastic_net",
    "elastic_net_prox",
    "weight_decay",
    "dropout",
    "max_norm",
    "dropout_max_norm",
    "batchnorm_l2",
    "layernorm_weight_decay",
    "early_stopping",
    "noise",
    "activity",
    "group_lasso",
    "group_lasso_prox",
    "label_smoothing",
    "l2_sgd",
    "weight_decay_sgd",
)
MEMBER_KEY = ["dataset", "family", "member"]
# params.parquet's kind and when, in the order regstudy.results.params_table writes them
# (seaborn draws a categorical hue in its categories' order, a string one as it comes)
PARAM_KINDS = ("kernel", "bias")
PARAM_WHEN = ("init", "final")


class NoResultsError(FileNotFoundError):
    """The results folder holds no `<family>/<dataset>/members.csv`."""


def ordered(names, order) -> list[str]:
    """`names` in the order of `order`, unknown names after it, alphabetically."""
    present = set(names)
    return [n for n in order if n in present] + sorted(present - set(order))


@dataclass
class Results:
    """All jobs' tables concatenated, each row tagged with its `dataset` and `family`."""

    members: pd.DataFrame
    curves: pd.DataFrame
    layers: pd.DataFrame
    params: pd.DataFrame  # without strength and seed: take them from members (ok_rows)
    features: pd.DataFrame
    predictions: dict[str, pd.DataFrame]  # per dataset: signal and moons have other columns
    data: dict[str, dict[str, np.ndarray]]
    # each job's resolved Hydra config (its config.yaml), by (dataset, family); {} if absent
    configs: dict[tuple[str, str], dict] = field(default_factory=dict)
    # each job's results by content, as its MLflow runs' tag results_digest (docs/results.md)
    digests: dict[tuple[str, str], str] = field(default_factory=dict)
    _jobs: dict = field(default_factory=dict, repr=False, compare=False)  # job(): members by (dataset, family)
    # what the claims compute once and read under each threshold variant, by key
    memo: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def datasets(self) -> list[str]:
        return ordered(self.members["dataset"].unique(), DATASET_ORDER)

    def families(self, dataset: str) -> list[str]:
        return ordered(self.members.loc[self.members["dataset"] == dataset, "family"].unique(), FAMILY_ORDER)

    def job(self, dataset: str, family: str) -> pd.DataFrame:
        """The members of one job (empty if it is not in the study); looked up once."""
        if not self._jobs:
            for (d, f), rows in self.members.groupby(["dataset", "family"], sort=False):
                self._jobs[(d, f)] = rows
        return self._jobs.get((dataset, family), self.members.iloc[:0])

    def of(self, table: str, dataset: str) -> pd.DataFrame:
        """Rows of `table` (members, curves, layers, params, features) for one dataset."""
        frame = getattr(self, table)
        return frame[frame["dataset"] == dataset]


def _as_bool(column: pd.Series) -> pd.Series:
    """CSV booleans, written as True/true/1 or left empty, as a bool column."""
    return column.astype("string").str.lower().isin(["true", "1", "1.0"]).astype(bool)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=MEMBER_KEY)


# params.parquet holds about 3,000 rows a member (10 million in the default study): read
# lean, without strength and seed (ok_rows takes them from members.csv), small integers,
# and its strings as categoricals with the same categories in every job, so that they stay
# categorical when concatenated (a byte a row instead of a string).
PARAM_COLUMNS = ["member", "layer", "kind", "when", "value"]


def _read(path: Path, dataset: str, family: str) -> pd.DataFrame:
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    return frame.assign(dataset=dataset, family=family)


def _read_params(path: Path, dataset: str, family: str, categories: dict[str, list[str]]) -> pd.DataFrame:
    """A job's params.parquet read lean (see :data:`PARAM_COLUMNS`); ``categories``: the
    categories of dataset, family, kind and when, the same for every job."""
    frame = pd.read_parquet(path, columns=PARAM_COLUMNS, read_dictionary=["kind", "when"])
    frame = frame.astype({"member": "int32", "layer": "int32"})
    for column, value in (("dataset", dataset), ("family", family)):  # one value: its code, repeated
        frame[column] = pd.Categorical.from_codes(np.full(len(frame), categories[column].index(value), "int8"),
                                                  categories=categories[column])
    for column in ("kind", "when"):
        unknown = set(frame[column].cat.categories) - set(categories[column])
        if unknown:
            raise ValueError(f"{path}: column {column} holds {sorted(unknown)}; expected one of {categories[column]}")
        frame[column] = frame[column].cat.set_categories(categories[column])
    return frame


def _read_job(job: Path, dataset: str, family: str, categories: dict[str, list[str]]) -> dict[str, pd.DataFrame]:
    """The tables a job's folder holds, by name (members, curves, ..., predictions)."""
    tables = {}
    for name, filename in [
        ("members", "members.csv"),
        ("curves", "curves.csv"),
        ("layers", "layers.csv"),
        ("params", "params.parquet"),
        ("features", "features.csv"),
        ("predictions", "predictions.parquet"),
    ]:
        if name == "params" and (job / filename).exists():
            tables[name] = _read_params(job / filename, dataset, family, categories)
        elif (job / filename).exists():
            tables[name] = _read(job / filename, dataset, family)
    return tables


def load_results(results_dir: str | Path, data_dir: str | Path) -> Results:
    """Read every job under `results_dir` and the datasets' arrays under `data_dir`."""
    results_dir = Path(results_dir)
    jobs = sorted(p.parent for pattern in ("*/*/members.csv", "csv/*/*/members.csv")
                  for p in results_dir.glob(pattern))
    if not jobs:
        raise NoResultsError(f"no results: {results_dir} has no <family>/<dataset>/members.csv")
    tables: dict[str, list[pd.DataFrame]] = {"members": [], "curves": [], "layers": [], "params": [],
                                             "features": []}
    predictions: dict[str, list[pd.DataFrame]] = {}
    tags = {}
    for job in jobs:
        first = pd.read_csv(job / "members.csv", nrows=1)
        tags[job] = str(first["dataset"].iloc[0]), str(first["family"].iloc[0])
    categories = {"dataset": sorted({d for d, _ in tags.values()}), "family": sorted({f for _, f in tags.values()}),
                  "kind": list(PARAM_KINDS), "when": list(PARAM_WHEN)}
    # two threads: the parquet and CSV readers spend much of their time outside the GIL
    with ThreadPoolExecutor(2) as pool:
        read = list(pool.map(lambda job: _read_job(job, *tags[job], categories), jobs))
    configs = {tags[job]: _read_config(job / "config.yaml") for job in jobs}
    digests = {tags[job]: results_digest(job) for job in jobs}
    for job, job_tables in zip(jobs, read):
        for name, frame in job_tables.items():
            if name == "predictions":
                predictions.setdefault(tags[job][0], []).append(frame)
            else:
                tables[name].append(frame)
    frames = {name: _concat(parts) for name, parts in tables.items()}
    # The baseline sweeps nothing: a missing strength there means no regularization.
    for name in ["members", "curves", "layers", "params", "features"]:
        if "strength" in frames[name]:
            baseline = frames[name]["family"] == "none"
            frames[name].loc[baseline, "strength"] = frames[name].loc[baseline, "strength"].fillna(0.0)
    if "stopped" in frames["curves"]:
        frames["curves"]["stopped"] = _as_bool(frames["curves"]["stopped"])
    members = frames["members"]
    datasets = ordered(members["dataset"].unique(), DATASET_ORDER)
    return Results(
        members=members,
        curves=frames["curves"],
        layers=frames["layers"],
        params=frames["params"],
        features=frames["features"],
        predictions={ds: _concat(parts) for ds, parts in predictions.items()},
        data={ds: load_data(data_dir, ds) for ds in datasets},
        configs={key: config for key, config in configs.items() if config},
        digests=digests,
    )


def results_digest(job: Path) -> str:
    """A job's results by content: the first 16 hex digits of the SHA-256 of its
    members.csv, the tag ``results_digest`` of each of its MLflow runs (docs/results.md)."""
    import hashlib

    return hashlib.sha256((job / "members.csv").read_bytes()).hexdigest()[:16]


def _read_config(path: Path) -> dict:
    """A job's resolved config, or {} where the folder has none."""
    import yaml

    if not path.exists():
        return {}
    loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return loaded if isinstance(loaded, dict) else {}


def load_data(data_dir: str | Path, dataset: str) -> dict[str, np.ndarray]:
    """Arrays of `data/<dataset>.npz`, or {} when the file is absent.

    The file holds one draw per seed; the split arrays (x_train, y_train, ...) returned
    are the first seed's draw, the one the report's single-seed panels show.
    """
    path = Path(data_dir) / f"{dataset}.npz"
    if not path.exists():
        return {}
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    if "seeds" in arrays:
        first = int(np.argmin(arrays["seeds"]))
        for split in ("train", "val", "test"):
            for key in (f"x_{split}", f"y_{split}"):
                if key in arrays:
                    arrays[key] = arrays[key][first]
    return arrays


def ok_rows(frame: pd.DataFrame, members: pd.DataFrame) -> pd.DataFrame:
    """Rows of a per-member table whose member finished with status ok, in table order.

    Strength and seed are taken from members.csv (the last two columns), so that every table
    agrees on them to the bit. The frame is the inner merge on :data:`MEMBER_KEY` (where rows
    match, a categorical key gets the members' dtype, as in a merge), found by a lookup of
    each row's key among the ok members: a merge took a second on the params table's
    million rows.
    """
    ok = members.loc[members["status"] == "ok", [*MEMBER_KEY, "strength", "seed"]]
    keys = pd.MultiIndex.from_frame(frame[MEMBER_KEY])
    position = pd.MultiIndex.from_frame(ok[MEMBER_KEY]).get_indexer(keys)
    found = position >= 0
    rows = frame.drop(columns=["strength", "seed"], errors="ignore")[found].reset_index(drop=True)
    for column in MEMBER_KEY:
        if len(rows) and isinstance(rows[column].dtype, pd.CategoricalDtype):
            rows[column] = _uncategorized(rows[column], ok[column].dtype)
    matched = ok.iloc[position[found]]
    return rows.assign(strength=matched["strength"].to_numpy(), seed=matched["seed"].to_numpy())


def _uncategorized(column: pd.Series, dtype) -> pd.Series:
    """A categorical column as `dtype`, through its categories (5x faster than astype)."""
    codes = column.cat.codes.to_numpy()
    if (codes < 0).any():  # missing values: take would wrap around
        return column.astype(dtype)
    return pd.Series(column.cat.categories.astype(dtype).take(codes), index=column.index, name=column.name)


def strength_name(members: pd.DataFrame, family: str) -> str:
    """The swept key of a family (lam, p, sigma, patience), or "strength" if unnamed."""
    names = members.loc[members["family"] == family, "strength_name"].dropna().astype(str).unique()
    return names[0] if len(names) else "strength"


def jobs(frame: pd.DataFrame):
    """(dataset, family, rows) for each job present in `frame`, in report order."""
    for dataset in ordered(frame["dataset"].unique(), DATASET_ORDER):
        in_dataset = frame[frame["dataset"] == dataset]
        for family in ordered(in_dataset["family"].unique(), FAMILY_ORDER):
            yield dataset, family, in_dataset[in_dataset["family"] == family]


def stronger_is_smaller(name: str) -> bool:
    """Fewer epochs of patience stop earlier, a smaller max-norm bound c binds harder."""
    return name in ("patience", "c")


def weakest_strength(job: pd.DataFrame):
    """The weakest setting of a job's grid (λ, p, σ: the smallest; patience, c: the
    largest), whether or not its members trained; None for an empty job."""
    strengths = job["strength"].dropna()
    if strengths.empty:
        return None
    name = str(job["strength_name"].iloc[0])
    return strengths.max() if stronger_is_smaller(name) else strengths.min()


def best_strength(job: pd.DataFrame):
    """The strength of a job with the highest mean val_metric over its members, among the
    strengths whose every member ended ok (a setting that diverged on some seed is not a
    viable choice); ties: the weakest. None when no strength qualifies."""
    if job.empty:
        return None
    viable = job.groupby("strength")["status"].agg(lambda s: bool((s == "ok").all()))
    means = job.groupby("strength")["val_metric"].mean()[viable].dropna()
    if means.empty:
        return None
    weakest_first = sorted(means.index, reverse=stronger_is_smaller(str(job["strength_name"].iloc[0])))
    return means.reindex(weakest_first).idxmax()


METRIC_TOL = 0.02  # metric units (R², accuracy): "matched", "barely moves"
LOSS_TOL = 0.1  # matching on the loss instead: mean validation loss within 10% of strength 0's


def matched_strength(job: pd.DataFrame, tol: float = METRIC_TOL, on: str = "metric", loss_tol: float = LOSS_TOL):
    """The strongest strength that fits about as well as the unregularized members: whose
    mean validation metric is within ``tol`` of (or above) the job's strength-0 members'
    (``on="metric"``), or whose mean validation loss is at most ``1 + loss_tol`` times
    theirs (``on="loss"``). None without strength-0 members."""
    ok = job[job["status"] == "ok"].groupby("strength")
    if on == "loss":
        means = ok["val_loss"].mean()
        if 0.0 not in means.index:
            return None
        return float(means[means <= (1 + loss_tol) * means[0.0]].index.max())
    means = ok["val_metric"].mean()
    if 0.0 not in means.index:
        return None
    return float(means[means >= means[0.0] - tol].index.max())


def summary_table(members: pd.DataFrame) -> pd.DataFrame:
    """Best setting per (dataset, family): the strength with the highest mean val_metric.

    Means, standard deviations (ddof=1) and 95% t-intervals of the mean (`*_lo`, `*_hi`)
    are across the seeds with status ok at that strength; `n_diverged` counts the job's
    diverged members over all strengths.
    """
    rows = []
    for dataset, family, job in jobs(members):
        ok = job[job["status"] == "ok"]
        by_strength = ok.groupby("strength", dropna=False)[["val_metric", "test_metric", "gap"]]
        means, sds = by_strength.mean(), by_strength.std()  # a third of a named .agg's time
        row = {
            "dataset": dataset,
            "family": family,
            "strength_name": strength_name(job, family),
            "metric_name": str(job["metric_name"].iloc[0]),
            "n_diverged": int((job["status"] == "diverged").sum()),
            "n_seeds": 0,
        }
        best = best_strength(job)
        if best is not None:
            at_best = ok[ok["strength"] == best]
            row.update(strength=best, n_seeds=int(at_best["seed"].count()))
            for column, name in (("val_metric", "val"), ("test_metric", "test"), ("gap", "gap")):
                iv = mean_interval(at_best[column])
                row.update({f"{name}_mean": means.at[best, column], f"{name}_std": sds.at[best, column],
                            f"{name}_lo": iv.lo, f"{name}_hi": iv.hi})
        rows.append(row)
    columns = ["dataset", "family", "strength_name", "strength", "metric_name", "val_mean", "val_std",
               "val_lo", "val_hi", "test_mean", "test_std", "test_lo", "test_hi", "gap_mean", "gap_std",
               "gap_lo", "gap_hi", "n_seeds", "n_diverged"]
    return pd.DataFrame(rows).reindex(columns=columns)


def json_number(value) -> float | int | None:
    """A JSON-stable number: 6 significant digits, NaN and missing as null."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    return float(f"{float(value):.6g}")


def diverged_members(members: pd.DataFrame) -> pd.DataFrame:
    """Members whose loss became non-finite: dataset, family, member, strength, seed, epoch."""
    columns = ["dataset", "family", "member", "strength_name", "strength", "seed", "diverged_epoch"]
    diverged = members.loc[members["status"] == "diverged", columns]
    parts = [rows.sort_values(["strength", "seed"]) for _, _, rows in jobs(diverged)]
    return pd.concat(parts, ignore_index=True) if parts else diverged


def plot_tables(members: pd.DataFrame, curves: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The data of DVC's own plots (``dvc plots show`` / ``diff``), one file per dataset:

    - ``loss_curves/<dataset>.csv``: ``family, epoch, train_loss, val_loss``, the mean over
      seeds of each family's members at its best strength (ok members, epochs they trained);
    - ``metric_vs_strength/<dataset>.csv``: ``family, strength, val_metric, test_metric``,
      the mean over seeds of the ok members at each strength.
    """
    out = {}
    ok = members[members["status"] == "ok"]
    live = ok_rows(curves[~curves["stopped"]], members) if "stopped" in curves else ok_rows(curves, members)
    for dataset, family, job in jobs(ok):
        best = best_strength(job)
        rows = live[(live["dataset"] == dataset) & (live["family"] == family) & (live["strength"] == best)]
        mean = rows.groupby("epoch", as_index=False)[["train_loss", "val_loss"]].mean()
        out.setdefault(f"loss_curves/{dataset}.csv", []).append(mean.assign(family=family))
        by_strength = job.groupby("strength", as_index=False)[["val_metric", "test_metric"]].mean()
        out.setdefault(f"metric_vs_strength/{dataset}.csv", []).append(by_strength.assign(family=family))
    columns = {"loss_curves": ["family", "epoch", "train_loss", "val_loss"],
               "metric_vs_strength": ["family", "strength", "val_metric", "test_metric"]}
    return {name: pd.concat(parts, ignore_index=True)[columns[name.split("/")[0]]] for name, parts in out.items()}
