"""Train jobs end to end: Hydra multirun (joblib), divergence, dropout p = 1, MLflow content."""

from __future__ import annotations

import json
import os
import re
import time
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from conftest import need_extra
from regstudy.data import load_npz, save_npz
from regstudy.job import run_job
from regstudy.lifecycle import alive
from regstudy.stages.train import compose_job



def store(root: Path) -> tuple[MlflowClient, list]:
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("regstudy")
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def job(root: Path, *overrides: str):
    cfg = compose_job([f"paths.root={root}", "paths.results=results/job", "model.hidden=[8,8]",
                       "metrics.grid_size=16", *overrides])
    return run_job(cfg)


def test_joblib_multirun_logs_every_job(workdir):
    cmd = [sys.executable, "-m", "regstudy.train", "-m", "hydra/launcher=joblib",
           "hydra.launcher.n_jobs=2", "experiment=l2,dropout", "model.hidden=[8]",
           "trainer.max_epochs=2", "members.seeds=[0,1]"]
    env = {k: v for k, v in os.environ.items() if k != "REGSTUDY_CONF"}
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    client, runs = store(workdir)
    parents = {r.data.tags["family"]: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    assert set(parents) == {"l2", "dropout"}
    for family, parent in parents.items():
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        results = next(workdir.glob(f"multirun/*/*_{family}_signal/results/members.csv"))
        members = pd.read_csv(results)
        assert len(children) == len(members) == 2 * members.strength.nunique()
        assert {r.data.params["member.seed"] for r in children} == {"0", "1"}
        artifacts = {a.path for a in client.list_artifacts(children[0].info.run_id)}
        assert artifacts == {"config.yaml", "weights.pt", "member.png"}
    assert all(r.info.status == "FINISHED" for r in runs)


def assert_every_job_trained_and_logged(workdir: Path) -> None:
    """The l2 and dropout jobs of a sweep: results, and a FINISHED run per job and member."""
    _, runs = store(workdir)
    parents = {r.data.tags["family"] for r in runs if "mlflow.parentRunId" not in r.data.tags}
    assert parents == {"l2", "dropout"} and all(r.info.status == "FINISHED" for r in runs)
    for family in parents:
        members = pd.read_csv(next(workdir.glob(f"multirun/*/*_{family}_signal/results/members.csv")))
        assert len([r for r in runs if r.data.tags.get("family") == family]) == 1 + len(members)


def test_submitit_sweep_runs_each_job_as_its_own_process(workdir):
    """The cluster launcher, tested through submitit's local executor (the same launcher
    code as on SLURM, with local processes): every job trains, logs and finishes."""
    need_extra("slurm")
    cmd = [sys.executable, "-m", "regstudy.train", "-m", "hydra/launcher=submitit_local",
           "hydra.launcher.timeout_min=5", "experiment=l2,dropout", "model.hidden=[8]",
           "trainer.max_epochs=2", "members.seeds=[0]", "logger.log_figures=false"]
    env = {k: v for k, v in os.environ.items() if k != "REGSTUDY_CONF"}
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert_every_job_trained_and_logged(workdir)
    assert list(workdir.glob("multirun/*/.submitit/*"))  # submitit's own job folders


@pytest.mark.slow  # 25 s: Ray's start-up
def test_ray_sweep_runs_each_job_as_a_ray_task_on_a_local_instance(workdir):
    """hydra-ray-launcher on a real local Ray instance: every job trains, logs and
    finishes in a Ray worker process, and no Ray process outlives the sweep."""
    need_extra("ray")
    cmd = [sys.executable, "-m", "regstudy.train", "-m", "hydra/launcher=ray_local",
           "hydra.launcher.ray.init.num_cpus=2", "experiment=l2,dropout", "model.hidden=[8]",
           "trainer.max_epochs=2", "members.seeds=[0]", "logger.log_figures=false"]
    env = {k: v for k, v in os.environ.items() if k != "REGSTUDY_CONF"}
    proc = subprocess.run(cmd, cwd=workdir, env={**env, "RAY_AUTH_MODE": "disabled"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Ray Launcher is launching 2 jobs" in proc.stdout + proc.stderr
    workers = set(re.findall(r"\(_run_job pid=(\d+)\)", proc.stdout + proc.stderr))
    assert workers and all(int(p) != os.getpid() for p in workers)
    assert_every_job_trained_and_logged(workdir)
    time.sleep(1)
    assert not [p for p in map(int, workers) if alive(p)]  # Ray's workers ended with the sweep


def test_the_slurm_launcher_settings_compose_and_override():
    from hydra import compose, initialize_config_dir

    from regstudy.config import register_configs
    from regstudy.paths import CONFIG_DIR

    need_extra("slurm")
    register_configs()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=cpu",
                                          "hydra.launcher.mem_gb=8"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.mem_gb, launcher.cpus_per_task, launcher.timeout_min) == ("cpu", 8, 1, 60)


@pytest.mark.parametrize("launcher, extra, module", [
    ("ray_local", "ray", "hydra_plugins.hydra_ray_launcher"),
    ("slurm", "slurm", "hydra_plugins.hydra_submitit_launcher"),
    ("submitit_local", "slurm", "hydra_plugins.hydra_submitit_launcher"),
])
def test_a_launcher_whose_extra_is_absent_is_refused_naming_the_extra(workdir, launcher, extra, module):
    """Where the launcher's plugin cannot be imported (as without its extra: a None in
    sys.modules is how Python itself refuses an import), the sweep stops before Hydra
    composes, in one line naming the extra; nothing is written."""
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            f"sys.argv = ['train', '-m', 'hydra/launcher={launcher}', 'experiment=l2']\n"
            "from regstudy.train import main; main()")
    env = {k: v for k, v in os.environ.items() if k != "REGSTUDY_CONF"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (f"error: hydra/launcher={launcher} needs regstudy's extra '{extra}', which is "
                                   f"not installed: pip install regstudy[{extra}] (or regstudy[all]; in this "
                                   "project, make env-all)")
    assert not (workdir / "multirun").exists() and not (workdir / "mlflow.db").exists()


def test_a_diverging_member_is_recorded_and_the_others_finish(workdir):
    # SGD on lam * sum w^2 multiplies w by (1 - 2 lr lam) per step: |1 - 2e3| explodes.
    table = job(workdir, "experiment=l2", "optim=sgd", "optim.lr=0.1", "members.seeds=[0]",
                "members.strengths=[0.0,1.0e4]", "trainer.max_epochs=3")
    ok, bad = table.iloc[0], table.iloc[1]
    assert ok.status == "ok" and np.isfinite(ok.val_loss)
    assert bad.status == "diverged" and bad.diverged_epoch == 1
    written = pd.read_csv(workdir / "results" / "job" / "members.csv")
    assert list(written.status) == ["ok", "diverged"]
    _, runs = store(workdir)
    by_strength = {r.data.params["member.strength"]: r for r in runs
                   if "mlflow.parentRunId" in r.data.tags}
    assert by_strength["10000.0"].info.status == "FAILED"
    assert by_strength["10000.0"].data.tags["status"] == "diverged"
    assert by_strength["0.0"].info.status == "FINISHED"
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_dropout_p_one_trains_and_keeps_its_initial_kernels(workdir):
    table = job(workdir, "experiment=dropout", "members.strengths=[0.0,1.0]", "members.seeds=[0]",
                "trainer.max_epochs=3", "logger.enabled=false")
    assert list(table.status) == ["ok", "ok"]
    assert np.isfinite(table.val_loss).all()
    params = pd.read_parquet(workdir / "results" / "job" / "params.parquet")
    kernels = params[(params.kind == "kernel") & (params.strength == 1.0)]
    init = kernels[kernels["when"] == "init"].value.to_numpy()
    final = kernels[kernels["when"] == "final"].value.to_numpy()
    np.testing.assert_array_equal(init, final)  # no gradient reaches any kernel at p = 1
    preds = pd.read_parquet(workdir / "results" / "job" / "predictions.parquet")
    # With dropout on (MC) the hidden layers carry nothing: a constant, certain function.
    p_one = preds[preds.strength == 1.0]
    assert p_one.mc_mean.std() < 1e-6 and (p_one.mc_std == 0).all()
    trained = params[(params.kind == "kernel") & (params.strength == 0.0)]
    assert not np.array_equal(trained[trained["when"] == "init"].value,
                              trained[trained["when"] == "final"].value)


def test_same_config_and_seed_give_the_same_numbers(workdir):
    args = ("experiment=dropout", "members.strengths=[0.2]", "members.seeds=[3]",
            "trainer.max_epochs=2", "logger.enabled=false")
    job(workdir, *args)
    first = (workdir / "results" / "job" / "curves.csv").read_bytes()
    job(workdir, *args)
    assert (workdir / "results" / "job" / "curves.csv").read_bytes() == first


def test_a_failed_job_leaves_no_results_and_no_running_run(workdir):
    bad = load_npz(workdir / "data" / "signal.npz")
    bad["y_val"] = bad["y_val"][:, :3]  # inconsistent split: evaluation fails after runs opened
    save_npz(workdir / "data" / "signal.npz", bad)
    with pytest.raises(RuntimeError):
        job(workdir, "experiment=l2", "members.seeds=[0]", "trainer.max_epochs=2")
    assert not (workdir / "results" / "job").exists()
    assert not list((workdir / "results").glob(".*tmp*"))
    _, runs = store(workdir)
    assert runs and all(r.info.status == "FAILED" for r in runs)


def test_mlflow_gets_every_nth_epoch_and_the_results_keep_them_all(workdir):
    """7 epochs at max_points_per_curve=3: every ceil(7/3) = 3rd epoch and the first go to
    MLflow; curves.csv keeps all 7, and the test split is logged once, as final_test_*."""
    job(workdir, "experiment=l2", "members.seeds=[0]", "members.strengths=[0.0]",
        "trainer.max_epochs=7", "logger.max_points_per_curve=3", "logger.log_figures=false")
    client, runs = store(workdir)
    child = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
    assert [m.step for m in client.get_metric_history(child.info.run_id, "val_loss")] == [1, 3, 6]
    curves = pd.read_csv(workdir / "results" / "job" / "curves.csv")
    assert list(curves.epoch) == list(range(1, 8)) and "test_loss" not in curves
    members = pd.read_csv(workdir / "results" / "job" / "members.csv")
    assert child.data.metrics["final_test_loss"] == pytest.approx(members.test_loss[0], rel=1e-6)
    assert "test_loss" not in child.data.metrics


def test_flush_every_null_writes_each_run_once_at_the_end_with_every_logged_point(workdir):
    """logger.flush_every=null (the DVC study's setting): no write during training, and at
    the end each member's run has the same points, params and final numbers as with 10;
    run.json says where the job's time went."""
    job(workdir, "experiment=l2", "members.seeds=[0,1]", "members.strengths=[0.0,0.1]",
        "trainer.max_epochs=7", "logger.max_points_per_curve=3", "logger.log_figures=false",
        "logger.flush_every=null")
    client, runs = store(workdir)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    members = pd.read_csv(workdir / "results" / "job" / "members.csv")
    curves = pd.read_csv(workdir / "results" / "job" / "curves.csv")
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    for child in children:
        k = int(child.data.tags["member"])
        history = client.get_metric_history(child.info.run_id, "val_loss")
        assert [m.step for m in history] == [1, 3, 6]
        expected = curves[(curves.member == k) & curves.epoch.isin([1, 3, 6])].val_loss
        assert [m.value for m in history] == pytest.approx(list(expected), rel=1e-5)
        assert float(child.data.params["member.strength"]) == members.strength[k]
        assert child.data.metrics["final_test_loss"] == pytest.approx(members.test_loss[k], rel=1e-6)
    seconds = json.loads((workdir / "results" / "job" / "run.json").read_text())["seconds"]
    assert set(seconds) == {"training_steps", "evaluation", "setup_and_tables"}
    assert all(v > 0 for v in seconds.values())


def test_mlflow_gets_the_chosen_curves_and_members_the_params_that_tell_them_apart(workdir):
    """logger.epoch_metrics and layer_metrics choose the curves; a member's run repeats
    the config keys that tell members apart, the parent has the whole config."""
    job(workdir, "experiment=l2", "members.seeds=[0]", "members.strengths=[0.0,0.1]",
        "trainer.max_epochs=3", "logger.log_figures=false", "logger.epoch_metrics=[val_loss]",
        "logger.layer_metrics=[weight_norm]")
    client, runs = store(workdir)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    child = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
    curves = {k for k in child.data.metrics if not k.startswith("final_")}
    assert curves == {"val_loss", "weight_norm/layer_0", "weight_norm/layer_1", "weight_norm/layer_2"}
    layers = pd.read_csv(workdir / "results" / "job" / "layers.csv")
    member = int(child.data.tags["member"])
    norms = [m.value for m in client.get_metric_history(child.info.run_id, "weight_norm/layer_1")]
    expected = layers[(layers.member == member) & (layers.layer == 1)].sort_values("epoch").weight_norm
    assert norms == pytest.approx(list(expected), rel=1e-5)
    assert parent.data.params["logger.flush_every"] == "10" and "logger.flush_every" not in child.data.params
    assert child.data.params["regularizer.l2.lam"] == parent.data.params["regularizer.l2.lam"]
    assert "regularizer.dropout" not in child.data.params  # off: only on the parent
    assert {"optim.lr", "data.name", "family", "member.strength"} <= set(child.data.params)
