"""DVC experiments as a user runs them, on a tiny study in a temporary git + DVC repo
(docs/experiments.md): `dvc exp run -S` twice with different seeds and the compare command
on the two; `dvc exp show` with the documented flags fits a screen; `dvc metrics show`
lists the headline only; queued experiments run with `dvc queue start -j 1`; after a
one-family change `dvc metrics diff` lists only headline values, those that moved.

Real DVC, real training (two datasets, four families, 100-200 epochs of an 8x8 network),
real report: about 2 minutes on 2 cores (113 s measured alone, 222 s beside another pytest)."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import copy_project, run, tiny_dvc_yaml
from regstudy_report.headline import EXP_SHOW_FLAGS, MAX_VALUES, count_values, flat_keys

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DATASETS = ["signal", "moons"]
FAMILIES = ["none", "l2", "dropout", "noise"]
STRENGTHS = {"none": [0.0], "l2": [0.0, 1e-3, 1e-2, 1e-1], "dropout": [0.0, 0.2, 0.5], "noise": [0.0, 0.2, 1.0]}
SEEDS_A, SEEDS_B = [0, 1, 2, 3], [4, 5, 6, 7]  # two draws of everything: some verdicts differ
DVC = [sys.executable, "-m", "dvc"]
MAX_COLUMNS = 60


def tiny_params() -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"] = {"seed": 0, "signal": {**params["data"]["signal"], "n_train": 30, "n_val": 40, "n_test": 60},
                      "moons": {**params["data"]["moons"], "n_train": 60, "n_val": 40, "n_test": 60}}
    params["csv"] = {}
    params["study"].update(datasets=DATASETS, families=FAMILIES, seeds=SEEDS_A, strengths=STRENGTHS,
                           by_dataset={"signal": {"epochs": 200, "overrides": ["optim.lr=4.0e-3"]},
                                       "moons": {"epochs": 100, "overrides": []}},
                           controls={"datasets": [], "families": [], "overrides": []},
                           overrides=["model.hidden=[8,8]", "metrics.grid_size=20", "metrics.grid_size_2d=8"])
    return params


def git_commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message], repo)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """The tiny study committed, nothing run yet."""
    repo = tmp_path_factory.mktemp("experiments")
    copy_project(repo)
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    (repo / "dvc.yaml").write_text(tiny_dvc_yaml((repo / "dvc.yaml").read_text(),
                                                 ("sparse", "digits", "diabetes", "breast_cancer")))
    run(["git", "init", "-q"], repo)
    run([*DVC, "init", "-q"], repo)
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")
    git_commit(repo, "study")
    return repo


def read_at(repo: Path, path: str, rev: str) -> dict:
    import dvc.api

    return json.loads(dvc.api.read(path, repo=str(repo), rev=rev))


def verdicts_at(repo: Path, rev: str) -> dict[str, str]:
    """Every finding's and claim row's verdict at ``rev``, by the compare command's names."""
    findings, claims = read_at(repo, "reports/findings.json", rev), read_at(repo, "reports/claims.json", rev)
    out = {f"finding {d} {f}": e["verdict"] for d, by in findings["findings"].items() for f, e in by.items()}
    out.update({f"claim {c} {k}": e["verdict"] for c, by in claims.items() if isinstance(by, dict) and c != "verdicts"
                for k, e in by.items()})
    return out


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def test_compare_names_exactly_the_verdicts_two_seeded_experiments_differ_in(study):
    run([*DVC, "exp", "run", "-n", "a"], study)
    run([*DVC, "exp", "run", "-n", "b", "-S", f"study.seeds={SEEDS_B}"], study)
    assert read_at(study, "reports/findings.json", "b")["datasets"]["moons"]["seeds"] == len(SEEDS_B)
    before, after = verdicts_at(study, "a"), verdicts_at(study, "b")
    assert before.keys() == after.keys()
    differ = {name for name in before if before[name] != after[name]}
    assert differ, "the two seed sets give the same verdicts: choose seeds that differ somewhere"

    lines = run([sys.executable, "-m", "regstudy_report.compare", "a", "b"], study).stdout.splitlines()
    assert lines[-1] == f"{len(differ)} verdict{'s' if len(differ) != 1 else ''} changed"
    named = {line.split(": ", 1)[0]: line for line in lines[:-1]}
    assert set(named) == differ and len(named) == len(lines) - 1  # those, each once, nothing else
    for name, line in named.items():
        assert f": {before[name]} -> {after[name]} (" in line
    findings = read_at(study, "reports/findings.json", "a")["findings"]
    for name in (n for n in differ if n.startswith("finding ")):
        _, dataset, family = name.split()
        assert ("effect n/a" if findings[dataset][family]["effect"] is None else "effect ") in named[name]

    # the same study on both sides, the working tree by name; a revision that is none
    same = run([sys.executable, "-m", "regstudy_report.compare", "b", "workspace"], study).stdout
    assert same == "0 verdicts changed\n"
    bad = subprocess.run([sys.executable, "-m", "regstudy_report.compare", "a", "no-such-exp"], cwd=study,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stdout == ""
    assert "'no-such-exp'" in bad.stderr and "DVC experiment name" in bad.stderr


def test_the_documented_exp_show_fits_a_screen_and_metrics_are_the_headline(study):
    """Experiments a and b of the test before, the workspace and the commit: the flags of
    headline.EXP_SHOW_FLAGS leave at most 60 columns (every dataset's verdicts and best
    family among them, no dependency hash); `dvc metrics show` reads metrics.json only."""
    shown = run([*DVC, "exp", "show", "--csv", *EXP_SHOW_FLAGS], study).stdout
    header = next(csv.reader(io.StringIO(shown)))
    everything = next(csv.reader(io.StringIO(run([*DVC, "exp", "show", "--csv"], study).stdout)))
    print(f"dvc exp show: {len(everything)} columns; with {' '.join(EXP_SHOW_FLAGS)}: {len(header)}")
    assert len(header) <= MAX_COLUMNS < len(everything)
    assert {f"{d}.{k}" for d in DATASETS for k in ("verdicts", "best_family")} <= set(header)
    assert "study.seeds" in header  # the param a and b differ in
    assert not any(c.startswith(("data/", "src/", "conf/", "results")) or c == "data" for c in header)

    metrics = json.loads(run([*DVC, "metrics", "show", "--json"], study).stdout)
    files = next(iter(metrics.values()))["data"]
    assert set(files) == {"reports/metrics.json"}  # claims.json and findings.json are outs, not metrics
    written = json.loads((study / "reports" / "metrics.json").read_text())
    assert count_values(written) == 4 * len(DATASETS) + 13 <= MAX_VALUES
    shown = flat_keys(files["reports/metrics.json"]["data"])
    assert shown == {k: v for k, v in flat_keys(written).items() if v is not None}  # DVC leaves nulls out


def test_queued_experiments_run_one_at_a_time(study):
    """Experiment a committed (`dvc exp apply`), two report settings queued and run by one
    worker: each runs the check and the report only (the trained families come from
    DVC's cache)."""
    run([*DVC, "exp", "apply", "a"], study)
    git_commit(study, "experiment a")
    queued = {"strict": 0.01, "loose": 0.1}
    for name, alpha in queued.items():
        run([*DVC, "exp", "run", "--queue", "-n", name, "-S", f"report.alpha={alpha}"], study)
    run([*DVC, "queue", "start", "-j", "1"], study)
    deadline = time.monotonic() + 240
    try:
        status = run([*DVC, "queue", "status"], study).stdout
        while re.search(r"\b(Queued|Running)\b", status) and time.monotonic() < deadline:
            time.sleep(2)
            status = run([*DVC, "queue", "status"], study).stdout
    finally:
        subprocess.run([*DVC, "queue", "stop"], cwd=study, capture_output=True)
    done = dict(re.findall(r"^\w+\s+(\w+)\s.*\b(Success|Failed|Queued|Running)\b", status, re.M))
    assert done == dict.fromkeys(queued, "Success"), status
    for name, alpha in queued.items():
        assert read_at(study, "reports/findings.json", name)["settings"]["alpha"] == alpha
    log = run([*DVC, "queue", "logs", "strict"], study).stdout
    assert ran_stages(log) == {"check", "report"}, log


def test_metrics_diff_after_a_one_family_change_lists_only_headline_values_that_moved(study):
    """dropout's grid without its 0 (the committed study chose p = 0): train@dropout and the
    report run again, nothing else trains; `dvc metrics diff` names metrics.json only,
    each key a headline key whose value moved."""
    done = run([*DVC, "exp", "run", "-S", "study.strengths.dropout=[0.2,0.5]"], study).stdout
    assert ran_stages(done) == {"check", "train@dropout", "report"}
    diff = json.loads(run([*DVC, "metrics", "diff", "--json"], study).stdout)
    assert set(diff) == {"reports/metrics.json"}
    listed = diff["reports/metrics.json"]
    old = flat_keys(read_at(study, "reports/metrics.json", "HEAD"))
    new = flat_keys(json.loads((study / "reports" / "metrics.json").read_text()))
    moved = {key for key in old if old[key] != new[key]}
    assert "study.members" in moved  # dropout trained one strength fewer
    assert set(listed) == moved
    assert all(listed[k]["old"] == old[k] and listed[k]["new"] == new[k] for k in listed)
