"""A copied project writes only into itself.

The MLflow store records where its experiment keeps artifacts as an absolute path, so a
project copied with ``cp -r`` (its ``mlflow.db`` with it) would log its runs' artifacts
into the original's ``mlartifacts/``: the copy is refused, naming both projects. A DVC
experiment in a temporary workspace (``dvc exp run --temp``, under the project's
``.dvc/tmp/exps/``) is a copy DVC deletes once it has run: it logs to the store of the
project it copies. Real processes: ``cp -r``, ``python -m regstudy.train``, ``dvc exp run``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import run
from regstudy.data import make_dataset, save_npz
from regstudy.paths import dvc_experiment_origin

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(n_train=20, n_val=10, n_test=10, noise=0.2, n_components=3, phase_std=1.0)
JOB = ["experiment=l2", "model.hidden=[4]", "members.strengths=[0.0,0.01]", "members.seeds=[0]",
       "trainer.max_epochs=2", "logger.log_figures=false", "paths.results=results/l2"]


def make_project(folder: Path) -> Path:
    """A project with one data file (data/signal.npz) and nothing else."""
    (folder / "data").mkdir(parents=True)
    save_npz(folder / "data" / "signal.npz", make_dataset("signal", TINY, seeds=[0]))
    return folder


def train(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``python -m regstudy.train`` as a user runs it in ``cwd`` (no test-chosen config or store)."""
    env = {k: v for k, v in os.environ.items() if k not in ("REGSTUDY_CONF", "MLFLOW_TRACKING_URI")}
    return subprocess.run([sys.executable, "-m", "regstudy.train", *JOB, *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def runs_of(db: Path) -> list:
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("regstudy")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def test_the_origin_of_a_dvc_temporary_workspace_is_the_project_it_copies(tmp_path):
    assert dvc_experiment_origin(tmp_path / "p" / ".dvc" / "tmp" / "exps" / "tmpab12") == tmp_path / "p"
    assert dvc_experiment_origin(tmp_path / "p" / ".dvc" / "tmp" / "exps" / "run" / "x") == tmp_path / "p"
    assert dvc_experiment_origin(tmp_path / "p" / ".dvc" / "tmp" / "exps") is None  # the folder itself
    assert dvc_experiment_origin(tmp_path / "p") is None
    assert dvc_experiment_origin(tmp_path / "p" / "tmp" / "exps" / "x") is None


@pytest.mark.slow  # 17 s: two jobs, an original and its copy
def test_a_copied_project_is_refused_before_it_writes_into_the_original(tmp_path):
    original = make_project(tmp_path / "original")
    proc = train(original)
    assert proc.returncode == 0, proc.stderr[-3000:]
    db, artifacts = original / "mlflow.db", original / "mlartifacts"
    assert len(runs_of(db)) == 3 and files_under(artifacts)  # a parent and two members, with artifacts
    before = (digest(db), files_under(artifacts))

    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(original), str(copy)], check=True)
    proc = train(copy)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    [error] = [line for line in proc.stderr.splitlines() if line.strip()]
    assert error.startswith("error: the MLflow store") and "Traceback" not in proc.stderr
    assert str(copy / "mlflow.db") in error and str(artifacts) in error and str(copy) in error
    assert (digest(db), files_under(artifacts)) == before  # nothing new in the original
    assert digest(copy / "results" / "l2" / "run.json") == digest(original / "results" / "l2" / "run.json")  # untrained

    # as the message says: remove the copy's store, and the copy logs to a store of its own
    (copy / "mlflow.db").unlink()
    shutil.rmtree(copy / "mlartifacts")
    proc = train(copy)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (digest(db), files_under(artifacts)) == before
    assert len(runs_of(copy / "mlflow.db")) == 3
    assert all(r.info.artifact_uri.startswith((copy / "mlartifacts").as_uri()) for r in runs_of(copy / "mlflow.db"))
    assert files_under(copy / "mlartifacts")


@pytest.mark.slow  # 16 s: two jobs
def test_a_store_given_explicitly_is_used_wherever_it_keeps_artifacts(tmp_path):
    """logger.tracking_uri names a store on purpose: a copy may log to the original's."""
    original = make_project(tmp_path / "original")
    assert train(original).returncode == 0
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(original), str(copy)], check=True)
    proc = train(copy, f"logger.tracking_uri=sqlite:///{original / 'mlflow.db'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(runs_of(original / "mlflow.db")) == 6


DVC_YAML = f"""stages:
  train:
    cmd: python -m regstudy.train {' '.join(JOB)} hydra.run.dir=outputs/train
    deps:
      - data/signal.npz
    outs:
      - results/l2
"""


@pytest.mark.slow
def test_a_dvc_temporary_experiment_logs_to_the_project_it_copies(tmp_path):
    repo = make_project(tmp_path / "study")
    (repo / "dvc.yaml").write_text(DVC_YAML)
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    run(["git", "init", "-q"], repo)
    run([sys.executable, "-m", "dvc", "init", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "study"], repo)
    proc = run([sys.executable, "-m", "dvc", "exp", "run", "--temp", "-n", "tmp-exp"], repo)
    runs = runs_of(repo / "mlflow.db")  # the project's own store, not the deleted workspace's
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}, proc.stdout[-3000:]
    assert all(r.info.artifact_uri.startswith((repo / "mlartifacts").as_uri()) for r in runs)
    assert {r.info.run_id for r in runs} <= {Path(p).parts[0] for p in files_under(repo / "mlartifacts")}
    assert list((repo / ".dvc" / "tmp" / "exps").glob("tmp*")) == []  # DVC deleted its workspace
