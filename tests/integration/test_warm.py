"""The warm server that DVC train stages fork from (regstudy.warm)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from regstudy import warm
from regstudy.tracking import CPU_LINE
from regstudy.data import make_dataset, save_npz

ROOT = Path(__file__).resolve().parents[2]
STUDY = {"datasets": ["signal"], "families": ["l2"], "seeds": [0], "by_dataset": {"signal": {"epochs": 2}},
         "overrides": ["model.hidden=[4]", "logger.enabled=false"], "strengths": {"l2": [0.0, 0.01]}}


def stage(cwd: Path, warm_on: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "REGSTUDY_WARM": "1" if warm_on else "0"}
    return subprocess.run([sys.executable, "-m", "regstudy.stages.train", "--dataset", "signal",
                           "--family", "l2", "--conf", str(ROOT / "conf")],
                          cwd=cwd, env=env, capture_output=True, text=True)


def workdir(tmp: Path, study: dict) -> Path:
    (tmp / "data").mkdir(parents=True)
    save_npz(tmp / "data" / "signal.npz", make_dataset(
        "signal", dict(n_train=30, n_val=10, n_test=10, noise=0.2, n_components=3, phase_std=1.0), study["seeds"]))
    (tmp / "params.yaml").write_text(yaml.safe_dump({"study": study}))
    return tmp


def test_warm_stage_equals_a_cold_one_byte_for_byte(tmp_path):
    warm_dir, cold_dir = workdir(tmp_path / "warm", STUDY), workdir(tmp_path / "cold", STUDY)
    for _ in range(2):  # the second run is served by the server the first one started
        proc = stage(warm_dir, warm_on=True)
        assert proc.returncode == 0, proc.stderr
    assert warm.socket_path().exists()
    assert stage(cold_dir, warm_on=False).returncode == 0
    for name in ("members.csv", "curves.csv", "layers.csv", "config.yaml"):
        warm_bytes = (warm_dir / "results/l2/signal" / name).read_bytes()
        cold_bytes = (cold_dir / "results/l2/signal" / name).read_bytes()
        if name == "config.yaml":  # paths.root differs; everything else must not
            warm_bytes, cold_bytes = (b.replace(str(d).encode(), b"") for b, d in
                                      ((warm_bytes, warm_dir), (cold_bytes, cold_dir)))
        assert warm_bytes == cold_bytes, name


def test_exit_code_and_stderr_reach_the_client(tmp_path):
    bad = workdir(tmp_path, {**STUDY, "strengths": {"l2": [-1.0]}})
    proc = stage(bad, warm_on=True)
    assert proc.returncode == 2
    assert "members.strengths[0]=-1.0" in proc.stderr
    assert not (bad / "results").exists()


def test_a_changed_source_file_gets_a_new_server(tmp_path, monkeypatch):
    before = warm.code_hash()
    fake = tmp_path / "pkg"
    fake.mkdir()
    (fake / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(warm, "PACKAGE", fake)
    first = warm.code_hash()
    (fake / "a.py").write_text("x = 22\n")
    assert warm.code_hash() != first != before


def test_background_finish_ends_every_run_with_its_artifacts(tmp_path):
    import time

    from mlflow.tracking import MlflowClient

    study = {**STUDY, "overrides": ["model.hidden=[4]"]}  # MLflow on
    cwd = workdir(tmp_path, study)
    proc = stage(cwd, warm_on=True)
    assert proc.returncode == 0, proc.stderr
    assert (cwd / "results/l2/signal/members.csv").is_file()  # committed before the finish
    client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("regstudy")
    deadline = time.monotonic() + 60
    while True:  # the tracking process finishes on its own, shortly after the stage
        runs = client.search_runs([exp.experiment_id])
        if all(r.info.status != "RUNNING" for r in runs) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    members = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(members) == 2
    for r in members:
        assert {a.path for a in client.list_artifacts(r.info.run_id)} == {"config.yaml", "weights.pt", "member.png"}
    # Its last line in the log: what it did and its CPU time (what `make bench` sums).
    log = cwd / "mlflow-tracking.log"
    while CPU_LINE not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.2)
    [line] = [line for line in log.read_text().splitlines() if line.startswith(CPU_LINE)]
    done = re.fullmatch(rf"{CPU_LINE} signal/l2: 2 member runs, (\d+\.\d\d) s CPU", line)
    assert done and float(done[1]) > 0, line


def test_a_family_stage_runs_every_dataset_two_at_a_time_as_a_cold_run_would(tmp_path):
    """`--family` without `--dataset`: one warm fork per dataset, two at a time; the tables are
    the same bytes as running each dataset's job cold, one after the other."""
    study = {**STUDY, "datasets": ["signal", "moons"],
             "by_dataset": {"signal": {"epochs": 2}, "moons": {"epochs": 2}}}
    dirs = {}
    for name in ("warm", "cold"):
        d = workdir(tmp_path / name, study)
        save_npz(d / "data" / "moons.npz", make_dataset(
            "moons", dict(n_train=30, n_val=10, n_test=10, noise=0.3), study["seeds"]))
        dirs[name] = d
    env = {**os.environ, "REGSTUDY_WARM": "1"}
    proc = subprocess.run([sys.executable, "-m", "regstudy.stages.train", "--family", "l2", "--conf", str(ROOT / "conf")],
                          cwd=dirs["warm"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "signal/l2: 2 members" in proc.stdout and "moons/l2: 2 members" in proc.stdout
    for dataset in study["datasets"]:
        env = {**os.environ, "REGSTUDY_WARM": "0"}
        cold = subprocess.run([sys.executable, "-m", "regstudy.stages.train", "--family", "l2", "--dataset", dataset,
                               "--conf", str(ROOT / "conf")], cwd=dirs["cold"], env=env, capture_output=True, text=True)
        assert cold.returncode == 0, cold.stderr
        for name in ("members.csv", "curves.csv", "layers.csv"):
            assert (dirs["warm"] / "results/l2" / dataset / name).read_bytes() == \
                (dirs["cold"] / "results/l2" / dataset / name).read_bytes(), (dataset, name)


def test_the_server_pays_mlflows_one_time_costs_before_forking():
    """The warm server calls WARM_UP once: after it, MLflow's map of installed packages
    (a scan of site-packages that log_model's requirement check would do in every job) is
    built, and SQLAlchemy's mappers of MLflow's tables are configured."""
    import importlib

    import sqlalchemy.orm
    from mlflow.utils import requirements_utils

    for target in warm.WARM_UP:
        module, function = target.split(":")
        getattr(importlib.import_module(module), function)()
    assert requirements_utils._MODULES_TO_PACKAGES and "torch" in requirements_utils._MODULES_TO_PACKAGES
    from mlflow.store.tracking.dbmodels.models import SqlRun

    assert sqlalchemy.orm.class_mapper(SqlRun).configured


def test_a_server_prestarted_by_an_earlier_stage_is_the_one_the_train_stage_uses(tmp_path):
    """generate calls warm.prestart: it returns at once, and the train stage that follows
    waits for that server instead of starting a second one."""
    state = tmp_path / "tmp"
    state.mkdir()
    env = {**os.environ, "TMPDIR": str(state), "REGSTUDY_WARM": "1", "REGSTUDY_WARM_IDLE": "5"}
    subprocess.run([sys.executable, "-c", "from regstudy import warm; warm.prestart()"], env=env, check=True)
    [pid_file] = list(state.glob("regstudy-warm-*/*.pid"))
    try:
        proc = subprocess.run([sys.executable, "-m", "regstudy.stages.train", "--dataset", "signal", "--family", "l2",
                               "--conf", str(ROOT / "conf")], cwd=workdir(tmp_path / "w", STUDY), env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        servers = [p for p in os.listdir("/proc") if p.isdigit() and str(state).encode() in _cmdline(p)
                   and b"regstudy.warm" in _cmdline(p)]
        assert servers == [pid_file.read_text()]
    finally:
        subprocess.run(["kill", pid_file.read_text()], check=False)


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_a_jobs_pidfd_is_readable_exactly_once_it_has_ended():
    """The server wakes on a job's end through its pidfd, not on its next poll."""
    import select

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the job: waits for the word, then ends
        os.close(write_end)
        os.read(read_end, 1)
        os._exit(3)
    os.close(read_end)
    fd = warm._pidfd(pid)
    assert fd is not None  # Linux 5.3+, as on these machines
    try:
        assert select.select([fd], [], [], 0.2)[0] == []  # still running
        os.write(write_end, b"x")
        assert select.select([fd], [], [], 30)[0] == [fd]
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 3
    finally:
        os.close(fd)
        os.close(write_end)


def test_a_server_ending_as_a_stage_starts_is_replaced_not_waited_out(tmp_path):
    """A server seen alive but ending (its idle time out, its socket gone) is not one that
    is starting: the stage starts a new one once it has ended, and runs warm."""
    state = tmp_path / "tmp"
    state.mkdir()
    env = {**os.environ, "TMPDIR": str(state), "REGSTUDY_WARM": "1", "REGSTUDY_WARM_IDLE": "5"}
    path = subprocess.run([sys.executable, "-c", "from regstudy import warm; print(warm.socket_path())"],
                          env=env, check=True, capture_output=True, text=True).stdout.strip()
    # a process that looks like that path's server, never listens, and ends in 2 s
    ending = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2)", "regstudy.warm", path])
    Path(path).with_suffix(".pid").write_text(str(ending.pid))
    try:
        proc = subprocess.run([sys.executable, "-m", "regstudy.stages.train", "--dataset", "signal", "--family", "l2",
                               "--conf", str(ROOT / "conf")], cwd=workdir(tmp_path / "w", STUDY), env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert "warm server" not in proc.stderr, proc.stderr  # not "unavailable, running in this process"
        assert ending.wait(5) == 0
        server = Path(path).with_suffix(".pid").read_text()
        assert server != str(ending.pid) and b"regstudy.warm" in _cmdline(server)
    finally:
        ending.kill()
        subprocess.run(["kill", Path(path).with_suffix(".pid").read_text()], check=False)
