"""Rendering helpers shared by CLI commands."""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from isthmus.records import RunStatus

# C0 controls but newline and tab, DEL and C1 controls: recorded text (a parameter, an alias reason, an
# error) printed to a terminal must not move the cursor, retitle the window or hide what follows
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with each terminal control character shown as an escape (``\\x1b``), never sent as one."""
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class _Console(Console):
    """Every string it prints (arguments, table cells) goes through :func:`printable` first; rich's own
    styles are added after, so colours still work."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(printable(text), **kwargs)


console = _Console(highlight=False, width=None if sys.stdout.isatty() else 150)


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
    from rich.syntax import Syntax  # and pygments: imported when a code diff is shown

    console.print(Syntax(text.rstrip("\n"), "diff", theme="ansi_dark", background_color="default"))


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


def _shown(value: Any) -> str:
    """A recorded value as text: numbers and short strings as they are, other data as JSON."""
    if isinstance(value, str):
        return value if len(value) <= 80 else value[:79] + "…"
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 120 else text[:119] + "…"


def _plain(line: str) -> None:
    console.print(line, markup=False, highlight=False)


def print_changes(entry: dict[str, Any], indent: str, step: str | None = None) -> None:
    """The 'what changed' lines of one step (see :func:`isthmus.diff.step_changes`); ``step``: its name,
    shown with an output whose keys are listed one by one (``output evaluate.output r2: …``)."""
    for field in ("status", "error"):
        if field in entry:
            _plain(f"{indent}{field}: {_shown(entry[field][0])} -> {_shown(entry[field][1])}")
    for field, label in (("params", "param"), ("dependencies", "dependency"), ("resources", "resource")):
        for k, (old, new) in entry.get(field, {}).items():
            _plain(f"{indent}{label} {k}: {_shown(old)} -> {_shown(new)}")
    for k, (old, new) in entry.get("inputs", {}).items():
        _plain(f"{indent}input {k}: {short(old, 12)} -> {short(new, 12)}")
    for change in entry.get("key_changes", []):
        _plain(indent + _key_change_line(change["component"], change["name"], change["old"], change["new"]))
    hashes = entry.get("outputs", {})
    fields = entry.get("output_fields", {})
    for k, (old, new, *delta) in entry.get("output_values", {}).items():
        if k in fields:
            where = f"{step}.{k}" if step else k
            for key, (a, b, *d) in fields[k].items():
                _plain(f"{indent}output {where} {key}: {_shown(a)} -> {_shown(b)}{_delta(d)}")
        elif [old, new] == hashes.get(k):
            _plain(f"{indent}output {k}: {short(old, 12)} -> {short(new, 12)}")
        else:
            _plain(f"{indent}output {k}: {_shown(old)} -> {_shown(new)}{_delta(delta)}")
    for k, (old, new, *delta) in entry.get("metadata", {}).items():
        _plain(f"{indent}metadata {k}: {json.dumps(old)} -> {json.dumps(new)}{_delta(delta)}")
    for _component, text in entry.get("code", {}).items():
        print_diff(text)
    if "cache_key_unexplained" in entry:
        _plain(f"{indent}{entry['cache_key_unexplained']}")
    elif set(entry) == {"cache_key"}:  # a diff made before the reason was part of it
        _plain(
            f"{indent}cache key differs, and nothing recorded does (a declared file or env value, a secret "
            "parameter's value or the secret salt)"
        )


def _delta(delta: list[Any]) -> str:
    return f" ({delta[0]:+.6g})" if delta else ""


def _key_change_line(component: str, name: str, old: Any, new: Any) -> str:
    """One cache-key part of the ``@step(...)`` that changed, as ``why`` and ``diff`` print it: a policy
    setting old -> new, a declared file or env variable by what happened (told apart by keyed digests:
    never a value), an output's materializer."""
    if component in ("files", "env"):
        return f"{'declared file' if component == 'files' else 'declared env'} {name}: {new}"
    if component == "outputs":
        return f"output {name} materializer: {_shown(old)} -> {_shown(new)}"
    return f"{component} {name}: {_shown(old)} -> {_shown(new)}"


def print_ran(ran: dict[str, Any]) -> None:
    """The 'how it ran' table: cache hit or computed, orchestrator, duration (not a change)."""
    t = table("How it ran (not a change)", ["step", "a", "b"])
    for name, sides in ran.items():
        cells = []
        for side in ("a", "b"):
            r = sides.get(side)
            if not r:
                cells.append("-")
                continue
            took = f"{r['duration_ms']:.0f} ms" if r.get("duration_ms") is not None else "-"
            src = f" from {short(r['source_step_run_id'])}" if r.get("source_step_run_id") else ""
            cells.append(f"{r['cache']}{src} · {r['orchestrator']} · {took}")
        t.add_row(escape(name), escape(cells[0]), escape(cells[1]))
    console.print(t)


def print_explanation(explanation: Any) -> None:
    """``isthmus why``: the decision, what it was compared with, each changed component."""
    e = explanation
    me = e.step_run
    _plain(f"step run {me.id} ({me.invocation} in {me.orchestrator} run {short(me.pipeline_run_id)}): {e.decision}")
    _plain(f"why: {e.reason}")
    if e.source is not None:
        s = e.source
        _plain(
            f"source: step run {s.id} ({s.invocation}), {s.orchestrator} pipeline run {s.pipeline_run_id} "
            f"({s.pipeline}), started {s.started_at}"
        )
    if e.compared_with is not None:
        c = e.compared_with
        _plain(
            f"compared with: step run {c.id} ({c.invocation}, {c.orchestrator}, {c.pipeline}, started {c.started_at})"
        )
    for change in e.changes:
        if change.component in ("policy", "files", "env", "outputs"):
            _plain(_key_change_line(change.component, change.name, change.old, change.new))
        elif change.component == "code":
            state = f" ({change.old})" if change.old else ""
            _plain(f"{change.component}: {change.name} changed{state}")
            print_diff(change.diff or "")
        elif change.component == "inputs":
            producers = change.produced_by or {}
            new, old = producers.get("new"), producers.get("old")
            made = f", now from {new.invocation} {new.id[:8]}" if new else ""
            was = f" (was from {old.invocation} {old.id[:8]})" if old else ""
            _plain(f"input {change.name}: {short(change.old, 12)} -> {short(change.new, 12)}{made}{was}")
        else:
            _plain(f"{change.component} {change.name}: {_shown(change.old)} -> {_shown(change.new)}")
    for note in e.notes:
        _plain(f"note: {note}")
