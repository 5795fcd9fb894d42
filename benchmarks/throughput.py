"""Training throughput, in model-steps per second, of the three ways to train many models.

- raw: a hand-written PyTorch loop training one model (the floor of overhead);
- naive: one ``pytorch_lightning.Trainer`` per model, one model after another, each
  logging every step to MLflow with ``MLFlowLogger`` (a typical template project);
- stacked: regstudy's ``MemberStackModule`` training K members at once, as a train
  job runs it (Lightning Trainer, per-epoch evaluation of every split), MLflow off.

All train the reference network (1 -> 64 -> 64 -> 64 -> 1, LeakyReLU, uniform init,
Adam, lr 1e-3, batch 32, MSE) on the signal dataset.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from regstudy.data import load_npz

REFERENCE = [64, 64, 64]


def reference_mlp(d_in: int = 1) -> nn.Sequential:
    sizes = [d_in, *REFERENCE]
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.LeakyReLU(0.01)]
    layers.append(nn.Linear(sizes[-1], 1))
    for p in (q for layer in layers for q in layer.parameters()):
        nn.init.uniform_(p, -0.1, 0.1)
    return nn.Sequential(*layers)


def raw_loop(data_path: Path, epochs: int, min_seconds: float = 2.0) -> float:
    """Model-steps per second of a plain loop over in-memory tensors (one model).

    Runs ``epochs`` epochs, and more until ``min_seconds`` have passed: one model's
    epochs are short, and a short timing on a shared machine is mostly noise.
    """
    d = load_npz(data_path)
    x, y = torch.from_numpy(d["x_train"][0]), torch.from_numpy(d["y_train"][0])  # seed 0's draw
    torch.manual_seed(0)
    model = reference_mlp(x.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps, start, epoch = 0, time.perf_counter(), 0
    while epoch < epochs or time.perf_counter() - start < min_seconds:
        epoch += 1
        order = torch.randperm(len(x))
        for i in range(0, len(x), 32):
            idx = order[i:i + 32]
            loss = (model(x[idx]).squeeze(-1) - y[idx]).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
    return steps / (time.perf_counter() - start)


def naive_peer(data_path: Path, tmp: Path, models: int, epochs: int) -> float:
    """Model-steps per second of one Lightning Trainer per model, logging each step to MLflow."""
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import MLFlowLogger
    from torch.utils.data import DataLoader, TensorDataset

    class Regressor(pl.LightningModule):
        def __init__(self, d_in: int):
            super().__init__()
            self.net = reference_mlp(d_in)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = nn.functional.mse_loss(self.net(x).squeeze(-1), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    d = load_npz(data_path)
    dataset = TensorDataset(torch.from_numpy(d["x_train"][0]), torch.from_numpy(d["y_train"][0]))
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    steps, start = 0, time.perf_counter()
    for seed in range(models):
        torch.manual_seed(seed)
        loader = DataLoader(dataset, batch_size=32, shuffle=True)
        logger = MLFlowLogger(experiment_name="naive", tracking_uri=f"sqlite:///{tmp / 'naive.db'}")
        trainer = pl.Trainer(max_epochs=epochs, logger=logger, log_every_n_steps=1,
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, accelerator="cpu", devices=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(Regressor(dataset.tensors[0].shape[1]), loader)
        steps += trainer.global_step
    return steps / (time.perf_counter() - start)


def stacked(data_path: Path, k: int, epochs: int, compute: str = "auto") -> float:
    """Model-steps per second of K members trained as one stacked model (MLflow off), on
    the compute path ``compute`` (``auto``, ``torch``, ``exact``: :mod:`regstudy.compute`)."""
    from hydra.utils import instantiate

    from regstudy.allocator import keep_freed_memory
    from regstudy.job import build_module, load_tensors, member_grid
    from regstudy.stages.train import compose_job

    keep_freed_memory()  # as every train job does (regstudy.job.run_job)

    strengths = [round(1e-4 * i / max(k - 1, 1), 8) for i in range(k)]
    cfg = compose_job(["experiment=l2", f"data.path={data_path}", f"members.strengths={strengths}",
                       "members.seeds=[0]", "logger.enabled=false", f"trainer.max_epochs={epochs}",
                       f"compute={compute}"])
    members = member_grid(cfg)
    module = build_module(cfg, load_tensors(load_npz(data_path), [m["seed"] for m in members]), members)
    trainer = instantiate(cfg.trainer)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    start = time.perf_counter()
    trainer.fit(module)
    steps = epochs * -(-module.splits["x_train"].shape[1] // cfg.data.batch_size)
    return k * steps / (time.perf_counter() - start)


def stacked_native(data_path: Path, k: int, epochs: int, repeats: int) -> tuple[float, str]:
    """:func:`stacked` (best of ``repeats``) in a fresh process on this CPU's own kernels
    (``REGSTUDY_KERNELS=native``; torch and MKL read their settings once, at import), and
    the kernels that process computed with (``regstudy.kernels.describe``)."""
    import json
    import subprocess
    import sys

    from benchmarks import user_env
    from regstudy.kernels import KERNEL_ENV

    env = {k: v for k, v in user_env(REGSTUDY_KERNELS="native").items() if k not in KERNEL_ENV}
    code = ("import json, sys, torch; from benchmarks import throughput; from regstudy import kernels; "
            "torch.set_num_threads(1); "
            f"rate = max(throughput.stacked(sys.argv[1], {k}, {epochs}) for _ in range({repeats})); "
            "print(json.dumps([rate, kernels.describe(kernels.active())]))")
    out = subprocess.run([sys.executable, "-c", code, str(data_path)], env=env, check=True,
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    rate, kernels = json.loads(out.stdout.strip().splitlines()[-1])
    return rate, kernels


def path_env(compute: str) -> dict[str, str]:
    """The environment of a process that computes on ``compute`` as a job does: the torch
    path on this CPU's own kernels (``REGSTUDY_KERNELS=native``, no pin asked for), the
    exact path pinned (benchmarks/__init__.py asks, as a job's entry point does)."""
    from benchmarks import user_env
    from regstudy.kernels import KERNEL_ENV

    if compute == "torch":
        return {k: v for k, v in user_env(REGSTUDY_KERNELS="native").items() if k not in KERNEL_ENV}
    return {k: v for k, v in user_env().items() if k != "REGSTUDY_KERNELS"}


def on_path(compute: str, code: str, *args: str) -> dict:
    """Run ``code`` (Python that ends by printing one JSON line) in a fresh process with
    the environment ``path_env(compute)``, on one torch thread, with ``args`` as
    ``sys.argv[1:]``, and return that JSON. ``code`` may call ``describe()``: the kernels
    its process computes with (``regstudy.kernels.describe``). Torch and MKL read their
    settings once, at import: only a process of its own can be pinned or not."""
    import json
    import subprocess
    import sys

    head = ("import benchmarks\n"  # first: it asks for the pin (or not) before torch is imported
            "import json, sys, torch; from regstudy import kernels; torch.set_num_threads(1)\n"
            f"describe = lambda: kernels.describe(kernels.active({compute!r}))\n")
    out = subprocess.run([sys.executable, "-c", head + code, *args], env=path_env(compute),
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if out.returncode != 0:
        raise RuntimeError(f"the {compute} path's process failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def path_rates(plan: dict) -> dict:
    """What the compute-paths benchmark measures in a process of one path (run there by
    :func:`on_path`): ``plan`` has ``compute``, ``data`` (the signal set), ``tmp``, ``ks``,
    ``epochs``, ``repeats``, and ``steps`` and ``naive_models`` for the torch path only.

    Returns, per K, ``stacked``: a train job's rate (:func:`stacked`, best of
    ``repeats``); on the torch path also ``step``: the stacked training step alone and
    ``torch_func``: the torch.func ensemble's (benchmarks/ensemble.py, the tutorial's
    ``nn.Linear``), and ``naive``: :func:`naive_peer`; and ``kernels``, what the process
    computed with (``regstudy.kernels.describe``)."""
    from benchmarks import ensemble
    from regstudy import kernels

    compute, data, ks = plan["compute"], plan["data"], plan["ks"]
    out: dict = {"stacked": {}, "step": {}, "torch_func": {}}
    for k in ks:
        out["stacked"][k] = max(stacked(data, k, max(plan["epochs"], 400 // k), compute)
                                for _ in range(plan["repeats"]))
        if compute == "torch":
            c = ensemble.compare(k, plan["steps"], plan["repeats"], compute)
            out["step"][k], out["torch_func"][k] = c["stacked"], c["vmap"]
    if compute == "torch":
        out["naive"] = naive_peer(Path(data), Path(plan["tmp"]), plan["naive_models"], plan["epochs"])
    out["kernels"] = kernels.describe(kernels.active(compute))
    return out
