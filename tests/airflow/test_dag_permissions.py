"""Airflow's per-DAG permissions in the isthmus UI mounted as the provider mounts it, under a real Airflow auth
manager (:mod:`tests.airflow.dag_limited_auth_manager`) and real Airflow tokens: a user who may read only
some DAGs sees only the runs Airflow recorded for them, their step runs, artifacts and lineage."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.airflow.conftest import load_dag, put_dag
from tests.airflow.dag_limited_auth_manager import LIMITS

pytestmark = pytest.mark.usefixtures("airflow_db")

DAG_A, DAG_B = "isthmus_perm_a", "isthmus_perm_b"
SOURCES = {
    DAG_A: """
from airflow.sdk import dag, task
from tests.airflow.steps import square


@dag(dag_id="isthmus_perm_a", schedule=None)
def isthmus_perm_a():
    task.isthmus(square, task_id="three")(3)
    task.isthmus(square, task_id="five")(5)


isthmus_perm_a()
""",
    DAG_B: """
from airflow.sdk import dag, task
from tests.airflow.steps import square


@dag(dag_id="isthmus_perm_b", schedule=None)
def isthmus_perm_b():
    task.isthmus(square, task_id="same")(3)
    task.isthmus(square, task_id="own")(4)


isthmus_perm_b()
""",
}
# dora may edit, vic may read, only DAG B; nobody may touch no DAG; olga (a "user") may edit every DAG
USERS = {"dora": "user", "vic": "viewer", "nobody": "viewer", "olga": "user"}


@dataclass
class Recorded:
    run_ids: dict[str, str]  # Airflow run id of each DAG's run
    runs: dict[str, str]  # its isthmus pipeline run
    steps: dict[str, str]  # step run id by "dag/task"
    hashes: dict[str, str]  # content hash of square(3) (both DAGs), square(5) (A only), square(4) (B only)


@pytest.fixture
def airflow_ui(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The UI mounted at /isthmus of an app, as Airflow's api-server mounts the plugin's, with the limited
    auth manager as Airflow's auth manager."""
    from airflow.api_fastapi import app as airflow_app

    from isthmus_airflow.plugins.ui import URL_PREFIX, LazyUIApp

    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER", "tests.airflow.dag_limited_auth_manager.DagLimitedAuthManager")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "0123456789abcdef" * 4)
    monkeypatch.setenv(LIMITS, f"dora:{DAG_B};vic:{DAG_B};nobody:")
    before = airflow_app._AuthManagerState.instance
    airflow_app.create_auth_manager()
    app = FastAPI()
    app.mount(URL_PREFIX, LazyUIApp())
    try:
        yield TestClient(app)
    finally:
        airflow_app._AuthManagerState.instance = before


def bearer(user: str) -> dict[str, str]:
    """A real Airflow token of ``user`` (signed by the auth manager, as ``/auth/token`` gives one)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=user, role=USERS[user]))
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def recorded() -> Recorded:
    """DAG A, then DAG B (whose ``same`` task is a cache hit of A's ``three``), run with ``dag.test()``."""
    from isthmus import Client
    from isthmus.context import derived_run_id
    from isthmus_airflow.plugins.run_closer import flush

    run_ids, runs, steps = {}, {}, {}
    for dag_id, source in SOURCES.items():
        dr = load_dag(put_dag(dag_id, source), dag_id).test()
        assert dr.state == "success" and flush(30)
        run_ids[dag_id] = str(dr.run_id)
        runs[dag_id] = derived_run_id("airflow", dag_id, dr.run_id)
        for sr in Client().step_runs(runs[dag_id]):
            steps[f"{dag_id}/{sr['invocation']}"] = str(sr["id"])
    meta = Client().metadata
    out = {key: meta.get_step_run(sid)["outputs"]["output"]["content_hash"] for key, sid in steps.items()}
    assert meta.get_step_run(steps[f"{DAG_B}/same"])["source_step_run_id"] == steps[f"{DAG_A}/three"]
    hashes = {"shared": out[f"{DAG_A}/three"], "a_only": out[f"{DAG_A}/five"], "b_only": out[f"{DAG_B}/own"]}
    assert out[f"{DAG_B}/same"] == hashes["shared"]
    return Recorded(run_ids, runs, steps, hashes)


def get(ui: TestClient, user: str | None, path: str, **params: Any) -> Any:
    return ui.get(f"/isthmus{path}", params=params, headers=bearer(user) if user else {})


def test_a_dag_limited_user_sees_only_its_dags_runs_steps_artifacts_and_lineage(
    airflow_ui: TestClient, recorded: Recorded
) -> None:
    ui, r = airflow_ui, recorded
    me = get(ui, "dora", "/api/v1/me").json()
    assert (me["role"], me["via"], me["dags"], me["edit_dags"]) == ("operator", "airflow", [DAG_B], [DAG_B])
    assert get(ui, "vic", "/api/v1/me").json()["role"] == "viewer"
    assert get(ui, "olga", "/api/v1/me").json()["dags"] is None  # may read every DAG: not limited

    # the runs list: DAG B's run only (olga sees both)
    listed = [x["id"] for x in get(ui, "dora", "/api/v1/runs").json()["runs"]]
    assert listed == [r.runs[DAG_B]]
    assert {x["id"] for x in get(ui, "olga", "/api/v1/runs").json()["runs"]} == set(r.runs.values())
    page = get(ui, "dora", "/runs")
    assert page.status_code == 200 and r.runs[DAG_B][:8] in page.text and r.runs[DAG_A][:8] not in page.text

    # a run, its step runs; the other DAG's are absent (404), by API and page, and never named
    run = get(ui, "dora", f"/api/v1/runs/{r.runs[DAG_B]}")
    assert run.status_code == 200
    hit = next(s for s in run.json()["steps"] if s["invocation"] == "same")
    assert hit["cache_hit"] and hit["source_step_run_id"] is None  # A's step run: not named
    assert r.steps[f"{DAG_A}/three"] not in run.text and r.runs[DAG_A] not in run.text
    assert "a run you may not see" in run.json()["reasons"][hit["id"]]
    assert get(ui, "dora", f"/runs/{r.runs[DAG_B]}").status_code == 200
    for path in (f"/api/v1/runs/{r.runs[DAG_A]}", f"/runs/{r.runs[DAG_A]}"):
        hidden = get(ui, "dora", path)  # as if absent: the answer of an id nobody recorded
        assert hidden.status_code == 404 and "no pipeline run matches" in hidden.text
    step = get(ui, "dora", f"/api/v1/step-runs/{r.steps[f'{DAG_B}/same']}")
    assert step.status_code == 200 and step.json()["why"]["source"] is None
    assert r.steps[f"{DAG_A}/three"] not in step.text and r.runs[DAG_A] not in step.text
    assert get(ui, "dora", f"/step-runs/{r.steps[f'{DAG_B}/own']}").status_code == 200
    for path in ("/api/v1/step-runs/", "/step-runs/"):
        assert get(ui, "dora", path + r.steps[f"{DAG_A}/five"]).status_code == 404
    assert get(ui, "dora", "/api/v1/diff", a=r.runs[DAG_B], b=r.runs[DAG_A]).status_code == 404
    olga_step = get(ui, "olga", f"/api/v1/step-runs/{r.steps[f'{DAG_B}/same']}").json()
    assert olga_step["step_run"]["source_step_run_id"] == r.steps[f"{DAG_A}/three"]  # unlimited: named

    # artifacts: those DAG B's step runs produced or consumed
    versions = {v["content_hash"] for v in get(ui, "dora", "/api/v1/artifacts").json()["versions"]}
    assert versions == {r.hashes["shared"], r.hashes["b_only"]}
    assert get(ui, "dora", f"/api/v1/artifacts/{r.hashes['b_only']}").status_code == 200
    shared = get(ui, "dora", f"/api/v1/artifacts/{r.hashes['shared']}").json()["artifact"]
    assert shared["producer_step_run_id"] is None  # A's "three" produced it
    for path in (f"/api/v1/artifacts/{r.hashes['a_only']}", f"/artifacts/{r.hashes['a_only']}"):
        assert get(ui, "dora", path).status_code == 404
    assert get(ui, "dora", "/api/v1/artifacts/square.output~2").status_code == 404  # two versions here, not 3
    assert get(ui, "olga", "/api/v1/artifacts/square.output~2").status_code == 200

    # lineage: the other DAG's nodes left out and counted; its artifact as a target is absent
    graph = get(ui, "dora", "/api/v1/lineage", target=r.hashes["shared"]).json()  # produced by A's "three"
    assert [a["content_hash"] for a in graph["artifacts"]] == [r.hashes["shared"]]
    assert graph["step_runs"] == [] and graph["edges"] == [] and graph["hidden"] == 1
    assert r.steps[f"{DAG_A}/three"] in str(get(ui, "olga", "/api/v1/lineage", target=r.hashes["shared"]).json())
    graph = get(ui, "dora", "/api/v1/lineage", target=r.runs[DAG_B]).json()
    nodes = {n["id"]: n for n in graph["step_runs"]}
    assert set(nodes) == {r.steps[f"{DAG_B}/same"], r.steps[f"{DAG_B}/own"]}
    assert nodes[r.steps[f"{DAG_B}/same"]]["source_step_run_id"] is None and r.runs[DAG_A] not in str(graph)
    for target in (r.hashes["a_only"], r.runs[DAG_A], r.steps[f"{DAG_A}/three"]):
        assert get(ui, "dora", "/api/v1/lineage", target=target).status_code == 404
    assert get(ui, "dora", "/lineage", target=r.hashes["a_only"]).status_code == 404


def test_tabs_actions_and_anonymous_follow_airflow(airflow_ui: TestClient, recorded: Recorded) -> None:
    ui, r = airflow_ui, recorded
    # the DAG run and task instance tabs ask Airflow about their own DAG
    tab = get(ui, "dora", "/airflow/dag-run", dag_id=DAG_B, run_id=r.run_ids[DAG_B])
    assert tab.status_code == 200 and r.runs[DAG_B][:8] in tab.text
    refused = get(ui, "dora", "/airflow/dag-run", dag_id=DAG_A, run_id=r.run_ids[DAG_A])
    assert refused.status_code == 403 and f"may not read DAG &#39;{DAG_A}&#39; in Airflow" in refused.text
    task = {"run_id": r.run_ids[DAG_A], "task_id": "three", "map_index": "-1"}
    assert get(ui, "dora", "/airflow/task-instance", dag_id=DAG_A, **task).status_code == 403
    assert get(ui, "olga", "/airflow/task-instance", dag_id=DAG_A, **task).status_code == 200
    own = {"run_id": r.run_ids[DAG_B], "task_id": "own", "map_index": "-1"}
    assert get(ui, "vic", "/airflow/task-instance", dag_id=DAG_B, **own).status_code == 200

    # changing an alias concerns a whole project: every DAG is needed, not the operator role alone
    body = {"alias": "square.output@production", "version": r.hashes["b_only"]}
    viewer = ui.post("/isthmus/api/v1/aliases/promote", json=body, headers=bearer("vic"))
    assert viewer.status_code == 403 and "needs the operator role" in viewer.json()["detail"]
    operator = ui.post("/isthmus/api/v1/aliases/promote", json=body, headers=bearer("dora"))
    assert operator.status_code == 403 and "needs permission on every DAG" in operator.json()["detail"]
    assert 'class="inline promote"' not in get(ui, "dora", f"/artifacts/{r.hashes['b_only']}").text  # no form
    assert 'class="inline promote"' in get(ui, "olga", f"/artifacts/{r.hashes['b_only']}").text
    assert ui.post("/isthmus/api/v1/aliases/promote", json=body, headers=bearer("olga")).status_code == 200
    assert get(ui, "dora", "/api/v1/audit").status_code == 403  # the audit log is of every DAG

    # an alias pointing at a version of the other DAG is not listed; its history hides that version
    client_body = {"alias": "square.output@production", "version": r.hashes["a_only"]}
    assert ui.post("/isthmus/api/v1/aliases/promote", json=client_body, headers=bearer("olga")).status_code == 200
    seen = get(ui, "dora", f"/api/v1/artifacts/{r.hashes['b_only']}").json()
    assert seen["aliases"] == [] and r.hashes["a_only"] not in str(seen)
    back = {"alias": "square.output@production", "version": r.hashes["b_only"]}
    assert ui.post("/isthmus/api/v1/aliases/promote", json=back, headers=bearer("olga")).status_code == 200
    (alias,) = get(ui, "dora", f"/api/v1/artifacts/{r.hashes['b_only']}").json()["aliases"]
    assert [(c["from_hash"], c["to_hash"]) for c in alias["history"]] == [
        (None, r.hashes["b_only"]),
        (r.hashes["b_only"], None),
        (None, r.hashes["b_only"]),
    ]

    # anonymous: 401 on every route; a user who may read no DAG: 403
    for path in ("/runs", "/api/v1/runs", "/api/v1/me", f"/airflow/dag-run?dag_id={DAG_B}&run_id=x", "/lineage"):
        assert ui.get(f"/isthmus{path}").status_code == 401, path
        assert ui.get(f"/isthmus{path}", headers=bearer("nobody")).status_code == 403, path
