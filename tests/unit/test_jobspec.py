"""A job is checked and its data loaded once: :func:`regstudy.jobspec.prepare_job`, and the
Hydra callback that prepares a command-line run for the job to take (:class:`CheckJob`)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import needs_exact
from regstudy.config import ConfigError, register_configs
from regstudy.data import make_dataset, save_npz
from regstudy.jobspec import CheckJob, JobSpec, prepare_job
from regstudy.paths import CONFIG_DIR

SMALL = dict(n_train=20, n_val=10, n_test=10, noise=0.2, n_components=3, phase_std=1.0)


@pytest.fixture
def run_config(tmp_path):
    """A single run's config as Hydra hands it to its callbacks (Hydra's own keys included)."""
    save_npz(tmp_path / "signal.npz", make_dataset("signal", SMALL, seeds=range(2)))
    overrides = ["data=signal", f"data.path={tmp_path / 'signal.npz'}", f"paths.results={tmp_path / 'results'}",
                 "logger.enabled=false", "members.seeds=[0,1]"]
    register_configs()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def task_config(cfg):
    """What Hydra passes the task function: the config without its ``hydra`` key."""
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


def test_the_job_takes_what_the_callback_prepared_once(run_config, tmp_path):
    CheckJob().on_run_start(config=run_config)
    prepared = CheckJob._checked[1]
    job = CheckJob.take(task_config(run_config))
    assert isinstance(job, JobSpec)
    assert job.arrays is prepared.arrays  # the data loaded once, not again
    assert "hydra" not in job.cfg and OmegaConf.is_readonly(job.cfg)
    assert job.cfg.data.task == "regression" and job.seeds == [0, 1] * (len(job.members) // 2)
    assert job.results_dir == tmp_path / "results"
    again = task_config(run_config)
    assert CheckJob.take(again) is again  # one job per check: a second take prepares its own


def test_a_config_other_than_the_checked_one_is_not_taken(run_config):
    CheckJob().on_run_start(config=run_config)
    other = task_config(run_config)
    other.members.seeds = [1]
    assert CheckJob.take(other) is other


def test_bad_input_ends_the_launching_process_with_exit_2(run_config, capsys):
    run_config.members.seeds = []
    with pytest.raises(SystemExit) as stop:
        CheckJob().on_run_start(config=run_config)
    assert stop.value.code == 2 and "members.seeds" in capsys.readouterr().err
    assert CheckJob._checked is None
    with pytest.raises(ConfigError, match="members.seeds"):
        prepare_job(task_config(run_config))


def test_prepare_job_leaves_the_callers_config_as_it_was(run_config):
    cfg = task_config(run_config)
    cfg.data.task = None
    before = OmegaConf.to_yaml(cfg)
    job = prepare_job(cfg)
    assert OmegaConf.to_yaml(cfg) == before and not OmegaConf.is_readonly(cfg)
    assert job.cfg.data.task == "regression"


@pytest.mark.parametrize("compute", ["torch", pytest.param("exact", marks=needs_exact)])
def test_the_job_knows_its_device_and_compute_path_and_builds_its_stack_on_them(run_config, compute):
    """Resolved once, by prepare_job; the job's stack computes with that path's operations."""
    import torch

    from regstudy.compute import PATHS
    from regstudy.job import build_module, load_tensors

    cfg = task_config(run_config)
    cfg.compute, cfg.trainer.accelerator = compute, "cpu"
    job = prepare_job(cfg)
    assert (job.device, job.compute) == ("cpu", compute)
    module = build_module(job.cfg, load_tensors(job.arrays, job.seeds), job.member_list(), job.compute)
    assert module.net.ops is PATHS[compute]
    assert module.net.kernels[0].device == torch.device("cpu")
