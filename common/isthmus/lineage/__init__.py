"""The lineage hook the StepRunner calls. The OpenLineage emitter plugs in here; the default does nothing.

Hooks must never fail a run: every call is guarded, and a failing hook is reported once as a warning.
Execution backends add what they know about the step runs they execute with :func:`register_backend`.

- :mod:`isthmus.lineage.openlineage`: the emitter (the default file lineage in the emitting thread, a
  configured transport from a background thread);
- :mod:`isthmus.lineage.events`, :mod:`isthmus.lineage.filesink`: events as plain dicts, appended to a file;
- :mod:`isthmus.lineage.facets`: the ``isthmus_*`` facets (schemas in ``schemas/``) and artifact datasets;
- :mod:`isthmus.lineage.naming`: namespaces, job names, run ids and dataset names;
- :mod:`isthmus.lineage.parent`: parent and root runs handed to a child process;
- :mod:`isthmus.lineage.backends`: the registry of execution backends;
- :mod:`isthmus.lineage.errors`: its errors (an unknown run status).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Mapping
from typing import Any, Protocol

from isthmus import config
from isthmus.lineage.backends import LineageBackend, register_backend
from isthmus.lineage.openlineage import default_emitter, drop_default_emitter
from isthmus.records import PipelineRunRecord, StepRunRecord

__all__ = [
    "LineageBackend",
    "LineageHook",
    "NoopLineage",
    "emit",
    "emit_hit",
    "get_lineage_hook",
    "register_backend",
    "reset",
    "set_lineage_hook",
]

log = logging.getLogger("isthmus.lineage")


class LineageHook(Protocol):
    def on_pipeline_start(self, run: PipelineRunRecord) -> None: ...
    def on_pipeline_end(self, run: PipelineRunRecord) -> None: ...
    def on_step_start(self, step_run: StepRunRecord) -> None: ...
    def on_step_end(self, step_run: StepRunRecord) -> None: ...


# Optional hook methods: ``on_step_waiting(step_run)`` (OTHER while e.g. a batch job is pending);
# ``on_step_hit(step_run)``: the start and the end of a cache hit at once (see :func:`emit_hit`).


class NoopLineage:
    """Records nothing."""

    def on_pipeline_start(self, run: PipelineRunRecord) -> None:
        return None

    def on_pipeline_end(self, run: PipelineRunRecord) -> None:
        return None

    def on_step_start(self, step_run: StepRunRecord) -> None:
        return None

    def on_step_end(self, step_run: StepRunRecord) -> None:
        return None


_hook: LineageHook | None = None
_warned = False


def set_lineage_hook(hook: LineageHook | None) -> None:
    """Install the process-wide lineage hook (None: choose again on next use)."""
    global _hook
    _hook = hook


def get_lineage_hook() -> LineageHook:
    """The installed hook; by default the OpenLineage emitter when openlineage-python is installed
    (``ISTHMUS_LINEAGE=off`` or ``OPENLINEAGE_DISABLED=true`` turn it off)."""
    global _hook
    if _hook is None:
        _hook = _default_hook()
    return _hook


@config.on_change
def reset() -> None:
    """Forget the automatically chosen hook and emitter (after a configuration change); pending events
    are flushed first. A hook installed with :func:`set_lineage_hook` stays."""
    global _hook
    emitter = drop_default_emitter(5.0)
    if _hook is emitter or isinstance(_hook, NoopLineage):
        _hook = None


def _default_hook() -> LineageHook:
    if os.environ.get("ISTHMUS_LINEAGE", "").strip().lower() in ("off", "0", "false", "no"):
        return NoopLineage()
    if os.environ.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
        return NoopLineage()
    try:  # optional dependency (the ``lineage`` extra); imported only when a transport needs it
        if importlib.util.find_spec("openlineage.client") is None:
            return NoopLineage()
    except (ImportError, ValueError):
        return NoopLineage()
    return default_emitter()


def emit(event: str, payload: StepRunRecord | PipelineRunRecord | Mapping[str, Any]) -> None:
    """Call ``hook.<event>(payload)`` (a step-run record for ``on_step_*``, a pipeline-run record for
    ``on_pipeline_*``); a failure is logged once and never propagates."""
    global _warned
    try:
        method = getattr(get_lineage_hook(), event, None)
        if method is None:  # an optional event this hook does not take
            return
        method(payload)
    except Exception as exc:  # lineage must never fail a step
        if not _warned:
            _warned = True
            log.warning(
                "lineage hook %s failed (%s: %s); runs continue without lineage", event, type(exc).__name__, exc
            )


def emit_hit(step_run: StepRunRecord) -> None:
    """A cache hit's start and end: ``hook.on_step_hit(step_run)`` where the hook has it (both events are
    built from one description of the run), else ``on_step_start`` then ``on_step_end``."""
    if getattr(get_lineage_hook(), "on_step_hit", None) is not None:
        emit("on_step_hit", step_run)
    else:
        emit("on_step_start", step_run)
        emit("on_step_end", step_run)
