"""Rendering helpers shared by CLI commands."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from isthmus.explain import recorded_json
from isthmus.printable import printable
from isthmus.records import RunStatus


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


def print_diff(text: str, indent: str = "") -> None:
    """A unified diff, coloured, each line after ``indent``; its text shown by :func:`printable`."""
    from rich.syntax import Syntax  # and pygments: imported when a code diff is shown

    shown = printable(text.rstrip("\n"))
    syntax = Syntax(shown, "diff", theme="ansi_dark", background_color="default")
    for line in syntax.highlight(shown).split("\n"):
        line.pad_left(len(indent))
        console.print(line)


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


def _text(value: Any) -> tuple[str, int]:
    """A recorded value as text, and how much of it a line shows: a string as it is (80 characters),
    other data as JSON (120)."""
    return (value, 80) if isinstance(value, str) else (recorded_json(value), 120)


def _cut(text: str, width: int, at: int = 0) -> str:
    """``text`` cut to ``width`` characters (each cut end marked …), from near ``at`` when it is far in."""
    if len(text) <= width:
        return text
    start = max(0, min(at - width // 4, len(text) - width + 1)) if at > width // 2 else 0
    body = text[start : start + width - (2 if start else 1)]
    return ("…" if start else "") + body + ("…" if start + len(body) < len(text) else "")


def _shown(value: Any) -> str:
    """A recorded value as text: numbers and short strings as they are, other data as JSON, cut to fit."""
    return _cut(*_text(value))


def _shown_pair(old: Any, new: Any) -> tuple[str, str]:
    """Two recorded values as :func:`_shown` shows them; when both are cut, each around where their
    texts first differ (the same prefix cut from both would hide the change)."""
    (a, wa), (b, wb) = _text(old), _text(new)
    if len(a) <= wa or len(b) <= wb or a == b:
        return _cut(a, wa), _cut(b, wb)
    at = len(os.path.commonprefix([a, b]))
    return _cut(a, wa, at), _cut(b, wb, at)


def shown_change(old: Any, new: Any, delta: list[Any] | tuple[Any, ...] = ()) -> str:
    """How a change ends its line: ``: old -> new (+d)``; two lists too long to show whole, by their first
    differing item: ``[12]: "end" -> "band-012" (first difference; 13 items -> 14 items)``."""
    if isinstance(old, list) and isinstance(new, list) and not _fits(old) and not _fits(new):
        at = next((i for i, (x, y) in enumerate(zip(old, new, strict=False)) if x != y), min(len(old), len(new)))
        a, b = (recorded_json(v[at]) if at < len(v) else "-" for v in (old, new))
        sa, sb = _shown_pair(a, b)
        counts = f"{len(old)} items each" if len(old) == len(new) else f"{len(old)} items -> {len(new)} items"
        return f"[{at}]: {sa} -> {sb} (first difference; {counts})"
    sa, sb = _shown_pair(old, new)
    return f": {sa} -> {sb}{_delta(list(delta))}"


def _fits(value: Any) -> bool:
    text, width = _text(value)
    return len(text) <= width


def _plain(line: str) -> None:
    console.print(line, markup=False, highlight=False)


def print_changes(entry: dict[str, Any], indent: str, step: str | None = None) -> None:
    """The 'what changed' lines of one step (see :func:`isthmus.diff.step_changes`); ``step``: its name,
    shown with an output whose keys are listed one by one (``output evaluate.output r2: …``). A hash gc
    deleted is marked ``(deleted)``; a code change is a ``code:`` line with its diff under it."""
    for field in ("status", "error"):
        if field in entry:
            _plain(f"{indent}{field}{shown_change(entry[field][0], entry[field][1])}")
    for field, label in (("params", "param"), ("dependencies", "dependency"), ("resources", "resource")):
        for k, (old, new) in entry.get(field, {}).items():
            _plain(f"{indent}{label} {k}{shown_change(old, new)}")
    deleted = set(entry.get("deleted_artifacts", []))
    for k, (old, new) in entry.get("inputs", {}).items():
        _plain(f"{indent}input {k}: {_hash(old, deleted)} -> {_hash(new, deleted)}")
    for change in entry.get("key_changes", []):
        _plain(indent + _key_change_line(change["component"], change["name"], change["old"], change["new"]))
    hashes = entry.get("outputs", {})
    fields = entry.get("output_fields", {})
    for k, (old, new, *delta) in entry.get("output_values", {}).items():
        if k in fields:
            where = f"{step}.{k}" if step else k
            for key, (a, b, *d) in fields[k].items():
                _plain(f"{indent}output {where} {key}{shown_change(a, b, d)}")
            continue
        ha, hb = hashes.get(k) or (None, None)
        if old == ha or new == hb:  # a side shown by its hash: too big, not JSON or text, or gone
            a = _hash(old, deleted) if old == ha else _shown(old)
            b = _hash(new, deleted) if new == hb else _shown(new)
            _plain(f"{indent}output {k}: {a} -> {b}")
        else:
            _plain(f"{indent}output {k}{shown_change(old, new, delta)}")
    for k, (old, new, *delta) in entry.get("metadata", {}).items():
        _plain(f"{indent}metadata {k}: {recorded_json(old)} -> {recorded_json(new)}{_delta(delta)}")
    for component, text in entry.get("code", {}).items():
        _plain(f"{indent}code: {component} changed")
        print_diff(text, indent + "  ")
    if "cache_key_unexplained" in entry:
        _plain(f"{indent}{entry['cache_key_unexplained']}")
    elif set(entry) == {"cache_key"}:  # a diff made before the reason was part of it
        _plain(
            f"{indent}cache key differs, and nothing recorded does (a declared file or env value, a secret "
            "parameter's value or the secret salt)"
        )


def _hash(content_hash: str | None, deleted: set[str]) -> str:
    """A content hash as its first 12 digits, marked ``(deleted)`` when gc deleted its artifact."""
    return short(content_hash, 12) + (" (deleted)" if content_hash in deleted else "")


def _delta(delta: list[Any]) -> str:
    return f" ({delta[0]:+.6g})" if delta else ""


def _key_change_line(component: str, name: str, old: Any, new: Any) -> str:
    """One cache-key part of the ``@step(...)`` that changed, as ``why`` and ``diff`` print it: a policy
    setting old -> new, a declared file or env variable by what happened (told apart by keyed digests:
    never a value), an output's materializer."""
    if component in ("files", "env"):
        return f"{'declared file' if component == 'files' else 'declared env'} {name}: {new}"
    if component == "outputs":
        return f"output {name} materializer{shown_change(old, new)}"
    return f"{component} {name}{shown_change(old, new)}"


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
            _plain(f"{change.component} {change.name}{shown_change(change.old, change.new)}")
    for note in e.notes:
        _plain(f"note: {note}")
