"""Gaussian input noise: in training, ``x <- x + sigma * eps`` with ``eps ~ N(0, I)`` drawn
per example and epoch (data augmentation; for a linear model, like l2 with ``lam ~ sigma^2``).

Input noise, not a penalty: the training loop applies :func:`noisy_inputs` with
``Regularization.noise_sigma`` to each minibatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import Kind, Phase, Regularizer

if TYPE_CHECKING:
    from torch import Tensor


@dataclass
class NoiseConfig:
    sigma: float = 0.1


def noisy_inputs(x: Tensor, sigma: Tensor, eps: Tensor) -> Tensor:
    """``x + sigma[k] * eps`` for member ``k``: ``x``, ``eps`` ``(K, B, d)``, ``sigma`` ``(K,)``."""
    return x + sigma.view(-1, 1, 1) * eps


class Noise(Regularizer):
    name = "noise"
    config = NoiseConfig
    strength_key = "sigma"
    kind = Kind.INPUT_NOISE
    default_phase = Phase.INPUTS
    acts_on = "the training minibatch's inputs"

    def setup(self, reg, cfg, value, n_layers):
        reg.noise_sigma = value
