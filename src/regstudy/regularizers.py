"""The regularizers of the study, written once, vectorized over the member axis.

``w`` ranges over the selected entries (kernels by default) of each layer; every
penalty is returned per member, shape ``(K,)``, in the units of the data loss. The
coefficient of layer ``l`` for member ``k`` is ``coef[k, l] = lam_k * layer_scale[l]``.

- l1:            ``lam * sum |w|``
- l2:            ``lam * sum w^2``              (Keras convention, no 1/2)
- elastic net:   ``lam * (rho * sum |w| + (1 - rho) * sum w^2)``
- group lasso:   ``lam * sum_g sqrt(|g|) * ||w_g||_2``, a group = one unit's incoming weights
- activity:      ``lam * sum |h| / B`` (or ``h^2``) over the hidden layers' outputs ``h``
                 of a batch of B examples (Keras: divided by the batch size)

Two kinds of things live here. **Penalties** are added to the loss (above). **Step
operators** act on the weights around the optimizer step, with ``t = lr * lam``:

- weight decay (decoupled, before the step):  ``w <- w - t * w``
- proximal l1 (after the step):               ``w <- sign(w) * max(|w| - t, 0)``
- proximal elastic net (after the step):      ``w <- sign(w) * max(|w| - t*rho, 0) / (1 + 2*t*(1 - rho))``
- proximal group lasso (after the step):      ``w_g <- w_g * max(0, 1 - t*sqrt(|g|) / ||w_g||)``
- max-norm (after the step, last):            ``w_j <- w_j * min(1, c / ||w_j||)`` for each hidden
                                              unit j's incoming weights (a projection, no t)

A proximal step is the exact minimizer of ``||v - w||^2 / 2 + t * penalty(v)`` over ``v``:
it gives exact zeros, where the penalty's subgradient under Adam only makes weights
jitter around zero. A regularizer with ``proximal: true`` is not added to the loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from .config import HIDDEN_ONLY, STRENGTH_KEY
from .stacked import StackedMLP


def _selected(net: StackedMLP, kernel: bool, bias: bool) -> list[list[Tensor]]:
    """Per layer, the tensors a penalty touches (each ``(K, ...)``)."""
    return [[t for t, on in ((w, kernel), (b, bias)) if on]
            for w, b in zip(net.kernels, net.biases)]


# The regularizers that can add a penalty to the loss, in the order the loss adds them.
LOSS_PENALTIES = ("activity", "l1", "l2", "elastic_net", "group_lasso")


def _total(terms):
    """``t0 + t1 + ...`` in order; 0 if there are none. Python's ``sum`` would add the first
    to 0: the same value, but one more operation (and autograd node) each time."""
    terms = iter(terms)
    total = next(terms, 0)
    for t in terms:
        total = total + t
    return total


def _sum_per_member(ts: list[Tensor], f) -> Tensor:
    """``sum over the tensors of sum over each member's entries of f(t)``, shape ``(K,)``."""
    return _total(f(t.flatten(1)).sum(1) for t in ts)


# --- penalties: added to the loss ---


def l1_penalty(tensors: list[list[Tensor]], coef: Tensor) -> Tensor:
    """``sum_l coef[:, l] * sum |w_l|``."""
    return _total(coef[:, l] * _sum_per_member(ts, torch.abs) for l, ts in enumerate(tensors) if ts)


def l2_penalty(tensors: list[list[Tensor]], coef: Tensor) -> Tensor:
    """``sum_l coef[:, l] * sum w_l^2``."""
    return _total(coef[:, l] * _sum_per_member(ts, torch.square) for l, ts in enumerate(tensors) if ts)


def elastic_net_penalty(tensors: list[list[Tensor]], coef: Tensor, rho: float) -> Tensor:
    """``rho * l1 + (1 - rho) * l2`` with the same coefficients."""
    return rho * l1_penalty(tensors, coef) + (1.0 - rho) * l2_penalty(tensors, coef)


def unit_groups(w: Tensor, b: Tensor | None) -> Tensor:
    """The weight groups of a layer's units: ``(K, group_size, units)``.

    Column ``j`` holds unit ``j``'s incoming kernel weights (plus its bias if given).
    """
    return w if b is None else torch.cat([w, b.unsqueeze(1)], dim=1)


def group_lasso_penalty(groups: list[Tensor], coef: Tensor) -> Tensor:
    """``sum_l coef[:, l] * sum_j sqrt(|g|) * ||g_j||_2`` over each layer's unit groups."""
    return _total(coef[:, l] * math.sqrt(g.shape[1]) * torch.linalg.vector_norm(g, dim=1).sum(1)
                  for l, g in enumerate(groups))


def activity_penalty(hidden: list[Tensor], coef: Tensor, norm: str) -> Tensor:
    """``sum_l coef[:, l] * sum_{b,j} |h_l[b, j]| / B`` (``h^2`` for l2), per member.

    ``hidden`` holds each hidden layer's output ``(K, B, units)``; dividing by the batch
    size B keeps the penalty's weight against the kernel penalties independent of B.
    """
    power = torch.abs if norm == "l1" else torch.square
    return _total(coef[:, l] * power(h).sum(2).mean(1) for l, h in enumerate(hidden))


def smoothed_cross_entropy(logits: Tensor, y: Tensor, eps: Tensor) -> Tensor:
    """Mean cross-entropy against ``(1 - eps) * one_hot(y) + eps / C``, per member ``(K,)``.

    ``logits`` ``(K, B, C)``, ``y`` ``(K, B)``, ``eps`` ``(K,)``: equals
    ``(1 - eps) * nll(y) + eps * mean_c(-log p_c)``, as ``torch``'s ``label_smoothing``.
    """
    logp = logits.log_softmax(-1)
    nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).mean(1)
    uniform = -logp.mean(-1).mean(1)
    return (1 - eps) * nll + eps * uniform


# --- step operators: proximal maps (exact zeros) and the max-norm projection ---


def soft_threshold(w: Tensor, threshold: Tensor) -> Tensor:
    """Proximal map of ``threshold * |w|``: ``sign(w) * max(|w| - threshold, 0)``."""
    return torch.sign(w) * (w.abs() - threshold).clamp_min(0)


def elastic_net_prox(w: Tensor, t: Tensor, rho: float) -> Tensor:
    """Proximal map of ``t * (rho * |w| + (1 - rho) * w^2)``:
    ``soft_threshold(w, t * rho) / (1 + 2 * t * (1 - rho))``."""
    return soft_threshold(w, t * rho) / (1 + 2 * t * (1 - rho))


def max_norm_projection(w: Tensor, c: Tensor) -> Tensor:
    """Each column ``w[:, :, j]`` (a unit's incoming weights) rescaled to norm <= ``c``
    (``(K,)``): ``w_j * min(1, c / ||w_j||)``; a column within the bound is unchanged."""
    norm = torch.linalg.vector_norm(w, dim=1, keepdim=True)
    return w * (c.view(-1, 1, 1) / norm.clamp_min(1e-30)).clamp(max=1.0)


def group_soft_threshold(g: Tensor, threshold: Tensor) -> Tensor:
    """Proximal map of ``threshold * ||g_j||_2`` per group (column) ``j`` of ``g``
    ``(K, group_size, units)``: ``g_j * max(0, 1 - threshold / ||g_j||)``."""
    norm = torch.linalg.vector_norm(g, dim=1, keepdim=True)
    return g * (1 - threshold / norm.clamp_min(1e-30)).clamp_min(0)


@dataclass
class Regularization:
    """Everything a stack of members needs to regularize itself.

    Built from the config's regularizers and each member's strength of the swept one;
    the other regularizers use their config value for every member.
    """

    n_layers: int
    coefs: dict[str, Tensor] = field(default_factory=dict)  # name -> (K, n_layers)
    cfg: dict[str, SimpleNamespace] = field(default_factory=dict)  # plain values: read every step
    dropout_p: Tensor | None = None  # (K,)
    noise_sigma: Tensor | None = None  # (K,)
    patience: Tensor | None = None  # (K,)
    min_delta: float = 0.0
    warmup_drop: float = 0.0
    max_norm: Tensor | None = None  # (K, n_hidden): each member's bound per hidden layer
    label_smoothing: Tensor | None = None  # (K,)

    @property
    def needs_hidden(self) -> bool:
        """Whether the training loss needs the hidden layers' outputs (activity)."""
        return "activity" in self.coefs

    @classmethod
    def build(cls, reg_cfg: DictConfig, sweep: str, strengths: Tensor, n_layers: int):
        """``strengths``: the swept regularizer's value for each member, shape ``(K,)``."""
        self = cls(n_layers=n_layers)
        n = len(strengths)
        for name, sub in reg_cfg.items():
            if sub is None:
                continue
            value = strengths if name == sweep else torch.full((n,), float(sub[STRENGTH_KEY[name]]))
            self.cfg[name] = SimpleNamespace(**OmegaConf.to_container(sub, resolve=True))
            if name == "dropout":
                self.dropout_p = value
            elif name == "noise":
                self.noise_sigma = value
            elif name == "early_stopping":
                self.patience, self.min_delta = value, float(sub.min_delta)
                self.warmup_drop = float(sub.warmup_drop)
            elif name == "label_smoothing":
                self.label_smoothing = value
            elif name in HIDDEN_ONLY:  # one coefficient per hidden layer
                scale = torch.ones(n_layers - 1) if sub.layer_scale is None else torch.tensor(
                    list(sub.layer_scale), dtype=torch.float32)
                per_layer = value[:, None] * scale[None, :]
                if name == "max_norm":
                    self.max_norm = per_layer
                else:
                    self.coefs[name] = per_layer
            else:
                scale = torch.ones(n_layers) if sub.layer_scale is None else torch.tensor(
                    list(sub.layer_scale), dtype=torch.float32)
                if not sub.output_layer:
                    scale[-1] = 0.0
                self.coefs[name] = value[:, None] * scale[None, :]
        return self

    # --- penalties (in the loss) ---

    @property
    def loss_penalties(self) -> list[str]:
        """The regularizers whose penalty is in the loss, in the order it adds them (a
        proximal one acts on the weights after the step instead)."""
        return [name for name in LOSS_PENALTIES
                if name in self.coefs and not getattr(self.cfg[name], "proximal", False)]

    @property
    def has_penalty(self) -> bool:
        """Whether any regularizer adds a penalty to the loss."""
        return bool(self.loss_penalties)

    def penalty(self, net: StackedMLP, hidden: list[Tensor] | None = None) -> Tensor:
        """The loss penalty of each member, ``(K,)`` (zero without a loss regularizer).

        ``hidden``: the hidden layers' outputs on the batch, for the activity penalty.
        """
        terms = []
        for name in self.loss_penalties:
            c, coef = self.cfg[name], self.coefs[name]
            if name == "activity":
                if hidden is not None:
                    terms.append(activity_penalty(hidden, coef, c.norm))
            elif name == "group_lasso":
                terms.append(group_lasso_penalty(self._groups(net), coef))
            elif name == "l1":
                terms.append(l1_penalty(_selected(net, c.kernel, c.bias), coef))
            elif name == "l2":
                terms.append(l2_penalty(_selected(net, c.kernel, c.bias), coef))
            else:
                terms.append(elastic_net_penalty(_selected(net, c.kernel, c.bias), coef, float(c.rho)))
        return _total(terms) if terms else torch.zeros(net.n_members)

    @property
    def gradient_by_hand(self) -> bool:
        """Whether the loss penalty is l1 or l2 alone, whose gradient :meth:`add_penalty_grad_`
        adds after the backward pass (autograd then differentiates the data loss only)."""
        return self.loss_penalties in (["l1"], ["l2"])

    @torch.no_grad()
    def add_penalty_grad_(self, net: StackedMLP, weight: Tensor) -> None:
        """Add ``weight[k] * d penalty_k / d w`` to the ``.grad`` of every penalized tensor.

        ``weight`` ``(K,)`` is what the backward pass sent the penalty (1, or 0 for a
        member whose loss is not finite). The operations, and so the bits, are autograd's
        own: l2's ``g * (2 * w)``, l1's ``g * sgn(w)`` with ``g = weight * coef[:, l]``, and
        the sum with the data loss's gradient (two terms, so in either order). Autograd's
        graph through the penalty cost four passes over every weight and most of the
        penalty's time in a step; this is two or three.
        """
        name = self.loss_penalties[0]
        for _, t, g in self._per_layer(name, net, weight):
            if not t.requires_grad:  # a fixed tensor (a bias before batch norm): no gradient
                continue
            grad = g * (2.0 * t) if name == "l2" else g * t.sgn()
            if t.grad is None:  # a parameter the data loss does not use
                t.grad = grad
            else:
                t.grad.add_(grad)

    def _groups(self, net: StackedMLP) -> list[Tensor]:
        c = self.cfg["group_lasso"]
        return [unit_groups(w, b if c.bias else None) for w, b in zip(net.kernels, net.biases)]

    # --- step operators (on the weights) ---

    def _per_layer(self, name: str, net: StackedMLP, factor: float | Tensor):
        """``(l, tensor, t)`` for each tensor ``name`` touches; ``t = factor * coef`` shaped
        to it (``factor``: the learning rate, or a weight per member)."""
        c, coef = self.cfg[name], self.coefs[name]
        for l, ts in enumerate(_selected(net, c.kernel, c.bias)):
            for t in ts:
                yield l, t, (factor * coef[:, l]).view(-1, *([1] * (t.dim() - 1)))

    @torch.no_grad()
    def decay_(self, net: StackedMLP, lr: float) -> None:
        """Decoupled weight decay, before the optimizer's update: ``w <- (1 - lr*lam) w``.

        Applied to the pre-step weights, exactly as ``torch.optim.AdamW`` does.
        """
        if "weight_decay" in self.coefs:
            for _, t, step in self._per_layer("weight_decay", net, lr):
                t.mul_(1 - step)

    @torch.no_grad()
    def proximal_(self, net: StackedMLP, lr: float) -> None:
        """Proximal steps of l1, elastic net and group lasso, after the update."""
        if "l1" in self.coefs and self.cfg["l1"].proximal:
            for _, t, step in self._per_layer("l1", net, lr):
                t.copy_(soft_threshold(t, step))
        if "elastic_net" in self.coefs and self.cfg["elastic_net"].proximal:
            rho = float(self.cfg["elastic_net"].rho)
            for _, t, step in self._per_layer("elastic_net", net, lr):
                t.copy_(elastic_net_prox(t, step, rho))
        if "group_lasso" in self.coefs and self.cfg["group_lasso"].proximal:
            c, coef = self.cfg["group_lasso"], self.coefs["group_lasso"]
            for l, (w, b) in enumerate(zip(net.kernels, net.biases)):
                g = unit_groups(w, b if c.bias else None)
                thr = (lr * coef[:, l] * math.sqrt(g.shape[1])).view(-1, 1, 1)
                g = group_soft_threshold(g, thr)
                w.copy_(g[:, : w.shape[1]])
                if c.bias:
                    b.copy_(g[:, -1])

    @torch.no_grad()
    def max_norm_(self, net: StackedMLP) -> None:
        """Max-norm: each hidden unit's incoming kernel weights back to norm <= c, last."""
        if self.max_norm is not None:
            for l, w in enumerate(net.kernels[:-1]):
                w.copy_(max_norm_projection(w, self.max_norm[:, l]))
