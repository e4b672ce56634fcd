"""``isthmus runs close``: close pipeline runs left RUNNING by a run nothing closed (a crashed process,
a killed pod, a hand-written Flyte workflow recorded by an older version)."""

from __future__ import annotations

import datetime as dt

import click
from rich.markup import escape

from isthmus.cli.commands import Command
from isthmus.cli.render import console, status_text, table


@click.command("close", cls=Command)
@click.option(
    "--idle",
    default="24h",
    help="Close runs with no activity (step run start or end) for this long: 30m, 6h, 2d.",
)
@click.option("--dry-run", is_flag=True, help="Show what would be closed; change nothing.")
def runs_close(idle: str, dry_run: bool) -> None:
    """Close RUNNING pipeline runs idle for --idle: COMPLETED/FAILED from their step runs when all ended,
    ABORTED when a step run never ended."""
    from isthmus import defaults
    from isthmus.errors import ConfigurationError
    from isthmus.run_closing import close_stale_runs
    from isthmus.units import parse_duration

    try:
        seconds = parse_duration(idle)
    except ValueError as exc:
        click.echo(f"error: --idle {idle!r}: {exc}", err=True)
        raise click.exceptions.Exit(1) from None
    try:
        store = defaults.metadata_store()
    except ConfigurationError as exc:
        click.echo(f"error: {exc}", err=True)
        raise click.exceptions.Exit(1) from None
    closed = close_stale_runs(store, dt.timedelta(seconds=seconds), dry_run=dry_run)
    if not closed:
        console.print(f"no RUNNING run idle for {idle}")
        return
    t = table("Would close" if dry_run else "Closed", ["run", "pipeline", "orchestrator", "status", "why"])
    for c in closed:
        t.add_row(
            c.run_id[:8], escape(c.pipeline), escape(c.orchestrator), status_text(c.status), escape(c.error or "")
        )
    console.print(t)
