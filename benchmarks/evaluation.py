"""The per-epoch evaluation: torch's own passes against the study's fused ones.

A train job evaluates every member on its training and validation rows after each epoch
(``MemberStackModule.evaluate``). Three of its passes over memory are regstudy's own
kernels, each giving torch's bits: the hidden layers' leaky ReLU applied by the product's
kernel, the alive units' max and min over the rows (``reductions.column_extrema``), and
the weight statistics' counts (``metrics.zero_counts``, ``reductions.kernel_counts``). Here the same module
evaluates both ways, alternated in one process: with those three, and with torch's own
calls in their place (``F.leaky_relu`` after the product, ``amax``/``amin``, a clone, a
comparison and a sum per count), as the study computed them before.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from pathlib import Path

import torch

from benchmarks.stacks import dataset_file, study_params


def torch_alive_units(hidden: list[torch.Tensor], threshold: float, ops=None) -> torch.Tensor:
    """``metrics.alive_units`` with torch's ``amax`` and ``amin`` (whatever ``ops`` the module asks for)."""
    from regstudy.metrics import alive_count

    return torch.stack([alive_count(h.amax(1) - h.amin(1), threshold) for h in hidden], 1)


def torch_zero_counts(net, zero_threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``metrics.zero_counts`` made by torch: a clone, an in-place comparison and a sum
    per count (the near-zero one of each kernel over its rms), and ``amax`` for the
    all-zero columns."""
    from regstudy.compute import per_rms

    with torch.no_grad():
        mags = [w.abs() for w in net.kernels]
        small = torch.stack([per_rms(w).abs_().lt_(zero_threshold).flatten(1).sum(1) for w in net.kernels], 1).float()
        exact = torch.stack([a.clone().eq_(0).flatten(1).sum(1) for a in mags], 1).float()
        removed = sum((a.amax(1) == 0).sum(1) for a in mags[:-1])
    return small, exact, removed


@contextlib.contextmanager
def torch_passes(module):
    """Evaluate ``module`` with torch's own calls in place of the study's three kernels."""
    from regstudy import metrics
    from regstudy import module as module_code

    saved = module_code.alive_units, metrics.zero_counts, module.net.fused_slope
    module_code.alive_units, metrics.zero_counts = torch_alive_units, torch_zero_counts
    module.net.fused_slope = None
    try:
        yield
    finally:
        module_code.alive_units, metrics.zero_counts, module.net.fused_slope = saved


def study_module(folder: Path, dataset: str, family: str = "l2"):
    """The module of ``family``'s job on ``dataset`` as the study builds it (its grid,
    seeds and data), untrained."""
    from regstudy import job
    from regstudy.stages.train import compose_job, study_overrides

    params = study_params()
    cfg = compose_job([*study_overrides(params["study"], dataset, family, folder),
                       f"data.path={dataset_file(folder, dataset, params)}", "logger.enabled=false"])
    spec = job.prepare_job(cfg)
    return spec.cfg, job.build_module(spec.cfg, job.load_tensors(spec.arrays, spec.seeds), spec.member_list())


def compare(folder: Path, dataset: str, family: str = "l2", alternations: int = 20, calls: int = 5) -> dict:
    """Median ms of one evaluation each way (``torch``, ``study``), alternated, whether
    both gave the same numbers (``same``), and the dataset's ``epochs`` in the study."""
    torch.set_num_threads(1)
    cfg, module = study_module(folder, dataset, family)
    rows = {}
    for way in ("study", "torch"):
        with torch_passes(module) if way == "torch" else contextlib.nullcontext():
            rows[way] = module.evaluate()
    same = all(torch.equal(rows["study"][k].nan_to_num(7.0), rows["torch"][k].nan_to_num(7.0)) and
               torch.equal(rows["study"][k].isnan(), rows["torch"][k].isnan()) for k in rows["torch"])
    times = {"study": [], "torch": []}
    for i in range(alternations):
        for way in ("study", "torch") if i % 2 else ("torch", "study"):
            with torch_passes(module) if way == "torch" else contextlib.nullcontext():
                start = time.perf_counter()
                for _ in range(calls):
                    module.evaluate()
                times[way].append((time.perf_counter() - start) / calls)
    return {"torch": 1e3 * statistics.median(times["torch"]), "study": 1e3 * statistics.median(times["study"]),
            "same": same, "epochs": int(cfg.trainer.max_epochs), "k": module.net.n_members}
