"""The project a pipeline run belongs to: ``ISTHMUS_PROJECT`` when set, else the Flyte project of a
Flyte execution, else ``default``."""

from __future__ import annotations

import os
import re
from typing import Any

from isthmus.errors import ConfigurationError

DEFAULT = "default"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")


def check_project(raw: str, setting: str = "ISTHMUS_PROJECT") -> str:
    name = str(raw).strip()
    if not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"{setting}={str(raw)[:60]!r} is not a project name; use letters, digits, '_', '.' or '-' "
            "(starting with a letter or digit, at most 255)"
        )
    return name


def configured_project() -> str | None:
    """``ISTHMUS_PROJECT``, checked; None when unset."""
    raw = os.environ.get("ISTHMUS_PROJECT")
    return check_project(raw) if raw and raw.strip() else None


def project_for_run(row: dict[str, Any]) -> str:
    """The project of a new pipeline run ``row`` (``row["project"]`` if the adapter set one)."""
    given = row.get("project")
    if given:
        return check_project(str(given), "project")
    configured = configured_project()
    if configured:
        return configured
    context = row.get("context") or {}
    flyte = context.get("project") if row.get("orchestrator") == "flyte" else None
    if flyte and flyte != "local" and _NAME.fullmatch(str(flyte)):
        return str(flyte)
    return DEFAULT


def alias_project(given: str | None = None) -> str:
    """The project of an alias lookup or change: ``given`` (an explicit ``project=``/``--project``), else
    ``ISTHMUS_PROJECT``, else ``default``."""
    if given is not None and str(given).strip():
        return check_project(str(given), "project")
    return configured_project() or DEFAULT
