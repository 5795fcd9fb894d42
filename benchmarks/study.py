"""The whole default study through `dvc repro`: from clean, again unchanged, after one edit.

Run in a fresh clone (a temporary git repo holding the committed project), so nothing
of the working tree is reused. Peak memory is the largest resident set of any process
of the study (stages are forked from the warm server, outside `dvc`'s process tree, so
every process whose command line mentions regstudy or dvc is sampled from /proc).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from benchmarks import limits, user_env

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
    elapsed, lines = _run_timed(cmd, cwd)
    return elapsed, "".join(line for _, line in lines)


def _run_timed(cmd: list[str], cwd: Path) -> tuple[float, list[tuple[float, str]]]:
    """Run ``cmd``; its wall time and each stdout line with the time it came (from the start).

    Its temporary folder (TMPDIR) is the clone's own, so each clone starts its own warm
    server (regstudy.warm keeps its socket there), as a study on a fresh machine does: two
    clones of the same code would otherwise share the first one's server and its imports."""
    tmpdir = cwd.parent / f"{cwd.name}-tmp"
    tmpdir.mkdir(exist_ok=True)
    env = user_env(PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", TMPDIR=str(tmpdir))
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    reader.start()
    lines = [(time.perf_counter() - start, line) for line in proc.stdout]
    proc.wait()
    reader.join()
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        out = "".join(line for _, line in lines)
        raise RuntimeError(f"{cmd} failed:\n{out[-3000:]}\n{''.join(err)[-3000:]}")
    return elapsed, lines


STAGE_LINE = r"Running stage '([^']+)'"  # what `dvc repro` prints as each stage starts


def ran_stages(stdout: str) -> list[str]:
    return re.findall(STAGE_LINE, stdout)


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
    store = store_size(repo)
    noop, out_noop = _run([*dvc, "repro"], repo)
    edit_params(repo, lambda p: p["study"]["strengths"].update(l2=[*p["study"]["strengths"]["l2"], 3.0]))
    edit, out_edit = _run([*dvc, "repro"], repo)
    return {"clean_s": clean, "stages": len(stages), "peak_rss": mem.peak, "peak_cmd": mem.command,
            "cpu_busy": (busy1 - busy0) / (total1 - total0), **store,
            "noop_s": noop, "noop_ran": ran_stages(out_noop), "edit_s": edit,
            "edit_ran": ran_stages(out_edit)}


def store_size(repo: Path) -> dict:
    """Bytes of the study's MLflow store (``mlflow.db``) and artifacts (``mlartifacts/``),
    and its member runs (the runs with a parent: one per member, under one run per job)."""
    if not (repo / "mlflow.db").is_file():
        raise RuntimeError(f"the study in {repo} wrote no MLflow store there (its runs went elsewhere)")
    files = [f for f in (repo / "mlartifacts").rglob("*") if f.is_file()]
    with sqlite3.connect(repo / "mlflow.db") as db:
        (members,) = db.execute("SELECT count(*) FROM tags WHERE key = 'mlflow.parentRunId'").fetchone()
    return {"db_bytes": (repo / "mlflow.db").stat().st_size, "artifact_bytes": sum(f.stat().st_size for f in files),
            "member_runs": members}


def edit_params(repo: Path, edit) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    edit(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def stage_spans(lines: list[tuple[float, str]], end: float) -> list[dict]:
    """Each stage DVC ran: its start and end (the next stage's start) and its jobs' spans
    (a job line "... in 4.2 s ..." ends at its arrival)."""
    stages: list[dict] = []
    for t, line in lines:
        m = re.match(STAGE_LINE, line)
        if m:
            stages.append({"name": m.group(1), "start": t, "jobs": []})
        m = re.search(r"members in ([\d.]+) s", line)
        if m and stages:
            stages[-1]["jobs"].append((t - float(m.group(1)), t))
    for i, stage in enumerate(stages):
        stage["end"] = stages[i + 1]["start"] if i + 1 < len(stages) else end
    return stages


def job_seconds(repo: Path) -> dict[str, float]:
    """The train jobs' own timings (run.json), summed over the study."""
    total: dict[str, float] = {}
    for run in (repo / "results").glob("*/*/run.json"):
        for key, value in json.loads(run.read_text()).get("seconds", {}).items():
            total[key] = total.get(key, 0.0) + value
    return total


def tracking_cpu(repo: Path) -> tuple[float, int]:
    """CPU seconds of a study's tracking processes (MLflow's work in the background, one
    per train job), summed from their last lines in ``mlflow-tracking.log``, and how many."""
    from regstudy.tracking import CPU_LINE

    log = repo / "mlflow-tracking.log"
    found = re.findall(rf"^{CPU_LINE} .*, (\d+\.\d+) s CPU$", log.read_text() if log.exists() else "", re.M)
    return sum(map(float, found)), len(found)


def profile(tmp: Path) -> dict:
    """Where one whole study's wall time goes, from two clean `dvc repro` runs in fresh
    clones: with MLflow (as the study runs) and without (``logger.enabled=false``).

    The train stages run two jobs at a time, so a job-second is half a second of wall
    time; the MLflow share is the difference of the two runs' wall times.
    """
    out = {}
    for logging in (True, False):
        repo = clone(tmp / f"profile-{logging}")
        if not logging:
            edit_params(repo, lambda p: p["study"]["overrides"].append("logger.enabled=false"))
        wall, lines = _run_timed([sys.executable, "-m", "dvc", "repro"], repo)
        stages = stage_spans(lines, wall)
        train = [s for s in stages if s["jobs"]]
        heads = [min(a for a, _ in s["jobs"]) - s["start"] for s in train]
        tails = [s["end"] - max(b for _, b in s["jobs"]) for s in train]
        typical = sorted(heads)[len(heads) // 2]
        out[logging] = {
            "wall": wall,
            "generate": sum(s["end"] - s["start"] for s in stages if s["name"] == "generate"),
            "report": sum(s["end"] - s["start"] for s in stages if s["name"] == "report"),
            "train": sum(s["end"] - s["start"] for s in train),
            # the first stage starts the warm server (the imports); the others find it
            "imports": heads[0] - typical,
            "stage_overhead": sum(heads) - (heads[0] - typical) + sum(tails),
            "jobs": job_seconds(repo),
            "n_jobs": sum(len(s["jobs"]) for s in train),
            "flops": limits.study_flops(repo),
            "tracking_cpu": tracking_cpu(repo),
        }
    return out


def members_scaling(tmp: Path, families: list[str], multiples=(1, 2, 4)) -> list[dict]:
    """Clean `dvc repro` of a smaller study (``families`` only) at multiples of the
    default seeds: the time a member adds."""
    rows = []
    for m in multiples:
        repo = clone(tmp / f"seeds-{m}")

        def edit(p, m=m):
            p["study"]["families"] = families
            p["study"]["seeds"] = list(range(m * len(p["study"]["seeds"])))

        edit_params(repo, edit)
        wall, lines = _run_timed([sys.executable, "-m", "dvc", "repro"], repo)
        seeds = len(yaml.safe_load((repo / "params.yaml").read_text())["study"]["seeds"])
        members = sum(len(f.read_text().splitlines()) - 1 for f in (repo / "results").glob("*/*/members.csv"))
        stages = stage_spans(lines, wall)
        rows.append({"multiple": m, "seeds": seeds, "members": members, "wall": wall,
                     "report": sum(s["end"] - s["start"] for s in stages if s["name"] == "report")})
    return rows


PATHS_ORDER = ("exact", "torch", "exact", "torch")  # alternated: the host's load drifts over 20 minutes


def study_paths(tmp: Path, order: tuple[str, ...] = PATHS_ORDER) -> dict:
    """The whole default study from clean on each compute path, in turn (``order``), each in
    a fresh clone whose ``study.overrides`` (params.yaml) gain ``compute=<path>``.

    Returns ``runs``: each run's ``compute`` and ``wall`` (s) of `dvc repro`; ``differ``:
    the verdicts the first run of each path differ in (:func:`differing`, exact's as ``a``,
    torch's as ``b``); ``repeat_differ``: per path, those its two runs differ in (a path
    gives the same bytes on one machine, so none are expected); ``verdicts``: how many
    the report gives."""
    runs, first, again = [], {}, {}
    for i, path in enumerate(order):
        repo = clone(tmp / f"paths-{i}-{path}")
        edit_params(repo, lambda p, path=path: p["study"]["overrides"].append(f"compute={path}"))
        wall, _ = _run_timed([sys.executable, "-m", "dvc", "repro"], repo)
        runs.append({"compute": path, "wall": wall})
        (again if path in first else first)[path] = report_verdicts(repo)
        shutil.rmtree(repo.parent, ignore_errors=True)  # its store and artifacts: hundreds of MB
    return {"runs": runs, "differ": differing(first["exact"], first["torch"]),
            "repeat_differ": {path: differing(first[path], again[path]) for path in again},
            "verdicts": len(first["exact"])}


def report_verdicts(repo: Path) -> dict[str, tuple[str, bool]]:
    """Every verdict of a study's report, each with whether the report marks it as one
    that may move on another machine: ``finding <dataset>/<family>`` from
    reports/findings.json (marked: its ``borderline`` is not empty) and
    ``claim <claim> <dataset>:<row>`` from reports/claims.json (marked: it has ``fragile``)."""
    found = json.loads((repo / "reports" / "findings.json").read_text())["findings"]
    out = {f"finding {dataset}/{family}": (row["verdict"], bool(row.get("borderline")))
           for dataset, families in found.items() for family, row in families.items()}
    claims = json.loads((repo / "reports" / "claims.json").read_text())
    for claim, rows in claims.items():
        if isinstance(rows, dict) and claim != "verdicts":  # its counts, not rows (and "fragile", a count)
            out.update({f"claim {claim} {name}": (row["verdict"], bool(row.get("fragile")))
                        for name, row in rows.items()})
    return out


def differing(a: dict[str, tuple[str, bool]], b: dict[str, tuple[str, bool]]) -> list[dict]:
    """The verdicts two reports (:func:`report_verdicts`) give otherwise, by name: ``what``,
    ``a`` and ``b`` (None where a report has no such row) and ``marked`` (either report marks
    it borderline or fragile)."""
    none = (None, False)
    return [{"what": key, "a": a.get(key, none)[0], "b": b.get(key, none)[0],
             "marked": a.get(key, none)[1] or b.get(key, none)[1]}
            for key in sorted(a.keys() | b.keys()) if a.get(key, none)[0] != b.get(key, none)[0]]
