"""``log_metadata`` in a Flyte task (flytekit's local executor): recorded with the step run, sent in the
``isthmus_metadata`` facets of the core emitter's events, and shown in the isthmus Deck — escaped, and for
a cache hit as its source's."""

from __future__ import annotations

from typing import Any

from flytekit import workflow
from flytekit.core.context_manager import FlyteContextManager

from flytekitplugins.isthmus import isthmus_task
from isthmus import defaults, log_metadata, step
from tests.flyte import test_lineage
from tests.lineage import metadata_steps as ms
from tests.lineage import schemas
from tests.lineage.receiver import MarquezReceiver

LOGGED = {"accuracy": ms.ACCURACY, "rows": 1200, "passed": True, "classes": ["cat", "dog"]}

evaluate_task = isthmus_task(ms.evaluate, enable_deck=True)
# the Flyte lineage tests' fixtures: a Marquez-compatible receiver and the environment restored after each test
_restore_environ, receiver = test_lineage._restore_environ, test_lineage.receiver


@workflow
def evaluate_wf(rows: int = 1200) -> dict:
    return evaluate_task(rows=rows)


def _isthmus_deck() -> str:
    decks = FlyteContextManager.current_context().user_space_params.decks
    return [d for d in decks if d.name == "isthmus"][-1].html


def test_flyte_workflow_records_logged_metadata_and_emits_the_facet(receiver: MarquezReceiver) -> None:
    first_out = evaluate_wf(rows=1200)
    first_deck = _isthmus_deck()
    second_out = evaluate_wf(rows=1200)
    hit_deck = _isthmus_deck()
    assert first_out == second_out == {"weights": [0.5] * 3, "rows": 1200}

    rows: list[dict[str, Any]] = []
    for run in sorted(defaults.metadata_store().list_runs(orchestrator="flyte"), key=lambda r: r["started_at"]):
        (row,) = defaults.metadata_store().step_runs_of(run["id"])
        rows.append(row)
    first, hit = rows
    assert first["orchestrator"] == "flyte" and not first["cache_hit"]
    assert hit["cache_hit"] and hit["source_step_run_id"] == first["id"]
    assert first["metadata"] == LOGGED and hit["metadata"] == LOGGED

    assert receiver.emitter.flush(20) and receiver.emitter.failed == 0
    events = receiver.received()
    for event in events:
        schemas.validate_event(event)
    completes = {
        e["run"]["facets"]["isthmus_step"]["stepRunId"]: e
        for e in events
        if e["eventType"] == "COMPLETE" and "isthmus_step" in e["run"]["facets"]
    }
    for row in rows:
        event = completes[row["id"]]
        assert event["run"]["facets"]["processing_engine"]["name"] == "isthmus/flyte"
        facet = event["run"]["facets"]["isthmus_metadata"]
        assert (facet["metadata"], facet["loggedByStepRunId"], facet["fromCache"]) == (
            LOGGED,
            first["id"],
            row["cache_hit"],
        )
        assert type(facet["metadata"]["rows"]) is int and type(facet["metadata"]["accuracy"]) is float
        (output,) = event["outputs"]
        assert output["facets"]["isthmus_metadata"]["metadata"] == {"framework": "sklearn", "n_features": 3}

    # the Deck shows what was logged, about the run and about the output; the hit names its source
    for html in (first_deck, hit_deck):
        assert "Logged metadata" in html and "accuracy" in html and "0.93" in html and "n_features" in html
        assert "output <code>model</code>" in html
    assert "nothing logged" not in first_deck
    assert f"logged by step run <code>{first['id']}</code> (reused from the cache)" in hit_deck


HOSTILE = "<script>alert('m')</script>"


@step
def note(text: str) -> int:
    log_metadata({"note": text, "length": len(text)})
    return len(text)


def test_deck_escapes_logged_metadata_and_shows_its_change() -> None:
    note_task = isthmus_task(note, enable_deck=True)
    assert note_task(text="plain") == 5
    assert note_task(text=HOSTILE) == len(HOSTILE)
    html = _isthmus_deck()
    assert HOSTILE not in html and "&lt;script&gt;" in html
    assert "logged metadata:" in html  # the change against the previous run: note and length
    assert "length" in html and "&quot;plain&quot;" in html
