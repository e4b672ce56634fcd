"""The lineage hook the StepRunner calls. The OpenLineage emitter plugs in here; the default does nothing.

Hooks must never fail a run: every call is guarded, and a failing hook is reported once as a warning.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

log = logging.getLogger("isthmus.lineage")


class LineageHook(Protocol):
    def on_pipeline_start(self, run: dict[str, Any]) -> None: ...
    def on_pipeline_end(self, run: dict[str, Any]) -> None: ...
    def on_step_start(self, step_run: dict[str, Any]) -> None: ...
    def on_step_end(self, step_run: dict[str, Any]) -> None: ...


class NoopLineage:
    """Records nothing."""

    def on_pipeline_start(self, run: dict[str, Any]) -> None:
        return None

    def on_pipeline_end(self, run: dict[str, Any]) -> None:
        return None

    def on_step_start(self, step_run: dict[str, Any]) -> None:
        return None

    def on_step_end(self, step_run: dict[str, Any]) -> None:
        return None


_hook: LineageHook = NoopLineage()
_warned = False


def set_lineage_hook(hook: LineageHook | None) -> None:
    """Install the process-wide lineage hook (None restores the no-op hook)."""
    global _hook
    _hook = hook or NoopLineage()


def get_lineage_hook() -> LineageHook:
    return _hook


def emit(event: str, payload: dict[str, Any]) -> None:
    """Call ``hook.<event>(payload)``; a failure is logged once and never propagates."""
    global _warned
    try:
        getattr(_hook, event)(payload)
    except Exception as exc:  # lineage must never fail a step
        if not _warned:
            _warned = True
            log.warning(
                "lineage hook %s failed (%s: %s); runs continue without lineage", event, type(exc).__name__, exc
            )
