"""Per-member random streams, and minibatches drawn from them.

Each member owns one generator per purpose, seeded from its seed alone, so its
initialization, batch order, dropout masks and input noise are the same whether it
trains alone or inside a stack of any size. Nothing here touches torch's global RNG,
so nothing leaks between jobs that share a worker process.
"""

from __future__ import annotations

import math
from enum import IntEnum

import numpy as np
import torch
from torch import Tensor


class Stream(IntEnum):
    INIT = 0  # parameter initialization
    TRAIN = 1  # batch order
    MC = 2  # Monte Carlo dropout at evaluation
    SAMPLE = 3  # which parameters the results table samples
    # Training's own draws, apart from the batch order: a member at p = 0 or sigma = 0 sees
    # the batches of its seed's unregularized member, and ends where that one ends.
    DROPOUT = 4  # dropout masks
    NOISE = 5  # input noise


def member_generator(seed: int, stream: Stream) -> torch.Generator:
    """A torch generator for (seed, stream), independent across streams."""
    state = np.random.SeedSequence([int(seed), int(stream)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state % (2**63 - 1)))


class MemberBatches:
    """One epoch of minibatches for K members, each in its own random order of its own data.

    ``x`` is ``(K, n, d)`` and ``y`` ``(K, n)``: member ``k`` trains on ``x[k]`` (its
    seed's draw of the data; every draw has the same size), with the random draws of
    ``seeds[k]``.

    Yields dicts with ``x`` ``(K, B, d)``, ``y`` ``(K, B)``, and when asked for,
    ``u`` ``(K, B, n_dropout_units)`` uniforms for dropout masks and ``eps``
    ``(K, B, d)`` standard normals for input noise. Each epoch a member draws a
    permutation from its :attr:`Stream.TRAIN` generator, the uniforms from its
    :attr:`Stream.DROPOUT` one and the normals from its :attr:`Stream.NOISE` one, so its
    batch order does not depend on which of them the job asks for. The last batch may be
    smaller. The generators start with the object and go on from epoch to epoch.
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, seeds: list[int],
                 n_dropout_units: int = 0, noise: bool = False):
        self.x, self.y, self.batch_size = x, y, batch_size
        self.n_dropout_units, self.noise = n_dropout_units, noise
        self.order = [member_generator(s, Stream.TRAIN) for s in seeds]
        self.dropout = [member_generator(s, Stream.DROPOUT) for s in seeds] if n_dropout_units else []
        self.input_noise = [member_generator(s, Stream.NOISE) for s in seeds] if noise else []

    def __len__(self) -> int:
        return math.ceil(self.x.shape[1] / self.batch_size)

    def _draw_epoch(self) -> tuple[Tensor, Tensor | None, Tensor | None]:
        n, d = self.x.shape[1:]
        order = torch.stack([torch.randperm(n, generator=g) for g in self.order])
        u = torch.stack([torch.rand(n, self.n_dropout_units, generator=g) for g in self.dropout]) \
            if self.dropout else None
        eps = torch.stack([torch.randn(n, d, generator=g) for g in self.input_noise]) if self.input_noise else None
        return order, u, eps

    def __iter__(self):
        order, u, eps = self._draw_epoch()
        k, n, d = self.x.shape
        # Member k's rows are at k * n + its order: one index_select of the flattened
        # draws (4x faster than x[members, idx], the same values).
        rows = order + torch.arange(k)[:, None] * n
        x, y = self.x.reshape(k * n, d), self.y.reshape(k * n)
        for start in range(0, n, self.batch_size):
            sl = slice(start, start + self.batch_size)
            idx = rows[:, sl].reshape(-1)
            batch = {"x": x.index_select(0, idx).view(k, -1, d), "y": y.index_select(0, idx).view(k, -1)}
            if u is not None:
                batch["u"] = u[:, sl]
            if eps is not None:
                batch["eps"] = eps[:, sl]
            yield batch


class WholeEpochs:
    """One item per epoch: the list of that epoch's minibatches from ``batches``.

    Lightning's per-step machinery (hooks, batch transfer, loop bookkeeping) costs about
    a millisecond a step, as much as a small stack's step itself; handing it a whole
    epoch per step pays it once an epoch. The minibatches, their order and their random
    draws are those of ``batches``.
    """

    def __init__(self, batches: MemberBatches):
        self.batches = batches

    def __len__(self) -> int:
        return 1

    def __iter__(self):
        yield list(self.batches)
