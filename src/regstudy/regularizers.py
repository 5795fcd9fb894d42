"""The regularizers of the study, written once, vectorized over the member axis.

``w`` ranges over the selected entries (kernels by default) of each layer; every
penalty is returned per member, shape ``(K,)``, in the units of the data loss. The
coefficient of layer ``l`` for member ``k`` is ``coef[k, l] = lam_k * layer_scale[l]``.

- l1:            ``lam * sum |w|``
- l2:            ``lam * sum w^2``              (Keras convention, no 1/2)
- elastic net:   ``lam * (rho * sum |w| + (1 - rho) * sum w^2)``
- group lasso:   ``lam * sum_g sqrt(|g|) * ||w_g||_2``, a group = one unit's incoming weights
- weight decay:  ``w <- w - lr * lam * w`` at each step (decoupled, not in the loss)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from .config import STRENGTH_KEY
from .stacked import StackedMLP


def _selected(net: StackedMLP, kernel: bool, bias: bool) -> list[list[Tensor]]:
    """Per layer, the tensors a penalty touches (each ``(K, ...)``)."""
    return [[t for t, on in ((w, kernel), (b, bias)) if on]
            for w, b in zip(net.kernels, net.biases)]


def _per_member(t: Tensor) -> Tensor:
    return t.flatten(1)


def l1_penalty(tensors: list[list[Tensor]], coef: Tensor) -> Tensor:
    """``sum_l coef[:, l] * sum |w_l|``."""
    return sum(coef[:, l] * sum(_per_member(t).abs().sum(1) for t in ts)
               for l, ts in enumerate(tensors) if ts)


def l2_penalty(tensors: list[list[Tensor]], coef: Tensor) -> Tensor:
    """``sum_l coef[:, l] * sum w_l^2``."""
    return sum(coef[:, l] * sum(_per_member(t).square().sum(1) for t in ts)
               for l, ts in enumerate(tensors) if ts)


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
    return sum(coef[:, l] * math.sqrt(g.shape[1]) * torch.linalg.vector_norm(g, dim=1).sum(1)
               for l, g in enumerate(groups))


def soft_threshold_(t: Tensor, threshold: Tensor) -> None:
    """Proximal step of l1: ``w <- sign(w) * max(|w| - threshold, 0)`` (exact zeros)."""
    t.copy_(torch.sign(t) * (t.abs() - threshold).clamp_min(0))


def group_soft_threshold_(g: Tensor, threshold: Tensor) -> Tensor:
    """Proximal step of group lasso: ``g_j <- g_j * max(0, 1 - threshold / ||g_j||)``."""
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
            else:
                scale = torch.ones(n_layers) if sub.layer_scale is None else torch.tensor(
                    list(sub.layer_scale), dtype=torch.float32)
                self.coefs[name] = value[:, None] * scale[None, :]
        return self

    def penalty(self, net: StackedMLP) -> Tensor:
        """The loss penalty of each member, ``(K,)`` (zero without a loss regularizer)."""
        total = torch.zeros(net.n_members)
        for name in ("l1", "l2", "elastic_net", "group_lasso"):
            if name not in self.coefs or getattr(self.cfg[name], "proximal", False):
                continue
            c, coef = self.cfg[name], self.coefs[name]
            if name == "group_lasso":
                total = total + group_lasso_penalty(self._groups(net), coef)
                continue
            ts = _selected(net, c.kernel, c.bias)
            if name == "l1":
                total = total + l1_penalty(ts, coef)
            elif name == "l2":
                total = total + l2_penalty(ts, coef)
            else:
                total = total + elastic_net_penalty(ts, coef, float(c.rho))
        return total

    def _groups(self, net: StackedMLP) -> list[Tensor]:
        c = self.cfg["group_lasso"]
        return [unit_groups(w, b if c.bias else None) for w, b in zip(net.kernels, net.biases)]

    @torch.no_grad()
    def decay_(self, net: StackedMLP, lr: float) -> None:
        """Decoupled weight decay, before the optimizer's update: ``w <- (1 - lr*lam) w``.

        Applied to the pre-step weights, exactly as ``torch.optim.AdamW`` does.
        """
        if "weight_decay" not in self.coefs:
            return
        c, coef = self.cfg["weight_decay"], self.coefs["weight_decay"]
        for l, ts in enumerate(_selected(net, c.kernel, c.bias)):
            for t in ts:
                t.mul_((1 - lr * coef[:, l]).view(-1, *([1] * (t.dim() - 1))))

    @torch.no_grad()
    def proximal_(self, net: StackedMLP, lr: float) -> None:
        """Proximal (soft-threshold) steps of l1 and group lasso, after the update."""
        if "l1" in self.coefs and self.cfg["l1"].proximal:
            c, coef = self.cfg["l1"], self.coefs["l1"]
            for l, ts in enumerate(_selected(net, c.kernel, c.bias)):
                for t in ts:
                    soft_threshold_(t, (lr * coef[:, l]).view(-1, *([1] * (t.dim() - 1))))
        if "group_lasso" in self.coefs and self.cfg["group_lasso"].proximal:
            c, coef = self.cfg["group_lasso"], self.coefs["group_lasso"]
            for l, (w, b) in enumerate(zip(net.kernels, net.biases)):
                g = unit_groups(w, b if c.bias else None)
                thr = (lr * coef[:, l] * math.sqrt(g.shape[1])).view(-1, 1, 1)
                g = group_soft_threshold_(g, thr)
                w.copy_(g[:, : w.shape[1]])
                if c.bias:
                    b.copy_(g[:, -1])
