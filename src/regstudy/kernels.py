"""One kernel path on every x86 CPU, so that a study's numbers are the same bits on any machine.

PyTorch chooses its elementwise and reduction kernels (ATen's) by the CPU it finds, and
MKL its matrix products: AVX-512 code on a CPU that has it, AVX2 code on one that has
not. The two round differently in the last bits, and training amplifies the difference
(measured: the study committed from an AVX2 AMD EPYC, re-run on an AVX-512 Intel Xeon,
gave other bits in every train output and four other verdicts in the report). So every
process that imports regstudy asks both for their AVX2 path, which every x86-64 CPU
since 2013-2015 runs, before torch is imported (on x86 only):

- ``ATEN_CPU_CAPABILITY=avx2``: ATen's dispatch level (it never goes above what the CPU has);
- ``MKL_CBWR=AVX2,STRICT``: MKL's conditional numerical reproducibility, the AVX2 code
  path, bit-for-bit whatever the CPU and the data's alignment.

A value already in the environment is kept; ``REGSTUDY_KERNELS=native`` sets neither
(each CPU its own, fastest path: numbers then match only a machine of the same kind).
run.json and every MLflow run (tag ``kernels``) record what a job ran on.
"""

from __future__ import annotations

import os
import platform
import sys

KERNEL_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT"}


def pin() -> None:
    """Ask torch and MKL for the AVX2 path unless the environment already chose one.

    Effective only before torch is first imported (both read it once); :func:`check`
    says whether it was.
    """
    # Elsewhere (aarch64) torch has neither the AVX2 level nor MKL: nothing to ask.
    if os.environ.get("REGSTUDY_KERNELS") == "native" or platform.machine().lower() not in ("x86_64", "amd64"):
        return
    for key, value in KERNEL_ENV.items():
        os.environ.setdefault(key, value)


def active() -> dict[str, str | None]:
    """What this process computes with: ATen's dispatch level and MKL's setting."""
    import torch

    return {"aten": torch.backends.cpu.get_cpu_capability(), "mkl_cbwr": os.environ.get("MKL_CBWR")}


def describe(active: dict[str, str | None]) -> str:
    """One line for a run's tag and run.json: ``ATen AVX2, MKL_CBWR AVX2,STRICT``."""
    return f"ATen {active['aten']}, MKL_CBWR {active['mkl_cbwr']}"


def check() -> dict[str, str | None]:
    """:func:`active`, with a warning on stderr where the pinned ATen path did not take:
    torch was imported before regstudy, with another ``ATEN_CPU_CAPABILITY``."""
    now = active()
    wanted = os.environ.get("ATEN_CPU_CAPABILITY", "")
    if wanted.lower() == KERNEL_ENV["ATEN_CPU_CAPABILITY"] and now["aten"] not in ("AVX2", "DEFAULT"):
        print(f"regstudy: torch computes with its {now['aten']} kernels, not the pinned AVX2 ones "
              "(torch was imported before regstudy): the numbers may differ in the last bits "
              "from another machine's", file=sys.stderr, flush=True)
    return now
