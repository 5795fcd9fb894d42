"""Shared fixtures of the core tests: one torch thread, small real datasets, a real Trainer."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from regstudy.data import make_dataset, save_npz
from regstudy.stages.train import compose_job

SIGNAL = dict(n_train=72, n_val=32, n_test=32, noise=0.2, n_components=3, phase_std=1.0)
MOONS = dict(n_train=72, n_val=32, n_test=32, noise=0.3)


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


@pytest.fixture(scope="session")
def make_trainer():
    """``make_trainer(max_epochs, callbacks=())``: the Trainer of ``conf/trainer/default.yaml``."""
    trainer_cfg = compose_job([]).trainer

    def make(max_epochs: int, callbacks=()):
        return instantiate(trainer_cfg, max_epochs=max_epochs, callbacks=list(callbacks))

    return make
