"""Shared fixtures of the core tests: one torch thread, small real datasets, a real Trainer."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from regstudy.kernels import pin_for  # noqa: I001 - before torch

pin_for("auto", "cpu")  # the jobs' default compute path: exact, with its pinned kernels, where it runs
import torch  # noqa: E402
from hydra.utils import instantiate

from regstudy.compute import gpu_device
from regstudy.data import make_dataset, save_npz
from regstudy.kernels import cpu, exact_unavailable
from regstudy.stages.train import compose_job

SIGNAL = dict(n_train=72, n_val=32, n_test=32, noise=0.2, n_components=3, phase_std=1.0)
MOONS = dict(n_train=72, n_val=32, n_test=32, noise=0.3)
SMALL_SIGNAL = dict(n_train=40, n_val=20, n_test=20, noise=0.2, n_components=3, phase_std=1.0)
CPU = cpu()
EXACT_ABSENT = exact_unavailable()  # why compute=exact cannot run here, or None
needs_exact = pytest.mark.skipif(EXACT_ABSENT is not None, reason=f"compute=exact: {EXACT_ABSENT}")
needs_gpu = pytest.mark.skipif(gpu_device() is None, reason="no CUDA or MPS device here (trainer.accelerator=gpu)")
PINNED = EXACT_ABSENT is None  # the default path is exact, whose pin of torch's kernels applies (regstudy.kernels)



ROOT = Path(__file__).resolve().parents[1]


def copy_project(repo: Path) -> None:
    """The project's pipeline and code into ``repo`` (dvc.yaml, its ignore files, conf/, src/)."""
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    for name in ("conf", "src"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))


def tiny_dvc_yaml(text: str, leave_out) -> str:
    """dvc.yaml for a tiny study: the built-in datasets of ``leave_out`` are neither
    generated nor read (their lines as outs and deps removed)."""
    import re

    for name in leave_out:
        text = re.sub(rf"\n *- data/{name}\.npz.*", "", text)
    return text


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``cmd`` as a user runs it in ``cwd`` (this environment's tools first on PATH, no
    test-chosen Hydra config), asserted to succeed."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("REGSTUDY_CONF", None)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(autouse=True, scope="session")
def _local_store():
    """Tests choose their store: a developer's MLFLOW_TRACKING_URI (conf/logger/mlflow.yaml
    reads it) must not send them to a shared server."""
    uri = os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    if uri is not None:
        os.environ["MLFLOW_TRACKING_URI"] = uri


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str):
    """A real full disk: a tmpfs of ``size`` (``"48k"``) mounted on ``folder``, unmounted
    after; the test is skipped where mounting is not allowed (it needs root)."""
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def need_extra(extra: str):
    """The module of regstudy's ``extra`` (regstudy.extras.EXTRAS), or skip the test,
    saying which extra to install (CI installs them all: make env-all)."""
    from regstudy.extras import EXTRAS

    return pytest.importorskip(EXTRAS[extra], reason=f"needs regstudy's extra '{extra}': "
                               f"pip install regstudy[{extra}] (make env-all)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tracking_server():
    """A real shared server, as `make server` starts it: a PostgreSQL cluster and
    `mlflow server` on free ports, in a folder the postgres user can reach. Its tests skip
    without the extra 'server' (psycopg)."""
    need_extra("server")
    from regstudy.server import Server

    folder = Path(tempfile.mkdtemp(prefix="regstudy-server-"))
    folder.chmod(0o755)
    server = Server(folder, port=free_port(), pg_port=free_port())
    server.start()
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test runs on one torch thread (the suite must stay fast on 2 cores)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _dataset(tmp_path_factory, name: str, params: dict) -> str:
    path = tmp_path_factory.mktemp("data") / f"{name}.npz"
    save_npz(path, make_dataset(name, params, seeds=range(3)))
    return str(path)


@pytest.fixture(scope="session")
def signal_npz(tmp_path_factory) -> str:
    """A small signal dataset (72/32/32 examples) written with the real generator."""
    return _dataset(tmp_path_factory, "signal", SIGNAL)


@pytest.fixture(scope="session")
def moons_npz(tmp_path_factory) -> str:
    """A small moons dataset (72/32/32 examples) written with the real generator."""
    return _dataset(tmp_path_factory, "moons", MOONS)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A project folder for command-line jobs: data/signal.npz (40/20/20 examples, seeds 0-3)."""
    (tmp_path / "data").mkdir()
    save_npz(tmp_path / "data" / "signal.npz", make_dataset("signal", SMALL_SIGNAL, seeds=range(4)))
    return tmp_path


@pytest.fixture(scope="session")
def make_trainer():
    """``make_trainer(max_epochs, callbacks=())``: the Trainer of ``conf/trainer/default.yaml``."""
    trainer_cfg = compose_job([]).trainer

    def make(max_epochs: int, callbacks=()):
        return instantiate(trainer_cfg, max_epochs=max_epochs, callbacks=list(callbacks))

    return make
