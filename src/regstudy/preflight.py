"""What a job checks before it starts, importing neither torch, Lightning nor MLflow.

A typo on the command line (``python -m regstudy.train members.seeds=[]``) or a bad data
file is refused in about a second, with nothing written, instead of after the eight
seconds those imports take; so is an MLflow store that cannot take the job's runs
(unwritable, read-only, locked), instead of after training; so is a project copied
elsewhere with its store, whose runs would write their artifacts into the original. The
job is prepared from them once (:func:`regstudy.jobspec.prepare_job`); for a command-line
run, by a Hydra callback in the launching process before Hydra writes anything.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
from filelock import FileLock, Timeout
from omegaconf import DictConfig

from .config import ConfigError, validate_task
from .data import DataFileError, load_npz, make_csv_dataset, task_of, text_of
from .extras import MissingExtra, check_database_uri
from .paths import (ARTIFACTS_DIR, STORE_DB, artifact_root, is_server, project_root, sqlite_path, store_root,
                    tracking_uri)


class StoreError(RuntimeError):
    """The MLflow store cannot take a job's runs (unwritable, read-only, locked): the
    message names the path. Found before training: exit code 1, nothing written."""


class CopiedStoreError(ValueError):
    """The project's MLflow store came with a copy of another project: its experiment
    keeps artifacts in the other project's ``mlartifacts/``. The message names both."""


#: Bad input: refused with one line and exit code 2 (a config value, a data file, a copied
#: store, an engine whose extra is not installed).
BAD_INPUT = (ConfigError, DataFileError, FileNotFoundError, CopiedStoreError, MissingExtra)


def check_server(cfg: DictConfig) -> None:
    """A job logging to a tracking server stops before it trains if no server answers
    there (MLflow itself would retry each request for minutes); raises ConfigError."""
    uri = tracking_uri(cfg)
    if cfg.logger.enabled:
        check_database_uri(uri, "logger.tracking_uri")
    if cfg.logger.enabled and is_server(uri):
        if not server_answers(uri, timeout=5.0):
            raise ConfigError("logger.tracking_uri", uri,
                              "the URL of a running MLflow server (none answers there: start it "
                              "with `make server`), or null for the local store mlflow.db")


def data_path(cfg: DictConfig) -> Path:
    """The absolute data file of the job (relative paths are from the project root)."""
    path = Path(cfg.data.path)
    return path if path.is_absolute() else project_root(cfg) / path


def load_arrays(cfg: DictConfig, path: Path, seeds: list[int],
                say: bool = True) -> tuple[dict[str, np.ndarray], str]:
    """The data of the job's seeds (a data file's draws, or a CSV file checked and split)
    and its task (inferred for a CSV, and said on stderr if ``say``), with what depends on
    the task checked; raises one of :data:`BAD_INPUT`.
    """
    if path.suffix == ".csv":
        entry = {"path": path, **{k: cfg.data[k] for k in ("target", "task", "val_fraction", "test_fraction")}}
        arrays = make_csv_dataset(entry, sorted(set(seeds)))
        if say:
            print(f"data: {text_of(arrays, 'note')}", file=sys.stderr)
    else:
        arrays = load_npz(path)
    task = task_of(arrays) or cfg.data.task
    if cfg.data.task is not None and task != cfg.data.task:
        raise ConfigError("data.task", cfg.data.task, f"{task!r}, the task of {path}")
    validate_task(cfg, task)
    return arrays, task


def store_wait() -> float:
    """Seconds a job waits for another process's lock on the store: ``REGSTUDY_STORE_WAIT``,
    default 30 (a fresh store's schema takes a few seconds to create)."""
    return float(os.environ.get("REGSTUDY_STORE_WAIT", "30"))


QUIET_WAIT = 2.0  # seconds of a lock waited for without a word: two jobs writing at once


def _wait_for(db: Path, holder: str, attempt) -> None:
    """``attempt(timeout)`` (True once it has the lock) within :func:`store_wait` seconds:
    quietly at first, then saying so; then StoreError naming the store and the holder."""
    wait = store_wait()
    quiet = min(QUIET_WAIT, wait)
    if attempt(quiet):
        return
    print(f"regstudy: the MLflow store {db} is locked by another process; waiting up to {wait:g} s in "
          "all (REGSTUDY_STORE_WAIT)", file=sys.stderr, flush=True)
    if attempt(wait - quiet):
        return
    raise StoreError(f"the MLflow store {db} is locked: {holder} held it for the {wait:g} s waited "
                     "(REGSTUDY_STORE_WAIT); is another job creating it, or a sqlite3 shell or browser "
                     "holding a transaction on it? Nothing was trained or written")


def _acquire(lock: FileLock, timeout: float) -> bool:
    try:
        lock.acquire(timeout=timeout, poll_interval=0.05)
        return True
    except Timeout:
        return False


@contextlib.contextmanager
def store_lock(uri: str):
    """An exclusive lock on ``<database>.lock`` of a SQLite store (nothing for others: a
    server migrates its own schema), waited for at most :func:`store_wait` seconds; then
    StoreError. Jobs that create a fresh store at once take turns under it."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    path = db.with_name(db.name + ".lock")
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        open(path, "a").close()
    except OSError as e:
        raise StoreError(f"the MLflow store {db} cannot be written: {e.filename or path}: {e.strerror}") from None
    # filelock: flock on POSIX, msvcrt's lock on Windows; not thread-local or shared
    # within the process, so the lock is this call's alone
    lock = FileLock(path, is_singleton=False, thread_local=False)
    _wait_for(db, f"another process ({path})", lambda timeout: _acquire(lock, timeout))
    try:
        yield
    finally:
        lock.release()


def _writable_folder(folder: Path, what: str) -> None:
    """``folder``, or the nearest folder above it that exists, takes a new file."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise StoreError(f"{what} cannot be written: {folder}: {e.strerror}; nothing was trained "
                         "or written") from None


def _writes(db: Path, timeout: float) -> bool:
    """Whether the SQLite database ``db`` takes a write (a table made and rolled back)
    within ``timeout`` seconds (False: another process holds a write lock); StoreError
    for a database that cannot be written."""
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=timeout, isolation_level=None)) as con:
            con.execute("BEGIN IMMEDIATE")
            con.execute("CREATE TABLE regstudy_write_check (x)")
            con.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as e:
        if "locked" in str(e):
            return False
        raise StoreError(f"the MLflow store {db} cannot be written: {e}; nothing was trained or written") from None
    except sqlite3.DatabaseError as e:
        raise StoreError(f"the MLflow store {db} is not a SQLite database: {e}") from None


def check_store(cfg: DictConfig) -> None:
    """A job's local MLflow store takes its runs: its folder and the artifact folder take
    a file, and the SQLite database a write, under the store's lock, each lock waited for
    at most :func:`store_wait` seconds. Raises StoreError naming the path. (A server's
    store: :func:`check_server`.) Then the store must be the project's own
    (:func:`check_own_store`)."""
    db = sqlite_path(tracking_uri(cfg)) if cfg.logger.enabled else None
    if db is None:
        return
    _writable_folder(db.parent, f"the MLflow store {db}")
    _writable_folder(artifact_root(cfg), "the MLflow artifact folder")
    if not db.exists():  # the job's first MLflow call creates it, in the folder just checked
        return
    with store_lock(tracking_uri(cfg)):
        _wait_for(db, "a write transaction of another process", lambda timeout: _writes(db, timeout))
    check_own_store(cfg)


def _local_path(location: str) -> Path | None:
    """The folder of an artifact location that is a local absolute path (``file://`` URI
    or a plain path); None for anything else (a server's, a relative path)."""
    if location.startswith("file:"):
        return Path(unquote(urlparse(location).path))
    return Path(location) if location.startswith("/") else None


def experiment_artifacts(db: Path, experiment_name: str) -> Path | None:
    """Where the experiment ``experiment_name`` of the SQLite store ``db`` keeps its
    artifacts, if a local folder; None when the store has no such experiment (or no
    MLflow tables yet). Read with sqlite3: MLflow stays unimported."""
    try:
        with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=store_wait())) as con:
            row = con.execute("SELECT artifact_location FROM experiments WHERE name = ?",
                              (experiment_name,)).fetchone()
    except sqlite3.OperationalError:  # no experiments table yet: a store MLflow has not set up
        return None
    return _local_path(row[0]) if row and row[0] else None


def check_own_store(cfg: DictConfig) -> None:
    """The project's own store (``logger.tracking_uri`` unset) keeps its experiment's
    artifacts inside the store root; otherwise the project is a copy (``cp -r``) whose
    ``mlflow.db`` came with it, and its runs would write their artifacts into the
    original project's ``mlartifacts/``: raises CopiedStoreError naming both projects.
    A store given in ``logger.tracking_uri`` is used as it is, wherever it keeps them."""
    if cfg.logger.tracking_uri or not cfg.logger.enabled:
        return
    root = store_root(cfg)
    db = root / STORE_DB
    location = experiment_artifacts(db, cfg.logger.experiment_name) if db.exists() else None
    if location is None or location.resolve().is_relative_to(root):
        return
    raise CopiedStoreError(
        f"the MLflow store {db} was copied from the project {location.parent}: its experiment "
        f"{cfg.logger.experiment_name!r} keeps its artifacts in {location}, outside this project {root}, "
        f"so this project's runs would write into that one. To start this project's own store, remove {db} "
        f"(and {root / ARTIFACTS_DIR}); to log to the other project's store, set "
        f"logger.tracking_uri=sqlite:///{location.parent / STORE_DB}")


def refuse(e: BaseException) -> int:
    """Say why a job cannot start, in one line; return its exit code (2 for bad input, 1
    for a store that cannot take its runs)."""
    print(f"error: {e}", file=sys.stderr, flush=True)
    return 2 if isinstance(e, BAD_INPUT) else 1


def server_answers(url: str, timeout: float = 2.0, path: str = "/health") -> bool:
    """Whether an HTTP server answers at ``url`` (MLflow's ``/health`` by default)."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + path, timeout=timeout) as r:
            return r.status == 200
    except urllib.error.HTTPError:
        return path != "/health"  # something answers, but not an MLflow server's health
    except (OSError, ValueError):
        return False
