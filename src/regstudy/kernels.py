"""Which kernels compute a job: the ``compute`` setting, and the pin of torch's own kernels.

``compute=exact`` computes the stacked layers' products with regstudy's C kernels
(:mod:`regstudy.products`: x86 with AVX2 and FMA, built at install where a C compiler is
found) and pins torch's own kernels as below, for the same bytes on one machine;
``compute=torch`` computes everything with torch's own operations, unpinned: any CPU,
CUDA, Apple's MPS (:mod:`regstudy.compute`). ``compute=auto`` takes ``exact`` on a CPU
where it is built, ``torch`` everywhere else (:func:`resolve_compute`).

The pin (exact path only; :func:`pin_for`, called by the entry points before torch is
imported, never at import) asks for one kernel path on every x86 CPU, so that machines
differ in fewer of a study's last bits.

It does not make them the same bits everywhere: the committed study, re-made on an
AVX-512 Intel Xeon, still came out other bytes. What the study promises across machines
is its verdicts, except those the report marks borderline or fragile (README, *What is
reproducible*).

The stacked layers' matrix products, most of a train job's arithmetic, are regstudy's
own (:mod:`regstudy.products`): each output element is one chain of fused multiply-adds
in a fixed order, the same bits on any CPU by construction. The rest is torch's.

PyTorch chooses its elementwise and reduction kernels (ATen's) by the CPU it finds, and
MKL its matrix products: AVX-512 code on a CPU that has it, AVX2 code on one that has
not, and on a non-Intel CPU whatever MKL's automatic dispatch picks. These round
differently in the last bits, and training amplifies the difference. Measured: the study
committed from an AVX2 AMD EPYC, re-run on an AVX-512 Intel Xeon, gave other bits in
every train output and four other verdicts in the report; pinned to MKL's AVX2 branch on
the Xeon, it still gave other bits on the EPYC, because MKL honours its AVX2 branch on
Intel CPUs only and ran its automatic one there. So every process that imports regstudy
asks, before torch is imported (on x86 only), for

- ``ATEN_CPU_CAPABILITY=avx2``: ATen's AVX2 kernels (FMA, no approximate reciprocals),
  which every x86-64 CPU since 2013-2015 runs; the level never goes above what the CPU has;
- ``MKL_CBWR=COMPATIBLE``: MKL's conditional numerical reproducibility on the one branch
  it offers on Intel and non-Intel CPUs alike (SSE2 without the approximate
  ``rcpps``/``rsqrtps``). A train job no longer calls MKL (``MKL_VERBOSE=1`` prints
  nothing): the pin keeps whatever else computes with it in the process (torch's own
  ``bmm`` and ``nn.Linear``, as the benchmarks' peers and the exported models use) on
  its reproducible branch.

A value already in the environment is kept; ``REGSTUDY_KERNELS=native`` sets neither
(each CPU its own, fastest path: numbers then match only a machine of the same kind).
run.json and every MLflow run (tag ``kernels``) record the branch MKL says it runs,
read from MKL itself rather than from the request.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

from .errors import ConfigError

COMPUTE_PATHS = ("auto", "torch", "exact")  # the ``compute`` setting
ACCELERATORS = ("auto", "cpu", "gpu")  # ``trainer.accelerator``: the device (regstudy.compute)
KERNEL_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"}

# Floats in ATen's widest vector (AVX-512; AVX2's 8 divide it). ATen's kernels that run
# along the member axis (the fused optimizers, batch norm's channels) compute whole
# vectors and a scalar tail in other arithmetic: a member whose slice is whole vectors is
# computed the same in any stack (regstudy.optimizers, StackedMLP's batch norm).
VECTOR_FLOATS = 16

# mkl.h's MKL_CBWR_* values: what mkl_cbwr_get(MKL_CBWR_ALL) returns is a branch, plus
# MKL_CBWR_STRICT where strict mode is on.
MKL_BRANCHES = {0: "OFF", 1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3",
                7: "SSE4_1", 8: "SSE4_2", 9: "AVX", 10: "AVX2", 11: "AVX512_MIC", 12: "AVX512",
                13: "AVX512_MIC_E1", 14: "AVX512_E1"}
MKL_CBWR_STRICT = 0x10000
MKL_CBWR_ALL = -1


def cpu() -> dict:
    """This machine's CPU as /proc/cpuinfo gives it: ``model`` (its name), ``vendor``
    (``GenuineIntel``, ``AuthenticAMD``...) and ``flags`` (``avx2``, ``avx512f``...)."""
    path = "/proc/cpuinfo"
    fields = {}
    for line in open(path).read().splitlines() if os.path.exists(path) else []:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return {"model": fields.get("model name") or platform.processor() or "an unknown CPU",
            "vendor": fields.get("vendor_id", ""), "flags": set(fields.get("flags", "").split())}


def pin() -> None:
    """Ask torch and MKL for the one path every x86 CPU runs unless the environment chose one.

    Effective only before torch is first imported (both read it once); :func:`check`
    says whether it was.
    """
    # Elsewhere (aarch64) torch has neither the AVX2 level nor MKL: nothing to ask.
    if os.environ.get("REGSTUDY_KERNELS") == "native" or platform.machine().lower() not in ("x86_64", "amd64"):
        return
    for key, value in KERNEL_ENV.items():
        os.environ.setdefault(key, value)


def exact_unavailable() -> str | None:
    """Why ``compute=exact`` cannot run on this machine, or None where it can."""
    try:
        from . import _products
    except ImportError:
        return ("regstudy's C kernels (regstudy._products) are not built here: the install found no C "
                "compiler, or the CPU is not x86")
    if not _products.cpu_has_avx2():
        return "this CPU lacks AVX2 and FMA, which regstudy's C kernels need"
    return None


def resolve_compute(compute: str, device: str = "cpu") -> str:
    """``"exact"`` or ``"torch"``: what ``compute`` (``auto``, ``torch`` or ``exact``) means
    for a job on ``device`` (``cpu``, ``cuda``, ``mps``) on this machine. ``exact`` where it
    cannot run is a ConfigError naming why."""
    if compute not in COMPUTE_PATHS:
        raise ConfigError("compute", compute, f"one of {COMPUTE_PATHS}")
    if compute == "torch":
        return "torch"
    if device != "cpu":
        if compute == "exact":
            raise ConfigError("compute", compute, f"torch or auto on a {device} device (the exact kernels are "
                              "the CPU's; trainer.accelerator=cpu for them)")
        return "torch"
    why = exact_unavailable()
    if why and compute == "exact":
        raise ConfigError("compute", compute, f"torch or auto: {why}")
    return "torch" if why else "exact"


def pin_for(compute: str, accelerator: str) -> str | None:
    """Pin torch's kernels (:func:`pin`) where a job of ``compute`` on ``accelerator``
    takes the exact path on a CPU; returns the path, or None where it depends on a device
    not yet known (``accelerator=auto``: pinned if exact, which changes nothing on a GPU).
    Call before torch is imported; an invalid value is left to the job's own check."""
    try:
        path = resolve_compute(compute, "cpu" if accelerator in ("cpu", "auto") else "gpu")
    except ConfigError:
        return None
    if path == "exact":
        pin()
    return path


def mkl_branch() -> str | None:
    """The CNR branch MKL computes with (``COMPATIBLE``, ``AUTO``, ``AVX2,STRICT``...), as
    MKL itself reports it, or None where torch carries no MKL.

    MKL may refuse a requested branch: ``MKL_CBWR=AVX2`` on an AMD CPU runs ``AUTO``.
    torch links MKL statically; its service function ``mkl_serv_cbwr_get`` is exported.
    """
    import torch

    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        value = lib.mkl_serv_cbwr_get(MKL_CBWR_ALL)
    except (OSError, AttributeError):
        return None
    name = MKL_BRANCHES.get(value & ~MKL_CBWR_STRICT, f"branch {value & ~MKL_CBWR_STRICT}")
    return name + (",STRICT" if value & MKL_CBWR_STRICT else "")


def active(compute: str = "auto") -> dict[str, str | None]:
    """What this process computes with: ATen's dispatch level, MKL's branch and the path
    of the layers' products (``avx2`` or ``loop``, the same bits either way, on the exact
    path; ``torch`` on the torch path)."""
    import torch

    from . import products

    path = resolve_compute(compute, "cpu") if compute == "auto" else compute
    return {"aten": torch.backends.cpu.get_cpu_capability(), "mkl": mkl_branch(),
            "products": products.path() if path == "exact" else "torch"}


def describe(active: dict[str, str | None]) -> str:
    """One line for a run's tag and run.json: ``ATen AVX2, MKL COMPATIBLE, products avx2``."""
    line = f"ATen {active['aten']}, MKL {active['mkl'] or 'absent'}"
    return line + (f", products {active['products']}" if active.get("products") else "")


def check(compute: str = "auto") -> dict[str, str | None]:
    """:func:`active`, with a warning on stderr where a requested path did not take: torch
    was imported before the pin with another ``ATEN_CPU_CAPABILITY``, or MKL refused the
    branch in ``MKL_CBWR`` on this CPU."""
    now = active(compute)
    warn = lambda what: print(f"regstudy: {what}: the numbers may differ in the last bits "  # noqa: E731
                              "from another machine's", file=sys.stderr, flush=True)
    wanted = os.environ.get("ATEN_CPU_CAPABILITY", "")
    if wanted.lower() == KERNEL_ENV["ATEN_CPU_CAPABILITY"] and now["aten"] not in ("AVX2", "DEFAULT"):
        warn(f"torch computes with its {now['aten']} kernels, not the pinned AVX2 ones "
             "(torch was imported before regstudy)")
    asked = os.environ.get("MKL_CBWR", "").upper().replace(" ", "")
    if asked and now["mkl"] is not None and asked.split(",")[0] != now["mkl"].split(",")[0]:
        warn(f"MKL computes on its {now['mkl']} branch: it refused MKL_CBWR={asked} on this CPU")
    return now
