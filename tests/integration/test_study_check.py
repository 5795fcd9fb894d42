"""The whole study checked before anything runs (issue 32, defect 4): the `check` stage
(`python -m regstudy.stages.check`) names the params.yaml key, its value and what is
allowed, exits 2 and writes nothing; `dvc repro` then stops before any stage deletes
its outputs."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]


def small_params() -> dict:
    """The project's params.yaml cut to two datasets and two families (fewer jobs to compose)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    study = params["study"]
    study.update(datasets=["signal", "moons"], families=["l2", "label_smoothing"],
                 by_dataset={d: study["by_dataset"][d] for d in ("signal", "moons")})
    study["strengths"] = {f: study["strengths"][f] for f in ("l2", "label_smoothing", "l2_sgd", "weight_decay_sgd")}
    return params


def check(tmp_path: Path, params: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "regstudy.stages.check", "--params", str(path),
                           "--out", str(tmp_path / "data" / ".study-checked")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_projects_study_checks_out(tmp_path):
    done = check(tmp_path, small_params())
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data" / ".study-checked").read_text() == check_text()


def check_text() -> str:
    from regstudy.stages.check import CHECKED

    return CHECKED


def edit(params: dict, path: str, value) -> dict:
    """A copy of ``params`` with the value at ``a.b.c`` (list indices as ``[i]``) replaced."""
    out = copy.deepcopy(params)
    node, keys = out, path.split(".")
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return out


@pytest.mark.parametrize("path, value, message", [
    ("study.datasets", ["signal", "moonz"], "study.datasets[1]='moonz' in params.yaml; allowed: a built-in dataset of data"),
    ("study.by_dataset.moons.epochs", "eighty", "study.by_dataset.moons.epochs='eighty' in params.yaml; "
                                                "allowed: an integer >= 1"),
    ("study.families", ["l2", "l3"], "study.families[1]='l3' in params.yaml; allowed: a family of conf/experiment"),
    ("study.strengths.l2", [], "study.strengths.l2=[] in params.yaml; allowed: a non-empty list of numbers"),
    ("study.colour", "red", "study.colour='red' in params.yaml; allowed: one of the keys"),
    ("study.by_dataset.moons.epoch", 80, "study.by_dataset.moons.epoch=80 in params.yaml; allowed: one of the keys"),
    ("study.by_dataset.moons.seeds", [0, 0], "study.by_dataset.moons.seeds=[0, 0] in params.yaml"),
    ("study.overrides", ["trainer.bogus=1"], "study.overrides[0]='trainer.bogus=1' in params.yaml; "
                                             "allowed: a valid Hydra override"),
    ("study.by_dataset.signal.overrides", ["optim.lr=-1"], "study.by_dataset.signal.overrides[0]='optim.lr=-1'"),
    ("study.overrides", ["compute=fast"], "study.overrides[0]='compute=fast'"),
    ("report.alpha", 2, "report.alpha=2 in params.yaml; allowed: a number in (0, 0.5)"),
    ("data.moons.n_train", "many", "data.moons="),
    ("csv", {"mine": {"path": "data/raw/missing.csv", "target": "y"}}, "csv.mine="),
    ("paramz", 1, "paramz=Ellipsis"),
])
def test_a_bad_value_is_named_by_its_params_key(tmp_path, path, value, message):
    from regstudy.paths import CONFIG_DIR
    from regstudy.stages.check import check as check_study

    params = small_params()
    if path == "paramz":
        params["paramz"] = 1
        message = "paramz='...' in params.yaml; allowed: one of the keys"
    else:
        params = edit(params, path, value)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    problems = [str(p) for p in check_study(tmp_path / "params.yaml", CONFIG_DIR, tmp_path)]
    assert any(message in p for p in problems), problems


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="a GPU is here")
def test_a_gpu_asked_for_where_there_is_none_stops_the_study_before_it_trains(tmp_path):
    from regstudy.paths import CONFIG_DIR
    from regstudy.stages.check import check as check_study

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(edit(small_params(), "study.overrides",
                                                              ["trainer.accelerator=gpu"]), sort_keys=False))
    problems = [str(p) for p in check_study(tmp_path / "params.yaml", CONFIG_DIR, tmp_path)]
    assert any("study.overrides[0]='trainer.accelerator=gpu'" in p and "no CUDA or MPS device" in p
               for p in problems), problems


def test_the_stage_reports_every_problem_at_once_exits_2_and_writes_nothing(tmp_path):
    params = edit(edit(small_params(), "study.by_dataset.moons.epochs", "eighty"), "report.power", 2)
    done = check(tmp_path, params)
    assert done.returncode == 2
    assert "error: study.by_dataset.moons.epochs='eighty' in params.yaml; allowed: an integer >= 1" in done.stderr
    assert "error: report.power=2 in params.yaml" in done.stderr
    assert "2 problems in" in done.stderr and "nothing was run" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "data" / ".study-checked").exists()


@pytest.mark.parametrize("entry, message", [
    ({"path": "mine.csv", "target": "y"}, "csv.mine.epochs=None in params.yaml; allowed: an integer >= 1"),
    ({"path": "mine.csv", "target": "y", "epochs": 3, "colour": "red"}, "csv.mine.colour='red' in params.yaml"),
    ({"path": "mine.csv", "target": "y", "epochs": 3, "seeds": [1, 1]}, "csv.mine.seeds=[1, 1] in params.yaml"),
    ({"path": "mine.csv", "target": "y", "epochs": 3, "overrides": ["optim.lr=-1"]},
     "csv.mine.overrides[0]='optim.lr=-1' in params.yaml"),
    ({"path": "mine.csv", "target": "z", "epochs": 3}, "csv.mine="),
])
def test_a_csv_files_study_is_checked_under_its_own_entry(tmp_path, entry, message):
    """A CSV file is studied by its own stage, with the epochs, overrides and seeds of its
    entry: each is named by its key under csv.<name>."""
    from regstudy.paths import CONFIG_DIR
    from regstudy.stages.check import check as check_study

    (tmp_path / "mine.csv").write_text("a,b,y\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(40)))
    params = small_params()
    params["csv"] = {"mine": entry}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    problems = [str(p) for p in check_study(tmp_path / "params.yaml", CONFIG_DIR, tmp_path)]
    assert any(message in p for p in problems), problems
    params["csv"]["mine"] = {"path": "mine.csv", "target": "y", "epochs": 3}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert check_study(tmp_path / "params.yaml", CONFIG_DIR, tmp_path) == []
    params["study"]["datasets"] = ["signal", "moons", "mine"]  # the old way: in the built-in list
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    problems = [str(p) for p in check_study(tmp_path / "params.yaml", CONFIG_DIR, tmp_path)]
    assert problems == ["study.datasets[2]='mine' in params.yaml; allowed: a built-in dataset of data: one of "
                        "['signal', 'moons', 'sparse', 'digits', 'diabetes', 'breast_cancer'] (csv.mine is studied "
                        "by its own stage train_csv@mine, with its epochs in csv.mine.epochs: leave it out of "
                        "study.datasets)"]
