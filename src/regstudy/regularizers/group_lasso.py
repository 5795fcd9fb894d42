"""Group lasso on units: ``lam * sum_l layer_scale[l] * sum_j sqrt(|g|) * ||g_j||_2``, a penalty in the loss.

A group ``g_j`` is unit ``j``'s incoming kernel weights (one column of a layer's kernel),
plus its bias with ``bias: true``; ``|g|`` is the group's size. With ``proximal: true`` it
is a step operator instead: after each step, with ``t = lr * coef * sqrt(|g|)``,
``g_j <- g_j * max(0, 1 - t / ||g_j||)`` (block soft-thresholding: whole units become zero).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import Kind, Layers, PenaltyTarget, Phase, Regularizer, total

if TYPE_CHECKING:
    from torch import Tensor


@dataclass
class GroupLassoConfig(PenaltyTarget):
    proximal: bool = False  # group soft-threshold after each step (exact zeros)


def unit_groups(w: Tensor, b: Tensor | None) -> Tensor:
    """The weight groups of a layer's units: ``(K, group_size, units)``.

    Column ``j`` holds unit ``j``'s incoming kernel weights (plus its bias if given).
    """
    import torch

    return w if b is None else torch.cat([w, b.unsqueeze(1)], dim=1)


def group_lasso_penalty(groups: list[Tensor], coef: Tensor) -> Tensor:
    """``sum_l coef[:, l] * sum_j sqrt(|g|) * ||g_j||_2`` over each layer's unit groups, ``(K,)``."""
    import torch

    return total(coef[:, l] * math.sqrt(g.shape[1]) * torch.linalg.vector_norm(g, dim=1).sum(1)
                 for l, g in enumerate(groups))


def group_soft_threshold(g: Tensor, threshold: Tensor) -> Tensor:
    """Proximal map of ``threshold * ||g_j||_2`` per group (column) ``j`` of ``g``
    ``(K, group_size, units)``: ``g_j * max(0, 1 - threshold / ||g_j||)``."""
    import torch

    norm = torch.linalg.vector_norm(g, dim=1, keepdim=True)
    return g * (1 - threshold / norm.clamp_min(1e-30)).clamp_min(0)


class GroupLasso(Regularizer):
    name = "group_lasso"
    config = GroupLassoConfig
    strength_key = "lam"
    kind = Kind.PENALTY
    default_phase = Phase.WEIGHT_PENALTY
    layers = Layers.ALL
    acts_on = "each unit's incoming kernel column (its bias too with bias: true)"
    has_proximal_step = True

    def checks(self, cfg, n_layers):
        yield from super().checks(cfg, n_layers)
        yield (cfg.kernel, "kernel", cfg.kernel,
               "true (a group is a unit's incoming kernel weights; bias=true adds its bias)")

    def _groups(self, reg, net) -> list[Tensor]:
        bias = reg.cfg[self.name].bias
        return [unit_groups(w, b if bias else None) for w, b in zip(net.kernels, net.biases)]

    def penalty(self, reg, net, hidden):
        return group_lasso_penalty(self._groups(reg, net), reg.coefs[self.name])

    def step_(self, reg, net, lr):
        bias, coef = reg.cfg[self.name].bias, reg.coefs[self.name]
        for l, (w, b) in enumerate(zip(net.kernels, net.biases)):
            g = unit_groups(w, b if bias else None)
            thr = (lr * coef[:, l] * math.sqrt(g.shape[1])).view(-1, 1, 1)
            g = group_soft_threshold(g, thr)
            w.copy_(g[:, : w.shape[1]])
            if bias:
                b.copy_(g[:, -1])
