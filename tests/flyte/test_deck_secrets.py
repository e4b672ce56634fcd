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


def test_a_secret_named_workflow_input_is_secret_in_every_step_it_feeds(isthmus_home: Path) -> None:
    """A workflow input named like a secret, passed to a step parameter with an innocent name: recorded as
    ``***``, scrubbed from the error, hidden in every deck; the same secret a hit, a rotated one a miss;
    the task a container rebuilds knows it too."""
    import json

    import pytest
    from flytekit.configuration import Image, ImageConfig, SerializationSettings

    from flytekitplugins.isthmus.resolver import isthmus_task_resolver
    from isthmus import StepFailed, defaults
    from tests.flyte import flyte_steps as fs

    canary = "cnry-wf-input-8d2f61"
    measure = fs.secret_measure.to_flyte_workflow(enable_deck=True)
    assert measure(host="db1", password=canary) == 3 + len(canary)
    html = _all_decks_html()
    assert measure(host="db1", password=canary) == 3 + len(canary)
    html += _all_decks_html()
    assert measure(host="db1", password=canary + "-rotated") == 3 + len(canary) + 8
    local = fs.secret_measure.run(host="db1", password=canary)  # the same pipeline run locally: a hit
    assert local.steps["value_length"].cache_hit
    login = fs.secret_login.to_flyte_workflow()
    with pytest.raises(StepFailed, match=r"refused for \*\*\*") as info:
        login(host="db1", password=canary)
    assert canary not in str(info.value)

    store = defaults.metadata_store()
    runs = {r["pipeline"]: r for r in reversed(store.list_runs(orchestrator="flyte"))}
    rows = [s for r in store.list_runs(orchestrator="flyte") for s in store.step_runs_of(r["id"])]
    measured = [s for s in rows if s["step_name"] == "value_length"]
    assert all(s["params"] == {"host": "db1", "value": "***"} for s in measured)
    assert sorted(s["cache_hit"] for s in measured) == [False, False, True]
    (failed,) = [s for s in rows if s["step_name"] == "login_with"]
    assert failed["params"] == {"host": "db1", "value": "***"} and "refused for ***" in failed["error"]
    assert "refused for ***" in (runs["secret_login"]["error"] or "")
    assert canary not in html and "***" in html

    task = measure.isthmus_tasks["value_length"]
    assert task.task_config.secret_inputs == ("value",)
    settings = SerializationSettings(
        project="p", domain="d", version="v", image_config=ImageConfig(default_image=Image(name="d", fqn="i", tag="1"))
    )
    args = isthmus_task_resolver.loader_args(settings, task)
    assert json.loads(args[-1])["secret_inputs"] == ["value"]
    assert isthmus_task_resolver.load_task(args).task_config.secret_inputs == ("value",)

    store.dispose()
    files = [p for p in isthmus_home.rglob("*") if p.is_file()]
    assert files and not [str(p) for p in files if canary.encode() in p.read_bytes()]
