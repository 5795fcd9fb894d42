"""Fewer, bigger stacks: the speed issue's first lever, measured.

The study trains one stack per family and dataset (K = strengths x seeds, 35 for l2).
Families that share the architecture could train as one stack per dataset, 18 times
larger. A family's job is timed as the study runs it (its dataset's epochs, the study's
seeds, MLflow off) with its own grid, and with the grid repeated ``families`` times
(each copy nudged so that the strengths stay distinct): the same code path, a stack the
size of all families together. Each job's own timings (``run.json``) say what a member
costs in training steps and in the per-epoch evaluation.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def study_params() -> dict:
    """The project's ``params.yaml`` (the study's data, seeds, grids and epochs)."""
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def dataset_file(folder: Path, name: str, params: dict) -> Path:
    """The study's ``name`` dataset (every seed of the dataset), written to ``folder``."""
    from regstudy.data import make_dataset, save_npz
    from regstudy.stages import dataset_seeds

    path = folder / f"{name}.npz"
    if not path.exists():
        save_npz(path, make_dataset(name, params["data"][name], dataset_seeds(params["study"], name),
                                    params["data"]["seed"]))
    return path


def member_seconds(folder: Path, dataset: str, families: int, family: str = "l2") -> dict:
    """Seconds per member of one job of ``family`` on ``dataset`` whose grid is repeated
    ``families`` times: ``training``, ``evaluation`` (run.json's timings over K), and ``k``."""
    from regstudy.job import run_job
    from regstudy.stages import dataset_seeds
    from regstudy.stages.train import compose_job, study_overrides

    params = study_params()
    study = params["study"]
    grid = [float(s) for s in study["strengths"][family]]
    study["strengths"][family] = [s * (1 + 1e-6 * copy) + 1e-9 * copy for copy in range(families) for s in grid]
    results = Path(tempfile.mkdtemp(dir=folder))
    cfg = compose_job([*study_overrides(study, dataset, family, results),
                       f"data.path={dataset_file(folder, dataset, params)}", f"paths.root={folder}",
                       "logger.enabled=false"])
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    run_job(cfg)
    seconds = json.loads((results / "run.json").read_text())["seconds"]
    k = len(study["strengths"][family]) * len(dataset_seeds(study, dataset))
    return {"k": k, "training": seconds["training_steps"] / k, "evaluation": seconds["evaluation"] / k}
