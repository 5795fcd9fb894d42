"""Bad input is refused by name and faults are said as such, before anything is written.

A bad data file (binary or Latin-1 ``.csv``, a fake, truncated or pickled ``.npz``) is
one line naming the file and what is wrong, exit code 2, nothing written, on the command
line and in a stage; so is a command line Hydra cannot compose. An MLflow store that
cannot take the runs (locked, unwritable, read-only) is found before training, exit
code 1. A full disk is said as such, naming the file, exit code 1, nothing committed.
Ctrl-C on the command line is exit code 130 and one line.

Real processes (``python -m regstudy.train``, the train and csv stages' commands); a
full disk is a write sent to ``/dev/full`` (a small tmpfs needs root: slow tier).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from regstudy.data import DataFileError, load_npz, make_dataset, read_csv_table, save_npz
from regstudy.results import could_not_write, save_torch
from regstudy.tracking import prepare_store

from conftest import small_tmpfs

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"signal": dict(n_train=20, n_val=10, n_test=10, noise=0.2, n_components=3, phase_std=1.0),
         "moons": dict(n_train=20, n_val=10, n_test=10, noise=0.3),
         "sparse": dict(n_train=20, n_val=10, n_test=10, n_features=8, n_blocks=2, block_size=2,
                        correlation=0.9, noise=1.0)}
QUICK = ["model.hidden=[8]", "members.seeds=[0]", "logger.log_figures=false"]
FULL = Path("/dev/full")  # every write there fails with ENOSPC, as on a full disk


def env(**extra: str) -> dict:
    """A user's environment: this one's tools first, no test-chosen Hydra config."""
    out = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **extra}
    out.pop("REGSTUDY_CONF", None)
    return out


def run(cwd: Path, *args: str, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env(**extra), capture_output=True,
                          text=True, timeout=timeout)


def cli(cwd: Path, *overrides: str, **extra: str) -> subprocess.CompletedProcess:
    return run(cwd, "-m", "regstudy.train", *overrides, **extra)


def assert_said(proc: subprocess.CompletedProcess, code: int, *mentions: str) -> None:
    """Exit ``code``, ``error:`` lines naming each of ``mentions`` (one per job) and nothing
    else: no traceback, no warning."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    said = [line for line in lines if line not in errors and "waiting up to" not in line]  # a stated wait
    assert errors and not said, proc.stderr  # no traceback, no warning: only the job's own words
    for fragment in mentions:
        assert any(fragment in line for line in errors), (fragment, proc.stderr)


def make_npz(path: Path, name: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_npz(path, make_dataset(name, SMALL[name], seeds=[0, 1]))
    return path


# --- the bad files: each made in place of a good one, and what its message must say ---


def binary_csv(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 8)


def latin1_csv(path: Path) -> None:
    path.write_bytes("a,b,y\n".encode() + "1,2,café\n".encode("latin-1") + b"3,4,tea\n" * 20)


def fake_npz(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(3000))


def truncated_npz(path: Path) -> None:
    whole = path.read_bytes()
    path.write_bytes(whole[:len(whole) // 2])  # an interrupted copy


def pickled_npz(path: Path) -> None:
    arrays = load_npz(path)
    arrays["x_train"] = np.array([{"not": "numbers"}] * 2, dtype=object)
    np.savez(path, **arrays)  # allow_pickle: numpy pickles the object array


CSV_CASES = {"binary .csv": (binary_csv, ["is not a text file", "binary data"]),
             "Latin-1 .csv": (latin1_csv, ["is not UTF-8 text", "line 2", "0xe9"])}
# dataset: (how its file is spoiled, what the message says); the issue's truncated file is moons'
NPZ_CASES = {"signal": (fake_npz, ["is not an .npz file", "not a zip archive"]),
             "moons": (truncated_npz, ["is truncated", "cut short"]),
             "sparse": (pickled_npz, ["pickled Python objects"])}


def test_each_bad_file_is_one_data_file_error_naming_it(tmp_path):
    """In-process, every case and its neighbours: one DataFileError naming the file."""
    for spoil, mentions in CSV_CASES.values():
        spoil(tmp_path / "my.csv")
        with pytest.raises(DataFileError) as info:
            read_csv_table(tmp_path / "my.csv", "y")
        assert str(tmp_path / "my.csv") in str(info.value) and all(m in str(info.value) for m in mentions)
    for name, (spoil, mentions) in NPZ_CASES.items():
        spoil(make_npz(tmp_path / f"{name}.npz", name))
        with pytest.raises(DataFileError) as info:
            load_npz(tmp_path / f"{name}.npz")
        assert str(tmp_path / f"{name}.npz") in str(info.value) and all(m in str(info.value) for m in mentions)
    others = {"ragged.csv": (b"a,b,y\n1,2,0\n1,2,3,4\n", "line 3 has 4 fields, the header 3"),
              "utf16.csv": ("a,b,y\n".encode("utf-16"), "UTF-16"),
              "empty.npz": (b"", "is empty"),
              "one.npz": (b"\x93NUMPY\x01\x00", "a single .npy array"),
              "other.npz": (None, "is not a dataset: it has no x_train")}
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    for name, (content, message) in others.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(DataFileError, match=message):
            (read_csv_table(tmp_path / name, "y") if name.endswith(".csv") else load_npz(tmp_path / name))
    utf8_with_bom = "\ufeffa,b,y\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(30))
    (tmp_path / "bom.csv").write_text(utf8_with_bom, encoding="utf-8")
    assert read_csv_table(tmp_path / "bom.csv", "y").features == ["a", "b"]  # Excel's "CSV UTF-8"


@pytest.mark.parametrize("case", [*CSV_CASES, *NPZ_CASES])
def test_the_command_line_refuses_a_bad_file_by_name_and_writes_nothing(tmp_path, case):
    """The defect: Hydra's callback turned these into a warning; the job then wrote its
    output folder and ended in a traceback, exit code 1."""
    if case in CSV_CASES:
        spoil, mentions = CSV_CASES[case]
        path, overrides = tmp_path / "my.csv", ["data=csv", "data.path=my.csv", "data.target=y"]
    else:
        spoil, mentions = NPZ_CASES[case]
        path, overrides = make_npz(tmp_path / "data" / f"{case}.npz", case), [f"data={case}"]
    spoil(path)
    before = sorted(tmp_path.rglob("*"))
    proc = cli(tmp_path, *overrides, "experiment=l2", *QUICK)
    assert_said(proc, 2, str(path), *mentions)
    assert sorted(tmp_path.rglob("*")) == before  # no outputs/, no results, no MLflow store


def study(datasets: list[str]) -> dict:
    return {"datasets": datasets, "families": ["l2"], "seeds": [0],
            "by_dataset": {d: {"epochs": 2, "overrides": []} for d in datasets}, "strengths": {"l2": [0.0]},
            "overrides": ["model.hidden=[8]", "logger.log_figures=false"]}


def test_a_train_stage_refuses_each_bad_data_file_by_name_and_writes_nothing(tmp_path):
    """The stage's command on a study of three datasets, each file spoiled its own way:
    every job says which file and what is wrong; the stage exits 2; nothing is written.
    (The defect: ordering the jobs by cost read the files first, and a truncated one
    ended the stage in a BadZipFile traceback.)"""
    for name, (spoil, _) in NPZ_CASES.items():
        spoil(make_npz(tmp_path / "data" / f"{name}.npz", name))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"study": study(list(NPZ_CASES))}))
    before = sorted(tmp_path.rglob("*"))
    proc = run(tmp_path, "-m", "regstudy.stages.train", "--family", "l2", "--conf", str(ROOT / "conf"))
    assert_said(proc, 2, *[str(tmp_path / "data" / f"{n}.npz") for n in NPZ_CASES],
                *[m for _, mentions in NPZ_CASES.values() for m in mentions])
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("case", list(CSV_CASES))
def test_the_csv_stage_refuses_a_bad_file_by_name_and_writes_nothing(tmp_path, case):
    spoil, mentions = CSV_CASES[case]
    spoil(tmp_path / "my.csv")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "data": {"seed": 0}, "study": {"seeds": [0, 1]}, "csv": {"mine": {"path": "my.csv", "target": "y"}}}))
    proc = run(tmp_path, "-m", "regstudy.stages.generate", "--csv", "mine", "--out", "out", REGSTUDY_WARM="0")
    assert_said(proc, 2, "my.csv", *mentions)
    assert not (tmp_path / "out").exists()


def test_a_command_line_hydra_cannot_compose_exits_2(tmp_path):
    """The README's exit code of bad input; Hydra's own is 1."""
    for overrides, message in ((["experiment=bogus"], "Could not find 'experiment/bogus'"),
                               (["model.hidden=[8"], "at input '[8'")):
        proc = cli(tmp_path, *overrides)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_failing_job_still_exits_1_not_2(tmp_path):
    """Only a command line Hydra cannot compose becomes 2: a job that composed and failed
    keeps Hydra's 1 (here a run folder Hydra cannot create: a file stands in its way)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "blocked").write_text("")
    make_npz(tmp_path / "data" / "signal.npz", "signal")
    proc = cli(tmp_path, "hydra.run.dir=blocked/run", "logger.enabled=false", *QUICK, "trainer.max_epochs=1")
    assert proc.returncode == 1, proc.stderr


# --- the MLflow store, checked before training ---


def store(root: Path) -> Path:
    prepare_store(f"sqlite:///{root / 'mlflow.db'}", "regstudy", root / "mlartifacts")
    return root / "mlflow.db"


def runs(db: Path) -> list:
    client = MlflowClient(f"sqlite:///{db}")
    return client.search_runs([client.get_experiment_by_name("regstudy").experiment_id])


@contextlib.contextmanager
def write_transaction(db: Path):
    """Another process's write transaction on the store (a sqlite3 shell, a browser)."""
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        con.execute("ROLLBACK")
        con.close()


@contextlib.contextmanager
def store_lock_held(db: Path):
    """Another job holding the store's lock (creating it, or hung while it did)."""
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` read-only: by its mode, or for root (whom modes do not stop) a
    read-only bind mount; skipped where neither can be had."""
    if os.geteuid() != 0:
        for p in folder.iterdir():
            p.chmod(0o444)
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
            for p in folder.iterdir():
                p.chmod(0o644)
        return
    bind = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True, text=True)
    if bind.returncode != 0:
        pytest.skip(f"cannot make a read-only folder as root here: {bind.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True, capture_output=True)
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


STORE_CASES = {
    "locked by a write transaction": (write_transaction, ["mlflow.db", "is locked", "1 s waited"]),
    "its lock held by another job": (store_lock_held, ["mlflow.db", "is locked", "mlflow.db.lock", "1 s waited"]),
}


@pytest.mark.parametrize("case", list(STORE_CASES))
def test_a_locked_store_is_reported_before_training_after_a_stated_wait(workdir, case):
    """The defect: found after training (a lock held on our lock file: never, the job
    waited forever), then 'runs stay RUNNING' when no run had been created."""
    hold, mentions = STORE_CASES[case]
    db = store(workdir)
    start = time.monotonic()
    with hold(db):
        proc = cli(workdir, "experiment=l2", *QUICK, REGSTUDY_STORE_WAIT="1")
    assert time.monotonic() - start < 30
    assert_said(proc, 1, *mentions)
    assert "waiting up to 1 s" in proc.stderr and "RUNNING" not in proc.stderr
    assert not (workdir / "outputs").exists() and runs(db) == []


def test_an_unwritable_store_is_reported_before_training(workdir):
    (workdir / "afile").write_text("")
    proc = cli(workdir, "experiment=l2", *QUICK, f"logger.tracking_uri=sqlite:///{workdir}/afile/mlflow.db")
    assert_said(proc, 1, str(workdir / "afile"), "cannot be written", "Not a directory")
    assert not (workdir / "outputs").exists()


def test_a_read_only_store_is_reported_before_training(workdir):
    folder = workdir / "store"
    folder.mkdir()
    db = store(folder)
    with read_only(folder):
        proc = cli(workdir, "experiment=l2", *QUICK, f"logger.tracking_uri=sqlite:///{db}")
        assert_said(proc, 1, str(db), "cannot be written")
    assert not (workdir / "outputs").exists() and runs(db) == []


def test_a_train_stage_reports_a_locked_store_before_training(workdir):
    """In a stage the store was first touched by the job's tracking process, which trains
    meanwhile: the job failed after training, its results already committed."""
    (workdir / "params.yaml").write_text(yaml.safe_dump({"study": study(["signal"])}))
    db = store(workdir)
    with write_transaction(db):
        proc = run(workdir, "-m", "regstudy.stages.train", "--family", "l2", "--dataset", "signal",
                   "--conf", str(ROOT / "conf"), REGSTUDY_STORE_WAIT="1")
    assert_said(proc, 1, "signal/l2", str(db), "is locked")
    assert not (workdir / "results").exists() and runs(db) == []


def test_tracking_that_opened_no_run_does_not_say_runs_stay_running(workdir, monkeypatch):
    """A store that fails after the check (here: the tracking process cannot prepare it):
    the job says MLflow opened no run, not that its runs stay RUNNING."""
    from regstudy import job
    from regstudy.tracking import runs as tracking
    from regstudy.stages.train import compose_job

    def gone(cfg):
        raise OSError("the store went away")

    monkeypatch.setattr(tracking, "prepare_from_config", gone)  # in the forked tracking process too
    cfg = compose_job([f"paths.root={workdir}", "paths.results=results/job", "experiment=l2", *QUICK,
                       "trainer.max_epochs=1"])
    with pytest.raises(tracking.TrackingFailed) as info:
        job.run_job(cfg)
    assert "the store went away" in str(info.value) and "MLflow opened no run of it" in str(info.value)
    assert "RUNNING" not in str(info.value)


# --- a full disk ---


def test_a_full_disk_under_torch_save_is_an_os_error_naming_the_file(tmp_path):
    """torch's own writer said 'enforce fail at inline_container.cc:672'."""
    import torch

    with pytest.raises(OSError) as info:
        save_torch({"w": torch.zeros(1000)}, FULL)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(FULL)
    assert could_not_write(info.value) == (f"could not write {FULL}: the disk is full (No space left on device); "
                                           "nothing of the job was committed")


def test_a_full_disk_while_writing_a_data_file_leaves_no_partial_file(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(zipfile.ZipFile, "writestr", full)
    with pytest.raises(OSError):
        save_npz(tmp_path / "signal.npz", make_dataset("signal", SMALL["signal"]))
    assert list(tmp_path.iterdir()) == []


# Runs a command with every file whose name ends with FULL_NAME written to /dev/full.
ON_A_FULL_DISK = """
import builtins, io, os, runpy, sys
name, real = os.environ["FULL_NAME"], builtins.open
def open(file, mode="r", *args, **kwargs):
    if "w" in mode and str(file).endswith(name):
        file = "/dev/full"
    return real(file, mode, *args, **kwargs)
builtins.open = io.open = open
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


@pytest.mark.skipif(not FULL.exists(), reason="no /dev/full on this system")
def test_the_command_line_says_a_full_disk_names_the_file_and_commits_nothing(workdir):
    """The defect: a full disk under a member's weights was torch's 'enforce fail at
    inline_container.cc:672' and a traceback."""
    tmp = workdir / "tmp"
    tmp.mkdir()
    proc = run(workdir, "-c", ON_A_FULL_DISK, "regstudy.train", "experiment=l2", *QUICK, "trainer.max_epochs=2",
               FULL_NAME="weights.pt", TMPDIR=str(tmp))
    assert_said(proc, 1, "weights.pt", "could not write", "the disk is full (No space left on device)")
    assert "enforce fail" not in proc.stderr
    assert not list(workdir.glob("outputs/*/*/*/results")) and not list(workdir.glob("outputs/*/*/*/.results*"))
    assert not list(tmp.glob("regstudy-artifacts-*"))  # the MLflow artifacts' folder is gone too
    rs = runs(workdir / "mlflow.db")
    assert rs and {r.info.status for r in rs} == {"FAILED"}


@pytest.mark.skipif(not FULL.exists(), reason="no /dev/full on this system")
def test_a_train_stage_says_a_full_disk_names_the_file_and_commits_nothing(workdir):
    (workdir / "params.yaml").write_text(yaml.safe_dump({"study": study(["signal"])}))
    proc = run(workdir, "-c", ON_A_FULL_DISK, "regstudy.stages.train", "--family", "l2", "--dataset", "signal",
               "--conf", str(ROOT / "conf"), FULL_NAME="curves.csv", REGSTUDY_WARM="0")
    assert_said(proc, 1, "signal/l2", "curves.csv", "the disk is full")
    assert not (workdir / "results" / "l2" / "signal").exists()
    assert not list((workdir / "results" / "l2").glob(".signal.tmp-*"))


@pytest.mark.slow
def test_a_real_full_disk_under_the_mlflow_artifacts_is_said_as_such(workdir):
    """The artifacts' temporary folder on a small tmpfs: torch's save fills it."""
    tmp = workdir / "tmp"
    tmp.mkdir()
    with small_tmpfs(tmp, "12k"):
        proc = cli(workdir, "experiment=l2", "model.hidden=[64,64]", "members.seeds=[0,1]", "trainer.max_epochs=2",
                   "logger.log_figures=false", TMPDIR=str(tmp))
        assert_said(proc, 1, str(tmp), "could not write", "the disk is full")
        assert "enforce fail" not in proc.stderr
        assert not list(workdir.glob("outputs/*/*/*/results")) and not list(tmp.glob("regstudy-artifacts-*"))


# --- Ctrl-C ---


def test_ctrl_c_on_the_command_line_exits_130_with_one_line(workdir):
    """The defect: a traceback through Lightning and Hydra, exit code 1."""
    db = store(workdir)
    proc = subprocess.Popen([sys.executable, "-m", "regstudy.train", "experiment=l2", *QUICK,
                             "trainer.max_epochs=100000", "logger.flush_every=1"], cwd=workdir, env=env(),
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while not any("val_loss" in r.data.metrics for r in runs(db)):  # training, its runs open
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["regstudy: interrupted (signal SIGINT); nothing of the job was committed; "
                                        "its MLflow runs end KILLED"], err
    assert not list(workdir.glob("outputs/*/*/*/results"))
    time.sleep(0.5)
    assert {r.info.status for r in runs(db)} == {"KILLED"}
