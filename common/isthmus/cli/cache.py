"""``isthmus cache list|clear|prune``: the step cache."""

from __future__ import annotations

import datetime as dt
import sys
import time
from typing import Any

import click

from isthmus.cli.commands import group, json_option
from isthmus.cli.render import console, dump_json, short, table
from isthmus.cli.shared import at_least_one, client, meta

cache_app = group("cache", help="The step cache.")


@cache_app.command("list")
@click.option("--step")
@click.option("--limit", "-n", type=int, default=100, callback=at_least_one)
@json_option
def cache_list(step: str | None, limit: int, as_json: bool) -> None:
    """Cache entries (step, key, producing step run, expiry)."""
    rows = meta().list_cache_entries(step_name=step, limit=limit)
    if as_json:
        dump_json([{**r, "created_at": _iso(r["created_at"]), "expires_at": _iso(r["expires_at"])} for r in rows])
        return
    t = table("Cache entries", ["step", "key", "step run", "created", "expires"])
    for r in rows:
        t.add_row(
            r["step_name"],
            short(r["cache_key"], 12),
            short(r["step_run_id"]),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created_at"])),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["expires_at"])) if r["expires_at"] else "never",
        )
    console.print(t)


def _iso(epoch: Any) -> str | None:
    """A stored time (seconds since the epoch) as an ISO string in UTC, as every other command prints times."""
    return None if epoch is None else dt.datetime.fromtimestamp(float(epoch), dt.timezone.utc).isoformat()


@cache_app.command("clear")
@click.option("--step", help="Only this step's entries.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@json_option
def cache_clear(step: str | None, yes: bool, as_json: bool) -> None:
    """Forget cache entries (run history and artifacts are kept)."""
    what = f"step {step!r}" if step else "ALL steps"
    if not yes and sys.stdin.isatty() and not click.confirm(f"Clear cache entries of {what}?", err=as_json):
        raise click.exceptions.Exit(1)
    n = client().clear_cache(step)
    if as_json:
        dump_json({"step": step, "cleared": n})
        return
    console.print(f"cleared {n} cache entr{'y' if n == 1 else 'ies'}")


@cache_app.command("prune")
@click.option("--artifacts", is_flag=True, help="Also delete stored objects no run refers to.")
@click.option("--dry-run", is_flag=True, help="Count what would go or be marked; change nothing.")
@json_option
def cache_prune(artifacts: bool, dry_run: bool, as_json: bool) -> None:
    """Drop expired entries and entries whose artifacts are gone; remove abandoned partial writes; mark step
    runs of dead processes ABORTED and close the local runs they drove."""
    report = client().prune_cache(delete_unreferenced=artifacts, dry_run=dry_run)
    if as_json:
        dump_json({"dry_run": dry_run, **report})
        return
    if dry_run:
        console.print(
            f"cache prune (dry run): would drop expired entries: {report['expired']}, "
            f"entries with missing artifacts: {report['missing']}"
        )
        console.print(
            f"partial writes to remove: {report['tmp']}, unreferenced objects to remove: {report['unreferenced']}"
        )
        console.print(
            f"abandoned step runs to mark ABORTED: {report['aborted']}; "
            f"pipeline runs they drove to close (ABORTED): {report['runs_closed']}"
        )
        return
    console.print(
        f"expired entries: {report['expired']}, entries with missing artifacts: {report['missing']}, "
        f"partial writes removed: {report['tmp']}, unreferenced objects removed: {report['unreferenced']}"
    )
    console.print(
        f"abandoned step runs marked ABORTED: {report['aborted']}; "
        f"pipeline runs they drove closed (ABORTED): {report['runs_closed']}"
    )
