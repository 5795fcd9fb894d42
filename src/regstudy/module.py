"""The LightningModule that trains a stack of members (see :mod:`regstudy.stacked`).

Optimization is manual so that each step can apply decoupled weight decay to the
pre-step weights and proximal steps after the update, as the formulas require.
Every epoch ends with a full evaluation of every member on the training and validation
splits; early stopping and divergence are decided per member from it. The test split is
evaluated once, on the kept weights, after training (``evaluate(SPLITS)``).
"""

from __future__ import annotations

import time
from typing import Callable

import pytorch_lightning as pl
import torch
from torch import Tensor

from .config import MetricsConfig
from .metrics import alive_units, data_loss, metric, weight_stats
from .optimizers import member_optimizers, parameter_groups
from .randomness import MemberBatches, Stream, WholeEpochs, member_generator
from .regularizers.label_smoothing import smoothed_cross_entropy
from .regularizers.noise import noisy_inputs
from .regularization import Regularization
from .stacked import StackedMLP

SPLITS = ("train", "val", "test")
EPOCH_SPLITS = ("train", "val")  # evaluated every epoch; the test split only at the end


class MemberStackModule(pl.LightningModule):
    """Trains K members at once; ``history`` holds one dict of ``(K, ...)`` tensors per epoch."""

    def __init__(self, net: StackedMLP, reg: Regularization, data: dict[str, Tensor], task: str,
                 optimizer: Callable, batch_size: int, seeds: list[int],
                 zero_threshold: float = MetricsConfig.zero_threshold,
                 alive_threshold: float = MetricsConfig.alive_threshold):
        super().__init__()
        self.automatic_optimization = False
        self.net, self.reg, self.splits, self.task = net, reg, data, task
        self.optimizer_factory, self.batch_size, self.seeds = optimizer, batch_size, seeds
        self.zero_threshold, self.alive_threshold = zero_threshold, alive_threshold
        k = net.n_members
        self._eval_x: dict[tuple[str, ...], Tensor] = {}  # inputs of one evaluation pass
        self.history: list[dict[str, Tensor]] = []
        self.nonfinite = torch.zeros(k, dtype=torch.bool)
        self.diverged_epoch = torch.zeros(k, dtype=torch.long)  # 0: never
        self.stopped_epoch = torch.zeros(k, dtype=torch.long)  # 0: never
        self.best_epoch = torch.zeros(k, dtype=torch.long)
        self.best_val = torch.full((k,), float("inf"))
        self.wait = torch.zeros(k, dtype=torch.long)
        self.first_val: Tensor | None = None  # validation loss after the first epoch
        self.best_state: dict[str, Tensor] | None = None
        self.evaluation_seconds = 0.0  # wall time of the per-epoch evaluations (run.json's timings)

    # --- the device ---

    _STATE = ("nonfinite", "diverged_epoch", "stopped_epoch", "best_epoch", "best_val", "wait", "first_val")

    def _move(self, device: torch.device | str) -> None:
        """The data, the regularizers and the early-stopping state to ``device`` (Lightning
        moves the parameters and buffers)."""
        self.splits = {k: v.to(device) for k, v in self.splits.items()}
        self._eval_x = {}
        self.reg.to(device)
        for name in self._STATE:
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).to(device))
        if self.best_state is not None:
            self.best_state = {k: v.to(device) for k, v in self.best_state.items()}

    def on_fit_start(self) -> None:
        self._move(self.device)

    def to_cpu(self) -> None:
        """Everything back on the CPU after training (a no-op for a CPU job): the final
        evaluation, the tables and the exported model read it there."""
        self.cpu()
        self._move("cpu")
        self.history = [{k: v.cpu() for k, v in row.items()} for row in self.history]

    # --- training ---

    def configure_optimizers(self):
        """The optimizer over all members (two where a fused one would round a member by its
        place in the stack: :mod:`regstudy.optimizers`); its own weight_decay (if any)
        touches kernels only."""
        return member_optimizers(self.optimizer_factory, parameter_groups(self.net))

    def minibatches(self) -> MemberBatches:
        """The members' minibatches, epoch after epoch (fresh generators: from the start)."""
        units = self.net.n_dropout_units if self.reg.dropout_p is not None else 0
        return MemberBatches(self.splits["x_train"], self.splits["y_train"], self.batch_size, self.seeds,
                             n_dropout_units=units, noise=self.reg.noise_sigma is not None)

    def train_dataloader(self):
        return WholeEpochs(self.minibatches())

    def training_step(self, batches: list[dict[str, Tensor]], batch_idx: int) -> None:
        """One Lightning step is one epoch: an optimizer step per minibatch."""
        for batch in batches:
            self.train_on_batch(batch)

    def train_on_batch(self, batch: dict[str, Tensor]) -> Tensor:
        """One optimizer step of every member on its minibatch; returns the summed loss."""
        x = batch["x"]
        if self.reg.noise_sigma is not None:
            x = noisy_inputs(x, self.reg.noise_sigma, batch["eps"])
        hidden = None
        if self.reg.needs_hidden:
            out, hidden = self.net(x, batch.get("u"), self.reg.dropout_p, return_hidden=True)
        else:
            out = self.net(x, batch.get("u"), self.reg.dropout_p)
        if self.reg.label_smoothing is not None:
            fit = smoothed_cross_entropy(out, batch["y"], self.reg.label_smoothing)
        else:
            fit = data_loss(out, batch["y"], self.task)
        by_hand = self.reg.gradient_by_hand
        if by_hand:
            with torch.no_grad():
                penalty = self.reg.penalty(self.net, hidden)
            loss = fit + penalty
        else:
            loss = fit + self.reg.penalty(self.net, hidden) if self.reg.has_penalty else fit
        finite = torch.isfinite(loss)
        self.nonfinite |= ~finite
        # A diverged member contributes no gradient; members never share one anyway.
        total = torch.where(finite, loss, torch.zeros_like(loss)).sum()
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        for opt in opts:
            opt.zero_grad()
        self.manual_backward(total)
        if by_hand:
            self.reg.add_penalty_grad_(self.net, torch.where(finite, 1.0, 0.0))
        lr = opts[0].param_groups[0]["lr"]
        self.reg.before_step_(self.net, lr)
        for opt in opts:
            opt.step()
        self.reg.after_step_(self.net, lr)
        return total

    def on_train_epoch_end(self) -> None:
        start = time.perf_counter()
        self.history.append(self.evaluate_epoch(self.current_epoch + 1))
        self.evaluation_seconds += time.perf_counter() - start
        done = (self.stopped_epoch > 0) | (self.diverged_epoch > 0)
        if bool(done.all()):
            self.trainer.should_stop = True

    # --- evaluation ---

    @torch.no_grad()
    def evaluate(self, splits: tuple[str, ...] = EPOCH_SPLITS) -> dict[str, Tensor]:
        """Loss and metric of every member on ``splits`` (the first must be train), in
        evaluation mode, with the weight statistics.

        The splits go through the network in one pass (normalization uses running
        statistics in evaluation mode, so examples do not interact); each member sees
        its own draw of the data.
        """
        was_training = self.net.training
        self.net.eval()
        row = {}
        if splits not in self._eval_x:
            self._eval_x[splits] = torch.cat([self.splits[f"x_{s}"] for s in splits], dim=1)
        sizes = [self.splits[f"x_{s}"].shape[1] for s in splits]
        out, hidden = self.net(self._eval_x[splits], return_hidden=True)
        n_train = sizes[0]
        for split, out_split in zip(splits, out.split(sizes, dim=1)):
            y = self.splits[f"y_{split}"]
            row[f"{split}_loss"] = data_loss(out_split, y, self.task)
            row[f"{split}_metric"] = metric(out_split, y, self.task)
        row["layer_alive"] = alive_units([h[:, :n_train] for h in hidden], self.alive_threshold, self.net.ops)
        self.net.train(was_training)
        row["alive_neurons"] = row["layer_alive"].sum(1)
        row["penalty"] = self.reg.penalty(self.net, [h[:, :n_train] for h in hidden])
        lr = self.optimizer_factory.keywords["lr"]
        row.update(weight_stats(self.net, self.zero_threshold, lr))
        return row

    def evaluate_epoch(self, epoch: int) -> dict[str, Tensor]:
        row = self.evaluate()
        bad = self.nonfinite | ~torch.isfinite(row["train_loss"]) | ~torch.isfinite(row["val_loss"])
        self.diverged_epoch = torch.where(bad & (self.diverged_epoch == 0), epoch, self.diverged_epoch)
        active = (self.stopped_epoch == 0) & (self.diverged_epoch == 0)
        if self.reg.patience is None:
            self.best_epoch = torch.where(active, epoch, self.best_epoch)
        else:
            self._early_stopping(row["val_loss"], active, epoch)
        # True on the epochs after the member stopped (its curve has ended).
        row["stopped"] = (self.stopped_epoch > 0) & (self.stopped_epoch < epoch)
        row["epoch"] = torch.full((self.net.n_members,), epoch, device=self.device)
        return row

    def _early_stopping(self, val_loss: Tensor, active: Tensor, epoch: int) -> None:
        """Per member: keep the best weights; stop after ``patience`` epochs without gain.

        A member is only stopped once its best validation loss is ``warmup_drop`` (a
        fraction) below its first epoch's: patience then counts from that improvement,
        not from the initial plateau.
        """
        if self.first_val is None:
            self.first_val = val_loss.clone()
        improved = active & (val_loss < self.best_val - self.reg.min_delta)
        self.best_val = torch.where(improved, val_loss, self.best_val)
        self.best_epoch = torch.where(improved, epoch, self.best_epoch)
        self.wait = torch.where(improved, 0, torch.where(active, self.wait + 1, self.wait))
        armed = self.best_val <= (1 - self.reg.warmup_drop) * self.first_val
        stop = active & ~improved & armed & (self.wait >= self.reg.patience)
        self.stopped_epoch = torch.where(stop, epoch, self.stopped_epoch)
        state = self.net.state_dict()
        if self.best_state is None:
            self.best_state = {n: t.clone() for n, t in state.items()}
        for name, t in state.items():
            mask = improved.view(-1, *([1] * (t.dim() - 1)))
            self.best_state[name] = torch.where(mask, t, self.best_state[name])

    def restore_best(self) -> None:
        """Load each member's best weights (early stopping only)."""
        if self.best_state is not None:
            self.net.load_state_dict(self.best_state)

    @torch.no_grad()
    def predict_grid(self, grid: Tensor, mc_samples: int) -> dict[str, Tensor]:
        """Predictions on a plotting grid ``(G, d)``: deterministic and Monte Carlo dropout.

        Regression: the output; classification: the probability of class 1. MC dropout
        keeps dropout on in evaluation mode for ``mc_samples`` passes and returns their
        mean and std (std is 0 without dropout). MC passes are costly (``mc_samples``
        forward passes of the whole grid), so they run for the members of the first
        seed only, the ones the report shows; the others get NaN.
        """
        self.net.eval()

        def value(net: StackedMLP, u: Tensor | None = None, p: Tensor | None = None) -> Tensor:
            out = net(grid.expand(net.n_members, *grid.shape), u, p)
            return out.squeeze(-1) if self.task == "regression" else out.softmax(-1)[..., 1]

        pred = value(self.net)
        if self.reg.dropout_p is None:
            return {"pred": pred, "mc_mean": pred, "mc_std": torch.zeros_like(pred)}
        chosen = [m for m, s in enumerate(self.seeds) if s == min(self.seeds)]
        net, p = self.net.select(chosen), self.reg.dropout_p[chosen]
        gens = [member_generator(self.seeds[m], Stream.MC) for m in chosen]
        draws = []
        for _ in range(mc_samples):
            u = torch.stack([torch.rand(len(grid), net.n_dropout_units, generator=g) for g in gens])
            draws.append(value(net, u, p))
        draws = torch.stack(draws)
        mean, std = torch.full_like(pred, float("nan")), torch.full_like(pred, float("nan"))
        mean[chosen], std[chosen] = draws.mean(0), draws.std(0, unbiased=False)
        return {"pred": pred, "mc_mean": mean, "mc_std": std}
