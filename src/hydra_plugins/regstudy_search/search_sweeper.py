"""The batched Optuna search of :mod:`regstudy.search` as a Hydra sweeper, for any launcher:

    python -m regstudy.train -m hydra/sweeper=search experiment=l2 data=moons
    python -m regstudy.train -m hydra/sweeper=search hydra/launcher=ray_local experiment=l2

Optuna (TPE) is asked for ``batch`` trials at once; their strengths of ``members.sweep``
become the members of one train job (``members.strengths=[...]``: a member per trial and
seed), which the configured launcher runs as job number b of the sweep; each trial is told
the mean validation metric of its members over the seeds, read from the job's
``members.csv``, or FAIL if one diverged. One job per batch, not per trial, is what makes
it fast (``benchmarks/search.py``). The settings (``conf/hydra/sweeper/search.yaml``) are
those of ``python -m regstudy.search`` (``search.*``): ``hydra.sweeper.trials``, ``batch``,
``low``, ``high``, ``log``, ``sampler_seed``, ``storage``, ``study_name``.

The sweep folder takes ``trials.csv`` and ``optimization_results.yaml`` (the best
strength and its value); MLflow, the search's run with each batch's job run nested under it.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import List, Optional

import pandas as pd
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

#: Keys the sweeper sets on each batch's job: not to be given on the command line.
SET_PER_BATCH = ("members.strength", "members.strengths", "paths.results", "logger.parent_run_id")


class SearchSweeper(Sweeper):
    """Batched Optuna search of ``members.sweep``'s strength: each batch one job."""

    def __init__(self, trials: int = 20, batch: int = 8, low: float = 1e-5, high: float = 1.0, log: bool = True,
                 sampler_seed: int = 0, storage: Optional[str] = None, study_name: Optional[str] = None) -> None:
        super().__init__()
        self.search = dict(trials=trials, batch=batch, low=low, high=high, log=log, sampler_seed=sampler_seed,
                           storage=storage, study_name=study_name)
        self.config: Optional[DictConfig] = None
        self.launcher: Optional[Launcher] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> pd.DataFrame:
        """Run the search; return its trials (``trials.csv``). Bad settings: one line naming
        the key, exit code 2, before any job."""
        from regstudy.config import ConfigError
        from regstudy.search import run_search

        assert self.config is not None and self.launcher is not None
        try:
            cfg = self._search_config(arguments)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(2)
        out = Path(self.config.hydra.sweep.dir)
        out.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, out / "multirun.yaml")
        trials = run_search(cfg, out, train_batch=lambda b, strengths, parent: self._train_batch(
            arguments, b, strengths, parent))
        done = trials[trials.state == "COMPLETE"]
        best = done.loc[done.value.idxmax()] if len(done) else None
        OmegaConf.save(OmegaConf.create({
            "name": "search", "study_name": cfg.search.study_name or f"{cfg.family}-{cfg.data.name}",
            "best_params": {"members.strength": float(best.strength)} if best is not None else {},
            "best_value": float(best.value) if best is not None else None}), out / "optimization_results.yaml")
        return trials

    def _search_config(self, arguments: List[str]) -> DictConfig:
        """The job's config (the sweep's composed config less ``hydra``) with the sweeper's
        settings as ``search``, validated; ConfigError names the sweeper's keys."""
        from omegaconf.errors import ValidationError

        from regstudy.config import ConfigError, SearchConfig, validate_search

        for override in OverridesParser.create().parse_overrides(arguments):
            key, value = override.get_key_element(), override.input_line.partition("=")[2]
            if override.is_sweep_override():
                raise ConfigError(key, value, "one value: the search sweeps members.sweep's strength alone; "
                                  "run one search per value")
            if key in SET_PER_BATCH:
                raise ConfigError(key, value, "left out: the search sets it for each batch")
        cfg = copy.deepcopy(self.config)
        with open_dict(cfg):
            del cfg["hydra"]
        try:
            cfg.search = OmegaConf.merge(OmegaConf.structured(SearchConfig), self.search)
        except ValidationError as e:  # a value of the wrong type
            raise ConfigError(f"hydra.sweeper.{e.full_key}", self.search.get(str(e.full_key)),
                              str(e).splitlines()[0]) from None
        try:
            validate_search(cfg)
        except ConfigError as e:
            key = e.key.replace("search.", "hydra.sweeper.", 1) if e.key.startswith("search.") else e.key
            raise ConfigError(key, e.value, e.allowed) from None
        return cfg

    def _train_batch(self, arguments: List[str], b: int, strengths: list[float],
                     parent: Optional[str]) -> tuple[pd.DataFrame, list[str]]:
        """Batch ``b`` as job number ``b`` of the sweep, launched by the launcher; its members
        table (with the strengths as trained, not the CSV's 8 digits) and member run ids."""
        from regstudy.job import member_grid
        from regstudy.search import member_run_ids

        assert self.launcher is not None
        overrides = [*arguments, f"members.strengths=[{','.join(repr(float(s)) for s in strengths)}]",
                     "members.strength=null", *([f"logger.parent_run_id={parent}"] if parent else [])]
        [job] = self.launcher.launch([overrides], initial_job_idx=b)
        job.return_value  # noqa: B018 - raises the job's own exception if it failed
        results = Path(job.hydra_cfg.hydra.runtime.output_dir) / "results"
        table = pd.read_csv(results / "members.csv")
        table["strength"] = table["member"].map({m["member"]: m["strength"] for m in member_grid(job.cfg)})
        return table, member_run_ids(results)
