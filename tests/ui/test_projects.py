"""Two teams on one store: each API token sees only its project's artifacts, aliases and lineage, and the
same alias name in two projects is two aliases that never move each other."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from isthmus import Client, defaults
from isthmus.governance import roles, tokens
from isthmus.governance.roles import Role
from isthmus.ui import create_app
from isthmus.ui.auth import Principal
from tests.ui.conftest import chain

ALIAS = "load.output@production"


@dataclass
class Teams:
    a_runs: list[str]  # team-a: n=3, then n=5
    b_runs: list[str]  # team-b: n=3 (cache hits of team-a's run), then n=7
    shared: str  # load.output of n=3: produced by team-a, reused by team-b's hit
    a_only: str  # load.output of n=5
    b_only: str  # load.output of n=7
    a_steps: list[str]  # every step run id of team-a
    b_steps: list[str]


def _load(run: object) -> str:
    return str(run.steps["load"].outputs["output"].content_hash)  # type: ignore[attr-defined]


@pytest.fixture
def teams(monkeypatch: pytest.MonkeyPatch) -> Teams:
    monkeypatch.setenv("ISTHMUS_PROJECT", "team-a")
    a1, a2 = chain.run(n=3), chain.run(n=5)
    monkeypatch.setenv("ISTHMUS_PROJECT", "team-b")
    b1, b2 = chain.run(n=3), chain.run(n=7)
    monkeypatch.delenv("ISTHMUS_PROJECT")
    assert b1.steps["load"].cache_hit and _load(b1) == _load(a1)
    client = Client()
    client.promote(ALIAS, _load(a2), project="team-a")
    client.promote(ALIAS, _load(b2), project="team-b")
    steps = {r.id: [str(sr["id"]) for sr in client.step_runs(r.id)] for r in (a1, a2, b1, b2)}
    return Teams(
        a_runs=[a1.id, a2.id],
        b_runs=[b1.id, b2.id],
        shared=_load(a1),
        a_only=_load(a2),
        b_only=_load(b2),
        a_steps=steps[a1.id] + steps[a2.id],
        b_steps=steps[b1.id] + steps[b2.id],
    )


def api_for(project: str | None, role: Role = Role.OPERATOR, name: str = "tok") -> TestClient:
    """The app as seen with a real API token of ``project`` (None: every project)."""
    text, _row = tokens.create(defaults.metadata_store(), name, role, project, created_by="admin")
    who = tokens.principal_for(defaults.metadata_store(), text, bearer=True)
    assert who is not None and who.projects == (frozenset({project}) if project else None)
    return TestClient(create_app(Client(), authenticate=lambda request: who))


def _hashes(api: TestClient, **params: str) -> list[str]:
    response = api.get("/api/v1/artifacts", params=params)
    assert response.status_code == 200, response.text
    return [v["content_hash"] for v in response.json()["versions"]]


def test_each_project_sees_its_own_artifacts(teams: Teams) -> None:
    a, b, admin = api_for("team-a"), api_for("team-b"), api_for(None)
    assert _hashes(a, name="load.output") == [teams.a_only, teams.shared]
    assert _hashes(b, name="load.output") == [teams.b_only, teams.shared]
    assert _hashes(admin, name="load.output") == [teams.b_only, teams.a_only, teams.shared]
    assert teams.b_only not in _hashes(a) and teams.a_only not in _hashes(b) and teams.shared in _hashes(b)
    assert set(_hashes(admin, project="team-b")) == set(_hashes(b))  # an admin may narrow to one project
    # versions are numbered among the visible ones; the aliases shown are the caller's project's
    (newest, oldest) = a.get("/api/v1/artifacts", params={"name": "load.output"}).json()["versions"]
    assert (newest["version"], oldest["version"], newest["aliases"], oldest["aliases"]) == (2, 1, ["production"], [])
    assert newest["used_by"] == 2  # team-a's load and total; team-b's step runs are not counted
    # another project's version is absent: by hash, by prefix, by name~N
    for ref in (teams.b_only, teams.b_only.split(":")[1][:12], "load.output~2"):
        response = a.get(f"/api/v1/artifacts/{ref}")
        assert response.status_code == 404, (ref, response.text)
    assert a.get("/api/v1/artifacts/load.output").json()["artifact"]["content_hash"] == teams.a_only
    assert b.get("/api/v1/artifacts/load.output").json()["artifact"]["content_hash"] == teams.b_only
    # team-b sees the shared version (its hit used it) but not team-a's step run that produced it
    shared = b.get(f"/api/v1/artifacts/{teams.shared}").json()["artifact"]
    assert shared["producer_step_run_id"] is None
    assert a.get(f"/api/v1/artifacts/{teams.shared}").json()["artifact"]["producer_step_run_id"] in teams.a_steps
    assert b.get("/api/v1/artifacts", params={"project": "team-a"}).status_code == 403


def test_same_alias_name_in_two_projects(teams: Teams) -> None:
    a, b = api_for("team-a"), api_for("team-b")
    body = a.get(f"/api/v1/artifacts/{ALIAS}").json()
    assert body["artifact"]["content_hash"] == teams.a_only
    (alias,) = body["aliases"]
    assert alias["project"] == "team-a" and [c["to_hash"] for c in alias["history"]] == [teams.a_only]
    body = b.get(f"/api/v1/artifacts/{ALIAS}").json()
    assert body["artifact"]["content_hash"] == teams.b_only
    assert [(x["project"], x["content_hash"]) for x in body["aliases"]] == [("team-b", teams.b_only)]
    admin = api_for(None)
    everyone = admin.get(f"/api/v1/artifacts/{ALIAS}", params={"project": "team-a"}).json()
    assert everyone["artifact"]["content_hash"] == teams.a_only
    assert {x["project"] for x in everyone["aliases"]} == {"team-a", "team-b"}
    assert admin.get(f"/api/v1/artifacts/{ALIAS}").status_code == 404  # the default project has none
    # the pages: an alias form carries its project, and another project's version is not listed
    page = a.get("/artifacts/load.output").text
    assert 'name="project" value="team-a"' in page and teams.b_only[:19] not in page
    assert teams.b_only[:19] not in a.get("/artifacts").text


def test_promote_and_rollback_stay_in_the_own_project(teams: Teams) -> None:
    a, b = api_for("team-a"), api_for("team-b")
    moved = b.post("/api/v1/aliases/promote", json={"alias": ALIAS, "version": teams.shared, "reason": "older"})
    assert moved.status_code == 200, moved.text
    assert (moved.json()["change"]["project"], moved.json()["change"]["from_hash"]) == ("team-b", teams.b_only)
    client = Client()
    assert client.artifact(ALIAS, project="team-a").content_hash == teams.a_only  # untouched
    assert client.artifact(ALIAS, project="team-b").content_hash == teams.shared
    # another project's alias, or a version only another project holds, is refused
    other = b.post("/api/v1/aliases/rollback", json={"alias": ALIAS, "project": "team-a"})
    assert other.status_code == 403 and "may not see project 'team-a'" in other.json()["detail"]
    hidden = b.post("/api/v1/aliases/promote", json={"alias": ALIAS, "version": teams.a_only})
    assert hidden.status_code == 404 and "matches no artifact" in hidden.json()["detail"]
    back = b.post("/api/v1/aliases/rollback", json={"alias": ALIAS, "reason": "undo"})
    assert back.status_code == 200 and back.json()["change"]["to_hash"] == teams.b_only
    assert client.artifact(ALIAS, project="team-a").content_hash == teams.a_only
    assert [c.to_hash for c in client.alias_history(ALIAS, project="team-a")] == [teams.a_only]
    assert [c.to_hash for c in client.alias_history(ALIAS, project="team-b")] == [
        teams.b_only,
        teams.shared,
        teams.b_only,
    ]
    viewer = api_for("team-a", Role.VIEWER, name="val")
    refused = viewer.post("/api/v1/aliases/rollback", json={"alias": ALIAS})
    assert refused.status_code == 403 and "needs the operator role" in refused.json()["detail"]
    # team-a's alias kept its own history: nothing to roll back to
    rolled = a.post("/api/v1/aliases/rollback", json={"alias": ALIAS})
    assert rolled.status_code == 409 and "no previous target" in rolled.json()["detail"]
    # every alias change is audited under its project
    changes = [(e.action, e.project, e.actor) for e in client.audit_log() if e.action.startswith("alias.")]
    assert changes[:2] == [("alias.rollback", "team-b", "tok"), ("alias.promote", "team-b", "tok")]
    assert ("alias.promote", "team-a", roles.os_user()) in changes


def test_a_principal_of_two_projects_names_the_alias_project(teams: Teams) -> None:
    two = Principal(name="pat", role=Role.OPERATOR, via="token", bearer=True, projects=frozenset({"team-a", "team-b"}))
    api = TestClient(create_app(Client(), authenticate=lambda request: two))
    ambiguous = api.get(f"/api/v1/artifacts/{ALIAS}")
    assert ambiguous.status_code == 400 and "choose a project" in ambiguous.json()["detail"]
    assert api.get(f"/api/v1/artifacts/{ALIAS}", params={"project": "team-b"}).json()["artifact"]["content_hash"] == (
        teams.b_only
    )
    assert set(_hashes(api, name="load.output")) == {teams.a_only, teams.b_only, teams.shared}


def test_lineage_shows_only_the_own_nodes_and_counts_the_rest(teams: Teams) -> None:
    a, b = api_for("team-a"), api_for("team-b")
    whole = Client().lineage(teams.shared)
    assert {n.project for n in whole.step_runs.values()} == {"team-a", "team-b"}  # both used it
    body = b.get("/api/v1/lineage", params={"target": teams.shared}).json()
    text = json.dumps(body)
    assert {s["project"] for s in body["step_runs"]} == {"team-b"} and body["hidden"] > 0
    assert not any(i in text for i in teams.a_steps + teams.a_runs) and teams.a_only not in text
    nodes = {s["id"] for s in body["step_runs"]} | {x["content_hash"] for x in body["artifacts"]}
    assert body["edges"] and all(e["source"] in nodes and e["target"] in nodes for e in body["edges"])
    body = b.get("/api/v1/lineage", params={"target": teams.b_runs[0]}).json()
    hit = next(s for s in body["step_runs"] if s["invocation"] == "load")
    assert hit["cache_hit"] and hit["source_step_run_id"] is None  # its source is team-a's: not named
    assert body["hidden"] > 0 and not any(i in json.dumps(body) for i in teams.a_steps)
    body = a.get("/api/v1/lineage", params={"target": teams.a_runs[0]}).json()
    assert {s["project"] for s in body["step_runs"]} == {"team-a"}
    assert body["hidden"] == 1  # team-b's total read team-a's load output (its hit): counted, not shown
    assert b.get("/api/v1/lineage", params={"target": teams.a_runs[1]}).status_code == 404
    assert b.get("/api/v1/lineage", params={"target": teams.a_only}).status_code == 404
    assert b.get("/api/v1/lineage", params={"target": teams.a_steps[0]}).status_code == 404
    page = b.get("/lineage", params={"target": teams.shared}).text
    assert "of other projects hidden" in page and not any(i[:8] in page for i in teams.a_steps)
    assert b.get("/api/v1/lineage", params={"target": ALIAS}).json()["target"]["id"] == teams.b_only
    # a principal of every project is unchanged: the whole graph, nothing hidden
    admin = api_for(None).get("/api/v1/lineage", params={"target": teams.shared}).json()
    assert admin["hidden"] == 0 and len(admin["step_runs"]) == len(whole.step_runs)
