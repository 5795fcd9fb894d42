"""Whatever ends a train job, nothing survives it, nothing is left RUNNING and nothing
half-written is taken as done; the next run finishes the study.

Real processes (a warm DVC train stage, its forked job and tracking process), a real
SQLite MLflow store, a real tmpfs for the full disk and one real `dvc repro`. Each test
starts a long job, waits until its runs are open, ends it one way, then checks within a
few seconds and runs the stage again.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from regstudy.data import make_dataset, save_npz
from regstudy.lifecycle import owner_alive
from regstudy.tracking import OWNER_TAG, prepare_store

from conftest import small_tmpfs, tiny_dvc_yaml

ROOT = Path(__file__).resolve().parents[2]
LONG, SHORT = 20000, 2  # epochs: a job that runs until it is ended, and one that finishes
STRENGTHS = [0.0, 0.01]
SEEDS = [0, 1]


def study(epochs: int) -> dict:
    return {"datasets": ["signal"], "families": ["l2"], "seeds": SEEDS,
            "by_dataset": {"signal": {"epochs": epochs, "overrides": []}}, "strengths": {"l2": STRENGTHS},
            "overrides": ["model.hidden=[8]", "logger.log_figures=false", "logger.flush_every=1"],
            "controls": {"datasets": ["signal"], "families": [], "overrides": []}}


def set_epochs(cwd: Path, epochs: int) -> None:
    params = yaml.safe_load((cwd / "params.yaml").read_text())
    params["study"] = study(epochs)
    (cwd / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    save_npz(tmp_path / "data" / "signal.npz", make_dataset(
        "signal", dict(n_train=30, n_val=10, n_test=10, noise=0.2, n_components=3, phase_std=1.0), SEEDS))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"study": study(LONG)}))
    create_store(tmp_path)
    return tmp_path


def create_store(root: Path) -> None:
    """The store and experiment the stage would create, made first: the test reads the
    store while the job writes, and two processes creating its schema at once collide."""
    prepare_store(f"sqlite:///{root / 'mlflow.db'}", "regstudy", root / "mlartifacts")


def env() -> dict:
    return {**os.environ, "REGSTUDY_WARM": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def start_stage(cwd: Path) -> subprocess.Popen:
    """The DVC train stage's command, in its own process group (as a terminal runs it)."""
    return subprocess.Popen([sys.executable, "-m", "regstudy.stages.train", "--family", "l2", "--dataset", "signal",
                             "--conf", str(ROOT / "conf")], cwd=cwd, env=env(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def runs(cwd: Path) -> list:
    client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("regstudy")
    return [] if exp is None else client.search_runs([exp.experiment_id])


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.2)


def job_processes(cwd: Path) -> tuple[int, int]:
    """(job pid, tracking pid) once every run is open and a curve point is logged."""
    expected = 1 + len(STRENGTHS) * len(SEEDS)

    def ready():
        rs = runs(cwd)
        child = [r for r in rs if "mlflow.parentRunId" in r.data.tags]
        if len(rs) == expected and all(r.info.status == "RUNNING" for r in rs) and any(
                "val_loss" in r.data.metrics for r in child):
            return rs
        return None

    rs = wait_until(ready, 120, "the job's runs open and training")
    tracking = int(rs[0].data.tags[OWNER_TAG].split(":")[1])
    job = int(Path(f"/proc/{tracking}/stat").read_text().rsplit(")", 1)[1].split()[1])  # its parent
    return job, tracking


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie is gone too (its parent has not reaped it yet)
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def assert_ended_cleanly(cwd: Path, client: subprocess.Popen, pids: tuple[int, ...], statuses: set[str]) -> None:
    client.wait(timeout=30)
    wait_until(lambda: all(gone(p) for p in pids), 10, "no process of the job survives")
    rs = wait_until(lambda: (rs := runs(cwd)) and all(r.info.status != "RUNNING" for r in rs) and rs, 10,
                    "every run ended")
    assert {r.info.status for r in rs} <= statuses, [r.info.status for r in rs]
    assert not (cwd / "results" / "l2" / "signal").exists()  # nothing half-written is complete


def assert_next_run_finishes(cwd: Path) -> None:
    set_epochs(cwd, SHORT)
    proc = start_stage(cwd)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert (cwd / "results" / "l2" / "signal" / "members.csv").is_file()
    assert not list((cwd / "results" / "l2").glob(".signal.tmp-*"))  # a killed job's leftovers are gone
    expected = 1 + len(STRENGTHS) * len(SEEDS)
    wait_until(lambda: len([r for r in runs(cwd) if r.info.status == "FINISHED"]) == expected, 30,
               "the new runs finish")
    assert all(r.info.status != "RUNNING" for r in runs(cwd))


def test_kill_9_of_the_job_worker_ends_its_runs_killed(project):
    """The defect: the worker's tracking process kept the pipe's write end, never saw EOF,
    and lived on with every run RUNNING."""
    client = start_stage(project)
    job, tracking = job_processes(project)
    os.kill(job, signal.SIGKILL)
    assert_ended_cleanly(project, client, (job, tracking), {"KILLED"})
    assert client.returncode == 137
    assert_next_run_finishes(project)


def test_kill_9_of_the_stage_client_stops_its_job(project):
    client = start_stage(project)
    job, tracking = job_processes(project)
    os.kill(client.pid, signal.SIGKILL)
    assert_ended_cleanly(project, client, (job, tracking), {"KILLED"})
    assert_next_run_finishes(project)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_ctrl_c_and_sigterm_end_the_runs_killed(project, how):
    client = start_stage(project)
    job, tracking = job_processes(project)
    if how == "ctrl-c":
        os.killpg(client.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group
    else:
        client.terminate()
    assert_ended_cleanly(project, client, (job, tracking), {"KILLED"})
    assert client.returncode == 128 + (signal.SIGINT if how == "ctrl-c" else signal.SIGTERM)
    assert_next_run_finishes(project)


def test_runs_of_a_job_killed_outright_are_closed_by_the_next_job(project):
    """kill -9 of the job and its tracking process at once: nobody can end the runs. The
    next job sees their owner is dead and ends them KILLED."""
    client = start_stage(project)
    job, tracking = job_processes(project)
    os.killpg(job, signal.SIGKILL)  # the job leads its session: its tracking process too
    client.wait(timeout=30)
    wait_until(lambda: gone(job) and gone(tracking), 10, "both processes gone")
    left = [r for r in runs(project) if r.info.status == "RUNNING"]
    assert len(left) == 5 and not any(owner_alive(r.data.tags[OWNER_TAG]) for r in left)
    assert_next_run_finishes(project)
    assert {r.info.status for r in runs(project) if r.info.run_id in {x.info.run_id for x in left}} == {"KILLED"}


def test_a_full_disk_while_writing_results_fails_the_runs_and_commits_nothing(project):
    results = project / "results"
    results.mkdir()
    with small_tmpfs(results, "48k"):
        set_epochs(project, SHORT)
        proc = start_stage(project)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1 and "could not write" in err and "No space left" in err, err
        rs = wait_until(lambda: (rs := runs(project)) and all(r.info.status != "RUNNING" for r in rs) and rs, 10,
                        "every run ended")
        assert {r.info.status for r in rs} == {"FAILED"}
        assert not (results / "l2" / "signal").exists()
        assert not list((results / "l2").glob(".signal.tmp-*"))  # the partial folder is removed
    assert_next_run_finishes(project)


def test_dvc_repro_after_kill_9_of_the_worker_finishes_the_study(tmp_path):
    """The reported defect through real `dvc repro`: kill -9 of the worker that trains the
    job fails the stage with 137; no run stays RUNNING; the next `dvc repro` finishes."""
    repo = tmp_path
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / "conf", repo / "conf")
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"] = {"seed": 0, "signal": {**params["data"]["signal"], "n_train": 30, "n_val": 10, "n_test": 10}}
    params["csv"] = {}
    params["study"] = study(LONG)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "dvc.yaml").write_text(tiny_dvc_yaml((repo / "dvc.yaml").read_text(), ("moons", "sparse", "digits", "diabetes", "breast_cancer")))
    dvc = str(Path(sys.executable).parent / "dvc")
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"]):
        subprocess.run(cmd, cwd=repo, check=True, env=env())
    create_store(repo)
    client = subprocess.Popen([dvc, "repro", "train@l2"], cwd=repo, env=env(), start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    job, tracking = job_processes(repo)
    os.kill(job, signal.SIGKILL)
    out, _ = client.communicate(timeout=60)
    assert client.returncode != 0 and "137" in out, out
    wait_until(lambda: gone(job) and gone(tracking), 10, "no process of the job survives")
    assert all(r.info.status == "KILLED" for r in runs(repo))
    set_epochs(repo, SHORT)
    proc = subprocess.run([dvc, "repro", "train@l2"], cwd=repo, env=env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (repo / "results" / "l2" / "signal" / "members.csv").is_file()
    # A stage's runs end a moment after it (its tracking process finishes in the background).
    wait_until(lambda: all(r.info.status != "RUNNING" for r in runs(repo)), 30, "the runs end")
    assert all(r.info.status in ("KILLED", "FINISHED") for r in runs(repo))
