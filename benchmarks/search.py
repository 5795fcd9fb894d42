"""Trials per second: the batched stacked search against one job per trial.

The same search every way: l2's strength on moons, log-uniform in [1e-5, 1], TPE with
seed 0, the study's epochs and seed 0, MLflow on, one process on one torch thread.
``python -m regstudy.search`` with a batch of 1 trains one job per trial (what Hydra's
Optuna sweeper did); larger batches train each batch of trials as one stacked job. Each is
timed as the command a user runs (start-up included), so trials/s is what a user sees.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


from benchmarks import user_env

HERE = Path(__file__).resolve().parent


def _run(cwd: Path, module: str, *args: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=user_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def compare(tmp: Path, data: Path, trials: int = 32, epochs: int = 80, batches=(8, 32)) -> list[dict]:
    """[{what, seconds, trials_per_s, best}] for one job per trial and each batch size."""
    common = ["experiment=l2", "data=moons", f"data.path={data}", f"trainer.max_epochs={epochs}",
              "members.seeds=[0]", "logger.log_figures=false"]
    out = []
    for k in (1, *batches):
        root = tmp / f"batched-{k}"
        root.mkdir(parents=True)
        s = _run(root, "regstudy.search", f"search.trials={trials}", f"search.batch={k}", *common)
        import pandas as pd

        best = pd.read_csv(next(root.glob("outputs/search/*/*/*/trials.csv"))).value.max()
        what = "a job per trial (batch of 1)" if k == 1 else f"batch of {k} (one stacked job per batch)"
        out.append({"what": f"regstudy.search, {what}", "seconds": s, "trials_per_s": trials / s, "best": float(best)})
    return out


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        for row in compare(Path(d), HERE.parent / "data" / "moons.npz"):
            print(row)
