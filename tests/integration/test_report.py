"""The report stage on small but real result tables written in the documented schema."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import pytest
import scipy.stats

from regstudy_report import build_report, figures
from regstudy_report.claims import CLAIMS
from regstudy_report.stats import sig, signed
from regstudy_report.__main__ import main

SRC = Path(__file__).resolve().parents[2] / "src"
TASKS = {"signal": ("regression", "r2"), "moons": ("classification", "accuracy")}
STRENGTH_NAMES = {"none": "none", "l2": "lam", "l1": "lam", "elastic_net": "lam", "batchnorm_l2": "lam", "dropout": "p"}
# (dataset, family, strengths); every job has seeds 0, 1 and 2
JOBS = [
    ("signal", "none", [0.0]),
    ("moons", "none", [0.0]),
    ("signal", "l2", [0.0, 1.0]),
    ("signal", "dropout", [0.0, 0.5]),
    ("signal", "batchnorm_l2", [0.0, 0.01]),
    ("moons", "l2", [0.0, 0.001]),
    ("moons", "dropout", [0.0, 0.5]),
]
SEEDS = [0, 1, 2]
DIVERGED = {("moons", "dropout", 0.5, 1): 3}  # (dataset, family, strength, seed) -> epoch
EPOCHS, LAYERS, WIDTH, SAMPLE = 6, 4, 8, 64


def write_job(root: Path, dataset: str, family: str, strengths: list[float], diverged: dict, rng) -> None:
    """One train job's folder, every table in the schema of docs/results.md."""
    job = root / "results" / dataset / family
    job.mkdir(parents=True)
    task, metric = TASKS[dataset]
    grid = [(s, seed) for s in strengths for seed in SEEDS]
    members, curves, layers, params, predictions = [], [], [], [], []
    for member, (strength, seed) in enumerate(grid):
        bad_epoch = diverged.get((dataset, family, strength, seed))
        key = {"member": member, "strength": strength, "seed": seed}
        losses = {split: rng.uniform(0.05, 0.3) * (1 + strength) for split in ("train", "val", "test")}
        metrics = {split: rng.uniform(0.6, 0.95) - 0.2 * strength for split in ("train", "val", "test")}
        if bad_epoch:
            losses = {split: math.nan for split in losses}
            metrics = {split: math.nan for split in metrics}
        members.append({
            **key, "dataset": dataset, "family": family, "sweep": family,
            "strength_name": STRENGTH_NAMES[family],
            "status": "diverged" if bad_epoch else "ok", "diverged_epoch": bad_epoch or math.nan,
            "epochs_trained": EPOCHS, "best_epoch": EPOCHS, "task": task, "metric_name": metric,
            **{f"{split}_loss": v for split, v in losses.items()},
            **{f"{split}_metric": v for split, v in metrics.items()},
            "gap": losses["val"] - losses["train"], "penalty": strength * 2.0,
            "weight_norm": 5.0 / (1 + 10 * strength), "near_zero_fraction": min(1.0, strength),
            "zero_threshold": 1e-3, "alive_neurons": int(3 * WIDTH * (1 - strength / 2)),
            "total_neurons": 3 * WIDTH,
        })
        for epoch in range(1, EPOCHS + 1):
            broken = bad_epoch is not None and epoch >= bad_epoch
            loss = math.nan if broken else losses["train"] * (1 + 2.0 / epoch)
            curves.append({
                **key, "epoch": epoch, "train_loss": loss, "val_loss": loss * 1.2, "test_loss": loss * 1.3,
                "train_metric": 0.8, "val_metric": 0.7, "test_metric": 0.7, "penalty": strength,
                "weight_norm": 5.0 / epoch, "near_zero_fraction": 0.1, "alive_neurons": 3 * WIDTH,
                "stopped": False,
            })
            for layer in range(LAYERS):
                norm = math.nan if broken else 2.0 / (1 + strength * epoch)
                normalized = family == "batchnorm_l2" and layer < LAYERS - 1
                layers.append({
                    **key, "epoch": epoch, "layer": layer, "weight_norm": norm,
                    "effective_lr": 1e-3 / norm**2 if normalized else math.nan,
                    "near_zero_fraction": 0.1, "alive_neurons": WIDTH if layer < LAYERS - 1 else math.nan,
                })
        for layer in range(LAYERS):
            for kind in ("kernel", "bias"):
                init = rng.uniform(-0.5, 0.5, SAMPLE)
                # lam = 1 collapses the kernels onto 0: the zero-variance case for the KDEs
                final = np.zeros(SAMPLE) if strength == 1.0 else 0.8 * init + rng.normal(0, 0.05, SAMPLE)
                if bad_epoch:
                    final = np.full(SAMPLE, math.nan)
                for when, values in (("init", init), ("final", final)):
                    params += [{**key, "layer": layer, "kind": kind, "when": when, "value": v} for v in values]
        mc_std = 0.1 * strength if family == "dropout" else 0.0
        if dataset == "signal":
            for x in np.linspace(-3, 3, 40):
                y = math.nan if bad_epoch else math.sin(x) * (1 - strength)
                predictions.append({**key, "x": x, "y_pred": y, "mc_mean": y, "mc_std": mc_std})
        else:
            for x0 in np.linspace(-1.5, 2.5, 15):
                for x1 in np.linspace(-1, 1.5, 15):
                    p1 = math.nan if bad_epoch else 1 / (1 + math.exp(-3 * (x1 - 0.3 * math.sin(2 * x0))))
                    predictions.append({**key, "x0": x0, "x1": x1, "p1": p1, "mc_mean": p1,
                                        "mc_std": mc_std * 4 * p1 * (1 - p1)})
    pd.DataFrame(members).to_csv(job / "members.csv", index=False)
    pd.DataFrame(curves).to_csv(job / "curves.csv", index=False)
    pd.DataFrame(layers).to_csv(job / "layers.csv", index=False)
    pd.DataFrame(params).to_parquet(job / "params.parquet", index=False)
    pd.DataFrame(predictions).to_parquet(job / "predictions.parquet", index=False)
    # the resolved config: batchnorm_l2 changes the network (its comparator is its own λ = 0)
    sweep = {"batchnorm_l2": "l2"}.get(family, family)
    (job / "config.yaml").write_text(json.dumps({
        "family": family, "members": {"sweep": sweep, "strengths": strengths, "seeds": SEEDS},
        "model": {"hidden": [WIDTH] * 3, "norm": "batch" if family == "batchnorm_l2" else "none"},
        "regularizer": {r: ({"lam": 0.0} if r == sweep else None) for r in ("l2", "dropout")},
        "optim": {"_target_": "torch.optim.Adam", "lr": 0.001}}))
    (job / "run.json").write_text(json.dumps({
        "tracking_uri": "http://127.0.0.1:5000", "experiment_id": "7",
        "parent_run_id": f"parent-{dataset}-{family}",
        "member_run_ids": [f"run-{dataset}-{family}-{m}" for m in range(len(grid))],
        "git_commit": "0123456789abcdef0123456789abcdef01234567",
    }))


def write_study(root: Path, jobs=JOBS, diverged=DIVERGED) -> Path:
    """Results and data folders of a small study under root; returns root."""
    rng = np.random.default_rng(0)
    for dataset, family, strengths in jobs:
        write_job(root, dataset, family, strengths, diverged, rng)
    (root / "data").mkdir()
    x = np.sort(rng.uniform(-3, 3, 30))
    np.savez(root / "data" / "signal.npz", x_train=x[:, None], y_train=np.sin(x) + rng.normal(0, 0.1, 30))
    points = rng.uniform(-1, 1.5, (30, 2))
    np.savez(root / "data" / "moons.npz", x_train=points, y_train=(points[:, 1] > 0.3).astype(int))
    return root


def all_members(root: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(p) for p in sorted((root / "results").glob("*/*/members.csv"))])


def expected_figures(root: Path) -> set[str]:
    """Figure ids the report should hold, from the rules of what each figure needs."""
    ids = set()
    for dataset, rows in all_members(root).groupby("dataset"):
        families = set(rows["family"])
        ids |= {f"{dataset}-{slug}" for slug in ("loss-curves", "predictions", "parameter-kdes", "paired-vs-strength")}
        if families & {"l1", "l2", "elastic_net", "group_lasso"}:
            ids.add(f"{dataset}-sparsity")
        if families & {"l2", "batchnorm_l2", "weight_decay", "layernorm_weight_decay"}:
            ids.add(f"{dataset}-normalization")
        if "dropout" in families:
            ids.add(f"{dataset}-mc-dropout")
    return ids


def estimate(values: pd.Series) -> str:
    """``mean [lo, hi]``: the 95% t-interval computed by hand, 3 significant digits."""
    x = values.dropna().to_numpy(dtype=float)
    if len(x) < 2:
        return sig(x.mean())  # no interval from one seed
    half = scipy.stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    lo, hi = x.mean() - half, x.mean() + half
    return f"{sig(to_interval_precision(x.mean(), lo, hi))} [{sig(lo)}, {sig(hi)}]"


def to_interval_precision(mean: float, lo: float, hi: float) -> float:
    """The mean rounded to the decimals of the interval's 3 significant digits."""
    return round(mean, 2 - int(np.floor(np.log10(max(abs(lo), abs(hi))))))


def best_settings(root: Path) -> dict:
    """Per (dataset, family), computed by hand: best strength (highest mean validation metric
    among the strengths with no diverged member; ties: the weakest, here the smallest) and
    the stats there."""
    best = {}
    for (dataset, family), job in all_members(root).groupby(["dataset", "family"]):
        viable = [s for s, rows in job.groupby("strength") if (rows["status"] == "ok").all()]
        ok = job[job["status"] == "ok"]
        means = ok.groupby("strength")[["val_metric", "test_metric", "gap"]].agg(["mean", "std"])
        strength = means.loc[viable, ("val_metric", "mean")].idxmax() if viable else None
        best[dataset, family] = {
            "strength": strength, "stats": means.loc[strength] if viable else None,
            "rows": ok[ok["strength"] == strength], "n_seeds": int((ok["strength"] == strength).sum()),
            "n_diverged": int((job["status"] == "diverged").sum()), "job": job,
        }
    return best


def leave_one_out(job: pd.DataFrame) -> dict[int, float]:
    """Per seed, by hand: the strength with the highest mean validation metric over the other
    seeds, among the strengths with no diverged member (ties: the smallest)."""
    viable = sorted(s for s, rows in job.groupby("strength") if (rows["status"] == "ok").all())
    out = {}
    for seed in sorted(job["seed"].unique()):
        others = job[(job["seed"] != seed) & job["strength"].isin(viable)]
        means = others.groupby("strength")["val_metric"].mean().reindex(viable)
        out[seed] = means.idxmax()
    return out


def cross_fitted_by_hand(job: pd.DataFrame, base_test: pd.Series) -> tuple[np.ndarray, float]:
    """Each seed's test difference at its leave-one-out choice, and the jackknife standard
    error of their mean: the whole choice re-made without each seed k in turn,
    se² = (n-1)/n Σ_k (θ_k - mean θ)²."""
    test = job.set_index(["seed", "strength"])["test_metric"]

    def diffs(rows: pd.DataFrame) -> pd.Series:
        return pd.Series({seed: test[seed, s] - base_test[seed] for seed, s in leave_one_out(rows).items()})

    x = diffs(job)
    thetas = np.array([diffs(job[job["seed"] != k]).mean() for k in sorted(job["seed"].unique())])
    n = len(thetas)
    return x.to_numpy(), float(np.sqrt((n - 1) / n * np.sum((thetas - thetas.mean()) ** 2)))


def holm_by_hand(p: list[float]) -> list[float]:
    """Holm's adjusted p-values: sorted ascending, the i-th (from 0) times m - i, then the
    running maximum, capped at 1; returned in the input's order."""
    order = np.argsort(p)
    out, running = [0.0] * len(p), 0.0
    for i, k in enumerate(order):
        running = max(running, min(1.0, (len(p) - i) * p[k]))
        out[k] = running
    return out


def summary_row(html: str, dataset: str, family: str) -> str:
    match = re.search(rf'<tr id="best-{dataset}-{family}"[^>]*>(.*?)</tr>', html, re.S)
    assert match, f"no summary row for {dataset}/{family}"
    return match.group(1)


def test_report_content(tmp_path):
    root = write_study(tmp_path)
    index, metrics_path = build_report(root / "results", root / "data", root / "reports")
    html = index.read_text()

    ids = expected_figures(root)
    # the headline figures: every finding, the claims, the ranks, a forest plot per dataset
    headline = {"effects-heatmap", "claim-grid", "critical-difference", "forest-signal", "forest-moons"}
    assert html.count('<img src="data:image/png;base64,') == len(ids) + len(headline)
    for figure_id in ids:
        assert re.search(rf'<figure id="{figure_id}">\s*<h3>[^<]*</h3>\s*<img src="data:image/png;base64,', html)
    for figure_id in headline:
        assert re.search(rf'<figure id="{figure_id}">\s*(<h3>[^<]*</h3>)?\s*<img src="data:image/png;base64,', html)
    # the findings section opens with them: the heatmap before any dataset's table
    assert html.index('id="effects-heatmap"') < html.index('id="forest-signal"') < html.index('id="finding-signal-')
    assert "http://" not in html and "https://" not in html

    # the diverged member, visibly marked, with its epoch
    members = all_members(root)
    bad = members[members["status"] == "diverged"].iloc[0]
    row = re.search(rf'<tr class="diverged" id="diverged-moons-dropout-{bad["member"]}">(.*?)</tr>', html, re.S)
    assert row and "DIVERGED" in row.group(1)
    assert f"<td class=\"num\">{int(bad['diverged_epoch'])}</td>" in row.group(1)

    for (dataset, family), best in best_settings(root).items():
        cells = summary_row(html, dataset, family)
        assert f"= {sig(best['strength'])}</td>" in cells
        for column in ("val_metric", "test_metric", "gap"):
            assert estimate(best["rows"][column]) in cells
        assert f'<td class="num">{best["n_seeds"]}</td>' in cells

    # findings: each family at its best strength against its comparator, paired by seed,
    # two tests each, Holm across the dataset's tests, all by hand
    found = json.loads((root / "reports" / "findings.json").read_text())
    for dataset in ("signal", "moons"):
        tests = {}
        for (d, family), best in best_settings(root).items():
            if d != dataset or family == "none":
                continue
            own = family == "batchnorm_l2"  # its network differs: judged against its own λ = 0
            rows = members[(members["dataset"] == dataset) & (members["status"] == "ok")]
            base = rows[(rows["family"] == family) & (rows["strength"] == 0.0)] if own else \
                rows[rows["family"] == "none"]
            # each seed's test difference at the strength the other seeds' validation prefers
            base_test = base.set_index("seed")["test_metric"]
            x, se = cross_fitted_by_hand(best["job"], base_test)
            entry = found["findings"][dataset][family]
            assert entry["comparator"] == ("batchnorm_l2 at lam = 0" if own else "none")
            if own and set(leave_one_out(best["job"]).values()) == {0.0}:
                assert entry["verdict"] == "no regularization selected"
                continue
            margin = 0.02 if dataset == "signal" else 0.01
            df = len(x) - 1
            p = 2 * scipy.stats.t.sf(abs(x.mean() / se), df)
            q = max(scipy.stats.t.sf((x.mean() + margin) / se, df), scipy.stats.t.sf((margin - x.mean()) / se, df))
            tests[family] = (x, p, q)
            assert entry["p"] == pytest.approx(float(f"{p:.6g}"), rel=1e-5)
            assert entry["p_equivalence"] == pytest.approx(float(f"{q:.6g}"), rel=1e-5)
            half = scipy.stats.t.ppf(0.975, df) * se
            lo, hi = x.mean() - half, x.mean() + half
            row = re.search(rf'<tr id="finding-{dataset}-{family}">(.*?)</tr>', html, re.S).group(1)
            assert f"{signed(to_interval_precision(x.mean(), lo, hi))} [{sig(lo)}, {sig(hi)}]" in row, row
        adjusted = {name: holm_by_hand([t[i] for t in tests.values()]) for i, name in ((1, "p"), (2, "q"))}
        for k, (family, (x, _, _)) in enumerate(tests.items()):
            p_adj, q_adj = adjusted["p"][k], adjusted["q"][k]
            verdict = ("equivalent" if q_adj < 0.05 else "better" if p_adj < 0.05 and x.mean() > 0 else
                       "worse" if p_adj < 0.05 else "undetermined")
            entry = found["findings"][dataset][family]
            assert entry["p_adjusted"] == pytest.approx(float(f"{p_adj:.6g}"), rel=1e-5)
            assert entry["verdict"] == verdict
            row = re.search(rf'<tr id="finding-{dataset}-{family}">(.*?)</tr>', html, re.S).group(1)
            assert f">{verdict}</span>" in row
        assert found["datasets"][dataset]["tests"] == len(tests)

    metrics = json.loads(metrics_path.read_text())
    assert set(metrics) == {"signal", "moons", "study"}
    assert metrics["study"]["members"] == len(members)
    for dataset in ("signal", "moons"):
        labels = [e["verdict"] for e in found["findings"][dataset].values()]
        assert metrics[dataset]["verdicts"] == ", ".join(
            f"{labels.count(v)} {v}" for v in ("better", "equivalent", "worse", "undetermined",
                                               "no regularization selected", "not measured") if v in labels)
        tested = {f: e for f, e in found["findings"][dataset].items()
                  if e["verdict"] in ("better", "equivalent", "worse", "undetermined")}
        best = max(sorted(tested), key=lambda f: tested[f]["effect"])
        assert (metrics[dataset]["best_family"], metrics[dataset]["best_effect"]) == (best, tested[best]["effect"])
    assert metrics_path.read_text() == json.dumps(metrics, indent=2, sort_keys=True) + "\n"

    # every claim has its section, with a verdict per dataset it was checked on
    claims = json.loads((root / "reports" / "claims.json").read_text())
    for claim in CLAIMS:
        assert f'<section class="claim" id="claim-{claim.id}">' in html
        for key, entry in claims[claim.id].items():
            assert entry["verdict"] in ("reproduced", "not reproduced", "inconclusive", "not testable",
                                        "not measured")

    # provenance: versions and each job's MLflow filter; nothing that differs per clone or
    # run (run ids, tracking URI, commit), as the report is a hashed DVC output
    import hashlib

    digest = hashlib.sha256((root / "results" / "moons" / "dropout" / "members.csv").read_bytes()).hexdigest()[:16]
    assert f"tags.results_digest = &#39;{digest}&#39;" in html  # the very runs behind these tables
    assert "0123456789abcdef" not in html and "parent-moons-dropout" not in html and "127.0.0.1:5000" not in html
    for package in ("torch", "pytorch_lightning", "hydra-core", "mlflow", "seaborn", "dvc", "pandas", "numpy"):
        assert f"<td>{package}</td>" in html


def test_reproducible_and_cli(tmp_path):
    """The CLI and a second run on the same inputs give byte-identical files."""
    root = write_study(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-m", "regstudy_report", "--results", str(root / "results"),
         "--data", str(root / "data"), "--out", str(root / "first")],
        env=env, capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    build_report(root / "results", root / "data", root / "second")
    written = sorted(p.relative_to(root / "first").as_posix() for p in (root / "first").rglob("*") if p.is_file())
    assert written == sorted(["claims.json", "findings.json", "index.html", "metrics.json",
                              *(f"plots/{kind}/{d}.csv" for kind in ("loss_curves", "metric_vs_strength")
                                for d in ("signal", "moons"))])  # no temporary file left
    for name in written:
        assert (root / "first" / name).read_bytes() == (root / "second" / name).read_bytes()


def test_no_results_fails_naming_the_path(tmp_path, capsys):
    empty = tmp_path / "results"
    empty.mkdir()
    code = main(["--results", str(empty), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "reports")])
    assert code != 0
    assert str(empty) in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()


def test_all_diverged_family_gives_null_metrics(tmp_path):
    """A family whose every member diverged still renders; it is not measured, its numbers null."""
    diverged = {("signal", "dropout", s, seed): 2 for s in (0.0, 0.5) for seed in SEEDS}
    root = write_study(tmp_path, diverged=diverged)
    index, metrics_path = build_report(root / "results", root / "data", root / "reports")
    text = (root / "reports" / "findings.json").read_text()
    assert "NaN" not in text and "NaN" not in metrics_path.read_text()
    entry = json.loads(text)["findings"]["signal"]["dropout"]
    assert entry["verdict"] == "not measured"
    assert entry["strength"] is None and entry["effect"] is None and entry["p"] is None
    html = index.read_text()
    assert html.count('<tr class="diverged"') == 2 * len(SEEDS)
    assert summary_row(html, "signal", "dropout").count("n/a") == 4  # strength and three numbers
    assert "dropout: no setting trained on every seed without diverging; nothing to compare." in html


def test_constant_parameters_do_not_break_kdes():
    """p = 1 dropout or lam = 1 can leave every kernel entry equal, even at init."""
    rows = [{"dataset": "signal", "family": family, "member": m, "strength": s, "seed": 0, "layer": 0,
             "kind": "kernel", "when": when, "value": 0.25}
            for family in ("l2", "dropout") for m, s in enumerate([0.0, 1.0]) for when in ("init", "final")]
    members = pd.DataFrame([{"dataset": "signal", "family": family, "member": m, "strength": s, "seed": 0,
                             "status": "ok", "strength_name": "lam"}
                            for family in ("l2", "dropout") for m, s in enumerate([0.0, 1.0])])
    uri = figures.to_data_uri(figures.parameter_kdes(pd.DataFrame(rows), members))
    assert uri.startswith("data:image/png;base64,")


def test_params_load_as_categoricals_and_an_unknown_kind_is_refused(tmp_path):
    """params (millions of rows in a study) holds its string columns as categoricals with
    the same categories in every job, so they stay categorical when concatenated; a kind
    the report does not know is refused, naming the file, not silently turned into NaN."""
    from regstudy_report.tables import load_results

    root = write_study(tmp_path)
    params = load_results(root / "results", root / "data").params
    for column in ("dataset", "family", "kind", "when"):
        assert isinstance(params[column].dtype, pd.CategoricalDtype), column
    expected = pd.concat([pd.read_parquet(f) for f in sorted((root / "results").glob("*/*/params.parquet"))])
    assert len(params) == len(expected)
    assert params["value"].sum() == pytest.approx(expected["value"].sum())
    one = next((root / "results").glob("*/*/params.parquet"))
    frame = pd.read_parquet(one)
    frame.loc[0, "kind"] = "gain"
    frame.to_parquet(one, index=False)
    with pytest.raises(ValueError, match=r"params.parquet: column kind holds \['gain'\]"):
        load_results(root / "results", root / "data")


def test_ok_rows_is_the_inner_merge_with_the_ok_members(tmp_path):
    """ok_rows finds each row's member instead of merging (a second on the study's millions
    of params rows): the same rows, order, columns and dtypes as the merge, on categorical
    (params) and string keys, with a diverged member left out."""
    from regstudy_report.tables import MEMBER_KEY, load_results, ok_rows

    results = load_results(write_study(tmp_path) / "results", tmp_path / "data")
    members = results.members
    assert (members["status"] == "diverged").any()
    ok = members.loc[members["status"] == "ok", [*MEMBER_KEY, "strength", "seed"]]
    tables = [results.params, results.params[results.params["kind"] == "kernel"], results.curves, results.layers,
              results.predictions["moons"], results.params.iloc[:0], results.curves.iloc[::-1]]
    for table in tables:
        merged = table.drop(columns=["strength", "seed"], errors="ignore").merge(ok, on=MEMBER_KEY, how="inner")
        assert len(merged) < len(table) or table.empty
        pd.testing.assert_frame_equal(ok_rows(table, members), merged, check_exact=True)


def test_single_dataset_draws_in_process(tmp_path):
    """With one dataset the figures are drawn in this process (no workers): the same page."""
    root = write_study(tmp_path, jobs=[job for job in JOBS if job[0] == "signal"])
    index, _ = build_report(root / "results", root / "data", root / "reports")
    html = index.read_text()
    ids = expected_figures(root) | {"effects-heatmap", "claim-grid", "forest-signal"}  # no ranks from one dataset
    assert html.count('<img src="data:image/png;base64,') == len(ids)
    assert all(f'<figure id="{figure_id}">' in html for figure_id in ids)


def test_the_figure_pool_ends_even_where_sigterm_only_takes_note():
    """The figure workers are forked from whatever process builds the report. One that had
    trained with Lightning holds a SIGTERM handler that only takes note; at the pool's end
    a worker can be left waiting on the pool's queue, and only SIGTERM ends it: in every
    worker, SIGTERM (and SIGINT, SIGHUP) must have their default action, death."""
    import subprocess
    import sys

    code = ("import signal\n"
            "from regstudy_report import _forked_pool\n"
            "def dispositions(_):\n"
            "    return [signal.getsignal(s) == signal.SIG_DFL for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)]\n"
            "for s in (signal.SIGTERM, signal.SIGHUP):\n"
            "    signal.signal(s, lambda *a: None)\n"
            "with _forked_pool(2) as pool:\n"
            "    print(all(all(d) for d in pool.map(dispositions, range(8))))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


def test_ranking_sentence_agrees_in_number_with_its_counts():
    """One family that does worse "does worse even at its best setting"; two better ones "do better"."""
    from regstudy_report.findings import findings, ranking_sentence
    from regstudy_report.tables import Results

    base = [0.80, 0.82, 0.81, 0.79, 0.83]
    shift = {"none": 0.0, "l1": 0.10, "l2": 0.05, "dropout": -0.10, "noise": 0.0}
    noise = [0.001, -0.002, 0.001, 0.0, 0.002]  # paired differences vary, so every test is defined
    rows = [{"dataset": "moons", "family": family, "sweep": family, "strength_name": "lam",
             "strength": 0.1, "seed": seed, "member": seed, "status": "ok", "metric_name": "accuracy",
             "task": "classification", "val_metric": b + d + e, "test_metric": b + d + e}
            for family, d in shift.items() for seed, (b, e) in enumerate(zip(base, noise))]
    for row in rows:
        if row["family"] == "none":
            row["strength"], row["strength_name"] = 0.0, "none"
            row["val_metric"] = row["test_metric"] = base[row["seed"]]
        if row["family"] == "noise":  # differences that straddle 0 by more than the margin: undetermined
            row["test_metric"] = base[row["seed"]] + [0.0, 0.03, -0.03, 0.02, -0.02][row["seed"]]
    empty = pd.DataFrame()
    found = findings(Results(pd.DataFrame(rows), empty, empty, empty, empty, {}, {}))
    verdicts = {f.family: f.verdict for f in found}
    assert verdicts == {"none": "baseline", "l1": "better", "l2": "better", "dropout": "worse",
                        "noise": "undetermined"}
    assert ranking_sentence(found, "moons") == (
        "On moons, 2 families do better than their comparators (l1, l2, best first); 1 family does worse even "
        "at its best setting (dropout); 1 family is undetermined.")


def test_a_family_that_diverged_entirely_is_a_finding_and_the_rest_renders(tmp_path):
    """Issue 32, defect 1: every member of l2 and l1 on sparse and of l2 on signal diverged
    (an SGD at lr 1e3): the report says so, in the findings, the claims and the figures,
    and renders everything else (it used to stop on best_strength's None)."""
    jobs = [("signal", "none", [0.0]), ("signal", "l2", [0.0, 1.0]), ("signal", "dropout", [0.0, 0.5]),
            ("sparse", "none", [0.0]), ("sparse", "l2", [0.0, 1e-3]), ("sparse", "l1", [0.0, 1e-3]),
            ("sparse", "elastic_net", [0.0, 1e-3])]
    dead = {(d, f, s, seed): 1 for d, f, strengths in jobs for s in strengths for seed in SEEDS
            if (d, f) in {("signal", "l2"), ("sparse", "l2"), ("sparse", "l1")}}
    TASKS.setdefault("sparse", ("regression", "r2"))
    root = write_study(tmp_path, jobs=jobs, diverged=dead)
    np.savez(root / "data" / "sparse.npz", x_train=np.zeros((5, 4)), y_train=np.zeros(5),
             feature_relevant=np.array([True, False, False, False]), feature_block=np.array([0, -1, -1, -1]))
    for family in ("l2", "l1", "elastic_net"):  # features.csv: the first-layer norm of each of 4 inputs
        job = root / "results" / "sparse" / family
        members = pd.read_csv(job / "members.csv")
        pd.DataFrame([{"member": m.member, "strength": m.strength, "seed": m.seed, "feature": j,
                       "norm": np.nan if m.status == "diverged" else 1.0 / (1 + j), "dropped": False,
                       "relevant": j == 0, "block": 0 if j == 0 else np.nan}
                      for m in members.itertuples() for j in range(4)]).to_csv(job / "features.csv", index=False)
    index, _ = build_report(root / "results", root / "data", root / "reports")
    html = index.read_text()
    assert "l2: no setting trained on every seed without diverging; nothing to compare." in html
    findings = json.loads((root / "reports" / "findings.json").read_text())
    assert findings["findings"]["sparse"]["l1"]["verdict"] == "not measured"
    assert findings["findings"]["sparse"]["elastic_net"]["verdict"] != "not measured"
    assert html.count('<tr class="diverged"') == 2 * 2 * len(SEEDS) + 2 * len(SEEDS)
    claims = json.loads((root / "reports" / "claims.json").read_text())
    assert claims["l1_beats_l2_when_sparse"]["sparse:l1-vs-l2"]["verdict"] == "not measured"
    assert "no setting of l1 trained on every seed without diverging" in html
    assert claims["texts_l2_sweep"]["signal:l2"]["verdict"] == "not measured"
    assert 'id="sparse-features"' in html and 'id="signal-paired-vs-strength"' in html
