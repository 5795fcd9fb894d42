"""The torch compute path on a GPU: does it train what the CPU trains, and how fast.

Run from the repository root on a machine with a CUDA (or MPS) device::

    PYTHONPATH=src python -m benchmarks.gpu            # about 1 minute on one GPU
    PYTHONPATH=src python -m benchmarks.gpu --cpu-only --quick   # a dry run on the CPU

It needs torch and the standard library only: it imports nothing of regstudy but the
stacked network and its compute paths (:mod:`regstudy.stacked`, :mod:`regstudy.compute`,
:mod:`regstudy.kernels`), so the package need not be installed, nor its C kernels built,
nor numpy, Hydra, Lightning, MLflow or DVC be there. With ``OUT`` in the environment it
writes its results to ``$OUT/gpu.json``; it always prints them.

1. Correctness: K = 8 reference networks (1 -> 64 -> 64 -> 64 -> 1, leaky ReLU 0.01,
   U(-0.1, 0.1) from each member's own generator, on the CPU), trained ``CHECK_STEPS``
   steps of Adam (lr 1e-3, batch 32, MSE on ``sin(3x)`` + noise drawn on the CPU) on the
   CPU and on the device from the same parameters and the same batches, both on the
   torch path (:class:`regstudy.compute.TorchOps`). TF32 is off on the device, so both
   sides compute in float32 and differ only in rounding (the order of the sums).
   Reported: the largest relative loss difference over steps and members,
   ``max |l_dev - l_cpu| / |l_cpu|``, against ``LOSS_RTOL``, and the largest absolute
   difference of any final parameter, against ``PARAM_ATOL``. The evaluation's
   reductions (``column_extrema``, ``kernel_counts``) round nothing: the device's must
   equal the CPU's exactly.
2. Throughput, in model-steps/s (``K × optimizer steps / s``: forward, backward and Adam's
   step; 16 batches resident on the device, cycled through; warm-up steps untimed; each timing at least
   ``MIN_SECONDS``, the device synchronized before the clock is read): the device at
   K = 128, 1,024 and 4,096; this host's CPU at K = 128 on one thread, on the torch path
   (in a process of its own on this CPU's own kernels, as a user runs it) and on the
   exact path where regstudy's C kernels are built (in a pinned process,
   :mod:`regstudy.kernels`). The target: the device at K = 4,096 at least
   ``TARGET`` times the faster of the CPU's rates.

Exit status 1 where the correctness check fails.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks import user_env
from regstudy.compute import ExactOps, TorchOps, gpu_device
from regstudy.kernels import KERNEL_ENV, exact_unavailable
from regstudy.stacked import StackedMLP

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = [64, 64, 64]  # the reference network (benchmarks/throughput.py)
SLOPE, SCALE, LR, BATCH = 0.01, 0.1, 1e-3, 32
CHECK_K, CHECK_STEPS = 8, 50
# float32 sums in another order differ by about 1e-7 relative; 50 steps of Adam carried that
# to 2.7e-7 in the losses and 1.3e-6 in the parameters (measured: the CPU's two paths,
# torch's products against regstudy's, three draws). A wrong gradient moves a parameter
# by Adam's step, about lr = 1e-3, each step: the parameters' tolerance is a tenth of one.
LOSS_RTOL, PARAM_ATOL = 1e-3, 1e-4
DEVICE_KS, CPU_K = (128, 1024, 4096), 128
QUICK_DEVICE_KS, QUICK_CPU_K = (8, 32), 8
MIN_SECONDS, QUICK_MIN_SECONDS = 2.0, 0.2
WARMUP_STEPS, POOL = 5, 16  # untimed steps; distinct batches cycled through while timing
TARGET = 20.0


def synchronize(device: str) -> None:
    """Wait for the device's queued work (the clock must not stop before it ends)."""
    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def reference_stack(k: int, ops) -> StackedMLP:
    """K reference networks on the CPU, member ``m`` drawn from a generator seeded ``m``."""
    net = StackedMLP(k, 1, HIDDEN, 1, "leaky_relu", SLOPE, ops=ops)
    net.reset_parameters([torch.Generator().manual_seed(m) for m in range(k)], "uniform", SCALE, "same")
    return net


def sin_batches(k: int, steps: int, n: int = 200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` minibatches of each member, drawn on the CPU: x ``(steps, K, BATCH, 1)``
    uniform in [-1, 1), y ``(steps, K, BATCH)`` = ``sin(3x) + 0.1·N(0, 1)``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g) * 2 - 1
    y = torch.sin(3 * x[:, 0]) + 0.1 * torch.randn(n, generator=g)
    idx = torch.randint(0, n, (steps, k, BATCH), generator=g)
    return x[idx], y[idx]


def train_step(net: StackedMLP, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One step of all members; their losses ``(K,)`` (mean squared error over the batch).
    The loss summed over members gives each member its own gradient."""
    loss = (net(x).squeeze(-1) - y).square().mean(1)
    opt.zero_grad()
    loss.sum().backward()
    opt.step()
    return loss.detach()


def train(net: StackedMLP, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Per-member losses ``(steps, K)`` of Adam over the batches, on the net's device."""
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    return torch.stack([train_step(net, opt, x, y) for x, y in zip(xs, ys)])


def reductions_agree(device: str) -> dict:
    """Whether the device's ``column_extrema`` and ``kernel_counts`` equal the CPU's (torch
    path; and the exact path's, where built) on activations and kernels with exact zeros."""
    g = torch.Generator().manual_seed(1)
    h = torch.randn(CHECK_K, 300, 64, generator=g)
    w = torch.rand(CHECK_K, 64, 64, generator=g) * 2e-3 - 1e-3
    w[w.abs() < 2e-4] = 0  # entries equal to 0
    w[:, :, 5] = 0  # a column all 0 in every member
    small = 5e-4
    cpu = [*TorchOps.column_extrema(h), TorchOps.kernel_counts(w, small)]
    dev = [t.cpu() for t in (*TorchOps.column_extrema(h.to(device)), TorchOps.kernel_counts(w.to(device), small))]
    out = {"extrema_equal": all(torch.equal(a, b) for a, b in zip(cpu[:2], dev[:2])),
           "counts_equal": torch.equal(cpu[2], dev[2]), "exact_equal": None}
    if exact_unavailable() is None:
        exact = [*ExactOps.column_extrema(h), ExactOps.kernel_counts(w, small)]
        out["exact_equal"] = all(torch.equal(a, b) for a, b in zip(exact, dev))
    return out


def correctness(device: str) -> dict:
    """The CPU and the device train the same members (see the module's docstring, 1.)."""
    cpu_net = reference_stack(CHECK_K, TorchOps)
    dev_net = copy.deepcopy(cpu_net).to(device)
    xs, ys = sin_batches(CHECK_K, CHECK_STEPS)
    cpu_losses = train(cpu_net, xs, ys)
    dev_losses = train(dev_net, xs.to(device), ys.to(device)).cpu()
    loss_rel = float(((dev_losses - cpu_losses).abs() / cpu_losses.abs()).max())
    param_abs = max(float((a.detach().cpu() - b.detach()).abs().max())
                    for a, b in zip(dev_net.parameters(), cpu_net.parameters()))
    out = {"k": CHECK_K, "steps": CHECK_STEPS, "trains": float(cpu_losses[-1].mean()) < float(cpu_losses[0].mean()),
           "loss_rel_diff": loss_rel, "loss_rtol": LOSS_RTOL, "param_abs_diff": param_abs,
           "param_atol": PARAM_ATOL, **reductions_agree(device)}
    out["pass"] = bool(out["trains"] and loss_rel <= LOSS_RTOL and param_abs <= PARAM_ATOL and out["extrema_equal"]
                       and out["counts_equal"] and out["exact_equal"] is not False)
    return out


def model_steps_per_second(k: int, ops, device: str, min_seconds: float) -> float:
    """Model-steps/s of K members training on ``device`` (see the module's docstring, 2.)."""
    net = reference_stack(k, ops).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    xs, ys = (t.to(device) for t in sin_batches(k, POOL))
    for i in range(WARMUP_STEPS):
        train_step(net, opt, xs[i % POOL], ys[i % POOL])
    synchronize(device)
    steps, start = 0, time.perf_counter()
    while True:
        for i in range(POOL):  # a chunk between clock reads: the device runs ahead of Python
            train_step(net, opt, xs[i], ys[i])
        steps += POOL
        synchronize(device)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return k * steps / elapsed


def cpu_rate(path: str, k: int, min_seconds: float) -> float:
    """:func:`model_steps_per_second` on this CPU, one thread, in a process of its own:
    the torch path on this CPU's own kernels (``REGSTUDY_KERNELS=native``, no pin in the
    environment), the exact path pinned (benchmarks/__init__.py), as each runs in a job."""
    if path == "torch":
        env = {key: v for key, v in user_env(REGSTUDY_KERNELS="native").items() if key not in KERNEL_ENV}
    else:
        env = {key: v for key, v in user_env().items() if key != "REGSTUDY_KERNELS"}
    cmd = [sys.executable, "-m", "benchmarks.gpu", "--worker", path, "--k", str(k), "--min-seconds", str(min_seconds)]
    out = subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["rate"]


def worker(path: str, k: int, min_seconds: float) -> None:
    """The child of :func:`cpu_rate`: one thread, prints ``{"rate": ...}``."""
    torch.set_num_threads(1)
    rate = model_steps_per_second(k, {"torch": TorchOps, "exact": ExactOps}[path], "cpu", min_seconds)
    print(json.dumps({"rate": rate, "aten": torch.backends.cpu.get_cpu_capability()}))


def describe_device(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    if device == "mps":
        return "Apple MPS"
    threads = torch.get_num_threads()
    return f"this CPU, {threads} thread{'s' * (threads > 1)} ({platform.processor() or platform.machine()}; dry run)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-only", action="store_true", help="the CPU as the device: a dry run of the whole script")
    parser.add_argument("--quick", action="store_true", help=f"K = {QUICK_DEVICE_KS} on the device and "
                        f"{QUICK_CPU_K} on the CPU, timings of {QUICK_MIN_SECONDS} s")
    parser.add_argument("--worker", choices=("torch", "exact"), help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, default=CPU_K, help=argparse.SUPPRESS)
    parser.add_argument("--min-seconds", type=float, default=MIN_SECONDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.k, args.min_seconds)
        return 0
    device = "cpu" if args.cpu_only else gpu_device()
    if device is None:
        print(f"benchmarks.gpu: no CUDA or MPS device here (torch {torch.__version__}, CUDA build "
              f"{torch.version.cuda or 'none'}): nothing to measure; --cpu-only runs it on the CPU")
        return 0
    if args.cpu_only:
        torch.set_num_threads(1)  # a dry run: the workers' one thread, and the other cores left alone
    # TF32 rounds the products' inputs to 10 bits of mantissa: off, the device computes in float32.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device_ks, cpu_k = (QUICK_DEVICE_KS, QUICK_CPU_K) if args.quick else (DEVICE_KS, CPU_K)
    min_seconds = QUICK_MIN_SECONDS if args.quick else MIN_SECONDS
    start = time.perf_counter()
    result: dict = {"device": device, "device_name": describe_device(device), "torch": torch.__version__,
                    "python": platform.python_version(), "tf32": False, "quick": args.quick}
    print(f"device: {result['device_name']}; torch {torch.__version__}; TF32 off "
          "(torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False)", flush=True)

    c = result["correctness"] = correctness(device)
    verdict = lambda ok: "PASS" if ok else "FAIL"  # noqa: E731
    print(f"\ncorrectness, K={c['k']}, {c['steps']} steps of Adam, the same initial parameters and batches:")
    print(f"  {verdict(c['loss_rel_diff'] <= LOSS_RTOL)} loss: largest relative difference {device} vs cpu "
          f"{c['loss_rel_diff']:.2e} (tolerance {LOSS_RTOL:.0e})")
    print(f"  {verdict(c['param_abs_diff'] <= PARAM_ATOL)} parameters: largest absolute difference after "
          f"{c['steps']} steps {c['param_abs_diff']:.2e} (tolerance {PARAM_ATOL:.0e})")
    print(f"  {verdict(c['extrema_equal'] and c['counts_equal'])} column_extrema and kernel_counts: "
          f"{device} equals cpu exactly" + ("" if c["exact_equal"] is None else
                                            f" (and the exact path's: {c['exact_equal']})"))
    print(f"  {verdict(c['trains'])} the members train (mean loss falls)")
    print(f"  {verdict(c['pass'])} correctness", flush=True)

    rates = {str(k): model_steps_per_second(k, TorchOps, device, min_seconds) for k in device_ks}
    cpu = {"k": cpu_k, "threads": 1, "torch": cpu_rate("torch", cpu_k, min_seconds),
           "exact": None if exact_unavailable() else cpu_rate("exact", cpu_k, min_seconds)}
    result["throughput"] = {"unit": "model-steps/s", "min_seconds": min_seconds, "device": rates, "cpu": cpu}
    top = max(device_ks)
    best_cpu = max(r for r in (cpu["torch"], cpu["exact"]) if r is not None)
    result["ratio"] = {"device_k": top, "cpu_k": cpu_k, "over_cpu_torch": rates[str(top)] / cpu["torch"],
                       "over_cpu_exact": None if cpu["exact"] is None else rates[str(top)] / cpu["exact"],
                       "over_best_cpu": rates[str(top)] / best_cpu, "target": TARGET,
                       "meets_target": rates[str(top)] / best_cpu >= TARGET}
    print("\n| where | K | model-steps/s |\n|---|---|---|")
    for k, rate in rates.items():
        print(f"| {device}, torch path | {k} | {rate:,.0f} |")
    print(f"| cpu, 1 thread, torch path (own kernels) | {cpu_k} | {cpu['torch']:,.0f} |")
    print(f"| cpu, 1 thread, exact path (pinned) | {cpu_k} | " +
          ("not built here |" if cpu["exact"] is None else f"{cpu['exact']:,.0f} |"))
    r = result["ratio"]
    print(f"\n{device} K={top} ÷ cpu 1 thread K={cpu_k}: {r['over_cpu_torch']:.1f}× the torch path"
          + ("" if r["over_cpu_exact"] is None else f", {r['over_cpu_exact']:.1f}× the exact path")
          + f"; target ≥ {TARGET:.0f}× the faster: {'met' if r['meets_target'] else 'NOT met'}")
    result["seconds"] = round(time.perf_counter() - start, 1)
    text = json.dumps(result, indent=2)
    if os.environ.get("OUT"):
        path = Path(os.environ["OUT"]) / "gpu.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        print(f"\nwrote {path}")
    print(text)
    return 0 if c["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
