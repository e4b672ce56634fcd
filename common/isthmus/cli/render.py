"""Rendering helpers shared by CLI commands."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any

from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from isthmus.records import RunStatus

console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)


def short(value: str | None, n: int = 8) -> str:
    if not value:
        return "-"
    return value.split(":", 1)[-1][:n]


def when(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def duration(start: dt.datetime | None, end: dt.datetime | None) -> str:
    if not start or not end:
        return "-"
    if start.tzinfo is None:
        start = start.replace(tzinfo=dt.timezone.utc)
    if end.tzinfo is None:
        end = end.replace(tzinfo=dt.timezone.utc)
    secs = (end - start).total_seconds()
    return f"{secs * 1000:.0f} ms" if secs < 1 else f"{secs:.1f} s"


def dump_json(data: Any) -> None:
    print(json.dumps(data, default=_default, indent=2, sort_keys=True))


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


def table(title: str, columns: list[str]) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for c in columns:
        t.add_column(c, overflow="fold")
    return t


_STATUS_COLORS: dict[str, str] = {
    RunStatus.COMPLETED: "green",
    RunStatus.FAILED: "red",
    RunStatus.RUNNING: "yellow",
    RunStatus.RETRY: "yellow",
}


def status_text(status: str) -> str:
    color = _STATUS_COLORS.get(status, "white")
    return f"[{color}]{status}[/{color}]"


def print_diff(text: str) -> None:
    console.print(Syntax(text, "diff", theme="ansi_dark", background_color="default"))


def pinned_lines(step_run: dict[str, Any]) -> list[str]:
    """``runs show`` lines for a step run's pinned inputs: ``input model of train: train.model@production →
    blake3:abcd…`` (only records that name the input's own hash)."""
    lines = []
    for name, ref in (step_run.get("inputs") or {}).items():
        meta = ref.get("metadata") if isinstance(ref, dict) else None
        pin = meta.get("pinned") if isinstance(meta, dict) else None
        if not isinstance(pin, dict) or pin.get("version") != ref.get("content_hash"):
            continue
        version = str(pin["version"])
        shown = f"{version[: version.find(':') + 13]}…"
        alias = pin.get("alias")
        what = f"{alias} → {shown}" if isinstance(alias, str) else f"pinned {shown}"
        lines.append(f"input {name} of {step_run['invocation']}: {what}")
    return lines
