"""Execution backends registered with lineage: what a backend adds to the step runs it executes.

A backend (e.g. a batch scheduler's package) registers once, when it is imported, under a ``kind``::

    register_backend("mybatch", job_id=lambda step_run: ..., facets=lambda step_run: {...})

For every step run the emitter asks each registered backend for the id of the job it ran the step in
(``None``: not this backend's run). The backend that answers

- adds its run facets (``facets``), and its job id to the ``isthmus_resources`` facet as ``<kind>JobId``;
- names the run's job ``<name>.<kind>`` when the run was started by an orchestrator task whose job has
  the name the run's job would get (``<name>.run`` when no backend ran it).

The core names no backend; registering a kind again replaces it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from isthmus.errors import ConfigurationError

StepRunRecord = Mapping[str, Any]
_KIND = re.compile(r"[a-z][a-z0-9]*")


@dataclass(frozen=True)
class LineageBackend:
    """An execution backend as lineage knows it (see the module docstring)."""

    kind: str
    job_id: Callable[[StepRunRecord], str | None]
    facets: Callable[[StepRunRecord], Mapping[str, Any]] | None = None

    @property
    def job_id_field(self) -> str:
        """The ``isthmus_resources`` field holding the backend's job id, e.g. ``mybatchJobId``."""
        return f"{self.kind}JobId"


_backends: dict[str, LineageBackend] = {}


def register_backend(
    kind: str,
    *,
    job_id: Callable[[StepRunRecord], str | None],
    facets: Callable[[StepRunRecord], Mapping[str, Any]] | None = None,
) -> LineageBackend:
    """Register an execution backend: ``job_id(step_run)`` is the id of its job that ran the step run
    (``None`` when another backend or none ran it); ``facets(step_run)`` its run facets for such a run
    (OpenLineage facet objects by key). Returns the registered backend."""
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise ConfigurationError(
            f"lineage backend kind {kind!r} must be lowercase letters and digits starting with a letter, e.g. 'mybatch'"
        )
    backend = LineageBackend(kind, job_id, facets)
    _backends[kind] = backend
    return backend


def registered_backends() -> tuple[LineageBackend, ...]:
    """The registered backends, in registration order."""
    return tuple(_backends.values())


def backend_job(step_run: StepRunRecord) -> tuple[LineageBackend, str] | None:
    """The backend that ran ``step_run`` and its job id, or None."""
    for backend in _backends.values():
        job_id = backend.job_id(step_run)
        if job_id:
            return backend, str(job_id)
    return None
