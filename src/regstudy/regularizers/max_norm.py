"""Max-norm constraint (Srivastava et al. 2014): after each optimizer step, every hidden unit's
incoming kernel weights ``w_j <- w_j * min(1, c_l / ||w_j||)``, with ``c_l = c * layer_scale[l]``.

A step operator (a projection, no learning rate), applied last so that the bound holds
after every step. A smaller ``c`` is stronger; the output layer is not constrained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from .base import Kind, Layers, Phase, Regularizer, finite

if TYPE_CHECKING:
    from torch import Tensor


@dataclass
class MaxNormConfig:
    """``layer_scale`` has one entry per hidden layer."""

    c: float = 3.0
    layer_scale: Optional[list[float]] = None


def max_norm_projection(w: Tensor, c: Tensor) -> Tensor:
    """Each column ``w[:, :, j]`` (a unit's incoming weights) rescaled to norm <= ``c``
    (``(K,)``): ``w_j * min(1, c / ||w_j||)``; a column within the bound is unchanged."""
    import torch

    norm = torch.linalg.vector_norm(w, dim=1, keepdim=True)
    return w * (c.view(-1, 1, 1) / norm.clamp_min(1e-30)).clamp(max=1.0)


class MaxNorm(Regularizer):
    name = "max_norm"
    config = MaxNormConfig
    strength_key = "c"
    kind = Kind.STEP_OPERATOR
    default_phase = Phase.PROJECTION
    layers = Layers.HIDDEN
    acts_on = "each hidden unit's incoming kernel column"
    strength_allowed = "a finite number > 0 (the largest unit norm)"

    def strength_ok(self, value):
        return finite(value) and value > 0

    def step_(self, reg, net, lr):
        bound = reg.coefs[self.name]  # (K, n_hidden): each member's c per hidden layer
        for l, w in enumerate(net.kernels[:-1]):
            w.copy_(max_norm_projection(w, bound[:, l]))
