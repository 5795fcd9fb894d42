"""What a job's runs record about it: its config as params (flattened), the subset each
member repeats, and the code's git commit."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit(root: Path) -> str:
    """HEAD's commit id (with ``-dirty`` if the tree has changes), or ``unknown``."""
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=root, capture_output=True,  # noqa: E731
                                        text=True, check=True).stdout.strip()
        commit = run("rev-parse", "HEAD")
        return commit + ("-dirty" if run("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; lists are kept whole as strings."""
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)[:6000]
    return out


# The params of a member's run: what tells members apart and what a reader filters by.
# Its parent run has the whole config (and every run has config.yaml as an artifact):
# each param is a row of the store, and copying all of them to every member doubled
# the cost of opening its runs.
MEMBER_PARAMS = ("family", "data.name", "data.task", "data.batch_size", "model.hidden",
                 "model.activation", "model.norm", "optim._target_", "optim.lr",
                 "trainer.max_epochs", "regularizer.")


def member_params(params: dict[str, str]) -> dict[str, str]:
    """The config params a member's run repeats: :data:`MEMBER_PARAMS` (a key, or a
    prefix ending in ``.``), leaving out regularizers that are off."""
    return {k: v for k, v in params.items()
            if any(k == p or (p.endswith(".") and k.startswith(p)) for p in MEMBER_PARAMS)
            and not (k.startswith("regularizer.") and v == "None")}
