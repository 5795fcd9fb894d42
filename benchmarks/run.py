"""regstudy's benchmark suite: `make bench` (or `python -m benchmarks.run`).

Everything is measured in the same run on the same machine, and reported as ratios
where it matters, because the machines are shared and noisy. Prints a table and writes
it, with the machine's cores, memory and package versions, to benchmarks/RESULTS.md.
Options: --quick (smaller sizes, for trying the suite out), --skip-study, and --only SECTION
(study, compile, stacks, evaluation, compute or study-paths: those sections alone, replacing
them in an existing RESULTS.md). study-paths (the whole study on each compute path, twice
each: about 20 minutes) runs only when asked for by --only.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import compiled, ensemble, evaluation, jobs, limits, search, stacks, study, throughput
from regstudy import kernels, products
from regstudy.data import make_dataset, save_npz

HERE = Path(__file__).resolve().parent
ONLY = ("study", "compile", "stacks", "evaluation", "compute", "study-paths")  # the sections --only can run alone
PACKAGES = ("torch", "pytorch-lightning", "hydra-core", "mlflow", "dvc", "numpy", "pandas")


def machine() -> list[str]:
    mem = next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    cpu = kernels.cpu()["model"]
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in PACKAGES)
    return [f"- cores: {os.cpu_count()} ({cpu})", f"- memory: {int(mem) / 2**20:.1f} GiB",
            f"- Python {platform.python_version()}; {versions}",
            f"- load average at start: {os.getloadavg()[0]:.2f}"]


class Report:
    def __init__(self):
        self.sections: list[tuple[str, list[str]]] = []

    def table(self, title: str, header: list[str], rows: list[list], note: str = "") -> None:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        if note:
            lines += ["", note]
        self.sections.append((title, lines))
        print(f"\n## {title}\n" + "\n".join(lines), flush=True)


def signal_data(tmp: Path, quick: bool) -> Path:
    params = stacks.study_params()["data"]
    path = tmp / "signal.npz"
    save_npz(path, make_dataset("signal", params["signal"], [0, 1, 2], params["seed"]))
    return path


def bench_throughput(r: Report, data: Path, tmp: Path, quick: bool) -> dict:
    epochs = 5 if quick else 60
    torch.set_num_threads(1)
    best = lambda f, *a: max(f(*a) for _ in range(2 if quick else 3))  # noqa: E731 - noise only slows
    raw = best(throughput.raw_loop, data, epochs)
    naive = throughput.naive_peer(data, tmp, models=2 if quick else 4, epochs=epochs)
    rows, out = [], {"raw": raw, "naive": naive}
    rows.append(["raw PyTorch loop, 1 model", f"{raw:,.0f}", "1.00", f"{raw / naive:.2f}"])
    rows.append(["naive: Trainer per model + MLFlowLogger every step", f"{naive:,.0f}",
                 f"{naive / raw:.2f}", "1.00"])
    for k in (1, 8, 32, 128):
        rate = best(throughput.stacked, data, k, max(epochs, 400 // k))  # each lasts seconds
        out[k] = rate
        rows.append([f"regstudy stacked, K={k}", f"{rate:,.0f}", f"{rate / raw:.2f}", f"{rate / naive:.2f}"])
    for k in (32, 128):  # the cost of the kernels' pin (regstudy.kernels), in the same run
        rate, kernels = throughput.stacked_native(data, k, max(epochs, 400 // k), 2 if quick else 3)
        out[f"native{k}"] = rate
        rows.append([f"stacked K={k}, this CPU's own kernels ({kernels}, `REGSTUDY_KERNELS=native`)", f"{rate:,.0f}",
                     f"{rate / raw:.2f}", f"{rate / naive:.2f}"])
    torch.set_num_threads(2)
    raw2 = best(throughput.raw_loop, data, epochs)
    k32_2 = best(throughput.stacked, data, 32, epochs)
    torch.set_num_threads(1)
    rows.append(["raw loop, 2 torch threads", f"{raw2:,.0f}", f"{raw2 / raw:.2f}", f"{raw2 / naive:.2f}"])
    rows.append(["stacked K=32, 2 torch threads", f"{k32_2:,.0f}", f"{k32_2 / raw:.2f}", f"{k32_2 / naive:.2f}"])
    out["raw2"], out["k32_2"] = raw2, k32_2
    r.table("Training throughput (model-steps/s, reference network, signal, batch 32)",
            ["what", "model-steps/s", "× raw loop", "× naive peer"], rows,
            f"Best of 3 runs each: noise on a shared machine only slows a run down. {epochs} "
            f"epochs each (stacked K=1: {max(epochs, 400)}; the raw loop: at least 2 s); "
            "1 torch thread unless stated. Stacked includes the per-epoch "
            "evaluation of every member on every split that a train job does. Every row but "
            "the `native` ones computes on the study's pinned kernels (ATen AVX2, MKL's "
            "COMPATIBLE branch), and every stacked row's layers on regstudy's own products (the "
            "same bits on any CPU); against this CPU's own kernels the pin costs "
            f"{_pin_cost(out[32], out['native32'])} of stacked K=32's rate and "
            f"{_pin_cost(out[128], out['native128'])} of K=128's here.")
    return out


def _pin_cost(pinned: float, native: float) -> str:
    """The share of the native rate the pin loses, or that it lost none in this run."""
    cost = 1 - pinned / native
    return f"{cost:.0%}" if cost >= 0.005 else f"nothing measurable ({pinned:,.0f} pinned, {native:,.0f} native)"


def bench_limit(r: Report, tput: dict, data: Path) -> None:
    torch.set_num_threads(1)
    flops = limits.flops_per_step()
    arrays = np.load(data)
    n_train, n_val = arrays["x_train"].shape[-2], arrays["x_val"].shape[-2]
    evaluation = limits.eval_flops_per_step(n_train + n_val, -(-n_train // 32))
    dense = limits.matmul_rate()
    rows = [["dense 512×512 matmul, 1 thread", f"{dense / 1e9:.1f} GFLOP/s",
             f"{dense / flops:,.0f}", "", "", ""]]
    for k in (1, 32, 128):
        achieved = tput[k]
        for name, product in (("torch.bmm", torch.bmm), ("the study's products", products.product)):
            rate = limits.batched_rate(k, product=product)
            rows.append([f"{name} at layer size, K={k}", f"{rate / 1e9:.1f} GFLOP/s", f"{rate / flops:,.0f}",
                         f"{achieved:,.0f}", f"{achieved / (dense / flops):.1%} / {achieved / (rate / flops):.1%}",
                         f"{achieved * (flops + evaluation) / rate:.1%}"])
    r.table("The physical limit", ["matmul rate", "rate", "limit (model-steps/s)", "achieved (stacked)",
                                   "achieved ÷ limit (dense / this rate)", "all its FLOPs ÷ this rate"], rows,
            f"One training step of the reference network is {flops / 1e6:.2f} MFLOP "
            "(6·B·Σ in·out: forward, and backward for inputs and weights; elementwise work left out). "
            "The stacked rate includes the per-epoch evaluation a train job does: a forward pass of "
            f"the {n_train + n_val} train and validation examples, {evaluation / 1e6:.2f} MFLOP per "
            "training step here (signal: one step an epoch); the last column counts both. "
            "`torch.bmm` runs in MKL on its pinned COMPATIBLE branch (SSE2, no FMA); the study's "
            f"products (regstudy.products, path `{products.path()}`) are what its layers compute with.")


def bench_logging(r: Report, data: Path, tmp: Path, quick: bool) -> None:
    import multiprocessing

    epochs = 30 if quick else 100
    root = tmp / "logging"
    jobs.job_seconds(root, data, 18, 5, True)  # create the store first, as a study does

    def best(**kw) -> float:
        times = []
        for _ in range(2):
            times.append(jobs.job_seconds(root, data, 18, epochs, **kw))
            for child in multiprocessing.active_children():  # a background finish ends
                child.join()                                   # before the next timing
        return min(times)

    t_off = best(logging_on=False)
    t_wait = best(logging_on=True)
    t_bg = best(logging_on=True, background=True)
    r.table("MLflow logging overhead (one train job: l2 on signal, K=18, best of 2)",
            ["logging", "seconds", "overhead"],
            [["off", f"{t_off:.2f}", ""],
             ["on, job waits for MLflow (command-line runs)", f"{t_wait:.2f}", f"{t_wait / t_off - 1:+.1%}"],
             ["on, background finish (DVC train stages)", f"{t_bg:.2f}", f"{t_bg / t_off - 1:+.1%}"]],
            f"{epochs} epochs; every member's per-epoch metrics, params, artifacts and figure. "
            "Per-epoch metrics are written during training by the tracking process on the "
            "second core; with the background finish, the artifacts, figures and final "
            "statuses are too, while the next stage starts.")


SCALING_NOTE = (
    "Reading: in K, a job costs a fixed part (Python's per-step overhead, paid once per "
    "step for all members, and the job's set-up) plus a part per member (the batched "
    "matrix products, the per-epoch evaluation, MLflow rows and figures). Below K of about "
    "16 the fixed part dominates and more members are nearly free (member-epochs/s "
    "climbs); from K of about 64 the time grows linearly with K (member-epochs/s flat): "
    "the batched products are compute-bound on one core. In epochs, time is linear "
    "plus a fixed cost per job (store set-up, runs, results, figures), so member-epochs/s "
    "rises with longer jobs.")


def bench_scaling(r: Report, data: Path, tmp: Path, quick: bool) -> None:
    ks = (1, 3, 9, 27, 81) if quick else (1, 4, 16, 64, 128, 256)
    jobs.job_seconds(tmp / "scaling", data, 1, 2, True)  # the store exists before timing
    rows = []
    base = None
    for k in ks:
        s = jobs.job_seconds(tmp / "scaling", data, k, 50, True)
        base = base or s
        rows.append([f"K={k}, 50 epochs", f"{s:.2f}", f"{s / base:.2f}", f"{k * 50 / s:,.0f}"])
    base = None
    jobs.job_seconds(tmp / "scaling", data, 18, 2, True)  # one-time costs of K=18's figures and runs
    for e in ((10, 20, 40) if quick else (25, 50, 100, 200)):
        s = jobs.job_seconds(tmp / "scaling", data, 18, e, True)
        base = base or s
        rows.append([f"K=18, {e} epochs", f"{s:.2f}", f"{s / base:.2f}", f"{18 * e / s:,.0f}"])
    r.table("Scaling of one train job (l2, signal, MLflow on)",
            ["job", "seconds", "× first", "member-epochs/s"], rows, SCALING_NOTE)


def bench_profile(r: Report, data: Path, tmp: Path, out: Path) -> None:
    jobs.job_seconds(tmp / "profile", data, 1, 2, True)  # the store exists before profiling
    text = jobs.profile_job(tmp / "profile", data, out)
    def seconds(line: str) -> float:
        head = line.lstrip("│├└─ ").split(" ", 1)[0]
        return float(head) if head.replace(".", "", 1).isdigit() else 0.0

    top = [line for line in text.splitlines()
           if seconds(line) >= 0.25 and ("regstudy/" in line or "Trainer.fit" in line)][:16]
    r.table("Where a train job's time goes (pyinstrument, l2 on signal, K=18, 100 epochs)",
            ["call tree (seconds, job process only)"], [[f"`{line.strip()}`"] for line in top],
            f"Full tree: benchmarks/{out.name}. The tracking process (MLflow writes, half the "
            "member figures) runs beside it on the second core; `TrackingProcess.finish` is the "
            "time this process waits for it at the end.")


def bench_ensemble(r: Report, quick: bool) -> None:
    torch.set_num_threads(1)
    steps = 50 if quick else 300
    rows, diffs = [], []
    for k in (32, 128):
        c = ensemble.compare(k, steps, 1 if quick else 3)
        diffs.append(c["diff"]["vmap"])
        rows.append([f"K={k}", f"{c['stacked']:,.0f}", f"{c['vmap']:,.0f}", f"{c['stacked'] / c['vmap']:.2f}",
                     f"{c['early']['vmap']:.1e}", f"{c['diff']['vmap']:.1e}", f"{c['vmap_study']:,.0f}",
                     f"{c['stacked'] / c['vmap_study']:.2f}", f"{c['diff']['vmap_study']:.1e}",
                     f"{1e3 * k * (1 / c['vmap_study'] - 1 / c['stacked']):.2f}"])
    agreement = ("The tutorial's losses are the stacked side's to the bit: on this CPU MKL sums in the same order."
                 if max(diffs) == 0 else
                 "The tutorial's losses are the same computation in float32, rounded differently: the stacked "
                 "side's products are regstudy's (one chain of fused multiply-adds per element), the tutorial's "
                 "are MKL's (its COMPATIBLE branch, no FMA), and Adam amplifies the last bits over hundreds of steps.")
    r.table("Stacked against a torch.func ensemble (model-steps/s, the training step only)",
            ["members", "stacked (StackedMLP)", "torch.func, the tutorial's nn.Linear", "stacked ÷ it",
             f"its largest loss difference, first {ensemble.EARLY_STEPS} steps", "any step",
             "torch.func, the study's products (StudyLinear)", "stacked ÷ it", "its largest loss difference, any step",
             "its extra ms per step"],
            rows,
            f"Best of {1 if quick else 3}, {steps} steps of batch 32, 1 thread, the same initial weights and minibatches, and "
            "the same optimizers, the study's (conf/optim/adam.yaml: fused Adam, foreach for the output biases); no Lightning, no "
            f"evaluation on any side. {agreement} With the study's products (their vmap rule is the stacked "
            "layer itself) torch.func computes what the stacked side computes, so the difference is the method's "
            "alone: the last column is what vmap, functional_call and nn.Linear's (out, in) weight layout (its "
            "weights and their gradients transposed for the study's products) add to a step of all K members.")


COMPUTE_TITLE = "Compute paths: the torch path against the exact path, the naive peer and torch.func (model-steps/s)"
NAIVE_TARGET = 80  # the torch path's train job at K=128 against the naive peer


def bench_compute(r: Report, data: Path, tmp: Path, quick: bool) -> dict:
    """The stacked training step on each compute path, each in a process of its own (the
    torch path on this CPU's own kernels, as a user runs it; the exact path pinned), beside
    the naive peer and the torch.func ensemble, measured in the torch path's process."""
    plan = {"data": str(data), "tmp": str(tmp), "ks": [32, 128], "epochs": 5 if quick else 60,
            "repeats": 2 if quick else 3, "steps": 50 if quick else 300, "naive_models": 2 if quick else 4}
    code = "from benchmarks import throughput; print(json.dumps(throughput.path_rates(json.loads(sys.argv[1]))))"
    side = {path: throughput.on_path(path, code, json.dumps({**plan, "compute": path})) for path in ("torch", "exact")}
    torch_, exact = side["torch"], side["exact"]
    naive = torch_["naive"]
    rows = []
    for k in map(str, plan["ks"]):
        t, e = torch_["stacked"][k], exact["stacked"][k]
        step, tf = torch_["step"][k], torch_["torch_func"][k]
        rows.append([f"K={k}", f"{t:,.0f}", f"{e:,.0f}", f"{t / e:.2f}", f"{naive:,.0f}", f"{t / naive:.0f}",
                     f"{step:,.0f}", f"{tf:,.0f}", f"{step / tf:.2f}"])
    at128 = torch_["stacked"]["128"] / naive
    r.table(COMPUTE_TITLE,
            ["members", "torch path, a train job", "exact path, a train job", "torch ÷ exact", "naive peer",
             "torch ÷ naive", "torch path, the step only", "torch.func (tutorial), the step only",
             "torch ÷ torch.func"], rows,
            f"Each path in a process of its own, 1 thread: the torch path (`compute=torch`) on this CPU's own "
            f"kernels ({torch_['kernels']}), as a user runs it; the exact path (`compute=exact`) pinned "
            f"({exact['kernels']}). A train job: `benchmarks/throughput.py`'s stacked job (l2 on signal, "
            f"Lightning, the per-epoch evaluation of every split, MLflow off), best of {plan['repeats']}, "
            f"{plan['epochs']} epochs (K=32: {max(plan['epochs'], 400 // 32)}). The naive peer (a Lightning "
            f"Trainer per model, MLFlowLogger every step, {plan['naive_models']} models) and the step-only "
            f"sides ({plan['steps']} steps, `benchmarks/ensemble.py`, no Lightning, no evaluation) ran in the "
            f"torch path's process. Target: the torch path at K=128 at least {NAIVE_TARGET}× the naive peer: "
            f"{at128:.0f}×, {'met' if at128 >= NAIVE_TARGET else '**not met**'}.")
    return side


def bench_compile(r: Report, quick: bool) -> None:
    torch.set_num_threads(1)
    steps = 50 if quick else 300
    rows = []
    for k in (32, 128):
        c = compiled.compare(k, steps, 1 if quick else 3)
        rows.append([f"K={k}", f"{c['compile_cold']:.1f}", f"{c['compile_warm']:.1f}", f"{c['eager']:.2f}",
                     f"{c['compiled']:.2f}", f"{c['eager'] / c['compiled']:.2f}", f"{c['diff']:.1e}"])
    r.table("The stacked step under torch.compile (ms per step of all K members)",
            ["members", "compile, empty cache (s)", "compile, warm cache (s)", "eager (the study's)",
             "compiled", "eager ÷ compiled", "largest loss difference"],
            rows,
            f"Best of {1 if quick else 3}, {steps} steps of batch 32, 1 thread: the ensemble benchmark's reference "
            "networks, initial weights and minibatches, the study's optimizers stepped eagerly on both sides. The "
            "compiled side is `torch.compile` (inductor, CPU) of the forward pass and the loss, whose backward "
            "AOTAutograd compiles, with the study's products as an opaque custom operator (benchmarks/compiled.py). "
            "The compile times are the first step's, each in a new interpreter, as every train job is a fresh "
            "process: with an empty inductor cache, then with the one the first filled; a job of the study takes "
            "3-10 s in all. A loss difference above 0 means the compiled arithmetic (inductor's own loops for the "
            "activations, the loss and their gradients) rounds differently from the study's, so the results "
            "tables would change.")


def bench_stacks(r: Report, tmp: Path, quick: bool) -> None:
    torch.set_num_threads(1)
    study = stacks.study_params()["study"]
    families = 4 if quick else len(study["families"])
    rows = []
    for dataset in ("signal", "moons", "digits"):
        one, all_ = (stacks.member_seconds(tmp, dataset, n) for n in (1, families))
        per = lambda c: 1e3 * (c["training"] + c["evaluation"])  # noqa: E731
        rows.append([dataset, f"K={one['k']}", f"{1e3 * one['training']:.1f}", f"{1e3 * one['evaluation']:.1f}",
                     f"K={all_['k']}", f"{1e3 * all_['training']:.1f}", f"{1e3 * all_['evaluation']:.1f}",
                     f"{per(one) / per(all_):.2f}"])
    r.table("One stack per dataset instead of one per family (ms per member)",
            ["dataset", "one family's stack", "training", "evaluation", f"{families} families' stack", "training",
             "evaluation", "one ÷ all, per member"],
            rows,
            f"One job of l2 as the study runs it (the dataset's epochs, {len(study['seeds'])} seeds, MLflow off), with its grid and with "
            f"the grid repeated {families} times, nudged to stay distinct (benchmarks/stacks.py): the size of one stack "
            "of every family of the study on that dataset. Each job's own timings (run.json) over its members. "
            "A ratio above 1 is what the bigger stack saves per member. The per-epoch evaluation of every member "
            "on its training and validation rows works on tensors that grow with K and leave the caches; and DVC "
            "would cache per dataset, so that editing one family's grid would train every family again.")


def bench_evaluation(r: Report, tmp: Path, quick: bool) -> None:
    study = stacks.study_params()["study"]
    rows, spent = [], {"torch": 0.0, "study": 0.0}
    for dataset in study["datasets"][:2] if quick else study["datasets"]:
        c = evaluation.compare(tmp, dataset, alternations=4 if quick else 20)
        for way in spent:
            spent[way] += c[way] * c["epochs"] / 1e3
        rows.append([dataset, f"K={c['k']}", c["epochs"], f"{c['torch']:.2f}", f"{c['study']:.2f}",
                     f"{c['torch'] / c['study']:.2f}", "yes" if c["same"] else "**no**"])
    rows.append(["one l2 job per dataset (s)", "", "", f"{spent['torch']:.2f}", f"{spent['study']:.2f}",
                 f"{spent['torch'] / spent['study']:.2f}", ""])
    r.table("The per-epoch evaluation: torch's passes against the study's (ms per evaluation of all K members)",
            ["dataset", "members", "epochs", "torch's passes", "the study's", "torch ÷ study", "same numbers"],
            rows,
            "One evaluation of every member of l2's job (untrained, the study's grid, seeds and data) on its "
            "training and validation rows, as after each epoch; the two ways alternated in one process, medians of "
            f"{4 if quick else 20} (benchmarks/evaluation.py). The study's way: the hidden layers' leaky ReLU applied "
            "by the product's kernel, the alive units' max and min and the weight statistics' counts each one pass "
            "in C (regstudy/reductions.py); torch's: `F.leaky_relu` after the product, `amax` and `amin`, a clone, "
            "a comparison and a sum per count. The last row is the evaluation of one l2 job per dataset at the "
            "study's epochs.")


def bench_search(r: Report, tmp: Path, quick: bool) -> None:
    params = stacks.study_params()
    data = tmp / "moons.npz"
    save_npz(data, make_dataset("moons", params["data"]["moons"], [0], params["data"]["seed"]))
    trials, epochs = (8, 10) if quick else (32, params["study"]["by_dataset"]["moons"]["epochs"])
    rows = search.compare(tmp / "search", data, trials, epochs, (4, 8) if quick else (8, 32))
    base = rows[0]["trials_per_s"]
    r.table(f"Search: trials per second ({trials} trials of l2's strength on moons, {epochs} epochs)",
            ["search", "seconds", "trials/s", "× a job per trial", "best val accuracy"],
            [[x["what"], f"{x['seconds']:.1f}", f"{x['trials_per_s']:.2f}", f"{x['trials_per_s'] / base:.2f}",
              f"{x['best']:.3f}"] for x in rows],
            "The same search each way (log-uniform strength in [1e-5, 1], TPE with seed 0, seed 0 "
            "of the data, MLflow on, the learning rate fixed), each timed as the command a user "
            "runs, start-up (about 9 s) included. A batch is proposed from the trials before it "
            "only, so larger batches explore more before exploiting.")


def bench_study(r: Report, tmp: Path) -> None:
    s = study.whole_study(tmp)
    rows = [["`dvc repro` from clean", f"{s['clean_s']:.0f} s", f"{s['stages']} stages ran"],
            ["both cores busy during it", f"{s['cpu_busy']:.0%}",
             "machine-wide CPU time over wall time × cores (/proc/stat)"],
            ["peak resident memory of any process", f"{s['peak_rss'] / 2**30:.2f} GiB",
             s["peak_cmd"][:80]],
            ["MLflow store + artifacts per member run",
             f"{(s['db_bytes'] + s['artifact_bytes']) / s['member_runs'] / 1000:.0f} KB",
             f"{s['db_bytes'] / 1e6:.1f} MB mlflow.db + {s['artifact_bytes'] / 1e6:.1f} MB mlartifacts/, "
             f"{s['member_runs']:,} member runs"],
            ["`dvc repro` again, nothing changed", f"{s['noop_s']:.1f} s",
             f"{len(s['noop_ran'])} stages ran"],
            ["after editing study.strengths.l2", f"{s['edit_s']:.0f} s", ", ".join(s["edit_ran"])]]
    r.table("The whole default study", ["what", "measured", "detail"], rows)


STUDY_PATHS_TITLE = "The whole study on each compute path"
VERDICTS_TITLE = "Verdicts that differ between the two compute paths' studies"
STUDY_PATHS_TARGET = 1.5  # the torch path's whole study at most this many times the exact path's


def bench_study_paths(r: Report, tmp: Path) -> None:
    s = study.study_paths(tmp)
    walls = {path: [run["wall"] for run in s["runs"] if run["compute"] == path] for path in ("exact", "torch")}
    mean = {path: sum(w) / len(w) for path, w in walls.items()}
    ratio = mean["torch"] / mean["exact"]
    rows = [[i + 1, f"`compute={run['compute']}`", f"{run['wall']:.0f}"] for i, run in enumerate(s["runs"])]
    rows.append(["", "torch ÷ exact, means", f"{ratio:.2f}"])
    repeat = "; ".join(f"the two {path} runs differ in {len(d)}" for path, d in s["repeat_differ"].items())
    r.table(STUDY_PATHS_TITLE, ["run", "compute path (`study.overrides`)", "`dvc repro` from clean (s)"], rows,
            f"The whole default study from clean, each run in a fresh clone whose params.yaml adds `compute=<path>` to "
            f"`study.overrides`, the paths alternated. Target: the torch path's study at most {STUDY_PATHS_TARGET}× "
            f"the exact path's: {ratio:.2f}×, {'met' if ratio <= STUDY_PATHS_TARGET else '**not met**'}. Of the "
            f"report's {s['verdicts']} verdicts (findings and claim rows), the two paths' first runs differ in "
            f"{len(s['differ'])} ({sum(d['marked'] for d in s['differ'])} of them marked borderline or fragile by "
            f"either report; listed in the next section); {repeat}.")
    body = [[f"`{d['what']}`", d["a"] or "absent", d["b"] or "absent", "yes" if d["marked"] else "**no**"]
            for d in s["differ"]] or [["none", "", "", ""]]
    r.table(VERDICTS_TITLE, ["verdict", "exact path", "torch path", "marked borderline or fragile"], body,
            "From the runs above (the first of each path): a finding's verdict (reports/findings.json; marked where "
            "its `borderline` is not empty) and a claim row's (reports/claims.json; marked where it has `fragile`). "
            "The study promises its verdicts across machines except those it marks (README, *What is "
            "reproducible*): an unmarked verdict that differs breaks that promise for the two paths.")


# The profile's rows that _rest_of_the_study leaves out (and the floor replaces).
TRAINING_ROW = "train jobs: training steps (incl. Lightning's loop)"
EVALUATION_ROW = "train jobs: per-epoch evaluation"
IDLE_ROW = "train stages: one worker idle at a stage's end"
MLFLOW_ROW = "MLflow (wall with it − wall without it)"


def bench_study_profile(r: Report, tmp: Path) -> None:
    p = study.profile(tmp)
    on, off = p[True], p[False]
    jobs = off["jobs"]  # without MLflow: the jobs' own work; MLflow's part is on top
    train_jobs_wall = sum(jobs.values()) / 2  # two jobs at a time
    rows = [
        ["DVC: stage start-up and lock writes (per stage, warm server found)", off["stage_overhead"]],
        ["imports (the warm server's start, once)", off["imports"]],
        ["generate stage", off["generate"]],
        [TRAINING_ROW, jobs.get("training_steps", 0) / 2],
        [EVALUATION_ROW, jobs.get("evaluation", 0) / 2],
        ["train jobs: set-up, final evaluation, result tables", jobs.get("setup_and_tables", 0) / 2],
        [IDLE_ROW, off["train"] - off["stage_overhead"] - off["imports"] - train_jobs_wall],
        ["report stage (figures, claims, HTML)", off["report"]],
        [MLFLOW_ROW, on["wall"] - off["wall"]],
    ]
    seconds = dict(rows)
    body = [[what, f"{sec:.1f}", f"{sec / on['wall']:.0%}"] for what, sec in rows]
    body.append(["**whole study, MLflow on**", f"{on['wall']:.1f}", "100%"])
    r.table("Where one whole study's time goes", ["part", "seconds (wall)", "share"], body,
            note=(f"Two clean `dvc repro` runs in fresh clones, {on['n_jobs']} train jobs each: without MLflow "
                  f"(`logger.enabled=false`, {off['wall']:.0f} s), whose parts are the rows above MLflow's, and "
                  f"with it ({on['wall']:.0f} s), whose extra time is MLflow's row: its tracking processes' "
                  "work on the cores the jobs share, and what the jobs do for it. The job rows come from each "
                  "job's own timings (results/*/*/run.json), halved: two jobs run at a time. The report stage "
                  f"took {on['report']:.0f} s in the run with MLflow. {_tracking_share(on, off)} "
                  f"{_products_floor(off, seconds[TRAINING_ROW] + seconds[EVALUATION_ROW])} "
                  f"{_rest_of_the_study(rows, on['tracking_cpu'][0], _floor_seconds(off))}"))


def _rest_of_the_study(rows: list, tracking_cpu: float, floor: float) -> str:
    """The study's time if training and evaluation took only their layer products at the
    kernel's rate (``floor``, on both cores) and every other part of ``rows`` stayed as
    measured, with MLflow as its tracking processes' CPU seconds on both cores. The idle
    worker at a stage's end is left out: it shrinks with the jobs."""
    rest = sum(sec for what, sec in rows if what not in (TRAINING_ROW, EVALUATION_ROW, IDLE_ROW, MLFLOW_ROW))
    mlflow = tracking_cpu / 2
    return (f"The parts other than training, evaluation and the idle worker took {rest:.0f} s, and MLflow's "
            f"processes {mlflow:.0f} s of both cores: with training and evaluation at that floor, the study "
            f"would still take {rest + mlflow + floor:.0f} s.")


def _tracking_share(on: dict, off: dict) -> str:
    """MLflow's part measured as CPU time, beside the difference of two walls: the
    tracking processes' own, and the train jobs' own seconds with and without MLflow."""
    cpu, n = on["tracking_cpu"]
    jobs_on, jobs_off = (sum(run["jobs"].values()) for run in (on, off))
    return (f"Measured as CPU time instead: the {n} tracking processes (MLflow's writes, the best models and "
            f"artifacts, in the background) used {cpu:.1f} s of CPU (their last lines in mlflow-tracking.log), "
            f"{cpu / 2:.1f} s of both cores, {cpu / 2 / on['wall']:.0%} of the study's wall time; the train jobs' "
            f"own seconds were {jobs_on:.0f} with MLflow and {jobs_off:.0f} without.")


@functools.cache
def _products_rate() -> float:
    """The study's products at layer size, K=32, one thread (FLOP/s), measured once."""
    torch.set_num_threads(1)
    return limits.batched_rate(32, product=products.product)


def _floor_seconds(run: dict) -> float:
    """The study's layer products (training and per-epoch evaluation) on both cores at
    :func:`_products_rate`."""
    return run["flops"][0] / _products_rate() / 2


def _products_floor(run: dict, measured: float) -> str:
    """What the study's layer products alone would take on both cores at their kernel's
    measured rate: the floor under the training and evaluation rows."""
    flops, member_epochs = run["flops"]
    rate = _products_rate()
    return (f"Its layer products, training and per-epoch evaluation ({flops / 1e12:.2f} TFLOP over "
            f"{member_epochs:,} member-epochs), would take {_floor_seconds(run):.0f} s on both cores at the rate "
            f"of the study's products measured now at layer size ({rate / 1e9:.1f} GFLOP/s, K=32): the floor "
            f"under the training and evaluation rows' {measured:.0f} s.")


def bench_members(r: Report, tmp: Path) -> None:
    families = ["none", "l2", "dropout"]
    rows = study.members_scaling(tmp, families)
    first = rows[0]
    body = []
    for row in rows:
        added = (row["wall"] - first["wall"]) / (row["members"] - first["members"]) if row is not first else None
        body.append([f"{row['multiple']}× ({row['seeds']} seeds)", row["members"], f"{row['wall']:.0f}",
                     f"{row['report']:.0f}", "" if added is None else f"{added * 1000:.0f}"])
    r.table("Study time against members", ["seeds", "members", "`dvc repro` from clean (s)", "of which report (s)",
                                            "ms per added member"], body,
            note=(f"A smaller study (families {', '.join(families)}, the two SGD controls, every dataset) "
                  "from clean in a fresh clone, MLflow on, at 1, 2 and 4 times the default seeds."))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-study", action="store_true")
    parser.add_argument("--only", action="append", choices=ONLY, default=[],
                        help="these sections alone (repeat for more), replacing those of an existing --out")
    parser.add_argument("--only-study", action="append_const", dest="only", const="study",
                        help="the same as --only study")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    start = time.perf_counter()
    header = machine()
    print("\n".join(header))
    r = Report()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.only:
            data = signal_data(tmp, args.quick)
            tput = bench_throughput(r, data, tmp, args.quick)
            bench_limit(r, tput, data)
            bench_logging(r, data, tmp, args.quick)
            bench_scaling(r, data, tmp, args.quick)
            bench_profile(r, data, tmp, Path(args.out).with_name("PROFILE.txt"))
            bench_ensemble(r, args.quick)
        if not args.only or "compute" in args.only:
            bench_compute(r, signal_data(tmp, args.quick), tmp, args.quick)
        if not args.only or "compile" in args.only:
            bench_compile(r, args.quick)
        if not args.only or "stacks" in args.only:
            bench_stacks(r, tmp, args.quick)
        if not args.only or "evaluation" in args.only:
            bench_evaluation(r, tmp, args.quick)
        if not args.only:
            bench_search(r, tmp, args.quick)
        if (not args.only and not args.skip_study) or "study" in args.only:
            bench_study(r, tmp)
            bench_study_profile(r, tmp)
            bench_members(r, tmp)
        if "study-paths" in args.only:  # about 20 minutes: never part of a whole run
            bench_study_paths(r, tmp)
    total = time.perf_counter() - start
    out = Path(args.out)
    if args.only and out.exists():
        only = " ".join(f"--only {name}" for name in dict.fromkeys(args.only))
        write_sections(out, r.sections, f"re-measured alone by `python -m benchmarks.run {only}` "
                                        f"({total:.0f} s), load average at its start {header[-1].split(': ')[1]}")
    else:
        lines = ["# Benchmark results", "", "Written by `make bench` (`python -m benchmarks.run`).", "",
                 *header, f"- suite wall time: {total:.0f} s", ""]
        for title, body in r.sections:
            lines += [f"## {title}", "", *body, ""]
        # Sections this run does not measure (the history, one-off measurements) are kept.
        measured = {title for title, _ in r.sections}
        kept = [part for part in (out.read_text().split("\n## ")[1:] if out.exists() else [])
                if part.split("\n", 1)[0] not in measured]
        out.write_text("\n## ".join(["\n".join(lines).rstrip("\n") + "\n", *kept]) if kept else "\n".join(lines))
    print(f"\nwrote {out} ({total:.0f} s)")


def write_sections(path: Path, sections: list[tuple[str, list[str]]], note: str) -> None:
    """Replace the sections of ``path`` (a RESULTS.md) that ``sections`` has anew, each
    marked with ``note``; the other sections stay as they were measured."""
    text = path.read_text()
    head, *parts = text.split("\n## ")
    old = {part.split("\n", 1)[0]: part for part in parts}
    for title, body in sections:
        old[title] = "\n".join([title, "", *body, "", f"({note}.)", ""])
    path.write_text("\n## ".join([head, *old.values()]))


if __name__ == "__main__":
    main()
