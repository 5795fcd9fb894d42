"""The exact path's pin of torch's kernels (regstudy.kernels): what a process computes with.

The pin is asked for by an entry point that takes the exact path (``pin_for``), before
torch is imported; importing regstudy pins nothing, and the torch path runs unpinned."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import CPU, PINNED
from regstudy import warm
from regstudy.kernels import KERNEL_ENV

needs_avx2 = pytest.mark.skipif(not PINNED, reason="the exact path (x86 with AVX2, its C kernels built), whose pin this is")
PIN = "from regstudy.kernels import pin_for; pin_for('exact', 'cpu')"  # an entry point on the exact path
needs_avx512 = pytest.mark.skipif("avx512f" not in CPU["flags"], reason="a CPU with AVX-512, whose own path differs")

PROBE = ("import json, torch; from regstudy import kernels; x = torch.randn(8, 64, 64); "
         "torch.bmm(x, x).sum(); print(json.dumps(kernels.active()))")


def probe(code: str, **env: str) -> dict:
    """What a fresh Python computes with after ``code`` (then the probe) ran."""
    base = {k: v for k, v in os.environ.items() if k not in (*KERNEL_ENV, "REGSTUDY_KERNELS")}
    out = subprocess.run([sys.executable, "-c", f"{code}\n{PROBE}"], env={**base, **env},
                         capture_output=True, text=True, check=True)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "stderr": out.stderr}


@needs_avx2
def test_the_exact_path_pins_atens_avx2_and_mkls_compatible_path():
    got = probe(PIN)
    assert (got["aten"], got["mkl"]) == ("AVX2", "COMPATIBLE")  # as MKL itself reports it


@needs_avx512
def test_importing_regstudy_or_taking_the_torch_path_pins_nothing():
    for code in ("import regstudy, regstudy.job", "from regstudy.kernels import pin_for; pin_for('torch', 'cpu')"):
        got = probe(code)
        assert (got["aten"], got["mkl"]) == ("AVX512", "OFF"), code  # this CPU's own path, MKL's default


@needs_avx2
def test_without_the_pin_mkl_runs_no_reproducible_branch():
    assert probe(PIN, REGSTUDY_KERNELS="native")["mkl"] == "OFF"


@needs_avx512
def test_without_regstudy_torch_takes_the_cpus_own_path_which_the_pin_changes():
    # torch alone fixes its level at its first operation (the probe imports regstudy after)
    assert probe("import torch; torch.ones(2) + 1")["aten"] == "AVX512"  # what the pin is there to avoid
    assert probe(PIN, REGSTUDY_KERNELS="native")["aten"] == "AVX512"


@needs_avx2
def test_a_value_already_in_the_environment_is_kept():
    # AUTO: one of the two branches MKL offers on any CPU (the other is COMPATIBLE)
    got = probe(PIN, ATEN_CPU_CAPABILITY="default", MKL_CBWR="AUTO")
    assert (got["aten"], got["mkl"]) == ("DEFAULT", "AUTO")


@needs_avx2
@needs_avx512
def test_torch_imported_before_regstudy_is_said_to_run_its_own_path():
    got = probe(f"import sys, torch; torch.ones(2) + 1\n{PIN}\nfrom regstudy import kernels\n"
                "print(kernels.check(), file=sys.stderr)")
    assert got["aten"] == "AVX512"
    assert "torch computes with its AVX512 kernels, not the pinned AVX2 ones" in got["stderr"]
    assert "torch computes" not in probe(f"{PIN}\nfrom regstudy import kernels; kernels.check()")["stderr"]


needs_amd = pytest.mark.skipif(not PINNED or CPU["vendor"] == "GenuineIntel",
                               reason="a non-Intel x86 CPU, where MKL honours no Intel-only branch")


@needs_amd
def test_a_branch_mkl_refuses_on_this_cpu_is_said_and_recorded_as_what_mkl_runs():
    """MKL's AVX2 branch exists on Intel CPUs only (the pin of an earlier round asked for
    it, and on an AMD EPYC MKL silently ran its AUTO branch while run.json said AVX2)."""
    got = probe(f"{PIN}\nfrom regstudy import kernels; kernels.check()", MKL_CBWR="AVX2,STRICT")
    assert got["mkl"] == "AUTO,STRICT"
    assert "MKL computes on its AUTO,STRICT branch: it refused MKL_CBWR=AVX2,STRICT" in got["stderr"]
    assert "MKL computes" not in probe(f"{PIN}\nfrom regstudy import kernels; kernels.check()")["stderr"]


def test_the_kernels_line_says_what_each_library_runs():
    from regstudy.kernels import describe

    assert describe({"aten": "AVX2", "mkl": "COMPATIBLE", "products": "avx2"}) == \
        "ATen AVX2, MKL COMPATIBLE, products avx2"
    assert describe({"aten": "DEFAULT", "mkl": None, "products": "loop"}) == "ATen DEFAULT, MKL absent, products loop"


@needs_avx2
def test_the_warm_server_is_one_per_kernel_path(monkeypatch):
    """The server fixed its kernels at its imports: a client asking for others needs another."""
    pinned = warm.code_hash()
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    assert warm.code_hash() != pinned
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", KERNEL_ENV["ATEN_CPU_CAPABILITY"])
    assert warm.code_hash() == pinned
