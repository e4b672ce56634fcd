"""Commands ``isthmus lineage`` and ``isthmus gc``: thin layers over :meth:`Client.lineage` and :meth:`Client.gc`."""

from __future__ import annotations

import json
import re

import click
from rich.markup import escape

from isthmus import defaults
from isthmus.cli.commands import argument, command, json_option
from isthmus.cli.render import console, dump_json, short, status_text
from isthmus.cli.shared import fail, named_project
from isthmus.client import Client
from isthmus.errors import IsthmusError
from isthmus.gc import DEFAULT_GRACE, GcReport
from isthmus.lineage_query import Lineage, StepRunNode

_NUMBER = re.compile(r"\d+(\.\d+)?")
LINEAGE_LIMIT = 200
"""Step runs ``isthmus lineage`` shows by default: a wide lineage (a dataset read by every run) is summed
up by its nearest step runs rather than printed whole; ``--limit`` raises it."""


def _client() -> Client:
    """A client on the configured stores; a configuration mistake is one error line."""
    try:
        return Client(defaults.metadata_store(), defaults.artifact_store())
    except IsthmusError as exc:
        fail(str(exc))


@command("lineage")
@argument("target", help="Artifact (hash, prefix, blake3:…, name@alias), step run (id, RUN:STEP) or run (id, latest).")
@click.option("--upstream", is_flag=True, help="Only where it came from.")
@click.option("--downstream", is_flag=True, help="Only what it fed.")
@click.option("--depth", type=click.IntRange(min=0), help="At most this many step-run hops.")
@json_option
@click.option("--dot", "as_dot", is_flag=True, help="Print Graphviz DOT (pipe to 'dot -Tsvg').")
@click.option(
    "--project", callback=named_project, help="The project of a name@alias target (default: ISTHMUS_PROJECT)."
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=LINEAGE_LIMIT,
    show_default=True,
    help="At most this many step runs, the nearest first (the answer says when there are more).",
)
def lineage_cmd(
    target: str,
    upstream: bool,
    downstream: bool,
    depth: int | None,
    as_json: bool,
    as_dot: bool,
    project: str | None,
    limit: int,
) -> None:
    """Where an artifact, step run or pipeline run came from (upstream: producing step runs, their code,
    parameters, environment and inputs) and what it fed (downstream), across orchestrators."""
    if upstream and downstream:
        fail("give --upstream or --downstream, not both (neither shows both directions)")
    if as_json and as_dot:
        fail("give --json or --dot, not both")
    direction = "upstream" if upstream else "downstream" if downstream else "both"
    try:
        result = _client().lineage(target, direction=direction, depth=depth, project=project, max_step_runs=limit)
    except IsthmusError as exc:
        fail(str(exc))
    if as_json:
        dump_json(result.to_dict())
    elif as_dot:
        print(result.to_dot(), end="")
        if result.truncated:  # on stderr: the DOT on stdout stays a graph
            click.echo(
                f"lineage: the graph holds the {len(result.step_runs)} nearest step runs, there are more; raise "
                "--limit, or narrow with --depth or --upstream/--downstream",
                err=True,
            )
    else:
        _print_lineage(result)


def _step_line(node: StepRunNode) -> str:
    how = f"hit from {short(node.source_step_run_id)}" if node.cache_hit else "computed"
    return (
        f"step run {node.id[:8]} {escape(node.invocation)} {escape(f'[{node.orchestrator}]')} {status_text(node.status)} ({how}), "
        f"{escape(node.pipeline or '-')} run {short(node.pipeline_run_id)}"
    )


def _print_lineage(result: Lineage) -> None:
    kind = result.target_kind.replace("_", " ")
    # an artifact by 16 hex digits of its hash; a run or step run by its whole id (what other commands take)
    target = short(result.target, 16) if result.target_kind == "artifact" else result.target
    gone = result.artifacts.get(result.target)
    if gone is not None and not gone.present:
        target += " (deleted by gc)"
    lines = [
        f"[bold]lineage[/bold] of {kind} {escape(target)} ({result.direction}"
        f"{'' if result.depth is None else f', depth {result.depth}'}): {len(result.step_runs)} step run(s), "
        f"{len(result.artifacts)} artifact(s); orchestrators: {escape(', '.join(result.orchestrators()) or '-')}"
    ]
    inputs: dict[str, list[str]] = {}
    outputs: dict[str, list[str]] = {}
    for e in result.edges:
        if e.role == "input":
            inputs.setdefault(e.target, []).append(f"{e.name}={short(e.source, 12)}")
        else:
            outputs.setdefault(e.source, []).append(f"{e.name}={short(e.target, 12)}")
    for node in sorted(result.step_runs.values(), key=lambda n: (n.depth, n.started_at or "")):
        lines.append(f"  [{node.depth}] " + _step_line(node))
        plain = [
            f"      code {short(node.code_hash, 12)}  deps {short(node.deps_hash, 12)}  "
            f"env {short(node.environment_hash, 12)}"
        ]
        if node.params:
            plain.append(f"      params {json.dumps(node.params, sort_keys=True, default=str)}")
        if inputs.get(node.id):
            plain.append(f"      in:  {', '.join(inputs[node.id])}")
        if outputs.get(node.id):
            plain.append(f"      out: {', '.join(outputs[node.id])}")
        lines += [escape(line) for line in plain]
    missing = [a for a in result.artifacts.values() if not a.present]
    if missing:
        lines.append(escape(f"  deleted artifacts (gc): {', '.join(short(a.content_hash, 12) for a in missing)}"))
    if result.truncated:
        lines.append(
            escape(
                f"  (more step runs than the {len(result.step_runs)} shown, nearest first: raise --limit, "
                "or narrow with --depth or --upstream/--downstream)"
            )
        )
    console.print("\n".join(lines))  # one print: a wide lineage renders in one pass


@command("gc")
@click.option("--keep-last", type=click.IntRange(min=0), help="Keep the N newest runs of each pipeline.")
@click.option("--older-than", help="Only runs older than this (e.g. 30d, 12h) may go.")
@click.option("--dry-run", is_flag=True, help="Report what would go; delete nothing.")
@click.option("--prune-cache", is_flag=True, help="Also drop cache entries of runs not kept, so their objects can go.")
@click.option(
    "--grace",
    default=f"{DEFAULT_GRACE:.0f}s",
    help="Never touch anything newer than this (in-flight writes and hits).",
)
@json_option
def gc_cmd(
    keep_last: int | None,
    older_than: str | None,
    dry_run: bool,
    prune_cache: bool,
    grace: str,
    as_json: bool,
) -> None:
    """Delete artifact objects no kept run, alias or live cache entry needs; remove abandoned partial writes
    and loaded copies; mark step runs of dead processes ABORTED and close the local runs they drove. Safe
    while other runs write and hit; --dry-run counts all of it and changes nothing."""
    ages = {}
    for option, value in (("--older-than", older_than), ("--grace", grace)):
        if value is not None:
            try:
                from isthmus.units import MAX_AGE, parse_duration  # imported when used: the CLI starts fast

                ages[option] = parse_duration(float(value) if _NUMBER.fullmatch(value.strip()) else value)
            except ValueError:
                fail(f"{option} {value!r} is not an age; use e.g. 30d, 12h, 90m or seconds")
            if ages[option] > MAX_AGE:  # a time before year 1 has no date
                fail(f"{option} {value!r} is longer than {MAX_AGE // 86400:.0f}d; use at most that (e.g. 3650d)")
    try:
        report = _client().gc(
            keep_last=keep_last,
            older_than=ages.get("--older-than"),
            dry_run=dry_run,
            prune_cache=prune_cache,
            grace=ages["--grace"],
        )
    except IsthmusError as exc:
        fail(str(exc))
    if as_json:
        dump_json(report.to_dict())
        return
    _print_gc(report)


def _print_gc(r: GcReport) -> None:
    verb = "would delete" if r.dry_run else "deleted"
    console.print(
        f"[bold]gc[/bold]{' (dry run)' if r.dry_run else ''}: {r.runs_kept} of {r.runs} run(s) kept; {verb} "
        f"{r.artifacts_deleted} artifact(s), {r.orphans_deleted} unrecorded object(s) and {r.parts_removed} "
        f"partial write(s): {_bytes(r.bytes_freed)}{' to free' if r.dry_run else ' freed'}"
    )
    console.print(
        f"  cache entries {'to drop' if r.dry_run else 'dropped'}: {r.cache_entries_dropped}; "
        f"kept because in use meanwhile: {r.in_use_skipped}; alias history "
        f"{'protected' if r.alias_history else 'not kept by this store (current aliases protected)'}",
        markup=False,
    )
    if r.dry_run and r.deleted:
        shown = "all" if r.listed_all else f"the first {len(r.deleted)} by hash"
        console.print(f"  listed with --json: {shown}", markup=False)
    if r.dry_run:
        console.print(
            f"  expired cache entries to drop: {r.expired_entries}; step runs of dead processes to mark ABORTED: "
            f"{r.aborted}; pipeline runs to close: {r.runs_closed}; loaded copies: counted when gc runs",
            markup=False,
        )
    else:
        console.print(
            f"  expired cache entries dropped: {r.expired_entries}; loaded copies removed: {r.copies_removed}; "
            f"step runs of dead processes marked ABORTED: {r.aborted}; pipeline runs closed: {r.runs_closed}",
            markup=False,
        )
    if r.closed_runs:
        closed = ", ".join(short(run_id) for run_id in r.closed_runs)
        console.print(f"  {'would close' if r.dry_run else 'closed'} (ABORTED, process gone): {closed}", markup=False)


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit} ({n} B)"
        size /= 1024
    return f"{n} B"
