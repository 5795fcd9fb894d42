"""A shared MLflow tracking server on PostgreSQL, the way a lab runs MLflow.

``python -m regstudy.server start`` (``make server``) starts, in one folder (``.server/``
of the project by default):

- a PostgreSQL cluster (``pgdata/``, made by the machine's ``initdb``, run by
  ``pg_ctl`` on 127.0.0.1) with the databases ``mlflow`` and ``optuna`` (the studies);
- ``mlflow server`` with the backend store ``postgresql+psycopg://…/mlflow`` and its
  own artifact root (``artifacts/``), served through the server, bound to 127.0.0.1.

``stop`` (``make server-stop``) stops both; ``status`` says what runs. Jobs log to the
server with ``logger.tracking_uri=http://127.0.0.1:<port>`` or, for every job at once,
``MLFLOW_TRACKING_URI``. Optuna's studies (``regstudy.search``) have a database of their
own on the same PostgreSQL (``optuna``: ``search.storage=`` :attr:`Server.studies_uri`).

PostgreSQL refuses to run as root; as root, its programs run as the ``postgres`` user,
which must be able to reach the folder.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .extras import MissingExtra, require
from .lifecycle import alive
from .paths import SERVER_DATABASE

DEFAULT_PORT = 5001      # `make ui` serves the local store on 5000
DEFAULT_PG_PORT = 5433   # beside a system PostgreSQL on 5432
USER = "regstudy"
DATABASE = SERVER_DATABASE
#: Optuna's studies (regstudy.search), in a database of their own: Optuna and MLflow both
#: keep their schema's revision in a table ``alembic_version``, so neither can share the other's.
STUDIES = "optuna"


class ServerError(RuntimeError):
    """The server could not be started, stopped or reached; says why and what to do."""


def _as_postgres() -> list[str]:
    """The command prefix that runs a program as the user postgres (for root, whom initdb and
    postgres refuse): util-linux's runuser, which is in /usr/sbin even where that is not
    on PATH."""
    runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
    if runuser is None:
        raise ServerError("PostgreSQL refuses to run as root, and runuser (util-linux) is not installed "
                          "to run it as the user postgres: install util-linux, or run as another user")
    return [runuser, "-u", "postgres", "--"]


@dataclass(frozen=True)
class Server:
    """The server's folder and ports. Its state lives in ``<folder>/server.json``."""

    folder: Path
    port: int = DEFAULT_PORT
    pg_port: int = DEFAULT_PG_PORT
    host: str = "127.0.0.1"

    @property
    def pgdata(self) -> Path:
        return self.folder / "pgdata"

    @property
    def artifacts(self) -> Path:
        return self.folder / "artifacts"

    @property
    def url(self) -> str:
        """The tracking URI jobs log to."""
        return f"http://{self.host}:{self.port}"

    @property
    def database_uri(self) -> str:
        """The SQLAlchemy URI of MLflow's backend store."""
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.pg_port}/{DATABASE}"

    @property
    def studies_uri(self) -> str:
        """The SQLAlchemy URI of Optuna's studies (``search.storage``)."""
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.pg_port}/{STUDIES}"

    @classmethod
    def load(cls, folder: Path) -> "Server":
        """The server last started in ``folder``."""
        state = folder / "server.json"
        if not state.exists():
            raise ServerError(f"no server was started in {folder} (no {state.name}); start one with `make server`")
        s = json.loads(state.read_text())
        return cls(folder, s["port"], s["pg_port"], s["host"])

    # --- PostgreSQL ---

    def _pg(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(pg_bindir() / program), *args]
        if os.geteuid() == 0:  # initdb and postgres refuse root
            cmd = [*_as_postgres(), *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if check and done.returncode != 0:
            raise ServerError(f"{program} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
        return done

    def _init_cluster(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            os.chown(self.pgdata, pg.pw_uid, pg.pw_gid)
            probe = subprocess.run([*_as_postgres(), "test", "-w", str(self.pgdata)])
            if probe.returncode != 0:
                raise ServerError(
                    f"PostgreSQL runs as the user postgres here (it refuses root), and postgres cannot "
                    f"reach {self.pgdata}: make its parent folders searchable (chmod o+x) or choose "
                    f"another folder (SERVER_DIR=... / --dir)")
        os.chmod(self.pgdata, 0o700)
        self._pg("initdb", "-D", str(self.pgdata), "-U", USER, "--auth=trust", "-E", "UTF8",
                 "--no-instructions")

    def _pg_running(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists() and \
            self._pg("pg_ctl", "status", "-D", str(self.pgdata), check=False).returncode == 0

    def _start_postgres(self) -> None:
        self._init_cluster()
        if not self._pg_running():
            # Only TCP on loopback, and the socket in the cluster's own folder.
            options = f"-h 127.0.0.1 -p {self.pg_port} -k {self.pgdata}"
            self._pg("pg_ctl", "start", "-D", str(self.pgdata), "-w", "-t", "60",
                     "-l", str(self.pgdata / "postgres.log"), "-o", options)
        psycopg = require("server", "the shared tracking server (PostgreSQL)")
        with psycopg.connect(f"host=127.0.0.1 port={self.pg_port} user={USER} dbname=postgres",
                             autocommit=True) as conn:
            for database in (DATABASE, STUDIES):
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
                    conn.execute(f"CREATE DATABASE {database}")

    # --- MLflow ---

    def healthy(self, timeout: float = 2.0) -> bool:
        from .preflight import server_answers  # what a job checks before it logs to a server

        return server_answers(self.url, timeout)

    def start(self, wait: float = 120.0) -> None:
        """Start PostgreSQL and the MLflow server (what runs already is kept). Raises
        :class:`~regstudy.extras.MissingExtra` without psycopg (``regstudy[server]``)."""
        require("server", "the shared tracking server (PostgreSQL)")
        self.folder.mkdir(parents=True, exist_ok=True)
        self._start_postgres()
        if self.healthy():
            return
        from .preflight import server_answers

        if server_answers(f"http://{self.host}:{self.port}", 1.0, path="/"):
            raise ServerError(f"port {self.port} is taken by another program; choose another (SERVER_PORT=...)")
        # The schema first, in this process: the server's workers would race on it.
        from mlflow.tracking import MlflowClient

        from .console import quiet

        quiet()  # after importing MLflow, which sets its loggers up at import
        MlflowClient(self.database_uri).search_experiments(max_results=1)
        self.artifacts.mkdir(exist_ok=True)
        log = open(self.folder / "mlflow-server.log", "ab")
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server",
             "--backend-store-uri", self.database_uri,
             "--artifacts-destination", str(self.artifacts),
             "--host", self.host, "--port", str(self.port), "--workers", "2"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)  # its own process group: stop() ends it and its workers
        (self.folder / "server.json").write_text(json.dumps(
            {"pid": proc.pid, "port": self.port, "pg_port": self.pg_port, "host": self.host}))
        deadline = time.monotonic() + wait
        while not self.healthy():
            if proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"mlflow server did not start; see {self.folder / 'mlflow-server.log'}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop the MLflow server, then PostgreSQL."""
        state = self.folder / "server.json"
        if state.exists():
            pid = json.loads(state.read_text())["pid"]
            _signal_group(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while alive(pid) and time.monotonic() < deadline:
                try:
                    os.waitpid(pid, os.WNOHANG)  # started by this process (tests): reap it
                except ChildProcessError:
                    pass
                time.sleep(0.1)
            _signal_group(pid, signal.SIGKILL)  # workers left behind, or a hung server
        if self._pg_running():
            self._pg("pg_ctl", "stop", "-D", str(self.pgdata), "-m", "fast", "-w")

    def status(self) -> str:
        pg = "running" if self._pg_running() else "stopped"
        ml = "answers" if self.healthy() else "does not answer"
        from mlflow.tracking import MlflowClient

        from .ui import runs_url

        exp = MlflowClient(self.url).get_experiment_by_name("regstudy") if self.healthy() else None
        if exp is not None:
            ml += f"; the study's runs: {runs_url(self.url, exp.experiment_id)}"
        return (f"PostgreSQL ({self.pgdata}, port {self.pg_port}): {pg}\n"
                f"MLflow server {self.url}: {ml}\n"
                f"  jobs log to it with logger.tracking_uri={self.url} or MLFLOW_TRACKING_URI={self.url}\n"
                f"  its database: {self.database_uri}\n"
                f"  Optuna's studies (python -m regstudy.search): search.storage={self.studies_uri}")


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def pg_bindir() -> Path:
    """The folder of the machine's PostgreSQL programs (``initdb``, ``pg_ctl``)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                      key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if versions:
        return Path(versions[-1]).parent
    raise ServerError("PostgreSQL is not installed (no pg_ctl on PATH or in /usr/lib/postgresql/*/bin); "
                      "install it with `apt-get update && apt-get install -y postgresql`")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m regstudy.server", description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["start", "stop", "status", "url"])
    p.add_argument("--dir", type=Path, default=Path(".server"), help="the server's folder (default .server)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="the MLflow server's port")
    p.add_argument("--pg-port", type=int, default=DEFAULT_PG_PORT, help="PostgreSQL's port")
    p.add_argument("--host", default="127.0.0.1",
                   help="the address the MLflow server binds (0.0.0.0 to serve a lab's network)")
    args = p.parse_args(argv)
    folder = args.dir.resolve()
    try:
        if args.action == "start":
            server = Server(folder, args.port, args.pg_port, args.host)
            server.start()
            print(server.status())
            return 0
        server = Server.load(folder)
        if args.action == "stop":
            server.stop()
            print(f"stopped the MLflow server {server.url} and PostgreSQL ({server.pgdata})")
        elif args.action == "status":
            print(server.status())
        else:
            print(server.url)
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except MissingExtra as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
