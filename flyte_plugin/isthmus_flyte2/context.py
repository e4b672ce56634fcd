"""Flyte 2's task context -> an isthmus :class:`~isthmus.context.RunContext` and pipeline run.

Every task of one Flyte 2 run derives the same pipeline run id from the run's name
(``derived_run_id("flyte2", project, domain, run_name)``), so tasks in separate containers record into
one pipeline run without talking to each other; the first creates it (race-safe). A local
``flyte.run`` names each run afresh (a UUID), so each local run is its own pipeline run.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from typing import Any

from isthmus import pipeline_runs
from isthmus.context import RunContext, derived_run_id
from isthmus.run_closing import reopen_pipeline_run, settle_pipeline_run

ORCHESTRATOR = "flyte2"
log = logging.getLogger("isthmus_flyte2")


@dataclass
class Flyte2Run:
    """Where one task execution belongs."""

    context: RunContext
    pipeline_context: dict[str, Any]

    @property
    def pipeline_run_id(self) -> str | None:
        return self.context.pipeline_run_id


@functools.lru_cache(maxsize=256)
def _run_id(project: str, domain: str, run_name: str) -> str:
    return derived_run_id(ORCHESTRATOR, project, domain, run_name)


def flyte2_run(task_name: str, pipeline: str, invocation: str) -> Flyte2Run:
    """The RunContext of the Flyte 2 task now executing (outside any run: no pipeline run)."""
    import flyte

    tctx = flyte.ctx()
    action = tctx.action if tctx else None
    if action is None or not action.run_name:
        return Flyte2Run(RunContext(orchestrator=ORCHESTRATOR, invocation=invocation), {})
    project, domain = action.project or "local", action.domain or "local"
    attempt = int(os.environ.get("FLYTE_ATTEMPT_NUMBER") or 0)
    native: dict[str, Any] = {
        "run_name": action.run_name,
        "action_name": action.name,
        "project": project,
        "domain": domain,
        "task_name": task_name,
        "task_version": getattr(tctx, "version", None),
        "mode": getattr(tctx, "mode", None),
        "retry_attempt": attempt,
    }
    run_id = _run_id(project, domain, action.run_name)
    ctx = RunContext(
        orchestrator=ORCHESTRATOR,
        pipeline_name=pipeline,
        pipeline_run_id=run_id,
        invocation=invocation,
        attempt=attempt + 1,
        native=native,
    )
    keys = ("run_name", "project", "domain", "mode")
    return Flyte2Run(ctx, {k: native[k] for k in keys})


def ensure_pipeline_run(runner: Any, run: Flyte2Run, code: Any) -> None:
    """Create the run's pipeline run once (whichever task gets there first); emit its lineage start."""
    if run.pipeline_run_id is None:
        return
    pipeline_runs.ensure_pipeline_run(
        runner, run.pipeline_run_id, run.context.pipeline_name or "?", ORCHESTRATOR, run.pipeline_context, code
    )


def reopen_run(runner: Any, run_id: str) -> None:
    try:
        reopen_pipeline_run(runner.metadata, run_id)
    except Exception as exc:  # bookkeeping never fails a step
        log.warning("isthmus: could not reopen pipeline run %s: %s: %s", run_id, type(exc).__name__, exc)


def settle_run(runner: Any, run_id: str) -> None:
    try:
        settle_pipeline_run(runner.metadata, run_id)
    except Exception as exc:  # bookkeeping never fails a step
        log.warning("isthmus: could not settle pipeline run %s: %s: %s", run_id, type(exc).__name__, exc)
