"""Commands on artifacts: ``artifacts list|show|alias|aliases|history``, ``rollback`` and ``invalidate``.

Artifact ids everywhere: a hash or unique prefix, ``NAME`` (= ``NAME@latest``), ``NAME@ALIAS``, ``NAME~N``.
"""

from __future__ import annotations

import json

import click
from rich.markup import escape

from isthmus.aliases import AliasChange
from isthmus.cli.commands import argument, command, group, json_option
from isthmus.cli.render import console, dump_json, short, table, when
from isthmus.cli.shared import at_least_one, named_project
from isthmus.cli.shared import fail as _fail
from isthmus.client import Client
from isthmus.errors import IsthmusError
from isthmus.governance.projects import alias_project

artifacts_app = group("artifacts", help="Artifacts, their versions and aliases (name@alias).")

reason_option = click.option("--reason", help="Why (kept in the alias history).")
project_option = click.option(
    "--project",
    callback=named_project,
    help="The project the alias belongs to (default: ISTHMUS_PROJECT, else 'default').",
)
_IDS = "a hash or unique prefix, NAME (its newest version), NAME@ALIAS, NAME@latest or NAME~N"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def _change_line(c: AliasChange) -> str:
    old = short(c.from_hash, 12) if c.from_hash else "(unset)"
    flags = " (forced)" if c.forced else ""
    return f"{c.name}@{c.alias} ({c.project}): {old} -> {short(c.to_hash, 12)} [{c.action}{flags}]"


@artifacts_app.command("list")
@click.option("--name", help="Only versions of this artifact (STEP.OUTPUT).")
@click.option("--limit", "-n", type=int, default=50, callback=at_least_one, help="How many, newest first.")
@click.option("--by-run", is_flag=True, help="One row per step run that produced or reused a version.")
@project_option
@json_option
def artifacts_list(name: str | None, limit: int, by_run: bool, project: str | None, as_json: bool) -> None:
    """Artifact versions, newest first, with how many step runs used each (as input or output), and the
    aliases of the project pointing at them."""
    client = Client()
    try:
        rows = client.artifact_versions(name=name, limit=limit, by_run=by_run, project=project)
    except IsthmusError as exc:
        _fail(str(exc))
    if as_json:
        dump_json(rows)
        return
    if not rows:  # an empty table says nothing: say what was looked for
        from isthmus.artifact_ids import name_hint

        hint = name_hint(client.metadata, name) if name else ""
        if name:
            console.print(
                f"no versions of {name!r} recorded in this store{hint}; see 'isthmus artifacts list'", markup=False
            )
        else:
            console.print("no artifacts recorded in this store yet: run a pipeline, then list them here", markup=False)
        return
    if by_run:
        t = table("Artifacts by step run", ["name", "hash", "type", "materializer", "size", "run", "produced"])
        for r in rows:
            t.add_row(
                escape(r["artifact_name"]),
                short(r["content_hash"], 12),
                escape(r["python_type"].split(":")[-1]),
                escape(r["materializer"]),
                _size(r["size"]),
                short(r["pipeline_run_id"]),
                when(r["produced_at"]),
            )
    else:
        # with --name: NAME, NAME~1 … and the version numbers; without: the newest contents, by hash
        third = ("version", "hash") if name else ("name",)
        t = table("Artifact versions", ["id", *third, "type", "size", "used by", "first produced", "aliases"])
        for r in rows:
            ids = (str(r["version"]) if r["version"] else "-", short(r["content_hash"], 12)) if name else ()
            t.add_row(
                escape(r["id"] or r["name"] or "-"),
                *(ids or (escape(r["name"] or "-"),)),
                escape(r["python_type"].split(":")[-1]),
                _size(r["size"]),
                f"{r['used_by']} step run(s)",
                when(r["first_produced"]),
                escape(", ".join(r["aliases"])),
            )
    console.print(t)


@artifacts_app.command("show")
@argument("ref", help=f"Artifact id: {_IDS}.")
@project_option
@json_option
def artifacts_show(ref: str, project: str | None, as_json: bool) -> None:
    """One artifact version: what it is, where it is, who produced it."""
    client = Client()
    try:
        a = client.artifact(ref, project=project)
        # the step run that produced this version (under its name, when named), not the bytes' first producer
        producer = client.metadata.get_step_run(a.producer_step_run_id) if a.producer_step_run_id else None
    except IsthmusError as exc:
        _fail(str(exc))
    if as_json:
        dump_json({"artifact": a.to_dict(), "producer": producer})
        return
    version = f"version {a.number} of {a.versions}" if a.number else "-"
    if a.number and a.deleted_versions:
        version += f" stored ({a.deleted_versions} more deleted by gc)"
    lines = [
        ("content_hash", a.content_hash),
        ("name", ", ".join(a.names) or "-"),
        ("version", version),
        ("uri", a.uri),
        ("size", _size(a.size)),
        ("materializer", a.materializer),
        ("python_type", a.python_type),
    ]
    if a.metadata:
        lines.append(("metadata", json.dumps(a.metadata, sort_keys=True, default=str)))
    if producer:
        lines.append(
            (
                "produced by",
                f"step {producer['step_name']} (step run {producer['id']}, pipeline run {producer['pipeline_run_id']})",
            )
        )
    for k, v in lines:
        console.print(f"{k:>13}: {v}", markup=False)


@artifacts_app.command("alias")
@argument("alias", help="NAME@ALIAS, e.g. train.output@production")
@argument("version", help=f"The version to point it at: {_IDS}.")
@reason_option
@click.option("--force", is_flag=True, help="Allow a version that is not one of NAME's.")
@project_option
@json_option
def artifacts_alias(
    alias: str, version: str, reason: str | None, force: bool, project: str | None, as_json: bool
) -> None:
    """Point NAME@ALIAS of the project at a version of NAME (promote); the change is kept in its history."""
    try:
        change = Client().promote(alias, version, reason=reason, force=force, via="cli", project=project)
    except IsthmusError as exc:
        _fail(str(exc))
    if as_json:
        dump_json(change.to_dict() if change else None)
    elif change is None:
        console.print(f"{alias} already points at that version; nothing changed", markup=False)
    else:
        console.print(_change_line(change), markup=False)


@artifacts_app.command("aliases")
@click.option("--project", callback=named_project, help="Only this project's aliases (default: every project's).")
@json_option
def artifacts_aliases(project: str | None, as_json: bool) -> None:
    """List aliases (with their project) and where they point."""
    try:
        only = frozenset({alias_project(project)}) if project else None
        rows = Client().aliases(projects=only)
    except IsthmusError as exc:
        _fail(str(exc))
    if as_json:
        dump_json(rows)
        return
    t = table("Aliases", ["project", "alias", "hash", "updated"])
    for r in rows:
        t.add_row(
            escape(r["project"]),
            escape(f"{r['name']}@{r['alias']}"),
            short(r["content_hash"], 12),
            when(r["updated_at"]),
        )
    console.print(t)


@artifacts_app.command("history")
@argument("alias", help="NAME@ALIAS")
@project_option
@json_option
def artifacts_history(alias: str, project: str | None, as_json: bool) -> None:
    """Every change of NAME@ALIAS in the project: from, to, who, when, where, why."""
    try:
        owner = alias_project(project)
        changes = Client().alias_history(alias, project=owner)
    except IsthmusError as exc:
        _fail(str(exc))
    if not changes:  # the same answer for people and scripts: an error, not an empty history
        flag = "" if owner == alias_project() else f" --project {owner}"
        _fail(
            f"{alias!r} has never been set in project {owner!r}; set it with "
            f"'isthmus artifacts alias {alias} VERSION{flag}'"
        )
    if as_json:
        dump_json([c.to_dict() for c in changes])
        return
    t = table(
        f"History of {escape(alias)} ({escape(owner)})", ["when", "action", "from", "to", "who", "where", "reason"]
    )
    for c in changes:
        t.add_row(
            when(c.changed_at),
            c.action + (" (forced)" if c.forced else ""),
            short(c.from_hash, 12) if c.from_hash else "(unset)",
            short(c.to_hash, 12),
            escape(c.user or "-"),
            escape(f"{c.host or '-'} ({c.via})"),
            escape(c.reason or ""),
        )
    console.print(t)


@command("rollback")
@argument("alias", help="NAME@ALIAS, e.g. train.output@production")
@click.option("--to", help=f"Roll back to this version instead: {_IDS}.")
@reason_option
@project_option
@json_option
def rollback(alias: str, to: str | None, reason: str | None, project: str | None, as_json: bool) -> None:
    """Move NAME@ALIAS of the project back to its previous target (from its history), or to --to VERSION."""
    try:
        change = Client().rollback(alias, to, reason=reason, via="cli", project=project)
    except IsthmusError as exc:
        _fail(str(exc))
    if as_json:
        dump_json(change.to_dict())
        return
    console.print(_change_line(change), markup=False)


INVALIDATE_SHOWN = 50  # derived step runs listed in the table (--json lists every one)


@command("invalidate")
@argument("artifact", help=f"The bad artifact: {_IDS}.")
@click.option("--downstream", is_flag=True, help="Everything derived from it (required: says what is dropped).")
@click.option("--dry-run", is_flag=True, help="List what would be affected; change nothing.")
@click.option("--reason", help="Why (kept on the marked step runs).")
@json_option
def invalidate(artifact: str, downstream: bool, dry_run: bool, reason: str | None, as_json: bool) -> None:
    """Drop the cache entries of every step run derived from ARTIFACT, so the next runs recompute them.

    The records stay, marked invalidated (never a cache hit again). The producer of ARTIFACT is not touched."""
    if not downstream:
        _fail("invalidate needs --downstream (it drops the cache of everything derived from the artifact)")
    try:
        listing = None if as_json else INVALIDATE_SHOWN  # the table reads only the step runs it shows
        result = Client().invalidate(artifact, dry_run=dry_run, reason=reason, listing=listing)
    except IsthmusError as exc:
        _fail(str(exc))
    if as_json:
        dump_json(result.to_dict())
        return
    verb = "would drop" if dry_run else "dropped"
    console.print(
        f"{short(result.artifact, 12)} ({result.name or 'unnamed'}): {result.step_run_count} derived step run(s), "
        f"{len(result.derived_artifacts)} derived artifact(s); {verb} {result.cache_entries} cache entr"
        f"{'y' if result.cache_entries == 1 else 'ies'}" + ("" if dry_run else f", marked {result.marked} step run(s)"),
        markup=False,
    )
    if result.step_runs:
        t = table("Derived step runs", ["depth", "step", "step run", "run", "orchestrator", "cache", "note"])
        for sr in result.step_runs:  # the first INVALIDATE_SHOWN: a raw dataset's downstream can be the whole store
            t.add_row(
                str(sr.depth),
                escape(sr.invocation),
                short(sr.id),
                short(sr.pipeline_run_id),
                sr.orchestrator,
                "hit" if sr.cache_hit else "computed",
                "already invalidated" if sr.already_invalidated else "",
            )
        console.print(t)
        if result.step_run_count > len(result.step_runs):
            console.print(
                f"  the first {len(result.step_runs)} of {result.step_run_count} by depth and start; all of them with --json",
                markup=False,
            )
    if result.aliases:
        console.print(f"aliases pointing at a derived artifact: {', '.join(result.aliases)}", markup=False)
    if dry_run:
        console.print("dry run: nothing was changed", markup=False)
