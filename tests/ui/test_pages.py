"""The HTML pages: each renders from real records, escapes every recorded string (a ``<script>`` step
name, parameter and error never come out as markup), and the alias forms need the role and the CSRF token."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

from isthmus import Client
from isthmus.ui import create_app
from isthmus.ui.auth import CSRF_COOKIE, Principal, Role
from tests.ui.conftest import HOSTILE, Seeded


def browser(role: Role = Role.ADMIN) -> TestClient:
    who = Principal(name="<b>eve</b>", role=role, via="test")
    return TestClient(create_app(Client(), authenticate=lambda request: who))


def no_markup(html: str) -> None:
    assert "<script>alert" not in html and "<b>eve</b>" not in html
    assert "<script" not in html.replace('<script src="/static/app.js" defer></script>', "")


def test_every_page_renders_and_escapes(seeded: Seeded) -> None:
    ui = browser()
    (bad,) = Client().step_runs(seeded.failed)
    pages = {
        "/runs": ["chain", "hostile", "FAILED"],
        f"/runs/{seeded.second}": ["hit", "load", "total", "<svg"],
        f"/runs/{seeded.failed}": ["failed", "&lt;script&gt;"],
        f"/step-runs/{bad['id']}": ["&lt;script&gt;alert(", "Traceback", "bad note"],
        f"/step-runs/{seeded.third}:total": ["Fingerprints", "params", "Why"],
        f"/diff?a={seeded.first}&b={seeded.third}": ["step load", "How it ran"],
        "/artifacts": ["load.output"],
        "/artifacts/load.output@production": ["load.output@production", "Roll back", "Promote"],
        f"/lineage?target={seeded.v2}": ["<svg", "total"],
    }
    for path, expected in pages.items():
        response = ui.get(path)
        assert response.status_code == 200, (path, response.text[:500])
        assert response.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in response.headers["content-security-policy"]
        for text in expected:
            assert text in response.text, (path, text)
        no_markup(response.text)
    assert "&lt;b&gt;eve&lt;/b&gt;" in ui.get("/runs").text


def test_pages_reference_nothing_foreign(seeded: Seeded) -> None:
    html = browser().get(f"/runs/{seeded.second}").text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert browser().get("/static/app.js").status_code == 200
    assert browser().get("/static/style.css").status_code == 200


def test_a_run_page_tells_computed_hit_and_failed_apart(seeded: Seeded) -> None:
    ui = browser()
    first = ui.get(f"/runs/{seeded.first}").text
    assert first.count('class="node computed"') == 2
    second = ui.get(f"/runs/{seeded.second}").text
    assert second.count('class="node hit"') == 2
    third = ui.get(f"/runs/{seeded.third}").text
    assert third.count('class="node computed"') == 2  # n changed: load and total computed
    failed = ui.get(f"/runs/{seeded.failed}").text
    assert failed.count('class="node failed"') == 1


def test_unknown_ids_are_404_pages(seeded: Seeded) -> None:
    response = browser().get("/runs/%3Cscript%3E")
    assert response.status_code == 404 and "&lt;script&gt;" in response.text
    no_markup(response.text)


def test_rollback_form_needs_operator_and_csrf(seeded: Seeded) -> None:
    viewer = browser(Role.VIEWER)
    page = viewer.get("/artifacts/load.output@production").text
    assert "Roll back" not in page and "need the operator role" in page
    token = viewer.cookies.get(CSRF_COOKIE)
    refused = viewer.post("/aliases/rollback", data={"alias": "load.output@production", "csrf_token": token})
    assert refused.status_code == 403 and "needs the operator role" in refused.text
    operator = browser(Role.OPERATOR)
    operator.get("/artifacts/load.output@production")
    forged = operator.post("/aliases/rollback", data={"alias": "load.output@production", "csrf_token": "guess"})
    assert forged.status_code == 403 and "CSRF" in forged.text
    assert Client().artifact("load.output@production").content_hash == seeded.v2
    token = operator.cookies.get(CSRF_COOKIE)
    done = operator.post(
        "/aliases/rollback",
        data={"alias": "load.output@production", "csrf_token": token, "reason": HOSTILE},
        follow_redirects=True,
    )
    assert done.status_code == 200
    assert Client().artifact("load.output@production").content_hash == seeded.v1
    assert "rollback" in done.text
    no_markup(done.text)


def test_a_code_change_is_shown_side_by_side(edited: tuple[str, str]) -> None:
    first, second = edited
    html = browser().get(f"/diff?a={first}&b={second}").text
    assert 'class="diff"' in html and "every&nbsp;third" in html and 'class="diff_chg">2<' in html
    run = browser().get(f"/runs/{second}").text
    assert run.count('class="node computed"') == 1


def test_the_diff_page_shows_cache_key_settings_and_metrics_by_key() -> None:
    """What ``isthmus diff`` names, the page shows: a bumped cache version, a metrics dict key by key with
    its change."""
    from isthmus import CachePolicy, pipeline, step

    def score(lr: float) -> dict:
        return {"r2": round(0.8 + lr, 3), "n": 10}

    def metrics_of(version: str) -> Any:
        scored = step(score, name="score", cache=CachePolicy(version=version))

        @pipeline(name="metrics")
        def metrics(lr: float = 0.0):
            return scored(lr)

        return metrics

    ids = [metrics_of(version).run(lr=lr).id for version, lr in (("1", 0.01), ("2", 0.02))]
    html = browser().get(f"/diff?a={ids[0]}&b={ids[1]}").text
    assert "cache key settings" in html and "version" in html
    assert "output output by key" in html and "r2" in html and "+0.01" in html
    no_markup(html)


RAW_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def test_control_characters_in_recorded_text_are_shown_as_escapes(seeded: Seeded) -> None:
    """A reason with a terminal escape and a bell reads on the page as the CLI prints it (``\\x1b``), and
    the page carries no raw control character (they could reorder or hide what follows)."""
    operator = browser(Role.OPERATOR)
    operator.get("/artifacts/load.output@production")
    token = operator.cookies.get(CSRF_COOKIE)
    reason = "\x1b[31mred\x07 \u009b2J"
    done = operator.post(
        "/aliases/rollback",
        data={"alias": "load.output@production", "csrf_token": token, "reason": reason},
        follow_redirects=True,
    )
    assert done.status_code == 200
    page = operator.get("/artifacts/load.output@production").text
    assert "\\x1b[31mred\\x07 \\x9b2J" in page
    assert not RAW_CONTROLS.search(page.replace("\n", "").replace("\t", "")), RAW_CONTROLS.findall(page)
