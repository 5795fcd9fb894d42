"""What one train job is, checked once: :class:`JobSpec` and :func:`prepare_job`.

The entry points (``regstudy.train``, the DVC train stages, the search) hand a composed
config to :func:`regstudy.job.run_job`, which prepares it here first: the config
validated, the data of the members' seeds loaded (once), the MLflow store checked. What
comes out is read-only: nothing downstream changes the config, and the caller's config
is left as it was (the task a CSV file's target implies is set on a copy). Imports no
torch, Lightning or MLflow.

A single command-line run is prepared once, by the Hydra callback :class:`CheckJob`, in
the launching process before Hydra writes its output folder; the job takes that
:class:`JobSpec` instead of checking and loading again (:meth:`CheckJob.take`).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Mapping

import numpy as np
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .config import member_strengths, validate
from .data import seed_rows
from .kernels import pin_for, resolve_compute
from .preflight import BAD_INPUT, StoreError, check_server, check_store, data_path, load_arrays, project_root, refuse
from .regularizers import regularizer


@dataclass(frozen=True)
class JobSpec:
    """One job, checked: its config (read-only, ``data.task`` known), where its data and
    results live, its members in order, the data of their seeds, and where it computes:
    ``device`` (``cpu``, ``cuda`` or ``mps``) and ``compute`` (``torch`` or ``exact``),
    resolved from ``trainer.accelerator`` and ``compute`` once."""

    cfg: DictConfig
    data_path: Path
    results_dir: Path | None  # None: Hydra's output folder, known once Hydra runs the job
    members: tuple[Mapping[str, Any], ...]
    arrays: Mapping[str, np.ndarray]
    device: str
    compute: str

    @property
    def seeds(self) -> list[int]:
        """Each member's seed, in member order."""
        return [m["seed"] for m in self.members]

    def member_list(self) -> list[dict[str, Any]]:
        """The members as fresh dicts (what the tables are built from)."""
        return [dict(m) for m in self.members]


def member_grid(cfg: DictConfig) -> list[dict[str, Any]]:
    """Members in order: strengths outer, seeds inner."""
    sweep = cfg.members.sweep
    key = "none" if sweep == "none" else regularizer(sweep).strength_key
    return [{"member": i, "strength": float(s), "seed": int(seed), "strength_name": key,
             "name": f"{cfg.family}-{cfg.data.name}-{key}={s:g}-seed={seed}"}
            for i, (s, seed) in enumerate(itertools.product(member_strengths(cfg.members), cfg.members.seeds))]


def results_folder(cfg: DictConfig) -> Path:
    """The absolute results folder: ``paths.results``, or ``results`` in Hydra's output folder."""
    if cfg.paths.results is not None:
        results = Path(cfg.paths.results)
        return results if results.is_absolute() else project_root(cfg) / results
    from hydra.core.hydra_config import HydraConfig
    return Path(HydraConfig.get().runtime.output_dir) / "results"


def resolve_paths(cfg: DictConfig) -> tuple[Path, Path]:
    """Absolute data file and results folder; the results folder defaults to Hydra's."""
    return data_path(cfg), results_folder(cfg)


def prepare_job(cfg: DictConfig, hydra_folder_pending: bool = False) -> JobSpec:
    """The job of ``cfg``, checked before any file is written or run opened: the config, a
    tracking server's answer, the data file (and each member's seed in it), the MLflow
    store. Raises one of :data:`regstudy.preflight.BAD_INPUT`, or StoreError.

    ``hydra_folder_pending``: Hydra has not chosen the job's output folder yet (its
    callbacks run first), so a results folder inside it is left None.
    """
    validate(cfg)
    device, compute = check_device(cfg)
    check_server(cfg)
    path = data_path(cfg)
    results_dir = None if hydra_folder_pending and cfg.paths.results is None else results_folder(cfg)
    members = member_grid(cfg)
    arrays, task = load_arrays(cfg, path, [m["seed"] for m in members])
    seed_rows(arrays, [m["seed"] for m in members], path)  # a seed the file has no draw of
    check_store(cfg)  # and an unwritable or locked MLflow store (StoreError)
    return JobSpec(_read_only(cfg, task), path, results_dir, tuple(MappingProxyType(m) for m in members),
                   MappingProxyType(arrays), device, compute)


def check_device(cfg: DictConfig) -> tuple[str, str]:
    """The job's device (``cpu``, ``cuda``, ``mps``) and compute path (``torch``, ``exact``);
    a ConfigError where either is not here: ``trainer.accelerator=gpu`` without a GPU,
    ``compute=exact`` without its C kernels or on a GPU. torch is imported only to look
    for a GPU (never with ``accelerator=cpu``)."""
    device = "cpu"
    if cfg.trainer.accelerator != "cpu":
        from .compute import resolve_accelerator
        device = resolve_accelerator(cfg.trainer.accelerator)
    return device, resolve_compute(cfg.compute, device)


def _read_only(cfg: DictConfig, task: str) -> DictConfig:
    own = copy.deepcopy(cfg)  # the caller's stays as it was
    own.data.task = task
    OmegaConf.set_readonly(own, True)
    return own


def _without_hydra(cfg: DictConfig) -> dict:
    return {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k != "hydra"}


class CheckJob(Callback):
    """Hydra callback: prepare a single run's job (:func:`prepare_job`) in the launching
    process, before Hydra writes its output folder or anything imports torch. Bad input
    ends the process here with exit 2 (Hydra would turn the exception into a warning and
    run the job anyway). A sweep's jobs each prepare their own."""

    _checked: ClassVar[tuple[dict, JobSpec] | None] = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        CheckJob._checked = None
        pin_for(config.compute, config.trainer.accelerator)  # before torch: the exact path's kernels
        try:
            spec = prepare_job(config, hydra_folder_pending=True)
        except (*BAD_INPUT, StoreError) as e:
            sys.exit(refuse(e))
        CheckJob._checked = (_without_hydra(config), spec)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A sweep: its jobs (here, or in launched processes that inherit the environment)
        compute on the exact path's pinned kernels where they take it."""
        pin_for(config.compute, config.trainer.accelerator)

    @classmethod
    def take(cls, cfg: DictConfig) -> JobSpec | DictConfig:
        """The job prepared for ``cfg`` (once; its results folder now known), or ``cfg``
        itself where none was (a sweep's job, or a config that is not the one checked)."""
        checked, cls._checked = cls._checked, None
        if checked is None or checked[0] != _without_hydra(cfg):
            return cfg
        spec = checked[1]  # its config still holds Hydra's own keys: the job's is cfg
        return dataclasses.replace(spec, cfg=_read_only(cfg, spec.cfg.data.task),
                                   results_dir=spec.results_dir or results_folder(cfg))
