"""The shared tracking server: a real PostgreSQL cluster and a real `mlflow server`
(started once per session, see conftest.tracking_server), written to by real jobs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import free_port, need_extra
from regstudy.server import DATABASE, USER, Server, main, pg_bindir



def train(workdir: Path, *overrides: str, env: dict | None = None, multirun: bool = False):
    cmd = [sys.executable, "-m", "regstudy.train", *(["-m"] if multirun else []),
           "model.hidden=[8]", "trainer.max_epochs=3", "members.seeds=[0,1]", *overrides]
    env = {**{k: v for k, v in os.environ.items() if k != "REGSTUDY_CONF"}, **(env or {})}
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)


def experiment_runs(server: Server, name: str) -> tuple[MlflowClient, list]:
    client = MlflowClient(server.url)
    exp = client.get_experiment_by_name(name)
    assert exp is not None, f"no experiment {name!r} on the server"
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def database_rows(server: Server, sql: str, *args) -> list[tuple]:
    """Rows read straight from PostgreSQL, not through MLflow."""
    psycopg = need_extra("server")
    with psycopg.connect(host="127.0.0.1", port=server.pg_port, user=USER, dbname=DATABASE) as conn:
        return conn.execute(sql, args).fetchall()


def test_a_job_sends_runs_params_metrics_and_artifacts_to_the_server(tracking_server, workdir):
    """One setting, the environment's MLFLOW_TRACKING_URI, sends a job to the server."""
    proc = train(workdir, "experiment=l2", "members.strengths=[0,0.01]", "logger.experiment_name=arrive",
                 env={"MLFLOW_TRACKING_URI": tracking_server.url})
    assert proc.returncode == 0, proc.stderr
    assert "View run" not in proc.stdout  # MLflow's per-run links are silenced
    assert not (workdir / "mlflow.db").exists() and not (workdir / "mlartifacts").exists()

    client, runs = experiment_runs(tracking_server, "arrive")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    members = pd.read_csv(next(workdir.glob("outputs/l2/signal/*/results/members.csv")))
    assert len(parents) == 1 and len(children) == len(members) == 4
    assert all(r.info.status == "FINISHED" for r in runs)
    for r in children:
        row = members[(members.strength == float(r.data.params["member.strength"]))
                      & (members.seed == int(r.data.params["member.seed"]))].iloc[0]
        assert r.data.metrics["final_val_metric"] == pytest.approx(row.val_metric, rel=1e-7)  # the CSV keeps 8 digits
        assert [m.step for m in client.get_metric_history(r.info.run_id, "val_loss")] == [1, 2, 3]
        assert {a.path for a in client.list_artifacts(r.info.run_id)} == {"config.yaml", "weights.pt", "member.png"}
    # The artifacts went through the server into its own artifact root.
    logged = yaml.safe_load(Path(client.download_artifacts(children[0].info.run_id, "config.yaml",
                                                           str(workdir))).read_text())
    kept = yaml.safe_load(next(workdir.glob("outputs/l2/signal/*/results/config.yaml")).read_text())
    # results/ holds no tracking URI (run.json does): the same job logged elsewhere has the same results
    assert logged["logger"].pop("tracking_uri") == tracking_server.url
    assert logged == kept
    exp_id = client.get_experiment_by_name("arrive").experiment_id
    assert len(list((tracking_server.artifacts / exp_id).rglob("weights.pt"))) == 4
    # And the runs are rows of PostgreSQL.
    assert database_rows(tracking_server, "SELECT count(*) FROM runs WHERE experiment_id = %s",
                         int(exp_id)) == [(5,)]


def test_four_jobs_writing_at_once_lose_no_run(tracking_server, workdir):
    proc = train(workdir, "hydra/launcher=joblib", "hydra.launcher.n_jobs=4",
                 "experiment=l2,l1,dropout,noise", f"logger.tracking_uri={tracking_server.url}",
                 "logger.experiment_name=concurrent", "logger.log_figures=false", multirun=True)
    assert proc.returncode == 0, proc.stderr
    client, runs = experiment_runs(tracking_server, "concurrent")
    parents = {r.data.tags["family"]: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    assert set(parents) == {"l2", "l1", "dropout", "noise"}
    for family, parent in parents.items():
        members = pd.read_csv(next(workdir.glob(f"multirun/*/*_{family}_signal/results/members.csv")))
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(children) == len(members)
        assert sorted(float(r.data.params["member.strength"]) for r in children) == sorted(members.strength)
        assert all(len(client.get_metric_history(r.info.run_id, "train_loss")) == 3 for r in children)
    assert all(r.info.status == "FINISHED" for r in runs)


def test_a_job_whose_server_is_down_stops_before_it_trains(workdir):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proc = train(workdir, "experiment=l2", f"logger.tracking_uri={url}")
    assert proc.returncode == 2
    assert f"logger.tracking_uri='{url}'" in proc.stderr and "make server" in proc.stderr
    assert not (workdir / "outputs").exists() and not (workdir / "mlflow.db").exists()


def without(module: str, code: str, cwd: Path) -> subprocess.CompletedProcess:
    """``code`` run by a Python in which ``module`` cannot be imported, as where its extra is
    not installed (a None in sys.modules is how Python itself refuses an import)."""
    env = {k: v for k, v in os.environ.items() if k != "REGSTUDY_CONF"}
    return subprocess.run([sys.executable, "-c", f"import sys; sys.modules[{module!r}] = None\n{code}"],
                          cwd=cwd, env=env, capture_output=True, text=True)


def test_without_psycopg_the_server_and_a_postgresql_store_name_the_extra_to_install(workdir):
    proc = without("psycopg", "from regstudy.server import main; sys.exit(main(['start', '--dir', 'srv']))", workdir)
    assert proc.returncode == 2, proc.stderr
    assert "the shared tracking server (PostgreSQL) needs regstudy's extra 'server'" in proc.stderr
    assert "pip install regstudy[server]" in proc.stderr and not (workdir / "srv").exists()
    uri = "postgresql+psycopg://regstudy@127.0.0.1:9/mlflow"
    proc = without("psycopg", f"sys.argv = ['train', 'experiment=l2', 'logger.tracking_uri={uri}']\n"
                   "from regstudy.train import main; main()", workdir)
    assert proc.returncode == 2, proc.stderr
    assert f"logger.tracking_uri={uri} needs regstudy's extra 'server'" in proc.stderr
    assert not (workdir / "outputs").exists()


def test_status_says_what_runs_and_the_cli_refuses_an_unknown_folder(tracking_server, tmp_path, capsys):
    assert main(["status", "--dir", str(tracking_server.folder)]) == 0
    out = capsys.readouterr().out
    assert "PostgreSQL" in out and ": running" in out and f"{tracking_server.url}: answers" in out
    assert main(["stop", "--dir", str(tmp_path)]) == 1
    assert "no server was started" in capsys.readouterr().err


def test_stop_stops_both_and_start_keeps_the_runs(tracking_server):
    client = MlflowClient(tracking_server.url)
    run = client.create_run(client.create_experiment("persist"))
    client.log_metric(run.info.run_id, "x", 1.5)
    client.set_terminated(run.info.run_id)
    tracking_server.stop()
    assert not tracking_server.healthy()
    pg_isready = [str(pg_bindir() / "pg_isready"), "-h", "127.0.0.1", "-p", str(tracking_server.pg_port)]
    assert subprocess.run(pg_isready, capture_output=True).returncode != 0
    tracking_server.start()
    assert subprocess.run(pg_isready, capture_output=True).returncode == 0
    assert MlflowClient(tracking_server.url).get_run(run.info.run_id).data.metrics == {"x": 1.5}


@pytest.mark.slow  # 25 s: the server's restart
def test_a_job_whose_server_dies_finishes_training_and_says_where_its_results_are(tracking_server, workdir):
    env = {k: v for k, v in os.environ.items() if k != "REGSTUDY_CONF"}
    env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # fail at once, not after minutes of retries
    cmd = [sys.executable, "-m", "regstudy.train", "model.hidden=[8]", "trainer.max_epochs=3000",
           "members.seeds=[0]", "experiment=l2", "members.strengths=[0,0.01]",
           f"logger.tracking_uri={tracking_server.url}",
           "logger.experiment_name=dies"]
    job = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = MlflowClient(tracking_server.url)
    deadline = time.monotonic() + 60
    while not (client.get_experiment_by_name("dies") and len(client.search_runs(
            [client.get_experiment_by_name("dies").experiment_id])) == 3):  # every run open: training
        assert time.monotonic() < deadline and job.poll() is None
        time.sleep(0.2)
    tracking_server.stop()
    try:
        out, err = job.communicate(timeout=120)
    finally:
        tracking_server.start()
    assert job.returncode == 1, err
    results = next(workdir.glob("outputs/l2/signal/*/results"))
    assert f"The job's results are complete in {results}" in err and "Traceback" not in err
    members = pd.read_csv(results / "members.csv")
    assert len(members) == 2 and (members.epochs_trained == 3000).all()
