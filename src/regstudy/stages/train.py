"""DVC stage ``train@<dataset>-<family>``: one train job of the study.

Usage: ``python -m regstudy.stages.train --dataset signal --family l2``

Composes the Hydra config ``conf/train.yaml`` with ``experiment=<family>`` and the
study's values from ``params.yaml`` (seeds, epochs, the family's strengths, extra
overrides), then runs the same job as ``python -m regstudy.train``. The job runs in a
process forked from a warm server (see :mod:`regstudy.warm`), so the stage does not pay
the imports again; this module imports only the standard library at the top.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..paths import CONFIG_DIR


def study_overrides(study: dict, dataset: str, family: str, results: Path,
                    control: bool = False) -> list[str]:
    """Hydra overrides of one job of the study described by ``params.yaml``'s ``study``;
    a control job (``control``) adds ``study.controls.overrides`` last."""
    from ..config import ConfigError

    strengths = study["strengths"].get(family)
    if strengths is None:
        raise ConfigError(f"study.strengths.{family}", None,
                          "a list of strengths for every family of the study")
    own = study.get("by_dataset", {}).get(dataset)
    if not isinstance(own, dict) or "epochs" not in own:
        raise ConfigError(f"study.by_dataset.{dataset}", own,
                          "for every dataset of the study, a mapping with epochs (and overrides)")
    return [f"data={dataset}", f"experiment={family}",
            f"members.strengths={list(strengths)}", f"members.seeds={list(study['seeds'])}",
            f"trainer.max_epochs={own['epochs']}", f"paths.results={results}",
            # The next stage trains while this one's tracking process ends its runs.
            "logger.background_finish=true", *study.get("overrides", []), *own.get("overrides", []),
            *(study.get("controls", {}).get("overrides", []) if control else [])]


def compose_job(overrides: list[str], config_dir: Path = CONFIG_DIR):
    """The train config (a ``DictConfig``) composed from ``config_dir`` with ``overrides``."""
    from hydra import compose, initialize_config_dir

    from ..config import register_configs

    register_configs()
    with initialize_config_dir(str(Path(config_dir).resolve()), version_base="1.3"):
        return compose("train", overrides=overrides)


def run_stage(argv: list[str] | None = None) -> int:
    """Parse the stage's arguments, compose its config and run the job."""
    import logging
    import warnings

    import yaml
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from ..config import ConfigError

    parser = argparse.ArgumentParser(prog="python -m regstudy.stages.train", description=__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--family", required=True)
    parser.add_argument("--control", action="store_true", help="a control job: add study.controls.overrides")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="results")
    parser.add_argument("--conf", default="conf", help="config dir (the stage's deps)")
    args = parser.parse_args(argv)
    study = yaml.safe_load(Path(args.params).read_text())["study"]
    try:
        cfg = compose_job(study_overrides(study, args.dataset, args.family,
                                          Path(args.out) / args.dataset / args.family, args.control),
                          Path(args.conf))
        from ..job import run_job  # heavy imports only once the config is known good

        logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # quiet stage logs
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning's, not ours
        start = time.perf_counter()
        table = run_job(cfg)
        diverged = int((table["status"] == "diverged").sum())
        print(f"{args.dataset}/{args.family}: {len(table)} members in {time.perf_counter() - start:.1f} s"
              + (f", {diverged} diverged" if diverged else ""), flush=True)
    except (ConfigError, FileNotFoundError, HydraException, OmegaConfBaseException) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    from ..warm import run

    return run("regstudy.stages.train:run_stage", sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
