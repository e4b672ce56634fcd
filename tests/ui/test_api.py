"""Every JSON endpoint of the UI (FastAPI's TestClient, in process) on a store with real recorded runs."""

from __future__ import annotations

from fastapi.testclient import TestClient

from isthmus import Client
from isthmus.ui import UISettings, create_app
from isthmus.ui.auth import CSRF_COOKIE, Principal, Role
from tests.ui.conftest import HOSTILE, Seeded


def app_client(role: Role = Role.ADMIN, **kw: object) -> TestClient:
    who = Principal(name="alice", role=role, via="test")
    return TestClient(create_app(Client(), authenticate=lambda request: who, **kw))  # type: ignore[arg-type]


def test_openapi_lists_every_endpoint() -> None:
    schema = app_client().get("/api/v1/openapi.json").json()
    paths = set(schema["paths"])
    assert {
        "/api/v1/me",
        "/api/v1/runs",
        "/api/v1/runs/{ref}",
        "/api/v1/step-runs/{ref}",
        "/api/v1/diff",
        "/api/v1/artifacts",
        "/api/v1/artifacts/{ref}",
        "/api/v1/aliases/promote",
        "/api/v1/aliases/rollback",
        "/api/v1/lineage",
    } <= paths
    assert not any(p.startswith("/runs") for p in paths)  # pages stay out of the API schema


def test_me() -> None:
    assert app_client(Role.VIEWER).get("/api/v1/me").json() == {
        "name": "alice",
        "role": "viewer",
        "via": "test",
        "projects": None,
        "dags": None,
        "edit_dags": None,
    }


def test_runs_filters_and_keyset_pages(seeded: Seeded) -> None:
    api = app_client()
    runs = api.get("/api/v1/runs").json()
    assert [r["id"] for r in runs["runs"]] == [seeded.failed, seeded.third, seeded.second, seeded.first]
    second = next(r for r in runs["runs"] if r["id"] == seeded.second)
    assert (second["steps"], second["hits"], second["failed"]) == (2, 2, 0)
    failed = api.get("/api/v1/runs", params={"status": "FAILED"}).json()["runs"]
    assert [r["id"] for r in failed] == [seeded.failed] and failed[0]["failed"] == 1
    assert [r["id"] for r in api.get("/api/v1/runs", params={"pipeline": "chain"}).json()["runs"]] == [
        seeded.third,
        seeded.second,
        seeded.first,
    ]
    assert api.get("/api/v1/runs", params={"orchestrator": "airflow"}).json()["runs"] == []
    seen, cursor = [], None
    while True:
        page = api.get("/api/v1/runs", params={"limit": 1, **({"cursor": cursor} if cursor else {})}).json()
        seen += [r["id"] for r in page["runs"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [seeded.failed, seeded.third, seeded.second, seeded.first]
    assert api.get("/api/v1/runs", params={"cursor": "<script>|x"}).status_code == 200  # junk cursor: page 1
    assert api.get("/api/v1/runs", params={"limit": 0}).status_code == 422


def test_run_with_steps_and_reasons(seeded: Seeded) -> None:
    body = app_client().get(f"/api/v1/runs/{seeded.second}").json()
    assert body["run"]["pipeline"] == "chain"
    assert [s["invocation"] for s in body["steps"]] == ["load", "total"]
    assert all(s["cache_hit"] for s in body["steps"])
    assert all("hit" in reason or "from" in reason for reason in body["reasons"].values())
    missing = app_client().get("/api/v1/runs/ffffffff")
    assert missing.status_code == 404 and "no pipeline run matches" in missing.json()["detail"]


def test_step_run_with_why_and_environment(seeded: Seeded) -> None:
    body = app_client().get(f"/api/v1/step-runs/{seeded.third}:total").json()
    assert body["step_run"]["params"] == {"scale": 2}
    assert body["why"]["decision"] == "computed"
    assert any(c["component"] == "params" for c in body["why"]["changes"])
    assert body["environment"]
    (bad,) = Client().step_runs(seeded.failed)
    failed = app_client().get(f"/api/v1/step-runs/{bad['id']}").json()
    assert failed["step_run"]["step_name"] == HOSTILE and failed["step_run"]["params"] == {"note": HOSTILE}
    assert HOSTILE in failed["step_run"]["error"] and failed["step_run"]["traceback"]


def test_diff(seeded: Seeded) -> None:
    d = app_client().get("/api/v1/diff", params={"a": seeded.first, "b": seeded.third}).json()
    assert d["params"] == {"n": [3, 4], "scale": [1, 2]}
    assert set(d["steps"]) == {"load", "total"}


def test_artifacts_and_alias_history(seeded: Seeded) -> None:
    api = app_client()
    versions = api.get("/api/v1/artifacts", params={"name": "load.output"}).json()["versions"]
    assert [v["content_hash"] for v in versions] == [seeded.v2, seeded.v1]
    body = api.get("/api/v1/artifacts/load.output@production").json()
    assert body["artifact"]["content_hash"] == seeded.v2
    (alias,) = body["aliases"]
    assert [c["to_hash"] for c in alias["history"]] == [seeded.v1, seeded.v2]


def test_promote_and_rollback_with_a_bearer_or_csrf(seeded: Seeded) -> None:
    bearer = Principal(name="ci", role=Role.OPERATOR, via="token", bearer=True)
    api = TestClient(create_app(Client(), authenticate=lambda request: bearer))
    back = api.post("/api/v1/aliases/rollback", json={"alias": "load.output@production", "reason": "bad"})
    assert back.status_code == 200 and back.json()["change"]["to_hash"] == seeded.v1
    again = api.post("/api/v1/aliases/promote", json={"alias": "load.output@production", "version": seeded.v2})
    assert again.json()["changed"] is True
    same = api.post("/api/v1/aliases/promote", json={"alias": "load.output@production", "version": seeded.v2})
    assert same.json() == {"changed": False, "change": None}
    refused = api.post("/api/v1/aliases/promote", json={"alias": "load.output@production", "version": "total.output"})
    assert refused.status_code == 409 and "not a version of load.output" in refused.json()["detail"]
    # a browser session (no bearer) needs the CSRF cookie repeated in the body
    browser = app_client(Role.OPERATOR)
    browser.get("/runs")
    no_csrf = browser.post("/api/v1/aliases/rollback", json={"alias": "load.output@production"})
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.json()["detail"]
    token = browser.cookies.get(CSRF_COOKIE)
    ok = browser.post("/api/v1/aliases/rollback", json={"alias": "load.output@production", "csrf_token": token})
    assert ok.status_code == 200
    assert Client().artifact("load.output@production").content_hash == seeded.v1


def test_a_viewer_cannot_promote(seeded: Seeded) -> None:
    viewer = Principal(name="val", role=Role.VIEWER, via="token", bearer=True)
    api = TestClient(create_app(Client(), authenticate=lambda request: viewer))
    refused = api.post("/api/v1/aliases/rollback", json={"alias": "load.output@production"})
    assert refused.status_code == 403 and "needs the operator role" in refused.json()["detail"]
    assert Client().artifact("load.output@production").content_hash == seeded.v2


def test_anonymous_gets_401(seeded: Seeded) -> None:
    api = TestClient(create_app(Client(), authenticate=lambda request: None))
    for path in ("/api/v1/runs", f"/api/v1/runs/{seeded.first}", "/runs", "/api/v1/me"):
        assert api.get(path).status_code == 401, path
    assert api.get("/static/style.css").status_code == 200  # standalone: the sign-in page's stylesheet
    closed = TestClient(
        create_app(Client(), settings=UISettings(public_static=False), authenticate=lambda request: None)
    )
    assert closed.get("/static/style.css").status_code == 401
    assert closed.get("/api/v1/openapi.json").status_code == 401


def test_lineage(seeded: Seeded) -> None:
    body = app_client().get("/api/v1/lineage", params={"target": seeded.v2, "direction": "downstream"}).json()
    assert body["target"]["kind"] == "artifact"
    assert {s["invocation"] for s in body["step_runs"]} == {"total"}
    assert app_client().get("/api/v1/lineage", params={"target": "x", "direction": "sideways"}).status_code == 422


def test_orchestrator_links(seeded: Seeded) -> None:
    from isthmus.ui.views import run_links, step_links

    settings = UISettings(airflow_url="", flyte_url="https://flyte.example")
    run = {"orchestrator": "airflow", "context": {"dag_id": "d<1>", "run_id": "manual__1"}}
    assert run_links(run, settings) == [("Airflow DAG run", "/dags/d%3C1%3E/runs/manual__1")]
    flyte = {"orchestrator": "flyte", "context": {"execution_id": "p:development:abc"}}
    assert run_links(flyte, settings) == [
        ("Flyte execution", "https://flyte.example/console/projects/p/domains/development/executions/abc")
    ]
    sr = {
        "orchestrator": "airflow",
        "context": {"native": {"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": 2}},
    }
    assert step_links(sr, settings)[0] == ("Airflow task instance", "/dags/d/runs/r/tasks/t/mapped/2")
    assert run_links(run, UISettings()) == []
