"""``isthmus runs close``: close pipeline runs left RUNNING by a run nothing closed (a crashed process,
a killed pod, a hand-written Flyte workflow recorded by an older version)."""

from __future__ import annotations

import datetime as dt
import re

import click
from rich.markup import escape

from isthmus.cli.commands import Command, json_option
from isthmus.cli.render import console, dump_json, status_text, table
from isthmus.cli.shared import fail

_SECONDS = re.compile(r"\d+(\.\d+)?")


def _idle_seconds(idle: str) -> float:
    """``--idle`` in seconds: a duration (30m, 6h, 2d) or plain seconds; 0 means every RUNNING run."""
    from isthmus.units import MAX_AGE, parse_duration  # imported when used: the CLI starts fast

    text = idle.strip()
    try:
        seconds = parse_duration(float(text) if _SECONDS.fullmatch(text) else text)
    except ValueError:
        fail(f"--idle {idle!r}: not a duration; use e.g. 30m, 6h, 2d or seconds (0: every RUNNING run)")
    if seconds > MAX_AGE:  # a time before year 1 has no date
        fail(f"--idle {idle!r} is longer than {MAX_AGE // 86400:.0f}d; use at most that (0: every RUNNING run)")
    return seconds


@click.command("close", cls=Command)
@click.option(
    "--idle",
    default="24h",
    help="Close runs with no activity (step run start or end) for this long: 30m, 6h, 2d, or seconds "
    "(0: every RUNNING run, live ones included — see --dry-run first).",
)
@click.option("--dry-run", is_flag=True, help="Show what would be closed; change nothing.")
@json_option
def runs_close(idle: str, dry_run: bool, as_json: bool) -> None:
    """Close RUNNING pipeline runs idle for --idle: COMPLETED/FAILED from their step runs when all ended,
    ABORTED when a step run never ended.

    A step run of a closed run that never ended is marked ABORTED and its cache lease released (the next
    run computes that step at once); each one marked is listed."""
    from isthmus.client import Client
    from isthmus.errors import IsthmusError

    seconds = _idle_seconds(idle)
    try:  # through the client: an operator's action, checked against the roles and audited
        closed = Client().close_stale_runs(dt.timedelta(seconds=seconds), dry_run=dry_run)
    except IsthmusError as exc:
        fail(str(exc))
    if as_json:
        dump_json({"dry_run": dry_run, "idle_seconds": seconds, "closed": [c.to_dict() for c in closed]})
        return
    if not closed:
        console.print(f"no RUNNING run idle for {escape(idle)}")
        return
    t = table("Would close" if dry_run else "Closed", ["run", "pipeline", "orchestrator", "status", "why"])
    for c in closed:
        t.add_row(
            c.run_id[:8], escape(c.pipeline), escape(c.orchestrator), status_text(c.status), escape(c.error or "")
        )
    console.print(t)
    verb = "would mark" if dry_run else "marked"
    for c in closed:
        for a in c.aborted_steps:  # a live step too, with a short --idle: say which
            console.print(
                f"{c.run_id[:8]}: {verb} ABORTED: step run {a.step_run_id[:8]} ({a.invocation!r})", markup=False
            )
