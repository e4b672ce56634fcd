"""The isthmus Deck: cache status, fingerprints, inputs/outputs with hashes, changes — all escaped."""

from __future__ import annotations

from flytekit.core.context_manager import FlyteContextManager

from flytekitplugins.isthmus import isthmus_task
from isthmus import defaults, step
from tests.flyte import flyte_steps as fs

HOSTILE = "<script>alert('x')</script>"


def _isthmus_deck() -> str:
    decks = FlyteContextManager.current_context().user_space_params.decks
    (deck,) = [d for d in decks if d.name == "isthmus"]
    return deck.html


def _label_v2(value: int, label: str = "sum") -> str:
    marker = "<b>v2</b>"
    return f"{label}:{value}{marker}"


def test_deck_shows_cache_status_fingerprints_hashes_and_changes_escaped() -> None:
    describe = isthmus_task(fs.describe, enable_deck=True)
    assert describe(value=3, label="plain") == "plain=3"
    first = _isthmus_deck()
    assert "computed" in first and "first recorded run of this step" in first

    assert describe(value=3, label=HOSTILE) == f"{HOSTILE}=3"
    html = _isthmus_deck()
    store = defaults.metadata_store()
    (row,) = [r for r in _step_runs("describe") if r["params"].get("label") == HOSTILE]
    assert row["code_hash"] in html  # the code fingerprint
    assert row["deps_hash"] in html and row["cache_key"] in html
    assert row["outputs"]["output"]["content_hash"] in html
    assert HOSTILE not in html and "&lt;script&gt;" in html
    assert "parameters:" in html and "plain" in html  # the change against the previous run
    del store

    # A cache hit names the run it came from.
    assert describe(value=3, label=HOSTILE) == f"{HOSTILE}=3"
    hit = _isthmus_deck()
    assert "hit" in hit and row["id"] in hit and "by flyte" in hit

    # A code change is shown as an escaped unified diff.
    changed = isthmus_task(step(_label_v2, name="describe"), enable_deck=True)
    changed(value=3, label="plain")
    diff_html = _isthmus_deck()
    assert "code of" in diff_html and "&lt;b&gt;v2&lt;/b&gt;" in diff_html and "<b>v2</b>" not in diff_html


def _step_runs(step_name: str) -> list[dict]:
    from sqlalchemy import select

    from isthmus.store import schema as s

    store = defaults.metadata_store()
    with store.engine.connect() as conn:
        query = select(s.step_runs).where(s.step_runs.c.step_name == step_name).order_by(s.step_runs.c.started_at)
        return [dict(r) for r in conn.execute(query).mappings()]


def test_deck_is_off_unless_enabled() -> None:
    plain = isthmus_task(fs.describe)
    plain(value=1, label="x")
    decks = FlyteContextManager.current_context().user_space_params.decks
    assert not [d for d in decks if d.name == "isthmus"]
