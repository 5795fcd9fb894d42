"""Elastic net: ``lam * (rho * sum |w| + (1 - rho) * sum w^2)``, ``rho`` in [0, 1], a penalty in the loss.

With ``proximal: true`` it is a step operator instead: after each optimizer step, with
``t = lr * coef``, ``w <- sign(w) * max(|w| - t*rho, 0) / (1 + 2*t*(1 - rho))``, the exact
minimizer of ``||v - w||^2 / 2 + t * (rho * |v| + (1 - rho) * v^2)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import Kind, Layers, PenaltyTarget, Phase, Regularizer, finite, per_layer, selected
from .l1 import l1_penalty, soft_threshold
from .l2 import l2_penalty

if TYPE_CHECKING:
    from torch import Tensor


@dataclass
class ElasticNetConfig(PenaltyTarget):
    rho: float = 0.5
    proximal: bool = False  # exact proximal step of the whole penalty after each step


def elastic_net_penalty(tensors: list[list[Tensor]], coef: Tensor, rho: float) -> Tensor:
    """``rho * l1 + (1 - rho) * l2`` with the same coefficients, ``(K,)``."""
    return rho * l1_penalty(tensors, coef) + (1.0 - rho) * l2_penalty(tensors, coef)


def elastic_net_prox(w: Tensor, t: Tensor, rho: float) -> Tensor:
    """Proximal map of ``t * (rho * |w| + (1 - rho) * w^2)``:
    ``soft_threshold(w, t * rho) / (1 + 2 * t * (1 - rho))``."""
    return soft_threshold(w, t * rho) / (1 + 2 * t * (1 - rho))


class ElasticNet(Regularizer):
    name = "elastic_net"
    config = ElasticNetConfig
    strength_key = "lam"
    kind = Kind.PENALTY
    default_phase = Phase.WEIGHT_PENALTY
    layers = Layers.ALL
    acts_on = "kernels (biases too with bias: true)"
    has_proximal_step = True

    def checks(self, cfg, n_layers):
        yield from super().checks(cfg, n_layers)
        yield finite(cfg.rho) and 0.0 <= cfg.rho <= 1.0, "rho", cfg.rho, "a number in [0, 1]"

    def penalty(self, reg, net, hidden):
        c = reg.cfg[self.name]
        return elastic_net_penalty(selected(net, c.kernel, c.bias), reg.coefs[self.name], float(c.rho))

    def step_(self, reg, net, lr):
        c = reg.cfg[self.name]
        rho = float(c.rho)
        for _, t, step in per_layer(c, reg.coefs[self.name], net, lr):
            t.copy_(elastic_net_prox(t, step, rho))
