"""With ``enable_deck=True`` no deck — flytekit's own Input deck included — shows a secret parameter."""

from __future__ import annotations

from pathlib import Path

from flytekit.core.context_manager import FlyteContextManager
from flytekit.deck.deck import _get_deck

from flytekitplugins.isthmus import isthmus_task
from isthmus import step

PASSWORD = "cnry-deck-password-51c2"
TOKEN = "cnry-deck-bearer-9e0d77"
URL_PASSWORD = "cnry-deck-urlpw-3a1b"


@step
def login(user: str, password: str, headers: list[list[str]], url: str) -> int:
    return len(password) + len(headers) + len(url)


def _all_decks_html() -> str:
    params = FlyteContextManager.current_context().user_space_params
    names = {d.name for d in params.decks}
    assert {"isthmus", "Input", "Output"} <= names, names
    return _get_deck(new_user_params=params, ignore_jupyter=True)  # the deck.html flytekit writes


def test_decks_never_show_secret_parameters(isthmus_home: Path) -> None:
    task = isthmus_task(login, enable_deck=True)
    args = {
        "user": "alice",
        "password": PASSWORD,
        "headers": [["Authorization", f"Bearer {TOKEN}"], ["Accept", "application/json"]],
        "url": f"https://alice:{URL_PASSWORD}@api.example/v1",
    }
    expected = len(PASSWORD) + 2 + len(args["url"])
    assert task(**args) == expected
    first = _all_decks_html()
    assert task(**args) == expected  # a cache hit: its deck shows the changes against the previous run
    second = _all_decks_html()
    for html in (first, second):
        for canary in (PASSWORD, TOKEN, URL_PASSWORD):
            assert canary not in html
        assert "alice" in html and "application/json" in html  # ordinary inputs are still shown
        assert "***" in html
    files = [p for p in isthmus_home.rglob("*") if p.is_file()]
    assert files and not any(c.encode() in p.read_bytes() for p in files for c in (PASSWORD, TOKEN, URL_PASSWORD))


def test_a_secret_object_cannot_travel_as_a_flyte_artifact(isthmus_home: Path) -> None:
    import pytest
    from pydantic import SecretStr

    @step
    def uses(creds: SecretStr) -> int:
        return len(creds.get_secret_value())

    task = isthmus_task(uses)
    with pytest.raises(Exception, match="holds a secret .*secret_requests=") as info:
        task(creds=SecretStr(PASSWORD))
    assert PASSWORD not in str(info.value)
    assert not any(PASSWORD.encode() in p.read_bytes() for p in isthmus_home.rglob("*") if p.is_file())
