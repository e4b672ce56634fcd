"""The isthmus deck with the web UI: linked to the step-run page when ``ISTHMUS_UI_URL`` is set, opened
first among the task's decks, and fitting a 1400 px window (checked in headless chromium)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from flytekit.core.context_manager import FlyteContextManager
from flytekit.deck.deck import _get_deck

from flytekitplugins.isthmus import isthmus_task
from isthmus import Client
from tests.flyte import flyte_steps as fs
from tests.ui.conftest import browser_fixture  # noqa: F401 - the browser fixture

LONG = "x" * 600  # one unbreakable word: what overflows a table


def _decks() -> list[Any]:
    return list(FlyteContextManager.current_context().user_space_params.decks)


def test_the_deck_links_to_the_step_run_page_and_opens_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTHMUS_UI_URL", "http://isthmus.example:8765/")
    describe = isthmus_task(fs.describe, enable_deck=True)
    describe(value=3, label="plain")
    decks = _decks()
    assert decks[0].name == "isthmus", [d.name for d in decks]
    (step_run,) = re.findall(r"href='http://isthmus\.example:8765/step-runs/([0-9a-f-]{36})'", decks[0].html)
    assert Client().step_run(step_run)["step_name"] == "describe"
    page = _get_deck(FlyteContextManager.current_context().user_space_params, ignore_jupyter=True)
    tabs = re.findall(r'<li onclick="handleLinkClick\(this\)">([^<]*)</li>', page)
    assert tabs[0] == "isthmus" and len(tabs) > 1, tabs  # the deck page opens on its first tab
    monkeypatch.setenv("ISTHMUS_UI_URL", "javascript:alert(1)")
    describe(value=4, label="plain")
    assert "href=" not in _decks()[0].html  # only http(s) addresses become links


def test_the_deck_fits_1400_px(browser: Any, tmp_path: Path) -> None:
    describe = isthmus_task(fs.describe, enable_deck=True)
    describe(value=3, label=LONG)
    describe(value=3, label=LONG + "y")  # a change table with two long values
    page = _get_deck(FlyteContextManager.current_context().user_space_params, ignore_jupyter=True)
    path = tmp_path / "deck.html"
    path.write_text(page)
    browser.set_window_size(1400, 1000)
    browser.get(path.as_uri())
    inner = browser.execute_script("return window.innerWidth")
    wide = browser.execute_script("return Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)")
    assert wide <= inner, f"the deck is {wide} px wide in a {inner} px window"
    shot = tmp_path / "deck-1400.png"
    assert browser.save_screenshot(str(shot))
    print(f"screenshot: {shot}")
