"""Lasso: ``lam * sum_l layer_scale[l] * sum |w_l|``, a penalty in the loss.

With ``proximal: true`` it is a step operator instead: after each optimizer step,
``w <- sign(w) * max(|w| - t, 0)`` with ``t = lr * coef`` (soft-thresholding, the exact
minimizer of ``||v - w||^2 / 2 + t * sum |v|``), which gives exact zeros where the
subgradient under Adam only makes weights jitter around zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import Kind, Layers, PenaltyTarget, Phase, Regularizer, per_layer, selected, sum_per_member, total

if TYPE_CHECKING:
    from torch import Tensor


@dataclass
class L1Config(PenaltyTarget):
    proximal: bool = False  # soft-threshold after each step instead of the subgradient


def l1_penalty(tensors: list[list[Tensor]], coef: Tensor) -> Tensor:
    """``sum_l coef[:, l] * sum |w_l|``, ``(K,)``."""
    return total(coef[:, l] * sum_per_member(ts, lambda t: t.abs()) for l, ts in enumerate(tensors) if ts)


def soft_threshold(w: Tensor, threshold: Tensor) -> Tensor:
    """Proximal map of ``threshold * |w|``: ``sign(w) * max(|w| - threshold, 0)``."""
    return w.sign() * (w.abs() - threshold).clamp_min(0)


class L1(Regularizer):
    name = "l1"
    config = L1Config
    strength_key = "lam"
    kind = Kind.PENALTY
    default_phase = Phase.WEIGHT_PENALTY
    layers = Layers.ALL
    acts_on = "kernels (biases too with bias: true)"
    has_proximal_step = True

    def penalty(self, reg, net, hidden):
        c = reg.cfg[self.name]
        return l1_penalty(selected(net, c.kernel, c.bias), reg.coefs[self.name])

    def hand_gradient(self, t, g):
        return g * t.sgn()

    def step_(self, reg, net, lr):
        for _, t, step in per_layer(reg.cfg[self.name], reg.coefs[self.name], net, lr):
            t.copy_(soft_threshold(t, step))
