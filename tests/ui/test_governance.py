"""Projects, roles, hashed API tokens and the append-only audit log: on the Client, the command line and
the web UI (a real ``isthmus ui`` process with tokens)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from isthmus import Client, defaults
from isthmus.cli import app
from isthmus.governance import roles, tokens
from isthmus.governance.roles import PermissionDenied, Role
from isthmus.store import schema as s
from tests.ui.conftest import Seeded, chain, serving


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_every_mutating_action_is_audited(seeded: Seeded) -> None:
    client = Client()
    before = {e.action for e in client.audit_log()}
    assert before == {"alias.promote"}  # the fixture promoted twice
    client.rollback("load.output@production", reason="bad")
    client.invalidate(seeded.v2, reason="corrupt")
    client.clear_cache("total")
    client.prune_cache()
    client.gc(keep_last=10)
    client.rerun(seeded.first)
    code, out = cli("tokens", "create", "--role", "viewer", "--project", "p", "--json")
    assert code == 0, out
    token_id = json.loads(out)["id"]
    assert cli("tokens", "revoke", token_id)[0] == 0
    assert cli("roles", "grant", "bob", "viewer", "--project", "p")[0] == 0
    entries = client.audit_log(limit=100)
    assert [e.action for e in entries[:11]] == [
        "role.grant",
        "role.grant",
        "token.revoke",
        "token.create",
        "rerun",
        "gc",
        "cache.prune",
        "cache.clear",
        "invalidate",
        "alias.rollback",
        "alias.promote",
    ]
    rollback = next(e for e in entries if e.action == "alias.rollback")
    assert rollback.actor == roles.os_user() and rollback.origin and rollback.via == "api"
    assert rollback.details == {"from": seeded.v2, "to": seeded.v1, "reason": "bad"}
    assert [(e.target, (e.details or {}).get("role")) for e in entries[:2]] == [
        ("bob", "viewer"),
        (roles.os_user(), "admin"),
    ]
    assert Client().run(seeded.first)  # the granter kept its rights: still an admin
    Client().gc(keep_last=10)
    code, out = cli("audit", "--json")
    assert code == 0 and json.loads(out)[0]["action"] == "gc"
    code, out = cli("audit")
    assert code == 0 and "alias.rollback" in out


def test_the_audit_log_is_append_only(seeded: Seeded) -> None:
    Client().rollback("load.output@production")
    engine = defaults.metadata_store().engine
    for stmt in (sa.update(s.audit_log).values(actor="mallory"), sa.delete(s.audit_log)):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
            conn.execute(stmt)
    assert Client().audit_log()[0].actor != "mallory"


def test_tokens_are_stored_hashed_and_checked(seeded: Seeded) -> None:
    meta = defaults.metadata_store()
    text, row = tokens.create(meta, "ci", Role.OPERATOR, None, created_by="admin")
    with meta.engine.connect() as conn:
        stored = conn.execute(sa.select(s.api_tokens)).mappings().one()
    assert text.split("_")[-1] not in json.dumps({k: str(v) for k, v in stored.items()})
    who = tokens.principal_for(meta, text, bearer=True)
    assert who is not None and (who.name, who.role, who.projects) == ("ci", Role.OPERATOR, None)
    assert tokens.principal_for(meta, text[:-1] + ("A" if text[-1] != "A" else "B"), bearer=True) is None
    assert tokens.principal_for(meta, "<script>", bearer=True) is None
    tokens.revoke(meta, row["id"])
    assert tokens.principal_for(meta, text, bearer=True) is None


def test_cli_mutations_check_roles_once_granted(seeded: Seeded) -> None:
    meta = defaults.metadata_store()
    roles.grant(meta, "someone-else", Role.ADMIN, by="test")
    with pytest.raises(PermissionDenied, match="operator is needed; an admin grants it with 'isthmus roles grant"):
        Client().rollback("load.output@production")
    code, out = cli("rollback", "load.output@production")
    assert code != 0
    roles.grant(meta, roles.os_user(), Role.VIEWER, by="test")
    with pytest.raises(PermissionDenied, match="has viewer"):
        Client().clear_cache()
    code, out = cli("runs", "close", "--idle", "0")  # closing runs is an operator's action too
    assert code == 1 and "operator is needed" in out and len(out.splitlines()) == 1
    assert cli("runs", "close", "--idle", "0", "--dry-run")[0] == 0  # looking needs no role
    code, out = cli("tokens", "create", "--role", "viewer")
    assert code != 0
    roles.grant(meta, roles.os_user(), Role.OPERATOR, by="test")
    Client().rollback("load.output@production")
    assert cli("runs", "close", "--idle", "1h")[0] == 0
    assert Client().audit_log(limit=1)[0].action == "runs.close"
    with pytest.raises(PermissionDenied, match="admin is needed"):
        Client().gc(keep_last=1)
    assert Client().artifact("load.output@production").content_hash == seeded.v1


def test_runs_belong_to_the_configured_project(seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTHMUS_PROJECT", "team-b")
    mine = chain.run(n=9)
    client = Client()
    assert client.run(mine.id)["project"] == "team-b" and client.run(seeded.first)["project"] == "default"
    monkeypatch.setenv("ISTHMUS_PROJECT", "bad project!")
    with pytest.raises(Exception, match="ISTHMUS_PROJECT='bad project!' is not a project name"):
        chain.run(n=10)


def _get(url: str, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _post(url: str, body: dict, token: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_isthmus_ui_with_tokens_projects_and_roles(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ISTHMUS_PROJECT", "team-b")
    other = chain.run(n=11)
    monkeypatch.delenv("ISTHMUS_PROJECT")
    code, out = cli("tokens", "create", "--role", "viewer", "--project", "team-b", "--name", "val", "--json")
    viewer = json.loads(out)["token"]
    code, out = cli("tokens", "create", "--role", "operator", "--name", "olga", "--json")
    operator = json.loads(out)["token"]
    with serving() as url:
        assert _get(f"{url}/api/v1/runs")[0] == 401  # tokens exist: anonymous is refused
        status, body = _get(f"{url}/api/v1/runs", viewer)
        assert status == 200 and [r["id"] for r in body["runs"]] == [other.id]  # only team-b
        assert _get(f"{url}/api/v1/runs/{seeded.first}", viewer)[0] == 404
        assert _get(f"{url}/api/v1/runs?project=default", viewer)[0] == 403
        # artifacts and lineage are split by project: team-b's run never used the default project's v1
        assert _get(f"{url}/api/v1/lineage?target={seeded.v1}", viewer)[0] == 404  # as if absent
        status, body = _get(f"{url}/api/v1/lineage?target={other.id}", viewer)
        assert status == 200 and {s["project"] for s in body["step_runs"]} == {"team-b"}
        assert _get(f"{url}/api/v1/artifacts/{seeded.v2}", viewer)[0] == 404
        status, body = _get(f"{url}/api/v1/artifacts?name=load.output", viewer)
        mine = other.steps["load"].outputs["output"].content_hash
        assert status == 200 and [v["content_hash"] for v in body["versions"]] == [mine]
        assert body["versions"][0]["aliases"] == []  # production is the default project's alias
        alias = {"alias": "load.output@production"}
        status, body = _post(f"{url}/api/v1/aliases/rollback", alias, viewer)
        assert status == 403 and "needs the operator role" in body["detail"]
        status, body = _post(f"{url}/api/v1/aliases/rollback", {**alias, "reason": "ui"}, operator)
        assert status == 200 and body["change"]["to_hash"] == seeded.v1
        status, body = _get(f"{url}/api/v1/audit", operator)
        top = body["entries"][0]
        assert (top["action"], top["actor"], top["role"], top["via"], top["origin"]) == (
            "alias.rollback",
            "olga",
            "operator",
            "api",
            "127.0.0.1",
        )


def test_audit_tokens_and_grants_on_both_backends(metadata_store: Any) -> None:
    """Migration 0005 on SQLite and PostgreSQL: the audit log refuses UPDATE and DELETE; tokens and grants work."""
    from isthmus.governance import audit

    audit.record(metadata_store, "alias.rollback", "m@prod", project="p", details={"password": "hunter22"})
    (entry,) = audit.entries(metadata_store)
    assert entry.action == "alias.rollback" and entry.details == {"password": "***"}
    for stmt in (sa.update(s.audit_log).values(actor="mallory"), sa.delete(s.audit_log)):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), metadata_store.engine.begin() as conn:
            conn.execute(stmt)
    text, _ = tokens.create(metadata_store, "ci", Role.VIEWER, "p", created_by="admin")
    who = tokens.principal_for(metadata_store, text, bearer=True)
    assert who is not None and who.projects == frozenset({"p"})
    roles.grant(metadata_store, "alice", Role.OPERATOR, "p", by="admin")
    roles.grant(metadata_store, "alice", Role.VIEWER, by="admin")
    assert roles.role_of(metadata_store, "alice", "p") == Role.OPERATOR
    assert roles.role_of(metadata_store, "alice", "q") == Role.VIEWER


def test_the_project_of_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from isthmus.governance.projects import project_for_run

    monkeypatch.delenv("ISTHMUS_PROJECT", raising=False)
    flyte = {
        "orchestrator": "flyte",
        "context": {"project": "flytesnacks", "execution_id": "flytesnacks:development:a1"},
    }
    assert project_for_run(flyte) == "flytesnacks"  # a Flyte execution: its project by default
    assert project_for_run({"orchestrator": "flyte", "context": {"project": "local"}}) == "default"
    assert project_for_run({"orchestrator": "flyte", "context": {"project": "<script>"}}) == "default"
    assert project_for_run({"orchestrator": "airflow", "context": {"project": "x"}}) == "default"
    monkeypatch.setenv("ISTHMUS_PROJECT", "team-a")
    assert project_for_run(flyte) == "team-a"  # the setting wins
