"""One short log line per step an orchestrator task ran: computed or a cache hit (from which run and
orchestrator), and the pipeline run id ``isthmus runs show`` takes.

Orchestrator plugins log it through :func:`log_step_summary` on their own logger (e.g.
``flytekitplugins.isthmus.summary``) at INFO. When nothing configured logging, that logger gets a
plain stderr handler of its own so ``pyflyte run`` / ``flyte run`` show the lines; silence them with
``logging.getLogger("<that logger>").setLevel(logging.WARNING)`` (or any logging configuration that
sets the logger's level or handlers).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

_prepared: set[str] = set()


def summary_logger(name: str) -> logging.Logger:
    """``name``'s logger, able to show INFO lines when the application configured no logging."""
    logger = logging.getLogger(name)
    if name not in _prepared:
        _prepared.add(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
        if not logger.hasHandlers():
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
    return logger


def summary_line(store: Any, result: Any, pipeline_run_id: str | None) -> str:
    """``isthmus <invocation>: computed (step run 1a2b3c4d); run <id>`` or ``... cache hit from step
    run 9f8e7d6c of run 5a4b3c2d (airflow); run <id>``."""
    what = f"isthmus {result.invocation}:"
    if result.cache_hit and result.source_step_run_id:
        source = result.source_step_run_id
        try:
            src = store.get_step_run(source)
            origin = f" of run {(src.get('pipeline_run_id') or '-')[:8]} ({src.get('orchestrator') or '?'})"
        except Exception:  # a source row pruned since: the hit still stands
            origin = ""
        what += f" cache hit from step run {source[:8]}{origin}"
    elif result.cache_hit:
        what += " cache hit"
    else:
        what += f" computed in {result.duration_ms / 1000:.1f} s (step run {result.step_run_id[:8]})"
    if pipeline_run_id:
        what += f"; run {pipeline_run_id}"
    return what


def log_step_summary(logger_name: str, store: Any, result: Any, pipeline_run_id: str | None) -> None:
    """Log :func:`summary_line` at INFO on ``logger_name``; never fails the step."""
    logger = summary_logger(logger_name)
    if not logger.isEnabledFor(logging.INFO):
        return
    try:
        logger.info("%s", summary_line(store, result, pipeline_run_id))
    except Exception as exc:  # the summary never fails a step
        logger.debug("isthmus summary failed: %s", exc)
