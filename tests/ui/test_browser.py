"""The web UI in a real browser: Debian's chromium, headless, driven by selenium through chromium-driver,
against ``isthmus ui`` in its own process with API tokens. Each page is saved as a screenshot under the
test's temporary directory (printed)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from isthmus import Client
from isthmus.cli import app
from tests.ui.conftest import Seeded, serving


def token(role: str, name: str) -> str:
    result = CliRunner().invoke(app, ["tokens", "create", "--role", role, "--name", name, "--json"])
    assert result.exit_code == 0, result.output
    return str(json.loads(result.output)["token"])


class Pages:
    def __init__(self, driver: object, url: str, shots: Path) -> None:
        self.driver, self.url, self.shots = driver, url, shots
        shots.mkdir(parents=True, exist_ok=True)

    def open(self, path: str) -> None:
        self.driver.get(self.url + path)  # type: ignore[attr-defined]

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        assert self.driver.save_screenshot(str(path))  # type: ignore[attr-defined]
        assert path.stat().st_size > 1000
        return path

    def sign_in(self, secret: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver.delete_all_cookies()  # type: ignore[attr-defined]
        self.open("/login")
        self.driver.find_element(By.ID, "token").send_keys(secret)  # type: ignore[attr-defined]
        self.driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()  # type: ignore[attr-defined]
        self.wait_for("Pipeline runs")

    def wait_for(self, text: str) -> None:
        """Wait until the page (after a click that navigates) shows ``text``."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.driver, 30, ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: text in self.text
        )

    @property
    def text(self) -> str:
        from selenium.webdriver.common.by import By

        return str(self.driver.find_element(By.TAG_NAME, "body").text)  # type: ignore[attr-defined]


def test_runs_run_diff_lineage_and_rollback_in_chromium(
    seeded: Seeded, edited: tuple[str, str], browser: object, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    operator, viewer = token("operator", "olga"), token("viewer", "val")
    with serving() as url:
        pages = Pages(browser, url, tmp_path / "screenshots")
        print(f"screenshots: {pages.shots}")
        pages.open("/runs")
        assert "401" in pages.text  # tokens exist: sign in first
        pages.sign_in(operator)
        assert browser.current_url.endswith("/runs")  # type: ignore[attr-defined]
        assert "olga · operator" in pages.text and "chain" in pages.text and "hostile" in pages.text
        assert not browser.execute_script("return window.__xss === true")  # type: ignore[attr-defined]
        pages.shot("runs")

        # open a run from the list
        browser.find_element(By.LINK_TEXT, seeded.second[:8]).click()  # type: ignore[attr-defined]
        pages.wait_for(f"Run {seeded.second[:8]}")
        assert len(browser.find_elements(By.CSS_SELECTOR, "svg a.node.hit")) == 2  # type: ignore[attr-defined]
        pages.shot("run")

        # a failed run: the <script> step name and error shown as text, never run
        pages.open(f"/runs/{seeded.failed}")
        assert "<script>alert('x')</script>" in pages.text
        assert len(browser.find_elements(By.CSS_SELECTOR, "svg a.node.failed")) == 1  # type: ignore[attr-defined]
        pages.shot("failed-run")

        # diff: check two runs in the list, press the button (the page's script fills a and b)
        pages.open("/runs?pipeline=daily")
        picks = browser.find_elements(By.CSS_SELECTOR, "input.pick")  # type: ignore[attr-defined]
        picks[0].click()
        picks[1].click()
        browser.find_element(By.ID, "diff-button").click()  # type: ignore[attr-defined]
        pages.wait_for("Diff of two runs of daily")
        assert "Diff of two runs of daily" in pages.text and "step clean" in pages.text
        assert "every third" in pages.text
        assert browser.find_elements(By.CSS_SELECTOR, "table.diff")  # type: ignore[attr-defined]
        pages.shot("diff")

        pages.open(f"/lineage?target={seeded.v2}")
        assert browser.find_elements(By.CSS_SELECTOR, "svg a.node")  # type: ignore[attr-defined]
        pages.shot("lineage")

        # roll the alias back as the operator
        pages.open("/artifacts/load.output@production")
        pages.shot("artifact")
        browser.find_element(By.CSS_SELECTOR, "form.rollback input[name=reason]").send_keys("bad model")  # type: ignore[attr-defined]
        browser.find_element(By.CSS_SELECTOR, "button.rollback-button").click()  # type: ignore[attr-defined]
        pages.wait_for("bad model")
        assert Client().artifact("load.output@production").content_hash == seeded.v1
        pages.shot("rolled-back")

        pages.open("/audit")
        assert "alias.rollback" in pages.text and "olga" in pages.text
        pages.shot("audit")

        # a viewer sees no buttons, and a forged form post is refused
        pages.sign_in(viewer)
        pages.open("/artifacts/load.output@production")
        assert "need the operator role" in pages.text
        assert not browser.find_elements(By.CSS_SELECTOR, "button.rollback-button")  # type: ignore[attr-defined]
        browser.execute_script(  # type: ignore[attr-defined]
            """
            const f = document.createElement('form');
            f.method = 'post'; f.action = arguments[0] + '/aliases/rollback';
            for (const [k, v] of [['alias', 'load.output@production'],
                                  ['csrf_token', document.querySelector('meta[name=csrf-token]').content]]) {
              const i = document.createElement('input'); i.name = k; i.value = v; f.appendChild(i);
            }
            document.body.appendChild(f); f.submit();
            """,
            url,
        )
        pages.wait_for("403")
        assert "403" in pages.text and "needs the operator role" in pages.text
        assert Client().artifact("load.output@production").content_hash == seeded.v1
        pages.shot("viewer-refused")
    assert sorted(p.name for p in pages.shots.iterdir()) == sorted(
        f"{n}.png"
        for n in ("runs", "run", "failed-run", "diff", "lineage", "artifact", "rolled-back", "audit", "viewer-refused")
    )
