"""The committed dvc.lock matches the committed sources, configs and params: a fresh
clone's `dvc repro` (or `dvc pull` and `dvc repro`) has nothing to re-run for them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import CPU, run

ROOT = Path(__file__).resolve().parents[1]


def generated(path: str, outs: set[str]) -> bool:
    """Whether ``path`` is (or holds) another stage's output: in a fresh clone it is not
    there yet (``data/`` holds only its .gitignore), which is not staleness."""
    return any(out == path or out.startswith(path.rstrip("/") + "/") for out in outs)


def stage_outs() -> set[str]:
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    return {out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def stale_entries(status: dict, outs: set[str] = frozenset()) -> list[str]:
    """Deps, params or commands that differ from dvc.lock. Missing outputs are not stale:
    in a fresh clone the stages' outputs (and so the data the train stages read) are
    simply not there yet."""
    stale = []
    for stage, changes in status.items():
        for change in changes if isinstance(changes, list) else []:
            if not isinstance(change, dict):
                stale.append(f"{stage}: {change}")
                continue
            for kind, items in change.items():
                if kind == "changed outs":
                    continue
                for path, what in (items.items() if isinstance(items, dict) else [(items, "changed")]):
                    if isinstance(what, dict):  # params: {file: {key: status}}
                        stale += [f"{stage}: {kind} {path}:{k} {v}" for k, v in what.items()]
                    elif what not in ("deleted", "not in cache") and not generated(path, outs):
                        stale.append(f"{stage}: {kind} {path} {what}")
    return stale


def test_the_lock_is_not_stale_against_the_sources():
    proc = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    stale = stale_entries(json.loads(proc.stdout or "{}"), stage_outs())
    assert not stale, "dvc.lock is stale (run `dvc repro` and commit dvc.lock):\n" + "\n".join(stale)


def test_the_committed_baseline_comes_out_the_same_bytes_on_this_cpu(tmp_path):
    """The kernels' pin (regstudy.kernels) holds here: the data and the baseline family's
    results, re-made from the committed sources on this machine, hash as in the committed
    dvc.lock, whichever x86 CPU made that. (Under the earlier pin, MKL's AVX2 branch, an
    AMD EPYC's MKL ran another branch than an Intel Xeon's, and every hash differed.)"""
    for name in ("dvc.yaml", ".dvcignore", ".gitignore", "params.yaml", "dvc.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    for name in ("conf", "src"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                [sys.executable, "-m", "dvc", "repro", "train@none"]):
        run(cmd, tmp_path)

    def outs(lock: Path) -> dict[str, str]:
        stages = yaml.safe_load(lock.read_text())["stages"]
        return {o["path"]: o["md5"] for s in ("generate", "train@none") for o in stages[s]["outs"]}

    committed, here = outs(ROOT / "dvc.lock"), outs(tmp_path / "dvc.lock")
    differ = [f"{path}: committed {committed[path]}, here {here[path]}" for path in committed
              if here[path] != committed[path]]
    kernels = json.loads((tmp_path / "results" / "none" / "signal" / "run.json").read_text())["kernels"]
    assert not differ, (f"on {CPU['model']} ({kernels}) the committed study comes out other bytes "
                        "(or dvc.lock was not re-made after a change of its numbers):\n" + "\n".join(differ))
