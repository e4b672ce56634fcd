"""``isthmus why`` of a step run that computed although an earlier run had its very cache key names that
run (its result invalidated, its entry cleared) before the nearest earlier run, whatever that one's
parameters; ``why`` given a pipeline run says to name one of its steps."""

from __future__ import annotations

import json

from isthmus import Client, pipeline, step
from tests.helpers import invoke


@step
def score(n: int) -> float:
    return n / 10


@step
def report(acc: float, label: str = "a") -> str:
    return f"{label}: {acc}"


@pipeline
def scored(n: int = 5, label: str = "a"):
    return report(score(n), label=label)


def test_an_invalidated_same_key_run_is_named_before_a_nearer_run_with_other_params() -> None:
    first = scored.run(label="a")
    client = Client()
    client.invalidate("score.output", reason="bad data")
    scored.run(label="X")  # the nearest earlier run of report, by the time of the next one: label X
    third = scored.run(label="a")  # report's key is first's: computed only because first was invalidated
    assert not third.steps["report"].cache_hit
    old = first.steps["report"].step_run_id
    e = client.explain(f"{third.id}:report")
    assert e.compared_with is not None and e.compared_with.id == old, e.compared_with
    assert e.reason.startswith(f"same key as {old[:8]}, whose result was invalidated"), e.reason
    assert "bad data" in e.reason and e.changes == []
    assert any("label" in note and "X" in note for note in e.notes), e.notes  # the nearest run still named
    code, out = invoke("why", f"{third.id}:report")
    assert code == 0 and "invalidated" in out and "bad data" in out, out
    assert f"why: same key as {old[:8]}" in out, out
    code, out = invoke("runs", "show", third.id)
    assert code == 0 and f"same key as {old[:8]}" in out, out


def test_a_cleared_same_key_entry_is_named_before_a_nearer_run_with_other_params() -> None:
    first = scored.run(label="a")
    client = Client()
    client.clear_cache("report")
    scored.run(label="X")
    third = scored.run(label="a")
    assert not third.steps["report"].cache_hit
    e = client.explain(f"{third.id}:report")
    old = first.steps["report"].step_run_id
    assert e.compared_with is not None and e.compared_with.id == old
    assert e.reason.startswith(f"same key as {old[:8]}, whose result was not reused"), e.reason
    assert "cleared" in e.reason


def test_a_nearest_run_with_other_params_is_still_the_reason_when_no_run_had_the_same_key() -> None:
    scored.run(label="a")
    second = scored.run(label="X")
    e = Client().explain(f"{second.id}:report")
    assert e.reason == "params: label a → X" and e.notes == []


def test_why_of_a_pipeline_run_says_to_name_one_of_its_steps() -> None:
    run = scored.run()
    for ref in (run.id, run.id[:10], "latest"):
        code, out = invoke("why", ref)
        assert code == 1 and out.count("\n") == 1, out
        assert "is a pipeline run" in out and f"{run.id[:8]}:score" in out and "RUN:STEP" in out, out
    code, out = invoke("why", f"{run.id[:8]}:score", "--json")
    assert code == 0 and json.loads(out)["decision"] == "first"
    code, out = invoke("why", "feedbeef")  # neither a step run nor a pipeline run
    assert code == 1 and "no step run matches" in out and "pipeline run" not in out
