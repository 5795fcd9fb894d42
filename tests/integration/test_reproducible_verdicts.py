"""The study's promise across machines: the same verdicts, except those the report marks
borderline (findings) or fragile (claims).

Another CPU (or a GPU) rounds differently in the last bits, and over hundreds of optimizer
steps that gives other trained models. The test stands in for it with a perturbation of
the same size: a small study trained twice, the second time with every initial weight
moved up by one unit in the last place (``model.init.perturb_ulps=1``); both go through
the report's findings and claims, and every row marked neither borderline nor fragile in
either run must get the same verdict.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from regstudy.data import make_dataset, save_npz
from regstudy.job import run_job
from regstudy.stages.train import compose_job
from regstudy_report.claims import check_claims
from regstudy_report.findings import findings
from regstudy_report.stats import BETTER, EQUIVALENT, WORSE
from regstudy_report.tables import load_results

# the study's signal (params.yaml): 30 noisy points, one full batch a step, 200 steps at
# 4e-3, where rounding differences grow the most of all its datasets
SIGNAL = dict(n_train=30, n_val=100, n_test=100, noise=0.5, n_components=3, phase_std=1.0)
SEEDS = list(range(8))
TRAIN = ["trainer.max_epochs=200", "optim.lr=4e-3", "metrics.grid_size=20"]
# grids the report must choose on (near ties included), of sizes it decides: clear harms,
# a clear nothing, and some in between
JOBS = {"none": [0.0], "dropout": [0.7, 0.9], "l2": [0.0, 1e-6, 1e-4], "max_norm": [0.05, 0.1],
        "noise": [0.0, 0.05, 0.1]}


def train(folder: Path, data: Path, ulps: int) -> None:
    for family, strengths in JOBS.items():
        cfg = compose_job([f"experiment={family}", "data=signal", f"data.path={data}", "logger=none",
                           f"members.strengths={strengths}", f"members.seeds={SEEDS}", *TRAIN,
                           f"model.init.perturb_ulps={ulps}", f"paths.results={folder / family / 'signal'}"])
        run_job(cfg)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("perturbed")
    (root / "data").mkdir()
    save_npz(root / "data" / "signal.npz", make_dataset("signal", SIGNAL, seeds=SEEDS))
    for name, ulps in (("exact", 0), ("perturbed", 1)):
        train(root / name, root / "data" / "signal.npz", ulps)
    return root / "exact", root / "perturbed", root / "data"


def test_verdicts_survive_a_one_ulp_perturbation_except_where_marked(two_runs):
    exact, perturbed, data = two_runs
    a, b = load_results(exact, data), load_results(perturbed, data)
    # the perturbation reached the results: other trained models, other numbers
    ma, mb = (r.members.sort_values(["family", "member"]).reset_index(drop=True) for r in (a, b))
    changed = (ma["test_metric"] != mb["test_metric"]).mean()
    assert changed > 0.5, f"the perturbation changed {changed:.0%} of the members' test metrics: too few to test anything"
    # the promise is about the report a reader has: the rows it does not mark
    fa = {f.family: f for f in findings(a)}
    fb = {f.family: f for f in findings(b)}
    steady = [family for family in fa if not fa[family].borderline]
    decided = [family for family in steady if fa[family].verdict in (BETTER, EQUIVALENT, WORSE)]
    assert len(decided) >= 2, {f: (fa[f].verdict, fa[f].borderline) for f in fa}  # the test must test something
    assert {f: fa[f].verdict for f in steady} == {f: fb[f].verdict for f in steady}
    for (claim, ra), (_, rb) in zip(check_claims(a), check_claims(b)):
        before, after = {r.key: r for r in ra}, {r.key: r for r in rb}
        steady_claims = sorted(key for key in before.keys() & after.keys() if not before[key].fragile)
        assert {k: before[k].verdict for k in steady_claims} == {k: after[k].verdict for k in steady_claims}, claim.id


def test_the_same_config_gives_the_same_bytes(two_runs, tmp_path):
    """On the same machine, the same config and seed: the same tables, to the byte."""
    exact, _, data = two_runs
    cfg = compose_job(["experiment=dropout", "data=signal", f"data.path={data / 'signal.npz'}", "logger=none",
                       f"members.strengths={JOBS['dropout']}", f"members.seeds={SEEDS}", *TRAIN,
                       f"paths.results={tmp_path / 'again'}"])
    run_job(cfg)
    for name in ("members.csv", "curves.csv", "layers.csv", "params.parquet", "predictions.parquet"):
        assert (tmp_path / "again" / name).read_bytes() == (exact / "dropout" / "signal" / name).read_bytes(), name
    assert not pd.read_csv(exact / "dropout" / "signal" / "members.csv")["test_metric"].isna().any()
    assert np.isfinite(pd.read_csv(tmp_path / "again" / "members.csv")["test_metric"]).all()
