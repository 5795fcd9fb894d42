"""The whole default study through `dvc repro`: from clean, again unchanged, after one edit.

Run in a fresh clone (a temporary git repo holding the committed project), so nothing
of the working tree is reused. Peak memory is the largest resident set of any process
of the study (stages are forked from the warm server, outside `dvc`'s process tree, so
every process whose command line mentions regstudy or dvc is sampled from /proc).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


class PeakMemory:
    """Samples /proc every 0.1 s; ``peak`` is the largest RSS (bytes) and its command."""

    def __init__(self, pattern: str = r"regstudy|dvc"):
        self.pattern, self.peak, self.command = re.compile(pattern), 0, ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.wait(0.1):
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                    if not self.pattern.search(cmd) or "benchmarks" in cmd:
                        continue
                    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
                except (OSError, ValueError, IndexError):
                    continue
                if rss > self.peak:
                    self.peak, self.command = rss, cmd.strip()

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _run(cmd: list[str], cwd: Path) -> tuple[float, str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed, proc.stdout


def ran_stages(stdout: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", stdout)


def clone(tmp: Path) -> Path:
    repo = tmp / "study"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    return repo


def whole_study(tmp: Path) -> dict:
    """Wall time and peak memory of `dvc repro` from clean, unchanged, and after an edit."""
    repo = clone(tmp)
    dvc = [sys.executable, "-m", "dvc"]
    busy0, total0 = cpu_times()
    with PeakMemory() as mem:
        clean, out = _run([*dvc, "repro"], repo)
    busy1, total1 = cpu_times()
    stages = ran_stages(out)
    noop, out_noop = _run([*dvc, "repro"], repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["study"]["strengths"]["l2"] = [*params["study"]["strengths"]["l2"], 3.0]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    edit, out_edit = _run([*dvc, "repro"], repo)
    return {"clean_s": clean, "stages": len(stages), "peak_rss": mem.peak, "peak_cmd": mem.command,
            "cpu_busy": (busy1 - busy0) / (total1 - total0),
            "noop_s": noop, "noop_ran": ran_stages(out_noop), "edit_s": edit,
            "edit_ran": ran_stages(out_edit)}
