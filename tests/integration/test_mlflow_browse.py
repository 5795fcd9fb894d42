"""MLflow as its users browse it: the experiment's kind, each run's dataset input and
source, the parent's description, and the best member as a loadable PyTorch model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import PINNED
from regstudy.data import make_dataset, save_npz
from regstudy.export import best_member, member_model
from regstudy.job import run_job
from regstudy.stacked import StackedMLP
from regstudy.stages.train import compose_job
from regstudy_report.stats import mean_interval

SIZES = dict(n_train=40, n_val=20, n_test=30)
DATA = {"signal": dict(SIZES, noise=0.2, n_components=3, phase_std=1.0), "moons": dict(SIZES, noise=0.3)}


def train(root: Path, dataset: str, *overrides: str, uri: str | None = None) -> tuple[pd.DataFrame, MlflowClient, list]:
    path = root / "data" / f"{dataset}.npz"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        save_npz(path, make_dataset(dataset, DATA[dataset], seeds=range(3)))
    uri = uri or f"sqlite:///{root / 'mlflow.db'}"
    table = run_job(compose_job([f"paths.root={root}", f"paths.results=results/{dataset}", f"data={dataset}",
                                 "model.hidden=[8,8]", "trainer.max_epochs=15", "members.seeds=[0,1,2]",
                                 "metrics.grid_size=16", "metrics.grid_size_2d=8", f"logger.tracking_uri={uri}",
                                 "logger.log_figures=false", *overrides]))
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("regstudy")
    runs = client.search_runs([exp.experiment_id], f"tags.dataset = '{dataset}'", max_results=500)
    return table, client, runs


def load_best(parent, tracking_uri: str):
    mlflow.set_tracking_uri(tracking_uri)
    try:
        return mlflow.pyfunc.load_model(parent.data.tags["best_model_uri"])
    finally:
        mlflow.set_tracking_uri(None)  # it set MLFLOW_TRACKING_URI too, which later jobs would read


def parent_of(runs: list):
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return parent


def test_the_experiment_opens_as_a_model_training_experiment(tmp_path):
    _, client, _ = train(tmp_path, "signal", "experiment=l2", "members.strengths=[0,0.01]")
    assert client.get_experiment_by_name("regstudy").tags["mlflow.experimentKind"] == "custom_model_development"


def test_every_run_has_its_dataset_input_and_source_and_can_be_filtered_by_it(tmp_path):
    table, client, runs = train(tmp_path, "moons", "experiment=dropout", "members.strengths=[0,0.5]")
    path = tmp_path / "data" / "moons.npz"
    digest = hashlib.md5(path.read_bytes()).hexdigest()[:8]
    assert len(runs) == 1 + len(table)
    for r in runs:
        (inp,) = r.inputs.dataset_inputs
        assert (inp.dataset.name, inp.dataset.digest) == ("moons", digest)
        assert json.loads(inp.dataset.source) == {"uri": str(path)}
        assert json.loads(inp.dataset.profile) == {"train_rows": 40, "val_rows": 20, "test_rows": 30,
                                                   "features": 2, "task": "classification", "seeds": [0, 1, 2]}
        assert "[-1, 2]" in inp.dataset.schema
        assert {t.key: t.value for t in inp.tags} == {"mlflow.data.context": "training"}
        assert r.data.tags["mlflow.source.type"] == "LOCAL" and r.data.tags["mlflow.source.name"]
    exp = client.get_experiment_by_name("regstudy").experiment_id
    assert len(client.search_runs([exp], f"dataset.digest = '{digest}'", max_results=100)) == len(runs)
    assert client.search_runs([exp], "dataset.name = 'signal'") == []


def test_every_run_and_run_json_say_which_kernels_the_job_computed_with(tmp_path):
    """The tag a reader filters on (regstudy.kernels): what torch ran here, in this process."""
    table, client, runs = train(tmp_path, "signal", "experiment=l2", "members.strengths=[0,0.01]")
    tags = {r.data.tags["kernels"] for r in runs}
    assert len(runs) == 1 + len(table) and len(tags) == 1
    assert json.loads((tmp_path / "results" / "signal" / "run.json").read_text())["kernels"] in tags
    from regstudy import kernels, products

    assert tags == {kernels.describe(kernels.active())}  # the job ran in this process
    if not PINNED:
        pytest.skip("the kernels are pinned only on x86 with AVX2 (regstudy.kernels): no pin to see in the tag")
    assert tags == {f"ATen AVX2, MKL COMPATIBLE, products {products.path()}"}  # conftest imports regstudy first


def test_a_torch_path_job_with_a_spawned_tracking_process_is_logged_as_a_forked_one_is(tmp_path, monkeypatch):
    """As on macOS, or after a GPU job started CUDA: the tracking process starts fresh."""
    from regstudy import kernels
    from regstudy.tracking import process

    monkeypatch.setattr(process, "start_method", lambda: "spawn")
    table, client, runs = train(tmp_path, "signal", "experiment=l2", "members.strengths=[0,0.01]", "compute=torch")
    assert len(runs) == 1 + len(table) and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["kernels"] for r in runs} == {kernels.describe(kernels.active("torch"))}
    assert kernels.describe(kernels.active("torch")).endswith(", products torch")
    child = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
    assert len(client.get_metric_history(child.info.run_id, "val_loss")) >= 2  # the epochs came through the pipe


def test_the_parent_describes_the_job_with_the_best_strength_and_its_interval(tmp_path):
    table, _, runs = train(tmp_path, "signal", "experiment=l2", "members.strengths=[0,0.001,0.1]")
    note = parent_of(runs).data.tags["mlflow.note.content"]
    means = table.groupby("strength").val_metric.mean()
    best = means.idxmax()
    ci = mean_interval(table[table.strength == best].test_metric)
    assert "**l2** on **signal** (regression): lam in [0, 0.001, 0.1], seeds [0, 1, 2]" in note
    assert f"Best lam = {best:g} by mean validation r2 ({means.max():.3f})" in note
    assert f"its test r2: {ci.mean:.3f} (95% interval {ci.lo:.3f} to {ci.hi:.3f}, 3 seeds)" in note


def test_member_model_computes_what_the_stack_computes_for_each_member():
    torch.manual_seed(0)
    for norm in ("none", "layer", "batch"):
        net = StackedMLP(3, 4, [6, 5], 2, norm=norm)
        net.reset_parameters([torch.Generator().manual_seed(k) for k in range(3)], "uniform", 0.5, "same")
        with torch.no_grad():
            for name, buf in net.named_buffers():  # non-trivial running statistics
                buf.copy_(torch.rand_like(buf) + (0.5 if "var" in name else -0.5))
        net.eval()
        x = torch.randn(3, 7, 4)
        stacked = net(x).detach()
        for k in range(3):
            single = member_model(net, k, "leaky_relu", 0.01, "identity")
            assert all(type(m).__module__.startswith("torch.nn") for m in single.modules())
            torch.testing.assert_close(single(x[k]).detach(), stacked[k], rtol=1e-5, atol=1e-6)


def test_best_member_is_the_best_mean_strength_at_its_first_seed():
    table = pd.DataFrame({"member": range(6), "strength": [0, 0, 0, 1, 1, 1], "seed": [2, 0, 1, 1, 0, 2],
                          "val_metric": [0.5, 0.6, 0.7, 0.9, 0.1, 0.5], "status": ["ok"] * 6})
    assert best_member(table) == 1  # strength 0 (mean 0.6 > 0.5), at seed 0
    table.loc[4, "val_metric"] = 0.8  # strength 1's mean is now 0.733: its first seed is member 4
    assert best_member(table) == 4
    table.loc[4, "status"] = "diverged"  # a diverged member neither counts nor represents
    assert best_member(table) == 3
    assert best_member(table.assign(status="diverged")) is None


@pytest.mark.parametrize("dataset, overrides", [("signal", ["experiment=l2", "members.strengths=[0,0.01]"]),
                                                ("moons", ["experiment=batchnorm_l2", "members.strengths=[0,0.001]"])])
def test_the_best_model_loads_with_pyfunc_and_predicts_what_the_tables_say(tmp_path, dataset, overrides):
    table, _, runs = train(tmp_path, dataset, *overrides)
    parent = parent_of(runs)
    k = best_member(table)
    (best_run,) = [r for r in runs if r.data.tags.get("best_member") == "true"]
    assert int(best_run.data.tags["member"]) == k
    model = load_best(parent, f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert model.metadata.signature is not None and model.metadata.saved_input_example_info is not None
    data = np.load(tmp_path / "data" / f"{dataset}.npz")
    row = table.iloc[k]
    seed_row = list(data["seeds"]).index(row.seed)
    x, y = data["x_test"][seed_row].astype(np.float32), data["y_test"][seed_row]
    out = np.asarray(model.predict(x))
    if dataset == "moons":
        measured = float((out.argmax(-1) == y).mean())
    else:
        measured = float(1 - ((out[:, 0] - y) ** 2).sum() / ((y - y.mean()) ** 2).sum())
    assert measured == pytest.approx(row.test_metric, abs=1e-5)


def test_browsing_works_the_same_against_the_shared_server(tmp_path, tracking_server):
    table, client, runs = train(tmp_path, "moons", "experiment=l2", "members.strengths=[0,0.01]",
                                uri=tracking_server.url)
    parent = parent_of(runs)
    assert client.get_experiment_by_name("regstudy").tags["mlflow.experimentKind"] == "custom_model_development"
    assert all(r.inputs.dataset_inputs[0].dataset.name == "moons" for r in runs)
    assert "**l2** on **moons**" in parent.data.tags["mlflow.note.content"]
    model = load_best(parent, tracking_server.url)
    data = np.load(tmp_path / "data" / "moons.npz")
    row = table.iloc[best_member(table)]
    seed_row = list(data["seeds"]).index(row.seed)
    accuracy = float((np.asarray(model.predict(data["x_test"][seed_row].astype(np.float32))).argmax(-1)
                      == data["y_test"][seed_row]).mean())
    assert accuracy == pytest.approx(row.test_metric, abs=1e-5)
