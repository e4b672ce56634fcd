"""The Slurm backends, by name: the one registry the executor and both adapters use.

Each backend is a :class:`~isthmus.slurm.backends.base.SlurmClient` subclass in a module of its own,
named by its ``kind`` attribute and listed here by import path, so a backend's dependencies (asyncssh,
httpx, pyslurm) load only when it is used:

- ``cli``: Slurm's commands, here or on a login node over SSH (:mod:`.cli`);
- ``rest``: slurmrestd over a unix socket or HTTP(S) (:mod:`.rest`);
- ``pyslurm``: libslurm in this process, when pyslurm is built for the cluster (:mod:`.pyslurm`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from isthmus.slurm.errors import SlurmConfigError

if TYPE_CHECKING:  # base.py imports this module for SlurmClient.create; the type is for annotations only
    from isthmus.slurm.backends.base import SlurmClient

BACKENDS: dict[str, str] = {
    "cli": "isthmus.slurm.backends.cli:CliSlurmClient",
    "rest": "isthmus.slurm.backends.rest:RestSlurmClient",
    "pyslurm": "isthmus.slurm.backends.pyslurm:PySlurmClient",
}
DEFAULT_BACKEND = "cli"


def choices() -> str:
    """The backends as a phrase for error messages: ``'cli' (...), 'rest' (...) or 'pyslurm' (...)``."""
    names = [f"{kind!r} ({_load(kind).summary})" for kind in BACKENDS]
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


def check_kind(kind: Any, where: str = "backend") -> str:
    """``kind`` as a registered backend name (stripped, lower case; empty is the default); raises
    :class:`SlurmConfigError` naming ``where`` (the setting it came from), the value and the choices."""
    name = str(kind or DEFAULT_BACKEND).strip().lower()
    if name not in BACKENDS:
        raise SlurmConfigError(f"{where}={kind!r} is not a Slurm backend; use {choices()}")
    return name


def _load(kind: str) -> type[SlurmClient]:
    module, _, attr = BACKENDS[kind].partition(":")
    cls: type[SlurmClient] = getattr(importlib.import_module(module), attr)
    return cls


def backend_class(kind: str) -> type[SlurmClient]:
    """The client class of backend ``kind`` (imports its module; its dependencies load on first use)."""
    return _load(check_kind(kind))


def register(kind: str, path: str) -> None:
    """Add (or replace) backend ``kind``: ``path`` is ``"module:Class"`` of a :class:`SlurmClient`
    subclass whose ``kind`` is ``kind`` (imported when the backend is first used)."""
    if ":" not in path:
        raise SlurmConfigError(f"Slurm backend {kind!r}: {path!r} must be 'module:Class'")
    BACKENDS[kind.strip().lower()] = path


def connect(kind: str = DEFAULT_BACKEND, **options: Any) -> SlurmClient:
    """A client of backend ``kind`` built with ``options`` (see each backend's class for its options)."""
    return backend_class(kind)(**options)


__all__ = ["BACKENDS", "DEFAULT_BACKEND", "backend_class", "check_kind", "choices", "connect", "register"]
