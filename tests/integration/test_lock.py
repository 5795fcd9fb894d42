"""The committed dvc.lock matches the committed sources, configs and params: a fresh
clone's `dvc repro` (or `dvc pull` and `dvc repro`) has nothing to re-run for them.

Its output hashes are the machine's that made them: another CPU rounds differently in
the last bits and makes other bytes (the verdicts are what is promised across machines:
tests/integration/test_reproducible_verdicts.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


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
