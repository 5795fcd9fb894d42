"""The guide ``docs/add-a-regularizer.md`` holds: its diff is the example file, applies to
this tree, and the regularizer it adds trains, with a penalty, and passes the registry test.

The last test copies the repository's files (tracked, and new ones git does not ignore)
to a temporary folder, applies the diff with ``git apply`` there, and runs the real
``regstudy-train`` and pytest on the copy (its ``src`` first on ``PYTHONPATH``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import regstudy
from regstudy.data import make_dataset, save_npz
from regstudy.regularizers import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "add-a-regularizer.md"
DIFF = ROOT / "docs" / "examples" / "add-a-regularizer.diff"
MOONS = dict(n_train=48, n_val=24, n_test=24, noise=0.3)
GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None or not (ROOT / ".git").exists(),
                               reason="needs git and a git checkout of the repository")


def code_block(text: str, lang: str) -> str:
    match = re.search(rf"^```{lang}\n(.*?)^```$", text, flags=re.S | re.M)
    assert match, f"no ```{lang} block in {PAGE.name}"
    return match.group(1)


def test_the_pages_diff_is_the_example_file():
    assert code_block(PAGE.read_text(), "diff") == DIFF.read_text()


def test_the_pages_table_is_the_registry():
    lines = PAGE.read_text().splitlines()
    start = lines.index("| name | kind | phase | layers | strength | acts on |") + 2
    rows = lines[start:start + lines[start:].index("")]
    expected = [f"| `{n}` | {r.kind.value} | `{r.default_phase.name}`"
                f"{' (`AFTER_STEP` with `proximal: true`)' if r.has_proximal_step else ''} | "
                f"{r.layers.value} | `{r.strength_key}` | {r.acts_on} |" for n, r in REGISTRY.items()]
    assert rows == expected


@needs_git
def test_the_diff_applies_to_this_tree():
    """``git apply --check`` reads the tree and changes nothing."""
    proc = subprocess.run([GIT, "apply", "--check", str(DIFF)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def copy_of_the_repository(dest: Path) -> Path:
    """The files of the working tree that git tracks or would track, with the compiled
    extension (built in place, ignored by git) beside them."""
    names = subprocess.run([GIT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():  # a file deleted in the working tree is still in the index
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    package = Path(regstudy.__file__).parent
    for ext in package.glob("_products*.so"):
        shutil.copy2(ext, dest / "src" / "regstudy" / ext.name)
    return dest


def in_copy(cmd: list[str], root: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root / "src"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("REGSTUDY_CONF", None)
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@needs_git
def test_the_guides_regularizer_trains_with_a_penalty_and_passes_the_registry_test(tmp_path):
    root = copy_of_the_repository(tmp_path / "repo")
    in_copy([GIT, "apply", str(DIFF)], root)
    registry_tests = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-m", "not slow",
                      "tests/unit/test_registry.py", "tests/unit/test_penalties.py", "-k", "registry or parts or orthogonality"]
    proc = in_copy(registry_tests, root)
    assert "test_every_registered_regularizer_has_all_its_parts PASSED" in proc.stdout
    assert "test_orthogonality_penalty_matches_hand_computation PASSED" in proc.stdout

    save_npz(root / "data" / "moons.npz", make_dataset("moons", MOONS, seeds=[0]))
    in_copy(["regstudy-train", "experiment=orthogonality", "data=moons", "trainer.max_epochs=2",
             "members.strengths=[0.0,0.1]", "logger=none", f"hydra.run.dir={tmp_path / 'job'}"], root)
    members = pd.read_csv(tmp_path / "job" / "results" / "members.csv")
    assert members["family"].tolist() == ["orthogonality"] * 2
    assert members["penalty"].tolist()[0] == 0.0
    assert members["penalty"].tolist()[1] > 0.1  # ||W^T W - I||^2 of 64-unit layers at lam = 0.1
    assert members["train_loss"][0] != members["train_loss"][1]

    # the same regularizer without its experiment: the registry test fails, naming it
    (root / "conf" / "experiment" / "orthogonality.yaml").unlink()
    proc = in_copy(registry_tests[:-2] + ["-k", "has_all_its_parts"], root, check=False)
    assert proc.returncode == 1
    assert ("regularizer 'orthogonality': no conf/experiment/*.yaml sweeps it (members.sweep: orthogonality)"
            in proc.stdout)
