"""``isthmus runs list|show|close``: pipeline runs. Queries go through :class:`isthmus.Client`."""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape

from isthmus.cli.commands import argument, group, json_option
from isthmus.cli.render import console, dump_json, duration, pinned_lines, short, status_text, table, when
from isthmus.cli.runs_close import runs_close
from isthmus.cli.shared import at_least_one, client, fail, meta
from isthmus.errors import IsthmusError
from isthmus.explain import recorded_json, short_hashes

runs_app = group("runs", help="Pipeline runs.")
runs_app.add_command(runs_close)


@runs_app.command("list")
@click.option("--limit", "-n", type=int, default=20, callback=at_least_one, help="How many runs, newest first.")
@click.option("--pipeline", "-p")
@click.option("--orchestrator", "-o")
@json_option
def runs_list(limit: int, pipeline: str | None, orchestrator: str | None, as_json: bool) -> None:
    """List recent pipeline runs."""
    rows = meta().list_runs(limit=limit, pipeline=pipeline, orchestrator=orchestrator)
    if as_json:
        dump_json(rows)
        return
    t = table("Pipeline runs", ["run", "pipeline", "orchestrator", "status", "steps", "cache hits", "started", "took"])
    for r in rows:
        t.add_row(
            r["id"][:8],
            r["pipeline"],
            r["orchestrator"],
            status_text(r["status"]),
            str(r["steps"] or 0),
            str(r["hits"] or 0),
            when(r["started_at"]),
            duration(r["started_at"], r["ended_at"]),
        )
    console.print(t)


@runs_app.command("show")
@argument("run", help="Run id, unique prefix, 'latest' or 'latest~N'.")
@json_option
def runs_show(run: str, as_json: bool) -> None:
    """Show one pipeline run and its step runs (each with why it computed, or where its hit came from)."""
    c = client()
    try:
        r = c.run(run)
        steps = c.step_runs(r["id"])
        reasons = c.reasons(r["id"])
    except IsthmusError as exc:
        fail(str(exc))
    if as_json:
        dump_json({"run": r, "steps": steps, "reasons": reasons})
        return
    console.print(
        f"[bold]{r['pipeline']}[/bold] run {r['id']}  {status_text(r['status'])}  "
        f"orchestrator={r['orchestrator']}  started {when(r['started_at'])}  took {duration(r['started_at'], r['ended_at'])}"
    )
    if r["params"]:
        console.print(f"params: {recorded_json(r['params'])}", markup=False)
    if r["context"]:
        console.print(f"context: {recorded_json(r['context'])}", markup=False)
    if r["error"]:
        console.print(f"[red]error:[/red] {escape(r['error'])}")
    t = table("Steps", ["step", "step run", "attempt", "status", "cache", "took", "outputs", "why"])
    for sr in steps:
        cache = (
            f"hit (from {short(sr['source_step_run_id'])})"
            if sr["cache_hit"]
            else ("miss" if sr["cache_key"] else "off")
        )
        outs = ", ".join(f"{k}={short(v.get('content_hash'))}" for k, v in (sr["outputs"] or {}).items())
        t.add_row(
            escape(sr["invocation"]),
            short(sr["id"]),
            str(sr["attempt"]),
            status_text(sr["status"]) + (" [magenta]invalidated[/magenta]" if sr.get("invalidated_at") else ""),
            cache,
            f"{sr['duration_ms']:.0f} ms" if sr["duration_ms"] is not None else "-",
            escape(outs or (sr["error"] or "")[:80]),
            "" if sr["cache_hit"] else escape(reasons.get(sr["id"], "")),
        )
    console.print(t)
    for sr in steps:
        for line in pinned_lines(dict(sr)) + _invalidated_lines(dict(sr)) + _metadata_lines(dict(sr)):
            console.print(line, markup=False, highlight=False)


def _invalidated_lines(step_run: dict[str, Any]) -> list[str]:
    """``runs show`` line for a step run marked by ``isthmus invalidate``: when, and the recorded reason
    (its result is never a cache hit again)."""
    if not step_run.get("invalidated_at"):
        return []
    reason = short_hashes(str(step_run.get("invalidated_reason") or "no reason recorded"))
    return [
        f"invalidated {step_run['invocation']} (step run {short(step_run['id'])}) at "
        f"{when(step_run['invalidated_at'])}: {reason}; never a cache hit again"
    ]


def _metadata_lines(step_run: dict[str, Any]) -> list[str]:
    """``runs show`` lines for what a step logged (``isthmus.log_metadata``), its own and its outputs'."""
    shown = [("", step_run.get("metadata"))]
    shown += [
        (f" output {k}", (v.get("metadata") or {}).get("logged")) for k, v in (step_run.get("outputs") or {}).items()
    ]
    return [
        f"metadata of {step_run['invocation']}{where}: {recorded_json(data)}"
        for where, data in shown
        if isinstance(data, dict) and data
    ]
