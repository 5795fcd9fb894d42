"""Interruption is total: whatever signal stops a train stage, or its DVC process, every
job of the stage stops, queued ones included; their runs end KILLED, nothing is committed
after the signal, no process of the stage is left, and the next `dvc repro` finishes.

Real `dvc repro train@l2` in a temporary git repo on a tiny study: l2 on three datasets,
two of them training until they are stopped (the two jobs a stage runs at a time) and the
third, short, queued behind them. Each test waits until the running jobs have their runs
open, stops the study one way, then checks within seconds and runs `dvc repro` again.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

from regstudy import warm
from regstudy.data import make_dataset, save_npz
from regstudy.lifecycle import owner, owner_alive
from regstudy.tracking import prepare_store
from conftest import tiny_dvc_yaml
from test_failures import wait_until

ROOT = Path(__file__).resolve().parents[2]
DVC = str(Path(sys.executable).parent / "dvc")
LONG, SHORT = 20000, 2  # epochs: a job that trains until it is stopped, and one that finishes
RUNNING_FIRST, QUEUED = ("signal", "moons"), "sparse"  # the queued one is the cheapest: it runs last
DATA = {"signal": dict(n_train=30, n_val=10, n_test=10, noise=0.2, n_components=3, phase_std=1.0),
        "moons": dict(n_train=30, n_val=10, n_test=10, noise=0.3),
        "sparse": dict(n_train=20, n_val=10, n_test=10, n_features=8, n_blocks=2, block_size=2,
                       correlation=0.9, noise=1.0)}
SEEDS = [0, 1]
STOP_WITHIN = 15.0  # seconds from the signal until no process of the stage is left


def study(epochs: int) -> dict:
    """l2 on the three datasets: the first two train ``epochs``, the queued one SHORT."""
    return {"datasets": [*RUNNING_FIRST, QUEUED], "families": ["l2"], "seeds": SEEDS,
            "by_dataset": {d: {"epochs": SHORT if d == QUEUED else epochs, "overrides": []} for d in DATA},
            "strengths": {"l2": [0.0, 0.01]},
            "overrides": ["model.hidden=[8]", "logger.log_figures=false", "logger.flush_every=1"],
            "controls": {"datasets": [], "families": [], "overrides": []}}


def set_epochs(repo: Path, epochs: int) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["study"] = study(epochs)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def env(shell: str = "/bin/bash") -> dict:
    """A user's environment; DVC runs each stage's command with ``$SHELL -c``. No DVC
    analytics: its daemon, left behind in the repo, is no process of the stage."""
    return {**os.environ, "REGSTUDY_WARM": "1", "SHELL": shell, "DVC_NO_ANALYTICS": "1",
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


@pytest.fixture
def repo(tmp_path: Path):
    """The tiny study in a git + DVC repo, its MLflow store made first (the test reads it
    while the jobs write, and two processes creating its schema at once collide)."""
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"] = {"seed": 0, **DATA}
    params["csv"] = {}
    params["study"] = study(LONG)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp_path / "dvc.yaml").write_text(tiny_dvc_yaml((tmp_path / "dvc.yaml").read_text(), ("digits", "diabetes", "breast_cancer")))
    for cmd in (["git", "init", "-q"], [DVC, "init", "-q"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, env=env())
    prepare_store(f"sqlite:///{tmp_path / 'mlflow.db'}", "regstudy", tmp_path / "mlartifacts")
    yield tmp_path
    for p in stage_processes(tmp_path):  # what a failed test left running
        p.kill()


def runs(repo: Path) -> list:
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("regstudy")
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000)


def start_repro(repo: Path, shell: str = "/bin/bash") -> subprocess.Popen:
    """`dvc repro train@l2` in its own process group, as a terminal runs it; its output
    (and the stage's, which may outlive it) goes to ``dvc.log``, not a pipe."""
    with open(repo / "dvc.log", "w") as out:
        return subprocess.Popen([DVC, "repro", "train@l2"], cwd=repo, env=env(shell), start_new_session=True,
                                stdout=out, stderr=subprocess.STDOUT)


def jobs_training(repo: Path, count: int = 2) -> set[str]:
    """Until ``count`` long jobs have every run open and a curve point logged; their datasets."""
    def ready():
        rs = runs(repo)
        parents = {r.data.tags.get("dataset") for r in rs if "mlflow.parentRunId" not in r.data.tags}
        logged = {r.data.tags.get("dataset") for r in rs if "val_loss" in r.data.metrics}
        return len(parents) == count and parents == logged and all(r.info.status == "RUNNING" for r in rs) \
            and parents

    return wait_until(ready, 120, f"{count} long jobs training")


def _running(p: psutil.Process) -> bool:
    """Whether ``p`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def warm_servers() -> set[int]:
    return {int(p.read_text()) for p in warm.socket_path().parent.glob("*.pid") if p.read_text().isdigit()}


def stage_processes(repo: Path) -> list[psutil.Process]:
    """Every running process working in ``repo`` (DVC, the stage, its warm-forked jobs and
    their tracking processes), but the warm servers, which serve every stage."""
    servers = warm_servers()
    return [p for p in psutil.process_iter(["cwd"])
            if p.info["cwd"] == str(repo) and p.pid not in servers and _running(p)]


def stage_pid(repo: Path) -> int:
    """The train stage's own process (not the shell DVC may run it through)."""
    [p] = [p for p in stage_processes(repo) if p.cmdline()[1:3] == ["-m", "regstudy.stages.train"]]
    return p.pid


def stop_and_check(repo: Path, dvc: subprocess.Popen, stop, training=RUNNING_FIRST) -> float:
    """Stop the study with ``stop()`` while the jobs on ``training`` train; check what is
    left; return the seconds from the signal until the last process of the stage ended."""
    procs = stage_processes(repo)
    assert len(procs) >= 2 + len(training), procs  # DVC, the stage, its jobs (and their tracking processes)
    start = time.monotonic()
    stop()
    dvc.wait(timeout=STOP_WITHIN)
    wait_until(lambda: not any(map(_running, procs)) and not stage_processes(repo), STOP_WITHIN,
               "no process of the stage left")
    took = time.monotonic() - start
    time.sleep(1.0)  # a queued job that would start late
    assert not stage_processes(repo), "a queued job started after the signal"
    rs = runs(repo)
    assert rs and all(r.info.status == "KILLED" for r in rs), [(r.data.tags.get("dataset"), r.info.status) for r in rs]
    assert {r.data.tags.get("dataset") for r in rs} == set(training)  # a queued job never started
    # Nothing committed (the long jobs were stopped, the short one never started), nor a
    # temporary folder left (pathlib's * matches names with a dot first).
    assert not list((repo / "results").glob("l2/*"))
    return took


def assert_next_repro_finishes(repo: Path) -> None:
    set_epochs(repo, SHORT)
    proc = subprocess.run([DVC, "repro", "train@l2"], cwd=repo, env=env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for d in DATA:
        assert (repo / "results" / "l2" / d / "members.csv").is_file(), d
    # A stage's runs end a moment after it (its tracking processes finish in the background).
    wait_until(lambda: all(r.info.status != "RUNNING" for r in runs(repo)), 30, "the runs end")
    assert {r.info.status for r in runs(repo)} == {"KILLED", "FINISHED"}


def log(repo: Path) -> str:
    return (repo / "dvc.log").read_text()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_to_dvc_repro_stops_every_job_of_the_stage(repo, signum):
    """Ctrl-C reaches DVC's whole process group; SIGTERM (`timeout`, a CI cancel, `kill PID`)
    reaches DVC alone, which dies of it and leaves the stage to notice. The defects: after
    Ctrl-C the stage started its queued job; after SIGTERM it ran on with no parent."""
    dvc = start_repro(repo)
    jobs_training(repo)
    stop = (lambda: os.killpg(dvc.pid, signum)) if signum == signal.SIGINT else (lambda: os.kill(dvc.pid, signum))
    took = stop_and_check(repo, dvc, stop)
    if signum == signal.SIGINT:  # DVC ignores it while its stage runs, and reports the stage's code
        assert dvc.returncode != 0 and "exited with 130" in log(repo), log(repo)
    else:
        assert dvc.returncode == -signal.SIGTERM
        assert f"dvc (pid {dvc.pid}), which started this process, has ended" in log(repo), log(repo)
    print(f"{signal.Signals(signum).name}: no process left {took:.2f} s after the signal")
    assert_next_repro_finishes(repo)


@pytest.mark.slow
def test_dvc_killed_outright_through_a_shell_that_stays_stops_the_stage(repo):
    """kill -9 of DVC, with SHELL=/bin/sh: dash does not exec the command, so the stage's
    parent is the shell, which outlives DVC; the stage watches DVC through it."""
    dvc = start_repro(repo, shell="/bin/sh")
    jobs_training(repo)
    shell = psutil.Process(stage_pid(repo)).parent()
    assert shell.pid != dvc.pid and shell.parent().pid == dvc.pid and shell.cmdline()[:2] == ["/bin/sh", "-c"]
    took = stop_and_check(repo, dvc, lambda: os.kill(dvc.pid, signal.SIGKILL))
    assert dvc.returncode == -signal.SIGKILL
    assert f"dvc (pid {dvc.pid}), which started this process, has ended" in log(repo), log(repo)
    print(f"SIGKILL of DVC: no process left {took:.2f} s after it")
    assert_next_repro_finishes(repo)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_signal_to_the_stage_alone_stops_its_jobs_and_exits_with_the_signals_code(repo, signum):
    dvc = start_repro(repo)
    jobs_training(repo)
    pid = stage_pid(repo)
    took = stop_and_check(repo, dvc, lambda: os.kill(pid, signum))
    assert dvc.returncode != 0 and f"exited with {128 + signum}" in log(repo), log(repo)
    print(f"{signal.Signals(signum).name} to the stage: no process left {took:.2f} s after it")
    assert_next_repro_finishes(repo)


@pytest.mark.slow  # 45 s: the grace period is 30 s
def test_a_job_that_does_not_stop_is_killed_after_the_grace_period(repo):
    """A job that cannot act on the signal (here: stopped with SIGSTOP) is killed with its
    tracking process ``warm.STOP_GRACE`` seconds after it, and the stage exits with the
    signal's code; the next job ends the runs it left RUNNING and removes its folder."""
    dvc = start_repro(repo)
    jobs_training(repo)
    jobs = [p for p in stage_processes(repo) if p.ppid() in warm_servers()]
    assert len(jobs) == 2, jobs
    jobs[0].suspend()
    start = time.monotonic()
    os.killpg(dvc.pid, signal.SIGINT)
    dvc.wait(timeout=warm.STOP_GRACE + STOP_WITHIN)
    took = time.monotonic() - start
    assert took >= warm.STOP_GRACE and "exited with 130" in log(repo), log(repo)
    wait_until(lambda: not stage_processes(repo), STOP_WITHIN, "no process of the stage left")
    assert [r.info.status for r in runs(repo)].count("RUNNING") == 1 + 4  # the killed job's: parent and members
    assert not list((repo / "results").glob("l2/[!.]*"))  # nothing committed
    print(f"a job that does not stop: the stage ended {took:.2f} s after the signal")
    assert_next_repro_finishes(repo)
    assert not list((repo / "results").glob("l2/.*"))  # the killed job's temporary folder is gone


# A parent as DVC is: it runs the command, ignores Ctrl-C while it waits, exits with the
# command's code, and dies of anything else without passing it on.
PARENT = [sys.executable, "-c", "import signal, subprocess, sys; p = subprocess.Popen(sys.argv[1:]); "
          "signal.signal(signal.SIGINT, signal.SIG_IGN); sys.exit(p.wait())"]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "parent killed"])
def test_without_the_warm_server_a_stage_stops_as_well(repo, how):
    """REGSTUDY_WARM=0: the stage trains its jobs one after the other in its own process;
    a signal, or the end of its parent, stops it there, and no queued job starts."""
    (repo / "data").mkdir()
    for name, params in DATA.items():
        save_npz(repo / "data" / f"{name}.npz", make_dataset(name, params, SEEDS))
    stage = [sys.executable, "-m", "regstudy.stages.train", "--family", "l2"]
    with open(repo / "dvc.log", "w") as out:
        parent = subprocess.Popen([*PARENT, *stage], cwd=repo, env={**env(), "REGSTUDY_WARM": "0"},
                                  start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    [training] = jobs_training(repo, count=1)
    if how == "ctrl-c":
        took = stop_and_check(repo, parent, lambda: os.killpg(parent.pid, signal.SIGINT), {training})
        assert parent.returncode == 130, log(repo)  # the stage's code, passed on by its parent
    else:
        took = stop_and_check(repo, parent, lambda: os.kill(parent.pid, signal.SIGKILL), {training})
        assert f"(pid {parent.pid}), which started this process, has ended" in log(repo), log(repo)
    assert "regstudy: interrupted (signal" in log(repo) and "Traceback" not in log(repo), log(repo)
    print(f"{how}, without the warm server: no process left {took:.2f} s after it")
    assert_next_repro_finishes(repo)


def test_an_owner_tag_names_its_process_not_a_later_one_with_its_pid():
    """The owner of RUNNING runs, told apart with psutil (pid and start time) on any system:
    alive while it runs, dead once it has ended, and a process that started at another
    time with the same pid is not it."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    tag = owner(proc.pid)
    host, pid, start = tag.rsplit(":", 2)
    assert host and int(pid) == proc.pid and owner_alive(tag) and owner_alive(owner())
    assert not owner_alive(f"{host}:{pid}:{float(start) - 60:.2f}")  # a recycled pid
    proc.kill()
    wait_until(lambda: not owner_alive(tag), 5, "a zombie (dead, not yet reaped) counts as dead")
    proc.wait()
    assert not owner_alive(tag)
    assert owner_alive(f"elsewhere:{pid}:{start}")  # another host's process cannot be checked
