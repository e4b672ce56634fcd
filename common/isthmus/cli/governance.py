"""``isthmus tokens create|list|revoke``, ``isthmus roles grant|list`` and ``isthmus audit``. Creating
tokens and granting roles need the admin role once the store has grants; each is recorded in the audit log."""

from __future__ import annotations

import datetime as dt

import click
from rich.markup import escape
from rich.table import Table

from isthmus import defaults
from isthmus.cli.commands import argument, command, group, json_option
from isthmus.cli.render import console, dump_json, table, when
from isthmus.client import Client
from isthmus.errors import ConfigurationError
from isthmus.governance import audit, roles, tokens
from isthmus.governance.projects import check_project
from isthmus.governance.roles import ALL_PROJECTS, Role

tokens_app = group("tokens", help="API tokens of the web UI and its JSON API.")
roles_app = group("roles", help="Who holds which role in which project.")


def _role(text: str) -> Role:
    try:
        return Role.parse(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _project(text: str | None) -> str | None:
    if text is None or text == ALL_PROJECTS:
        return None
    try:
        return check_project(text, "--project")
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc)) from None


def _row(t: Table, *cells: str) -> None:
    """Recorded text is shown as text, never read as console markup."""
    t.add_row(*[escape(str(c)) for c in cells])


@tokens_app.command("create")
@click.option("--role", required=True, help="viewer, operator or admin.")
@click.option("--project", help="The one project it may see (default: all).")
@click.option("--name", help="Who or what holds it (default: you).")
@click.option("--days", type=click.IntRange(min=1), help="Expires after this many days.")
@json_option
def tokens_create(role: str, project: str | None, name: str | None, days: int | None, as_json: bool) -> None:
    """Create an API token and print it once (the store keeps only its hash)."""
    chosen, scope = _role(role), _project(project)
    meta = defaults.metadata_store()
    creator = roles.require_cli_role(meta, Role.ADMIN, scope, "tokens create")
    text, row = tokens.create(
        meta,
        name or creator,
        chosen,
        scope,
        created_by=creator,
        expires_in=dt.timedelta(days=days) if days else None,
    )
    audit.record(
        meta, "token.create", row["id"], project=scope, details={"principal": row["principal"], "role": chosen.label}
    )
    if as_json:
        dump_json({**row, "token": text})
        return
    console.print(f"token {row['id']} for {row['principal']} ({chosen.label}, project {scope or 'all'}):", markup=False)
    click.echo(text)
    console.print("Keep it now: it is not shown again. Use it as 'Authorization: Bearer TOKEN'.", markup=False)


@tokens_app.command("list")
@click.option("--json", "as_json", is_flag=True)
def tokens_list(as_json: bool) -> None:
    """Live tokens (never their secret)."""
    rows = [r for r in tokens.listed(defaults.metadata_store()) if r["revoked_at"] is None]
    if as_json:
        dump_json(rows)
        return
    t = table("API tokens", ["id", "principal", "role", "project", "created", "expires"])
    for r in rows:
        _row(t, r["id"], r["principal"], r["role"], r["project"] or "all", when(r["created_at"]), when(r["expires_at"]))
    console.print(t)


@tokens_app.command("revoke")
@argument("token_id", help="The token's id (tokens list).")
def tokens_revoke(token_id: str) -> None:
    """Revoke a token: requests bringing it are refused from now on."""
    meta = defaults.metadata_store()
    roles.require_cli_role(meta, Role.ADMIN, None, "tokens revoke")
    if not tokens.revoke(meta, token_id):
        raise click.BadParameter(f"no live token {token_id[:20]!r}; see 'isthmus tokens list'")
    audit.record(meta, "token.revoke", token_id)
    console.print(f"revoked {token_id}", markup=False)


@roles_app.command("grant")
@argument("principal", help="A user name (the OS user for the CLI, the token's name).")
@argument("role", help="viewer, operator or admin.")
@click.option("--project", help="One project (default: all).")
def roles_grant(principal: str, role: str, project: str | None) -> None:
    """Give someone a role in a project. The first grant turns role checks on for the CLI."""
    chosen, scope = _role(role), _project(project)
    meta = defaults.metadata_store()
    by = roles.require_cli_role(meta, Role.ADMIN, scope, "roles grant")
    if not roles.any_grant(meta) and by != principal:  # the first grant: its granter stays an admin
        roles.grant(meta, by, Role.ADMIN, ALL_PROJECTS, by=by)
        audit.record(meta, "role.grant", by, details={"role": Role.ADMIN.label, "first_grant": True})
        console.print(f"{by} is admin in every project (the first grant turns role checks on)", markup=False)
    roles.grant(meta, principal, chosen, scope or ALL_PROJECTS, by=by)
    audit.record(meta, "role.grant", principal, project=scope, details={"role": chosen.label})
    console.print(f"{principal} is {chosen.label} in {scope or 'every project'}", markup=False)


@roles_app.command("list")
@click.option("--json", "as_json", is_flag=True)
def roles_list(as_json: bool) -> None:
    """Every grant."""
    rows = roles.grants(defaults.metadata_store())
    if as_json:
        dump_json(rows)
        return
    t = table("Role grants", ["principal", "project", "role", "granted by", "when"])
    for r in rows:
        _row(t, r["principal"], r["project"], r["role"], r["granted_by"] or "-", when(r["granted_at"]))
    console.print(t)


@command("audit")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=50, help="How many entries, newest first.")
@click.option("--action", help="Only this action, e.g. alias.rollback.")
@click.option("--project")
@json_option
def audit_cmd(limit: int, action: str | None, project: str | None, as_json: bool) -> None:
    """The audit log: who changed what, when, from where."""
    rows = Client(defaults.metadata_store()).audit_log(limit=limit, action=action, project=project)
    if as_json:
        dump_json([r.to_dict() for r in rows])
        return
    t = table("Audit log", ["when", "who", "via", "from", "action", "target", "project"])
    for r in rows:
        who = f"{r.actor} ({r.role})" if r.role else r.actor
        _row(t, when(r.at), who, r.via, r.origin or "-", r.action, r.target or "-", r.project or "-")
    console.print(t)
