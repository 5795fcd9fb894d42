"""Where the project's files live: its config (``conf/``), its root, and its MLflow store.

A project keeps its MLflow store beside itself: the database ``mlflow.db`` and the
artifacts ``mlartifacts/`` at the root. One exception: a DVC experiment that runs in a
temporary copy of the project (``dvc exp run --temp`` or ``--queue``, in
``<project>/.dvc/tmp/exps/<workspace>``) logs to the store of the project it copies,
since DVC deletes its workspace once the experiment ends.

Only the standard library: every entry point imports this module first.
"""

import os
from pathlib import Path

CONFIG_DIR = Path(os.environ.get("REGSTUDY_CONF", Path(__file__).resolve().parents[2] / "conf"))

SQLITE = "sqlite:///"
STORE_DB = "mlflow.db"  # the project's MLflow database, at its store root
ARTIFACTS_DIR = "mlartifacts"  # the project's MLflow artifacts, beside it
SERVER_DATABASE = "mlflow"  # the shared server's MLflow database (regstudy.server)
DVC_EXP_WORKSPACES = (".dvc", "tmp", "exps")  # where DVC runs its temporary experiments


def project_root(cfg) -> Path:
    """The job's project folder: ``paths.root``, or the working directory."""
    return Path(cfg.paths.root or ".").resolve()


def dvc_experiment_origin(root: Path) -> Path | None:
    """The project a DVC temporary experiment workspace ``root`` copies (the folder
    holding ``.dvc/tmp/exps/``), or None when ``root`` is not such a workspace."""
    parts = root.parts
    n = len(DVC_EXP_WORKSPACES)
    for i in range(len(parts) - n - 1, 0, -1):  # the innermost: a workspace inside a workspace
        if parts[i:i + n] == DVC_EXP_WORKSPACES:
            return Path(*parts[:i])
    return None


def store_root(cfg) -> Path:
    """The folder of the project's own MLflow store (its ``mlflow.db`` and ``mlartifacts/``):
    the project root, or for a DVC temporary experiment the project it copies."""
    root = project_root(cfg)
    return dvc_experiment_origin(root) or root


def artifact_root(cfg) -> Path:
    """Where a local store's runs keep their artifacts: ``mlartifacts/`` of the store root."""
    return store_root(cfg) / ARTIFACTS_DIR


def tracking_uri(cfg) -> str:
    """The configured URI, or the SQLite store ``mlflow.db`` at the store root."""
    return cfg.logger.tracking_uri or f"{SQLITE}{store_root(cfg) / STORE_DB}"


def is_server(uri: str) -> bool:
    """Whether ``uri`` is a tracking server's (which keeps the artifacts itself)."""
    return uri.startswith(("http://", "https://"))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a SQLite store's URI; None for other stores."""
    return Path(uri[len(SQLITE):]) if uri.startswith(SQLITE) else None


#: The studies' SQLite database, beside the MLflow store's ``mlflow.db``.
STUDIES_DB = "optuna.db"


def storage_url(cfg) -> str | None:
    """Where the Optuna study lives: ``search.storage``, else :data:`STUDIES_DB` beside the
    MLflow store's SQLite database (None, in memory, when logging is off). Raises
    ConfigError for MLflow's own database, which cannot hold a study (see regstudy.search)."""
    from .errors import ConfigError

    uri = tracking_uri(cfg) if cfg.logger.enabled else None
    if cfg.search.storage:
        database = cfg.search.storage.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
        if cfg.search.storage == uri or database in (STORE_DB, SERVER_DATABASE):
            raise ConfigError("search.storage", cfg.search.storage,
                              "a database other than the MLflow store's (Optuna and MLflow each keep their "
                              "schema's revision in a table alembic_version): a server's optuna database, "
                              "which `make server-status` prints, or null for optuna.db beside mlflow.db")
        return cfg.search.storage
    if uri is None:
        return None
    if sqlite_path(uri) is None:
        what = f"the server at {uri}" if is_server(uri) else f"the store {uri}"
        raise ConfigError("search.storage", None,
                          f"a database for the studies of {what} (a server's: its postgresql+psycopg://.../optuna "
                          "URI, which `make server-status` prints); only a SQLite store has one by default")
    return f"sqlite:///{sqlite_path(uri).parent / STUDIES_DB}"
