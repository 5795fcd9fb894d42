"""What one train job is, checked once: :class:`JobSpec` and :func:`prepare_job`.

The entry points (``regstudy.train``, the DVC train stages, the search) hand a composed
config to :func:`regstudy.job.run_job`, which prepares it here first: the config
validated, the data of the members' seeds loaded (once), the MLflow store checked. What
comes out is read-only: nothing downstream changes the config, and the caller's config
is left as it was (the task a CSV file's target implies is set on a copy). Imports no
torch, Lightning or MLflow.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np
from omegaconf import DictConfig, OmegaConf

from .config import member_strengths, validate
from .data import seed_rows
from .preflight import check_server, check_store, data_path, load_arrays, project_root
from .regularizers import regularizer


@dataclass(frozen=True)
class JobSpec:
    """One job, checked: its config (read-only, ``data.task`` known), where its data and
    results live, its members in order, and the data of their seeds."""

    cfg: DictConfig
    data_path: Path
    results_dir: Path
    members: tuple[Mapping[str, Any], ...]
    arrays: Mapping[str, np.ndarray]

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


def resolve_paths(cfg: DictConfig) -> tuple[Path, Path]:
    """Absolute data file and results folder; the results folder defaults to Hydra's."""
    root = project_root(cfg)
    data = data_path(cfg)
    if cfg.paths.results is not None:
        results = Path(cfg.paths.results)
        results = results if results.is_absolute() else root / results
    else:
        from hydra.core.hydra_config import HydraConfig
        results = Path(HydraConfig.get().runtime.output_dir) / "results"
    return data, results


def prepare_job(cfg: DictConfig) -> JobSpec:
    """The job of ``cfg``, checked before any file is written or run opened: the config, a
    tracking server's answer, the data file (and each member's seed in it), the MLflow
    store. Raises one of :data:`regstudy.preflight.BAD_INPUT`, or StoreError."""
    validate(cfg)
    check_server(cfg)
    path, results_dir = resolve_paths(cfg)
    members = member_grid(cfg)
    arrays, task = load_arrays(cfg, path, [m["seed"] for m in members])
    seed_rows(arrays, [m["seed"] for m in members], path)  # a seed the file has no draw of
    check_store(cfg)  # and an unwritable or locked MLflow store (StoreError)
    own = copy.deepcopy(cfg)  # the caller's stays as it was
    own.data.task = task
    OmegaConf.set_readonly(own, True)
    return JobSpec(own, path, results_dir, tuple(MappingProxyType(m) for m in members), MappingProxyType(arrays))
