"""The isthmus UI inside a live Airflow 3 api-server (``tests/airflow_live.py``): the plugin's tabs on
a DAG run and a task instance, the extra link of isthmus tasks, and Airflow's authentication on every
route of the mounted app (anonymous → 401; Airflow roles mapped to isthmus roles)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from isthmus.context import derived_run_id
from tests.airflow.dag_sources import ONE_STEP_DAG
from tests.airflow_live import LiveAirflow
from tests.ui.conftest import browser_fixture  # noqa: F401 - the browser fixture

DAG_ID = "isthmus_live_one_step"


def _two_runs(live: LiveAirflow) -> tuple[str, str]:
    live.put_dag(DAG_ID, ONE_STEP_DAG)
    first, state = live.run_dag(DAG_ID, {"x": 7})
    assert state == "success"
    second, state = live.run_dag(DAG_ID, {"x": 7})
    assert state == "success"
    return first, second


def test_the_dag_run_and_task_tabs_and_the_extra_link(live_airflow: LiveAirflow) -> None:
    live = live_airflow
    first, second = _two_runs(live)
    plugins = live.api("GET", "/api/v2/plugins")["plugins"]
    (mine,) = [p for p in plugins if p["name"] == "isthmus"]
    assert {v["destination"] for v in mine["external_views"]} == {"nav", "dag_run", "task_instance"}
    assert any(a["url_prefix"] == "/isthmus" for a in mine["fastapi_apps"])

    # the DAG run tab (all-admins deployment: Airflow itself adds the bearer token)
    tab = httpx.get(f"{live.url}/isthmus/airflow/dag-run", params={"dag_id": DAG_ID, "run_id": second}, timeout=30)
    assert tab.status_code == 200, tab.text[:1000]
    pipeline_run = derived_run_id("airflow", DAG_ID, second)
    assert f"Run {pipeline_run[:8]}" in tab.text and "square" in tab.text and 'class="node hit"' in tab.text
    assert "Airflow DAG run" in tab.text  # the link back to the DAG run

    # a cache-hit task's tab says where its result came from
    tis = live.task_instances(DAG_ID, second)
    (task_id, _), *_ = tis
    task_tab = httpx.get(
        f"{live.url}/isthmus/airflow/task-instance",
        params={"dag_id": DAG_ID, "run_id": second, "task_id": task_id, "map_index": "-1"},
        timeout=30,
    )
    assert task_tab.status_code == 200, task_tab.text[:1000]
    first_run = derived_run_id("airflow", DAG_ID, first)
    assert "Result came from step run" in task_tab.text and f"run {first_run[:8]}" in task_tab.text
    assert "hit: from" in task_tab.text

    # the extra link of the isthmus task points at that tab
    links = live.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{second}/taskInstances/{task_id}/links")
    url = links["extra_links"]["isthmus step run"]
    assert url.startswith(f"{live.url}/isthmus/airflow/task-instance?") and f"task_id={task_id}" in url
    assert httpx.get(url, timeout=30).status_code == 200


def test_every_route_needs_an_airflow_user_and_roles_follow_airflow(live_airflow: LiveAirflow, tmp_path: Path) -> None:
    live = live_airflow
    _, second = _two_runs(live)
    passwords = {"val": secrets.token_urlsafe(12), "olga": secrets.token_urlsafe(12)}
    pw_file = tmp_path / "passwords.json"
    pw_file.write_text(json.dumps(passwords))
    secured = {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "val:viewer,olga:user",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(pw_file),
    }
    live.restart_component("api-server", secured)
    try:
        routes = ["/isthmus/runs", "/isthmus/api/v1/runs", "/isthmus/api/v1/me", "/isthmus/audit", "/isthmus/lineage"]
        routes += [
            "/isthmus/api/v1/openapi.json",
            "/isthmus/static/style.css",
            "/isthmus/airflow/dag-run?dag_id=d&run_id=r",
        ]
        for path in routes:
            anonymous = httpx.get(f"{live.url}{path}", timeout=30)
            assert anonymous.status_code in (401, 403), (path, anonymous.status_code)
        forged = httpx.get(f"{live.url}/isthmus/api/v1/me", headers={"Authorization": "Bearer x.y.z"}, timeout=30)
        assert forged.status_code in (401, 403)

        def token(user: str) -> str:
            answer = httpx.post(
                f"{live.url}/auth/token", json={"username": user, "password": passwords[user]}, timeout=30
            )
            assert answer.status_code == 201, answer.text
            return str(answer.json()["access_token"])

        viewer = {"Authorization": f"Bearer {token('val')}"}
        operator = {"Authorization": f"Bearer {token('olga')}"}
        me = httpx.get(f"{live.url}/isthmus/api/v1/me", headers=viewer, timeout=30).json()
        assert (me["name"], me["role"], me["via"]) == ("val", "viewer", "airflow")
        assert httpx.get(f"{live.url}/isthmus/api/v1/me", headers=operator, timeout=30).json()["role"] == "operator"
        # the session cookie of the Airflow UI works too (how the tabs' iframes are loaded)
        cookie = httpx.get(
            f"{live.url}/isthmus/airflow/dag-run",
            params={"dag_id": DAG_ID, "run_id": second},
            cookies={"_token": token("val")},
            timeout=30,
        )
        assert cookie.status_code == 200 and "square" in cookie.text
        refused = httpx.post(
            f"{live.url}/isthmus/api/v1/aliases/rollback",
            json={"alias": "square.output@prod"},
            headers=viewer,
            timeout=30,
        )
        assert refused.status_code == 403 and "needs the operator role" in refused.json()["detail"]
        allowed = httpx.post(
            f"{live.url}/isthmus/api/v1/aliases/rollback",
            json={"alias": "square.output@prod"},
            headers=operator,
            timeout=30,
        )
        assert allowed.status_code == 409 and "no alias square.output@prod to roll back" in allowed.json()["detail"]
    finally:
        live.restart_component("api-server")


def test_the_isthmus_tab_of_a_dag_run_in_chromium(live_airflow: LiveAirflow, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    live = live_airflow
    _, second = _two_runs(live)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"screenshots: {shots}")
    browser.get(f"{live.url}/dags/{DAG_ID}/runs/{quote(second, safe='')}/plugin/isthmus-dag-run")
    wait = WebDriverWait(browser, 90)
    wait.until(ec.frame_to_be_available_and_switch_to_it((By.TAG_NAME, "iframe")))
    pipeline_run = derived_run_id("airflow", DAG_ID, second)
    wait.until(lambda d: f"Run {pipeline_run[:8]}" in d.find_element(By.TAG_NAME, "body").text)
    assert browser.find_elements(By.CSS_SELECTOR, "svg a.node.hit")
    browser.switch_to.default_content()
    assert browser.save_screenshot(str(shots / "airflow-dag-run-tab.png"))
    assert (shots / "airflow-dag-run-tab.png").stat().st_size > 1000
