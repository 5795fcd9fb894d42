"""The optional engines, each an extra of the package (pyproject.toml), and the one-line
error that names the extra to install when one is missing.

=========  =====================================  ===========================================
extra      what it brings                          what needs it
=========  =====================================  ===========================================
``ray``    ``ray[default]``, hydra-ray-launcher    ``hydra/launcher=ray_local`` (or ``ray``)
``slurm``  hydra-submitit-launcher                 ``hydra/launcher=slurm``, ``submitit_local``
``server`` ``psycopg[binary]``                     the shared server (``make server``), a
                                                   ``postgresql+psycopg://`` store or study
=========  =====================================  ===========================================

``pip install regstudy[all]`` (``make env-all``) installs every one.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

#: extra -> the module whose presence says it is installed.
EXTRAS = {
    "ray": "hydra_plugins.hydra_ray_launcher",
    "slurm": "hydra_plugins.hydra_submitit_launcher",
    "server": "psycopg",
}

#: a Hydra launcher (``hydra/launcher=<name>``, ours in conf/ or the plugin's own) -> its extra.
LAUNCHERS = {
    "ray_local": "ray", "ray": "ray", "ray_aws": "ray",
    "slurm": "slurm", "submitit_local": "slurm", "submitit_slurm": "slurm",
}


class MissingExtra(ImportError):
    """An optional engine is used but its extra is not installed; says which to install."""

    def __init__(self, extra: str, what: str):
        self.extra = extra
        super().__init__(f"{what} needs regstudy's extra '{extra}', which is not installed: "
                         f"pip install regstudy[{extra}] (or regstudy[all]; in this project, make env-all)")


def installed(extra: str) -> bool:
    """Whether ``extra`` is installed (its module can be found; nothing is imported)."""
    try:
        return importlib.util.find_spec(EXTRAS[extra]) is not None
    except ModuleNotFoundError:  # a parent package (hydra_plugins) is absent
        return False


def require(extra: str, what: str) -> ModuleType:
    """Import ``extra``'s module, or raise :class:`MissingExtra` naming it for ``what`` (the
    feature that needs it, as a user calls it)."""
    if not installed(extra):
        raise MissingExtra(extra, what)
    return importlib.import_module(EXTRAS[extra])


def check_launcher(overrides: list[str]) -> None:
    """Raise :class:`MissingExtra` if a ``hydra/launcher=<name>`` override asks for a
    launcher whose extra is absent (before Hydra, whose own error names only a config)."""
    for override in overrides:
        key, _, name = override.lstrip("+~").partition("=")
        if key == "hydra/launcher" and name in LAUNCHERS and not installed(LAUNCHERS[name]):
            raise MissingExtra(LAUNCHERS[name], f"hydra/launcher={name}")


def check_database_uri(uri: str | None, key: str) -> None:
    """Raise :class:`MissingExtra` if ``uri`` (the value of ``key``) is a PostgreSQL database
    and psycopg, its driver, is absent."""
    if uri and str(uri).startswith("postgresql") and not installed("server"):
        raise MissingExtra("server", f"{key}={uri}")
