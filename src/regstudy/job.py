"""One train job: a grid of members trained as one stacked model, tracked and tabulated.

``run_job`` is what the Hydra entry point (``regstudy.train``), the DVC train stages and
the search call: the job is checked once (:func:`regstudy.jobspec.prepare_job`, before any
file is written or run opened), then built, fitted, written and handed over to tracking.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.trainer.states import TrainerStatus

from . import kernels
from .compute import PATHS, ops_for, resolve_accelerator
from .allocator import keep_freed_memory
from .data import DRAWN, load_npz, seed_rows, task_of
from .jobspec import JobSpec, member_grid, prepare_job, resolve_paths  # noqa: F401 - re-exported
from .console import quiet
from .lifecycle import interrupt_on_signals, reraise_interrupt
from .member_figures import member_figure
from .module import SPLITS, MemberStackModule
from .randomness import Stream, member_generator
from .regularizers import not_applicable as regularizers_not_applicable
from .regularization import Regularization
from .metrics import feature_norms, near_zero_sensitivity
from .results import (MAX_FEATURES, RESULTS_DIGEST_TAG, ResultsWriter, best_strength, curves_table, features_table,
                      layers_table, members_table, params_table, predictions_table, sample_indices, save_torch,
                      write_text, writing)
from .describe import dataset_entity, job_description, source_tags
from .export import best_member, write_best_model
from .stacked import StackedMLP
from .preflight import data_path, project_root, tracking_uri
from .tracking import MLflowEpochLogger, TrackingFailed, TrackingProcess, git_commit, logged_every


def objective(table: pd.DataFrame) -> float:
    """The job's best mean validation metric over seeds, across its strengths (higher is
    better for every task: accuracy, R²); -inf if every member diverged."""
    best = best_strength(table)
    return best[1] if best else float("-inf")


def not_applicable(cfg: DictConfig) -> str | None:
    """Why the job's family does not apply to its dataset (a regularizer's ``tasks``: label
    smoothing needs classes), or None. Reads only the data file's task."""
    task = cfg.data.task
    if task is None:
        path = data_path(cfg)
        task = task_of(load_npz(path)) if path.suffix == ".npz" else None
    return regularizers_not_applicable(cfg.regularizer, task)


def load_tensors(arrays: dict[str, np.ndarray], seeds: list[int],
                 path: str | Path = "the data file") -> dict[str, torch.Tensor]:
    """Each member's draw of the data: ``x_<split>`` ``(K, n, d)``, ``y_<split>`` ``(K, n)``.

    ``seeds`` holds each member's seed; a seed the file has no draw of is a ConfigError.
    """
    rows = torch.tensor(seed_rows(arrays, seeds, path))
    return {k: torch.from_numpy(arrays[k])[rows] for k in DRAWN}


def plotting_grid(x_train: np.ndarray, cfg: DictConfig) -> np.ndarray | None:
    """A grid over the training inputs' range, all draws (1-D or 2-D inputs only)."""
    x_train = x_train.reshape(-1, x_train.shape[-1])
    lo, hi = x_train.min(0), x_train.max(0)
    if x_train.shape[1] == 1:
        return np.linspace(lo[0], hi[0], cfg.metrics.grid_size, dtype=np.float32)[:, None]
    if x_train.shape[1] == 2:
        pad = 0.25 * (hi - lo)
        axes = [np.linspace(lo[i] - pad[i], hi[i] + pad[i], cfg.metrics.grid_size_2d,
                            dtype=np.float32) for i in range(2)]
        g0, g1 = np.meshgrid(*axes, indexing="ij")
        return np.stack([g0.ravel(), g1.ravel()], 1)
    return None


def build_module(cfg: DictConfig, data: dict[str, torch.Tensor], members: list[dict[str, Any]],
                 compute: str | None = None) -> MemberStackModule:
    """The stacked network of the members, initialized from each member's own seed, on the
    compute path ``compute`` (``torch``, ``exact``; None: resolved from ``cfg``)."""
    seeds = [m["seed"] for m in members]
    d_in = data["x_train"].shape[-1]
    task = cfg.data.task
    d_out = 1 if task == "regression" else int(max(int(data[f"y_{s}"].max()) for s in
                                                   ("train", "val", "test")) + 1)
    mc = cfg.model
    ops = PATHS[compute] if compute else ops_for(cfg.compute, resolve_accelerator(cfg.trainer.accelerator))
    net = StackedMLP(len(members), d_in, list(mc.hidden), d_out, mc.activation, mc.negative_slope,
                     mc.output_activation, mc.norm, ops=ops)
    net.reset_parameters([member_generator(s, Stream.INIT) for s in seeds], mc.init.scheme,
                         mc.init.scale, mc.init.bias, mc.init.perturb_ulps)
    strengths = torch.tensor([m["strength"] for m in members], dtype=torch.float32)
    reg = Regularization.build(cfg.regularizer, cfg.members.sweep, strengths, net.n_layers)
    return MemberStackModule(net, reg, data, task, instantiate(cfg.optim), cfg.data.batch_size,
                             seeds, cfg.metrics.zero_threshold, cfg.metrics.alive_threshold)


def snapshot(net: StackedMLP) -> dict[str, torch.Tensor]:
    return {**{f"kernel_{i}": w.detach().clone() for i, w in enumerate(net.kernels)},
            **{f"bias_{i}": b.detach().clone() for i, b in enumerate(net.biases)}}


def run_job(job: JobSpec | DictConfig) -> pd.DataFrame:
    """Train the job's members; write ``results``; log to MLflow. Returns members' table.

    A config is checked first (:func:`prepare_job`). The results are committed before
    the MLflow runs are finished, so a finished run always has its results; with
    ``logger.background_finish`` the job returns while its tracking process finishes the
    runs on the second core.
    """
    job = job if isinstance(job, JobSpec) else prepare_job(job)
    cfg = job.cfg
    data = load_tensors(job.arrays, job.seeds, job.data_path)
    set_up_process(cfg)
    module = build_module(cfg, data, job.member_list(), job.compute)
    tags = job_tags(cfg, job.compute)
    tracking = TrackingProcess(cfg, job.member_list(), tags, dataset_entity(cfg, job.data_path, job.arrays)) \
        if cfg.logger.enabled else None
    table, handover, artifacts = fit_and_write(job, module, tracking, tags)
    if tracking:
        hand_over(job, tracking, handover, artifacts)
    return table


def set_up_process(cfg: DictConfig) -> None:
    """This process for a job; set per job, since workers are reused across jobs."""
    torch.set_num_threads(cfg.threads)
    keep_freed_memory()
    interrupt_on_signals()  # SIGTERM and SIGHUP clean up as Ctrl-C does: runs end KILLED
    quiet()


def job_tags(cfg: DictConfig, compute: str) -> dict[str, str]:
    """The tags of every run of the job: dataset, family, commit, sweep, kernels, source."""
    root = project_root(cfg)
    commit = git_commit(root)
    return {"dataset": cfg.data.name, "family": cfg.family, "git_commit": commit,
            "sweep": cfg.members.sweep, "kernels": kernels.describe(kernels.check(compute)),
            **source_tags(root, commit)}


def fit_and_write(job: JobSpec, module: MemberStackModule, tracking, tags: dict) -> tuple:
    """Fit, write every table and commit the results folder (all or nothing); on any
    failure or signal the folder is not committed and the runs end FAILED or KILLED.
    Returns the members' table, the MLflow handover and the artifacts' folder."""
    writer = ResultsWriter(job.results_dir)
    artifacts = Path(tempfile.mkdtemp(prefix="regstudy-artifacts-")) if tracking else None
    try:
        table, handover = _train_and_write(job, module, writer, tracking, tags, artifacts)
        writer.commit()
    except BaseException as e:
        writer.abort()
        if tracking:
            tracking.abort(e)
            shutil.rmtree(artifacts, ignore_errors=True)
        raise
    return table, handover, artifacts


def hand_over(job: JobSpec, tracking, handover, artifacts: Path) -> None:
    """The runs finished by the tracking process (in the background with
    ``logger.background_finish``); TrackingFailed says where the results are."""
    try:
        tracking.finish(handover, artifacts, background=job.cfg.logger.background_finish)
    except TrackingFailed as e:
        shutil.rmtree(artifacts, ignore_errors=True)
        runs = ("its runs stay RUNNING until the next job on this host ends them KILLED" if handover is not None
                else "MLflow opened no run of it")
        raise TrackingFailed(f"{e}\nThe job's results are complete in {job.results_dir}; {runs}") from None


def _train_and_write(job: JobSpec, module, writer, tracking, tags, artifacts):
    """Fit, then write every table; return the members' table and the MLflow handover."""
    cfg, members, arrays = job.cfg, job.member_list(), job.arrays
    start = time.perf_counter()
    init = snapshot(module.net)
    callbacks = [MLflowEpochLogger(tracking, logged_every(cfg))] if tracking else []
    # Lightning moves the module to the device; the module its data and state (on_fit_start)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, accelerator=job.device)
    fit_start = time.perf_counter()
    try:
        trainer.fit(module)
    except SystemExit:
        if trainer.state.status == TrainerStatus.INTERRUPTED:
            reraise_interrupt()  # so that the runs end KILLED, not FAILED
        raise
    fit_end = time.perf_counter()
    module.to_cpu()  # the final evaluation and the tables: on the CPU, whatever trained
    module.restore_best()
    final_eval = module.evaluate(SPLITS)  # the kept weights; the only look at the test split
    final_eval.update(near_zero_sensitivity(module.net, cfg.metrics.zero_threshold))

    net, history = module.net, module.history
    info = {"dataset": cfg.data.name, "family": cfg.family, "sweep": cfg.members.sweep,
            "strength_name": members[0]["strength_name"], "task": cfg.data.task,
            "optimizer": cfg.optim._target_.rsplit(".", 1)[-1], "lr": float(cfg.optim.lr),
            "zero_threshold": cfg.metrics.zero_threshold, "total_neurons": sum(net.hidden),
            "best_epoch": module.best_epoch, "diverged_epoch": module.diverged_epoch,
            "stopped_epoch": module.stopped_epoch}
    table = members_table(history, final_eval, members, info)
    curves, layers = curves_table(history, members), layers_table(history, members)
    final = snapshot(net)
    gen = member_generator(0, Stream.SAMPLE)
    indices = {name: sample_indices(t.shape[1:], gen) for name, t in init.items()}
    params = params_table(init, final, members, indices)
    writer.table("members.csv", table)
    writer.table("curves.csv", curves)
    writer.table("layers.csv", layers)
    writer.table("params.parquet", params)
    if net.kernels[0].shape[1] <= MAX_FEATURES:
        writer.table("features.csv", features_table(feature_norms(net), members, arrays))
    grid = plotting_grid(arrays["x_train"], cfg)
    if grid is not None and cfg.data.name in ("signal", "moons"):
        mc = cfg.regularizer.dropout.mc_samples if cfg.regularizer.get("dropout") else 1
        preds = module.predict_grid(torch.from_numpy(grid), mc)
        writer.table("predictions.parquet", predictions_table(grid, preds, members, cfg.data.task))
    resolved = OmegaConf.to_yaml(cfg, resolve=True)
    # Where the runs went is in run.json (which DVC ignores): the same study logged to
    # another store has the same results.
    kept = OmegaConf.to_container(cfg, resolve=True)
    del kept["logger"]["tracking_uri"]
    writer.text("config.yaml", OmegaConf.to_yaml(kept))
    runs = {"experiment_id": None, "parent_run_id": None, "member_run_ids": []}
    if tracking:
        try:
            runs = tracking.runs()
        except TrackingFailed:  # the results are written all the same; the finish says why
            pass
    # Where the job's time went (benchmarks/study.py sums them over a study): the training
    # steps, the per-epoch evaluations, and the rest (set-up, final evaluation, tables).
    fit, evaluation = fit_end - fit_start, module.evaluation_seconds
    timings = {"training_steps": fit - evaluation, "evaluation": evaluation,
               "setup_and_tables": time.perf_counter() - start - fit}
    digest = writer.digest()
    writer.json("run.json", {"git_commit": tags["git_commit"], "kernels": tags["kernels"],
                             "tracking_uri": tracking_uri(cfg) if tracking else None, **runs,
                             RESULTS_DIGEST_TAG: digest,
                             "seconds": {k: round(v, 3) for k, v in timings.items()}})
    handover = None
    if runs["parent_run_id"]:
        handover = _member_artifacts(cfg, artifacts, table, curves, params, final, resolved,
                                     draw_here=not cfg.logger.background_finish)
        for member in handover:  # every run gets the results' digest at its finish
            member[RESULTS_DIGEST_TAG] = digest
        _best_artifacts(cfg, artifacts / "best", table, module, arrays)
    return table, handover


def _best_artifacts(cfg: DictConfig, folder: Path, table: pd.DataFrame, module,
                    arrays: dict[str, np.ndarray]) -> None:
    """For the tracking process: the best member as a model on raw rows with an input
    example (its seed's first test rows), and the parent run's description."""
    folder.mkdir()
    write_text(folder / "description.md", job_description(cfg, table))
    k = best_member(table)
    if k is None:
        return
    write_best_model(folder, module.net, k, cfg.model, arrays, int(table.seed[k]))
    write_text(folder / "member.txt", str(k))


SUMMARY_KEYS = ("train_loss", "val_loss", "test_loss", "train_metric", "val_metric",
                "test_metric", "gap", "weight_norm", "near_zero_fraction", "exact_zero_fraction",
                "alive_neurons", "removed_neurons", "epochs_trained", "best_epoch")


def _member_artifacts(cfg, tmp: Path, table: pd.DataFrame, curves: pd.DataFrame,
                      params: pd.DataFrame, final: dict[str, torch.Tensor], resolved: str,
                      draw_here: bool) -> list[dict]:
    """Each member's artifact folder (config, final weights, figure) and final numbers.

    Figures are left to the tracking process; when the job waits for it anyway
    (``draw_here``), this process draws the first half (both cores busy).
    """
    parent = tmp / "parent"
    parent.mkdir()
    write_text(parent / "config.yaml", resolved)
    members = []
    for k, row in table.iterrows():
        d = tmp / f"member_{k}"
        d.mkdir()
        write_text(d / "config.yaml", resolved)
        save_torch({n: t[k].clone() for n, t in final.items()}, d / "weights.pt")
        member = {"artifacts": str(d), "diverged": row.status == "diverged",
                  "summary": {key: float(row[key]) for key in SUMMARY_KEYS}}
        if cfg.logger.log_figures:
            figure = (curves[curves.member == k], params[params.member == k],
                      f"{row.family} {row.dataset} {row.strength_name}={row.strength:g} "
                      f"seed={row.seed} ({row.status})", str(d / "member.png"))
            if draw_here and k < len(table) // 2:
                with writing(d / "member.png"):
                    member_figure(*figure)
            else:
                member["figure"] = figure
        members.append(member)
    return members
