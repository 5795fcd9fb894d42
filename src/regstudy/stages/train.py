"""DVC stages ``train@<family>``: one family of the study on every dataset, and
``train_csv@<name>``: every family on one of your CSV files.

Usage: ``python -m regstudy.stages.train --family l2`` (every dataset of
``study.datasets``; with ``--control``, the datasets and overrides of
``study.controls``), or ``... --family l2 --dataset signal`` for one job;
``python -m regstudy.stages.train --csv houses`` (every family of ``study.families`` on the
file ``csv.houses``, with that entry's epochs, overrides and seeds), writing
``results/csv/houses/<family>/``, so that adding a CSV file re-runs its own stage only.

Each job composes the Hydra config ``conf/train.yaml`` with ``experiment=<family>`` and
the study's values from ``params.yaml`` (the dataset's seeds and epochs, the family's
strengths, extra overrides), then runs the same job as ``python -m regstudy.train``, writing
``results/<family>/<dataset>/``. A family that does not apply to a dataset (label
smoothing on a regression set) is skipped there, and says so. Jobs run in processes
forked from a warm server (see :mod:`regstudy.warm`), two at a time (``--jobs``), so
the stage does not pay the imports again and both cores work; this module imports only
the standard library at the top.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..paths import CONFIG_DIR
from . import dataset_seeds, dataset_settings, read_params


def study_overrides(study: dict, dataset: str, family: str, results: Path,
                    control: bool = False, csv: dict | None = None) -> list[str]:
    """Hydra overrides of one job of the study described by ``params.yaml``'s ``study``;
    a control job (``control``) adds ``study.controls.overrides`` last. A dataset that is
    an entry of ``csv`` is read from its ``data/<name>.npz``, with the epochs, overrides
    and seeds of that entry (:func:`dataset_settings`). The members are the family's
    strengths × the dataset's seeds (:func:`dataset_seeds`)."""
    from ..config import ConfigError

    strengths = study["strengths"].get(family)
    if strengths is None:
        raise ConfigError(f"study.strengths.{family}", None,
                          "a list of strengths for every family of the study")
    key, own = dataset_settings(study, dataset, csv)
    if not isinstance(own, dict) or "epochs" not in own:
        raise ConfigError(key, own, "for every dataset of the study, a mapping with epochs (and overrides)")
    data = (["data=csv", f"data.name={dataset}", f"data.path=data/{dataset}.npz"] if dataset in (csv or {})
            else [f"data={dataset}"])
    return [*data, f"experiment={family}",
            f"members.strengths={list(strengths)}", f"members.seeds={dataset_seeds(study, dataset, csv)}",
            f"trainer.max_epochs={own['epochs']}", f"paths.results={results}",
            # The next stage trains while this one's tracking process ends its runs.
            "logger.background_finish=true", *study.get("overrides", []), *own.get("overrides", []),
            *(study.get("controls", {}).get("overrides", []) if control else [])]


def job_results(out: Path, family: str, dataset: str, csv: dict | None = None) -> Path:
    """Where a job of the study writes: ``results/<family>/<dataset>/``, or for a CSV
    file's own stage ``results/csv/<name>/<family>/`` (each stage owns its folder)."""
    return out / "csv" / dataset / family if dataset in (csv or {}) else out / family / dataset


def compose_job(overrides: list[str], config_dir: Path = CONFIG_DIR):
    """The train config (a ``DictConfig``) composed from ``config_dir`` with ``overrides``."""
    from hydra import compose, initialize_config_dir

    from ..config import register_configs

    register_configs()
    with initialize_config_dir(str(Path(config_dir).resolve()), version_base="1.3"):
        return compose("train", overrides=overrides)


def warm_up() -> None:
    """A first compose (in the warm server): Hydra scans and imports its plugins then, once
    per process (about 50 ms a job otherwise)."""
    compose_job([])


def run_stage(argv: list[str] | None = None) -> int:
    """Parse the stage's arguments, compose its config and run the job."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from ..preflight import BAD_INPUT

    args = parser().parse_args(argv)
    params = read_params(args.params)
    study, csv = params["study"], (params.get("csv") or {}) if args.csv else {}
    try:
        cfg = compose_job(study_overrides(study, args.dataset, args.family,
                                          job_results(Path(args.out), args.family, args.dataset, csv),
                                          args.control, csv),
                          Path(args.conf))
        from ..kernels import pin_for

        pin_for(cfg.compute, cfg.trainer.accelerator)  # in this process, before torch (without the warm server)
        from ..console import job_line
        from ..job import not_applicable, run_job  # heavy imports only once the config is known good

        reason = not_applicable(cfg)
        if reason:
            print(f"{args.dataset}/{args.family}: skipped, {reason}", flush=True)
            return 0

        start = time.perf_counter()
        table = run_job(cfg)
        print(job_line(table, time.perf_counter() - start), flush=True)
    except (*BAD_INPUT, HydraException, OmegaConfBaseException) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk or an unwritable folder: nothing was committed
        from ..results import could_not_write

        print(f"error: {args.dataset}/{args.family}: {could_not_write(e)}", file=sys.stderr)
        return 1
    except RuntimeError as e:  # StoreError (before training), TrackingFailed: MLflow did not take the runs
        print(f"error: {args.dataset}/{args.family}: {e}", file=sys.stderr)
        return 1
    return 0


# Cost of a member per minibatch step, per epoch and per million multiply-adds (relative to
# the last): fitted to the study's measured job times (time per member, 2-core machine).
STEP_COST, EPOCH_COST, MMAC_COST = 1.6, 1.1, 1.0


def dataset_sizes(path: Path) -> tuple[int, int, int, int]:
    """Training and validation examples per draw, inputs and outputs of the network
    (1 for regression, the classes otherwise) of a data file."""
    from ..data import open_npz

    with open_npz(path) as f:  # a bad file: a DataFileError (a ValueError)
        (n_train, d_in), n_val = f["x_train"].shape[-2:], f["x_val"].shape[-2]
        d_out = 1 if f["y_train"].dtype.kind == "f" else int(f["y_train"].max()) + 1
    return int(n_train), int(n_val), int(d_in), d_out


def job_cost(study: dict, dataset: str, family: str, data_dir: Path, conf_dir: Path = CONFIG_DIR,
             csv: dict | None = None) -> float:
    """A rough relative cost of ``family``'s job on a dataset: its members (strengths ×
    the dataset's seeds) × epochs × (minibatch steps, the epoch's evaluation, and the
    multiply-adds of the reference network's training and evaluation passes); 0 if
    unknown. It only orders the jobs, longest first, so that neither worker is left alone
    with a long job at the end; it need not be exact."""
    import math

    import yaml

    try:
        n_train, n_val, d_in, d_out = dataset_sizes(data_dir / f"{dataset}.npz")
        epochs = float(dataset_settings(study, dataset, csv)[1]["epochs"])
        members = len(study["strengths"][family]) * len(dataset_seeds(study, dataset, csv))
    except (OSError, KeyError, TypeError, ValueError):  # ValueError: also a ConfigError, a DataFileError
        return 0.0  # a bad data file is refused by its job, naming it
    try:
        batch = int(yaml.safe_load((conf_dir / "data" / f"{'csv' if csv else dataset}.yaml").read_text())["batch_size"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        batch = 32
    width = 64  # the reference network: 3 hidden layers of 64
    macs = d_in * width + 2 * width * width + width * d_out
    rows = 4 * n_train + n_val  # training (forward and backward), then train and validation evaluated
    return members * epochs * (STEP_COST * math.ceil(n_train / batch) + EPOCH_COST + MMAC_COST * rows * macs / 1e6)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m regstudy.stages.train", description=__doc__)
    p.add_argument("--family", help="the family (default with --csv: every family of the study)")
    p.add_argument("--dataset", help="one dataset only (default: every dataset of the study)")
    p.add_argument("--csv", metavar="NAME", help="the CSV file csv.NAME of the params file: its own stage")
    p.add_argument("--control", action="store_true", help="a control: study.controls' datasets and overrides")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--out", default="results")
    p.add_argument("--conf", default="conf", help="config dir (the stage's deps)")
    p.add_argument("--jobs", type=int, default=2, help="jobs at a time (one torch thread each)")
    return p


def main(argv: list[str] | None = None) -> int:
    """The stage's command. A signal, or the end of DVC, stops every job of the stage,
    queued ones included (:func:`regstudy.warm.run_many`): exit 130 (SIGINT), 143 (SIGTERM)."""
    from ..lifecycle import report_interrupt, watch_parent

    watch_parent()  # a stage never outlives DVC
    try:
        return run_jobs(argv)
    except KeyboardInterrupt as e:
        return report_interrupt(e, "no further job starts; the stopped jobs' runs end KILLED")


def pin_kernels(args, params: dict, family: str, dataset: str) -> None:
    """Before the jobs' processes import torch: the exact path's pin of torch's kernels
    where the stage's jobs take it (:func:`regstudy.kernels.pin_for`; the first job's
    config says, as the study sets compute and trainer.accelerator for all)."""
    from ..kernels import pin_for

    study, csv = params.get("study", {}), (params.get("csv") or {}) if args.csv else {}
    try:
        cfg = compose_job(study_overrides(study, dataset, family, job_results(Path(args.out), family, dataset, csv),
                                          args.control, csv), Path(args.conf))
    except Exception:  # noqa: BLE001 - a config that does not compose: the job itself says why
        return
    pin_for(cfg.get("compute", "auto"), cfg.trainer.accelerator)


def run_jobs(argv: list[str] | None = None) -> int:
    """One job (``--dataset``), or the family on every dataset of the study (``--family``),
    or every family on a CSV file (``--csv``), in warm forks."""
    from ..warm import run, run_many

    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if args.csv is None and args.family is None:
        print("error: give --family (a train stage) or --csv (a CSV file's stage)", file=sys.stderr)
        return 2
    if args.dataset is not None:
        pin_kernels(args, read_params(args.params), args.family, args.dataset)
        return run("regstudy.stages.train:run_stage", argv)
    params = read_params(args.params)
    study, csv = params.get("study", {}), params.get("csv") or {}
    if args.csv is not None:
        if args.csv not in csv:
            print(f"error: csv.{args.csv} is not in {args.params}; allowed: one of {list(csv)}", file=sys.stderr)
            return 2
        pairs = [(f, args.csv) for f in ([args.family] if args.family else study.get("families", []))]
    else:
        csv = {}
        datasets = (study.get("controls") or {}).get("datasets", []) if args.control else study.get("datasets", [])
        pairs = [(args.family, d) for d in datasets]
    if not pairs:
        print(f"error: no jobs for {args.family or args.csv} in {args.params}", file=sys.stderr)
        return 2
    try:  # every dataset's seeds before any job starts: a bad value writes nothing
        for _, d in pairs:
            dataset_seeds(study, d, csv)
    except ValueError as e:  # ConfigError
        print(f"error: {e}", file=sys.stderr)
        return 2
    # Longest first, so that neither worker is left alone with a long job at the end.
    pairs = sorted(pairs, key=lambda p: -job_cost(study, p[1], p[0], Path("data"), Path(args.conf), csv))
    jobs = [[*argv, *([] if args.family else ["--family", f]), "--dataset", d] for f, d in pairs]
    pin_kernels(args, params, *pairs[0])
    # A fresh MLflow store is created by the first job to get there (tracking.prepare_store).
    codes = run_many("regstudy.stages.train:run_stage", jobs, workers=max(1, args.jobs))
    return next((code for code in codes if code), 0)  # the first failure, if any


if __name__ == "__main__":
    sys.exit(main())
