"""The benchmark suite's own arithmetic (its timings are measured, never asserted)."""

import pytest
import torch

from benchmarks.ensemble import (EARLY_STEPS, StudyLinear, batches, members, stacked_from, train_stacked, train_vmap,
                                 with_study_products)
from benchmarks.limits import flops_per_step
from conftest import PINNED, needs_exact


def test_flops_per_step_of_the_reference_network():
    # 1 -> 64 -> 64 -> 64 -> 1: multiply-adds per example 64 + 4096 + 4096 + 64 = 8320;
    # forward 2 FLOPs each, backward twice that, batch 32.
    assert flops_per_step() == 6 * 32 * 8320
    assert flops_per_step(batch=1, d_in=2, d_out=3) == 6 * (2 * 64 + 64 * 64 * 2 + 64 * 3)


def test_the_stacked_net_and_the_torch_func_ensemble_train_the_same_members():
    """The two sides of the ensemble benchmark compute the same thing: same initial
    weights and batches give the same per-member losses, step after step."""
    xs, ys = batches(4, EARLY_STEPS)
    stacked = train_stacked(stacked_from(members(4)), xs, ys)
    vmapped = train_vmap(members(4), xs, ys)
    assert stacked.shape == (EARLY_STEPS, 4)
    assert float(stacked[-1].mean()) < float(stacked[0].mean())  # it trains
    assert float((stacked - vmapped).abs().max()) < 1e-5


@needs_exact
def test_torch_func_with_the_studys_products_trains_the_stacked_members_to_the_bit():
    """StudyLinear's vmap rule is the stacked layer: the torch.func ensemble then computes
    what the stacked net computes, forward, backward and Adam, so its losses are the same
    floats at every step (the tutorial's nn.Linear rounds differently: a nonzero gap)."""
    xs, ys = batches(5, EARLY_STEPS)
    stacked = train_stacked(stacked_from(members(5)), xs, ys)
    models = with_study_products(members(5))
    assert [type(m) for m in models[0] if isinstance(m, torch.nn.Linear)] == [StudyLinear] * 4
    study = train_vmap(models, xs, ys)
    assert float(stacked[-1].mean()) < float(stacked[0].mean())  # it trains
    assert torch.equal(study, stacked)
    assert not torch.equal(train_vmap(members(5), xs, ys), stacked)  # the comparison can tell


@needs_exact
def test_the_compiled_sides_products_are_the_studys_to_the_bit_forward_and_backward():
    """The compile benchmark's custom operator runs the study's kernel: run eagerly, its
    losses and gradients are the stacked net's own floats, so what compiling changes is
    the compiler's alone (the benchmark's loss difference)."""
    from benchmarks.compiled import member_losses

    xs, ys = batches(3, 1)
    nets = stacked_from(members(3)), stacked_from(members(3))
    study = (nets[0](xs[0]).squeeze(-1) - ys[0]).square().mean(1)
    custom = member_losses(nets[1], xs[0], ys[0])
    assert torch.equal(custom, study)
    study.sum().backward()
    custom.sum().backward()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        assert a.grad is not None and torch.equal(a.grad, b.grad)


@pytest.mark.slow
def test_the_compile_benchmark_times_both_sides_and_a_cold_compile(tmp_path):
    """About a minute: two compiles in new processes and one here."""
    from benchmarks.compiled import compare

    c = compare(2, steps=5, repeats=1)
    assert c["compile_cold"] > c["compile_warm"] > 0
    assert c["eager"] > 0 and c["compiled"] > 0
    assert 0 <= c["diff"] < 1e-3


@needs_exact
def test_study_linear_under_vmap_is_the_stacked_layer_with_or_without_bias():
    """Each member's nn.Linear output, computed by the study's products: with a bias, without
    one, and with an input shared by every member (not batched)."""
    from torch.func import functional_call, stack_module_state, vmap

    torch.manual_seed(0)
    for bias in (True, False):
        layers = [torch.nn.Linear(3, 5, bias=bias) for _ in range(4)]
        study = [with_study_products([torch.nn.Sequential(layer)])[0] for layer in layers]
        params, buffers = stack_module_state(study)
        base = study[0].to("meta")
        x = torch.randn(4, 6, 3)
        for x_dim, inputs in ((0, x), (None, x[0])):
            out = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)), in_dims=(0, 0, x_dim))(
                params, buffers, inputs)
            want = torch.stack([layer(inputs if x_dim is None else inputs[k]) for k, layer in enumerate(layers)])
            torch.testing.assert_close(out, want)


@needs_exact
def test_study_linear_outside_vmap_says_where_it_runs():
    layer = with_study_products([torch.nn.Sequential(torch.nn.Linear(2, 3))])[0][0]
    with pytest.raises(NotImplementedError, match="under torch.func.vmap only"):
        layer(torch.zeros(4, 2))


@pytest.mark.skipif(not PINNED, reason="the suite pins nothing where the exact path cannot run")
def test_a_timed_study_command_does_not_inherit_the_suites_kernel_pin(tmp_path):
    """A study on the torch path computes on this CPU's own kernels, as a user runs it: the
    pin the suite asked for itself stays in the suite's process."""
    import os
    import sys

    from benchmarks import user_env
    from benchmarks.study import _run_timed

    assert os.environ.get("ATEN_CPU_CAPABILITY") == "avx2"  # conftest pinned this process, as the suite does
    env = user_env()
    assert "ATEN_CPU_CAPABILITY" not in env and "MKL_CBWR" not in env
    (tmp_path / "clone").mkdir()
    _, lines = _run_timed([sys.executable, "-c", "import os; print(os.environ.get('ATEN_CPU_CAPABILITY'))"],
                          tmp_path / "clone")
    assert lines[-1][1].strip() == "None"


def test_a_timed_study_command_does_not_inherit_the_suites_mlflow_uri(tmp_path, monkeypatch):
    """The suite's naive peer sets MLflow's URI, which MLflow exports to the environment:
    a study timed in a clone must log to the clone's own store, not to that one."""
    import sys

    import mlflow

    from benchmarks.study import _run_timed

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'suite.db'}")  # exports it, as the peer's logger does
    try:
        (tmp_path / "clone").mkdir()
        _, lines = _run_timed([sys.executable, "-c", "import os; print(os.environ.get('MLFLOW_TRACKING_URI'))"],
                              tmp_path / "clone")
    finally:
        mlflow.set_tracking_uri(None)
    assert [line.strip() for _, line in lines] == ["None"]


def test_both_sides_of_the_ensemble_benchmark_train_with_the_studys_optimizer():
    """Not a default Adam: the ones conf/optim/adam.yaml gives every train job (fused, and
    foreach for a parameter whose member slices are not whole vectors)."""
    import torch

    from benchmarks.ensemble import study_optimizers
    from regstudy.stages.train import compose_job

    want = compose_job([]).optim
    kernel, bias = torch.zeros(4, 64, 1, requires_grad=True), torch.zeros(4, 1, requires_grad=True)
    opts = study_optimizers([kernel, bias])
    assert [[p for g in o.param_groups for p in g["params"]] for o in opts] == [[kernel], [bias]]
    assert [o.defaults["fused"] for o in opts] == [want.fused, False] and want.fused is True
    for opt in opts:
        assert type(opt).__name__ == want._target_.rsplit(".", 1)[-1]
        assert (opt.defaults["lr"], list(opt.defaults["betas"]), opt.defaults["eps"]) == (want.lr, list(want.betas), want.eps)


def test_the_pins_cost_is_measured_against_this_cpus_own_kernels(tmp_path):
    """The throughput table's `native` rows: a child process on unpinned kernels (MKL in
    no reproducible branch), while this process computes on the pinned ones."""
    from benchmarks import throughput
    from benchmarks.run import signal_data
    from regstudy import kernels

    rate, native = throughput.stacked_native(signal_data(tmp_path, True), 2, 2, 1)
    assert rate > 0
    if not PINNED:
        pytest.skip("no pin to measure against: the kernels are pinned only on x86 with AVX2 (regstudy.kernels)")
    assert "MKL OFF" in native
    assert kernels.describe(kernels.active()).startswith("ATen AVX2, MKL COMPATIBLE, products ")


def test_study_flops_counts_each_member_epoch_of_training_and_evaluation(tmp_path):
    """By hand: a classification set of 3 draws, 5 training and 2 validation examples of
    4 inputs and 3 classes (4*64 + 64*64*2 + 64*3 = 8640 multiply-adds an example), and a
    job of 2 members over 3 epochs (6 rows of curves.csv): 6 * 2 * (3*5 + 5 + 2) * 8640."""
    import numpy as np

    from benchmarks.limits import study_flops

    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "toy.npz", x_train=np.zeros((3, 5, 4), np.float32),
             x_val=np.zeros((3, 2, 4), np.float32), y_train=np.array([[0, 1, 2, 0, 1]] * 3))
    job = tmp_path / "results" / "l2" / "toy"
    job.mkdir(parents=True)
    (job / "curves.csv").write_text("member,epoch\n" + "".join(f"{m},{e}\n" for m in (0, 1) for e in (1, 2, 3)))
    assert study_flops(tmp_path) == (6 * 2 * (3 * 5 + 5 + 2) * 8640, 6)


def test_tracking_cpu_sums_the_tracking_processes_last_lines(tmp_path):
    from benchmarks.study import tracking_cpu
    from regstudy.tracking import CPU_LINE

    (tmp_path / "mlflow-tracking.log").write_text(
        "2026/12/02 WARNING mlflow.pytorch: ...\n"
        f"{CPU_LINE} signal/l2: 35 member runs, 1.25 s CPU\n"
        f"some other line, 9.00 s CPU\n"
        f"{CPU_LINE} digits/none: 5 member runs, 0.50 s CPU\n")
    assert tracking_cpu(tmp_path) == (1.75, 2)
    assert tracking_cpu(tmp_path / "nowhere") == (0.0, 0)


@needs_exact
def test_the_evaluation_benchmarks_two_ways_give_the_same_numbers_and_differ_in_code(tmp_path):
    """Both sides of the evaluation benchmark evaluate a study module to the same numbers
    (the study's kernels are torch's bits), while the torch side really runs torch's calls;
    a module with a removed unit and exact zeros, so that the counts are not all 0."""
    from benchmarks import evaluation
    from regstudy import metrics
    from regstudy import module as module_code

    _, module = evaluation.study_module(tmp_path, "moons")
    with torch.no_grad():  # something to count: a removed unit (constant: not alive), exact zeros
        module.net.kernels[0][0, :, 3] = 0.0
        module.net.kernels[1][1, :5] = 0.0
    study_row = module.evaluate()
    with evaluation.torch_passes(module):
        assert module.net.fused_slope is None
        assert module_code.alive_units is evaluation.torch_alive_units
        assert metrics.zero_counts is evaluation.torch_zero_counts
        torch_row = module.evaluate()
    assert module.net.fused_slope == 0.01 and metrics.zero_counts is not evaluation.torch_zero_counts
    assert study_row.keys() == torch_row.keys()
    for key, value in study_row.items():
        torch.testing.assert_close(value, torch_row[key], rtol=0, atol=0, equal_nan=True, msg=key)
    assert study_row["removed_neurons"][0] == 1 and study_row["exact_zero_fraction"][1] > 0
    assert study_row["layer_alive"][0, 0] == module.net.hidden[0] - 1


def test_the_rest_of_the_study_adds_every_part_but_training_evaluation_the_idle_worker_and_mlflows_wall():
    from benchmarks.run import EVALUATION_ROW, IDLE_ROW, MLFLOW_ROW, TRAINING_ROW, _rest_of_the_study

    rows = [["DVC: stage start-up and lock writes (per stage, warm server found)", 20.0],
            ["imports (the warm server's start, once)", 6.0],
            ["generate stage", 5.0],
            [TRAINING_ROW, 150.0],
            [EVALUATION_ROW, 50.0],
            ["train jobs: set-up, final evaluation, result tables", 16.0],
            [IDLE_ROW, 25.0],
            ["report stage (figures, claims, HTML)", 50.0],
            [MLFLOW_ROW, 58.0]]
    text = _rest_of_the_study(rows, tracking_cpu=60.0, floor=41.0)
    # 20 + 6 + 5 + 16 + 50 = 97 s; MLflow 60 s of CPU is 30 s of both cores; 97 + 30 + 41 = 168 s.
    assert "took 97 s" in text and "processes 30 s of both cores" in text and "still take 168 s" in text


# What a machine with torch alone lacks: benchmarks/gpu.py must run without any of them.
NOT_ON_A_TORCH_ONLY_MACHINE = ("numpy", "pandas", "yaml", "hydra", "omegaconf", "pytorch_lightning", "lightning",
                               "mlflow", "dvc")


def test_the_gpu_check_runs_with_torch_alone_as_a_dry_run_on_the_cpu(tmp_path):
    """`python -m benchmarks.gpu --cpu-only --quick` with PYTHONPATH=src, where numpy, Hydra,
    Lightning, MLflow and DVC cannot be imported (a sitecustomize marks them absent in
    every process, its workers' too): its checks pass (the CPU against itself), it times
    the device and both CPU paths, and writes $OUT/gpu.json."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in NOT_ON_A_TORCH_ONLY_MACHINE))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{root / 'src'}", "OUT": str(tmp_path / "out")}
    blocked = subprocess.run([sys.executable, "-c", "import hydra"], env=env, capture_output=True, text=True)
    assert blocked.returncode != 0 and "ModuleNotFoundError" in blocked.stderr  # the block takes
    run = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--cpu-only", "--quick"], env=env, cwd=root,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    for check in ("loss: largest relative difference", "parameters: largest absolute difference",
                  "column_extrema and kernel_counts", "the members train", "correctness"):
        assert any(line.strip().startswith(f"PASS {check}") for line in lines), check
    result = json.loads((tmp_path / "out" / "gpu.json").read_text())
    assert result["device"] == "cpu" and result["tf32"] is False and result["quick"] is True
    c = result["correctness"]
    assert c["pass"] is True and c["loss_rel_diff"] == 0.0 and c["param_abs_diff"] == 0.0  # the CPU against itself
    assert c["loss_rtol"] == 1e-3 and c["extrema_equal"] and c["counts_equal"]
    tput = result["throughput"]
    assert tput["unit"] == "model-steps/s" and set(tput["device"]) == {"8", "32"}
    assert all(rate > 0 for rate in tput["device"].values()) and tput["cpu"]["torch"] > 0
    from regstudy.kernels import exact_unavailable

    assert (tput["cpu"]["exact"] is None) == (exact_unavailable() is not None)
    assert result["ratio"]["device_k"] == 32 and result["ratio"]["over_cpu_torch"] > 0


def test_no_device_is_one_line_and_exit_0():
    """Where torch finds no CUDA or MPS device (this CPU-only build), the check says so and
    measures nothing."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from regstudy.compute import gpu_device

    if gpu_device() is not None:
        pytest.skip("this machine has a GPU")
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-m", "benchmarks.gpu"], cwd=root, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(root / "src")}, timeout=60)
    assert run.returncode == 0 and run.stdout.count("\n") == 1
    assert run.stdout.startswith("benchmarks.gpu: no CUDA or MPS device here")


def test_each_compute_paths_process_computes_on_its_own_kernels():
    """The compute-paths benchmark times the torch path in a process on this CPU's own
    kernels (no pin: MKL in no reproducible branch) and the exact path in a pinned one."""
    from benchmarks.throughput import on_path

    code = "print(json.dumps({'kernels': describe(), 'aten': torch.backends.cpu.get_cpu_capability()}))"
    torch_side, exact_side = on_path("torch", code), on_path("exact", code)
    assert torch_side["kernels"].endswith("products torch")
    if not PINNED:
        pytest.skip("no pin to tell apart: the kernels are pinned only on x86 with AVX2 (regstudy.kernels)")
    assert "MKL OFF" in torch_side["kernels"]
    assert exact_side["kernels"].startswith("ATen AVX2, MKL COMPATIBLE, products ")


def test_the_study_paths_comparison_lists_the_verdicts_that_differ_and_whether_the_report_marks_them(tmp_path):
    import json

    from benchmarks.study import differing, report_verdicts

    def report(name: str, moons_l2: str, claim: str, fragile: bool):
        (tmp_path / name / "reports").mkdir(parents=True)
        findings = {"findings": {"moons": {"l2": {"verdict": moons_l2, "borderline": ""},
                                           "dropout": {"verdict": "better", "borderline": "p = 0.3, nearly tied"}}},
                    "verdicts": {"better": 1}}
        row = {"verdict": claim, **({"fragile": "reproduced / inconclusive as the thresholds move"} if fragile else {})}
        claims = {"l1_exact_zeros": {"sparse:l1_prox-vs-l2": row}, "verdicts": {claim: 1}, "fragile": int(fragile)}
        (tmp_path / name / "reports" / "findings.json").write_text(json.dumps(findings))
        (tmp_path / name / "reports" / "claims.json").write_text(json.dumps(claims))
        return report_verdicts(tmp_path / name)

    exact = report("exact", "better", "reproduced", False)
    assert exact == {"finding moons/l2": ("better", False), "finding moons/dropout": ("better", True),
                     "claim l1_exact_zeros sparse:l1_prox-vs-l2": ("reproduced", False)}
    torch_ = report("torch", "equivalent", "inconclusive", True)
    assert differing(exact, torch_) == [
        {"what": "claim l1_exact_zeros sparse:l1_prox-vs-l2", "a": "reproduced", "b": "inconclusive", "marked": True},
        {"what": "finding moons/l2", "a": "better", "b": "equivalent", "marked": False}]
    assert differing(exact, exact) == []
    assert differing(exact, {})[0] == {"what": "claim l1_exact_zeros sparse:l1_prox-vs-l2", "a": "reproduced",
                                        "b": None, "marked": False}
