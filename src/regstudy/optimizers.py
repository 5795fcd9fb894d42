"""The optimizer of a stack of members, each member's update independent of its stack.

torch's fused CPU optimizers (``fused: true`` in ``conf/optim``: Adam, AdamW, SGD with
momentum) update a tensor in vectors of 8 floats and its last ``numel % 8`` elements one
at a time, and that scalar tail rounds otherwise (Adam's tail computes in double). A
member's slice of a stacked parameter falls in one part or the other by how many members
share the tensor, so the same config and seed ended on other bits in a stack of 35 than
alone: the output layer's bias (one float per member in regression) was enough, and after
400 epochs on ``signal`` the strength-0 members of l2 ended up to 0.03 of test R^2 away
from the baseline's same seeds.

Here a parameter keeps the fused kernel only where every member's slice is a whole number
of vectors (:data:`VECTOR_FLOATS`, AVX-512's 16 and so AVX2's 8 too) and the job runs on one
thread (with more, the kernel splits a tensor between threads anywhere). The others go to a
second optimizer of the same kind and settings, ``foreach``: each of its operations is one
elementwise kernel whose vector and scalar paths round alike (``tests/unit/test_optimizers.py``).
"""

from __future__ import annotations

from functools import partial

import torch

from .kernels import VECTOR_FLOATS


def whole_vectors(p: torch.Tensor) -> bool:
    """Whether each member's slice of ``p`` (members on the first axis) is a whole number
    of :data:`VECTOR_FLOATS`, so that the fused kernel updates it as it would alone."""
    return p[0].numel() % VECTOR_FLOATS == 0


def parameter_groups(net: torch.nn.Module) -> list[dict]:
    """The network's kernels, then the rest (biases, normalization) without the optimizer's
    own weight decay: an AdamW's decay touches kernels only."""
    kernels = list(net.kernels)
    ids = {id(p) for p in kernels}
    return [{"params": kernels}, {"params": [p for p in net.parameters() if id(p) not in ids], "weight_decay": 0.0}]


def member_optimizers(factory: partial, groups: list[dict]) -> list[torch.optim.Optimizer]:
    """``factory`` (a partial of a torch optimizer, as ``conf/optim`` builds it) over the
    parameter ``groups``: one optimizer, or two when it is fused and some parameters'
    member slices are not whole vectors (those get ``fused=False, foreach=True``)."""
    if not factory.keywords.get("fused"):
        return [factory(groups)]
    one_thread = torch.get_num_threads() == 1
    fused, rest = [], []
    for group in groups:
        for out, keep in ((fused, True), (rest, False)):
            params = [p for p in group["params"] if (one_thread and whole_vectors(p)) == keep]
            if params:
                out.append({**group, "params": params})
    return ([factory(fused)] if fused else []) + ([factory(rest, fused=False, foreach=True)] if rest else [])
