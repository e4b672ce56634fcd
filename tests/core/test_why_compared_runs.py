"""``isthmus why`` names only what differs between the two step runs it compares: a ``@step(...)`` line
whose stored copy is stale is not a change, a one-line diff reads as two lines, an invalidated result
says so, a rerun's forced steps say they were recomputed on request, and a new map item is never
compared with a sibling item of its own run."""

from __future__ import annotations

import json
from pathlib import Path

from isthmus import Client, pipeline, step
from tests.helpers import invoke, run_python, write_module

SCORED = """
from isthmus import CachePolicy, pipeline, step

SCALE = {scale}


@step(cache=CachePolicy(version="{version}"))
def score(n: int) -> float:
    return n * SCALE


@pipeline
def scored(n: int = 2):
    return score(n)
"""

RUN_SCORED = """
import json
from proj_scored import scored
run = scored.run()
print(json.dumps({"id": run.id, "hit": run.steps["score"].cache_hit}))
"""


def test_a_stale_step_line_is_not_named_and_a_one_line_diff_has_two_lines(tmp_path: Path, isthmus_home: Path) -> None:
    """Run X only bumps the policy's version; run Y only changes a constant. The code hash leaves the
    ``@step(...)`` line out, so X's stored source still reads version "1": Y's why must not say the
    ``@step(...)`` line changed."""

    def day(scale: str, version: str) -> dict:
        write_module(tmp_path, "proj_scored", SCORED.format(scale=scale, version=version))
        return run_python(RUN_SCORED, env={"ISTHMUS_HOME": str(isthmus_home)}, cwd=tmp_path)

    assert day("1.0", "1")["hit"] is False
    x = day("1.0", "2")
    assert x["hit"] is False
    y = day("1.5", "2")
    assert y["hit"] is False
    client = Client()
    assert client.explain(f"{x['id']}:score").reason == "policy: version 1 → 2"
    e = client.explain(f"{y['id']}:score")
    assert [(c.component, c.name) for c in e.changes] == [("code", "score:SCALE")], e.changes
    assert e.reason == "code: score:SCALE changed"
    (change,) = e.changes
    assert change.diff is not None and "-SCALE = 1.0\n+SCALE = 1.5\n" in change.diff, change.diff
    code, out = invoke("why", f"{y['id']}:score")
    assert code == 0 and "@step" not in out and "version" not in out
    assert "-SCALE = 1.0\n" in out and "+SCALE = 1.5\n" in out, out
    code, out = invoke("why", f"{y['id']}:score", "--json")
    assert "-SCALE = 1.0\n+SCALE = 1.5\n" in json.loads(out)["changes"][0]["diff"]
    d = client.diff_runs(x["id"], y["id"])
    assert "-SCALE = 1.0\n+SCALE = 1.5\n" in d["steps"]["score"]["code"]["score:SCALE"]
    code, out = invoke("diff", x["id"], y["id"])
    assert code == 0 and "-SCALE = 1.0\n" in out and "+SCALE = 1.5\n" in out, out


@step
def load_rows(n: int) -> list:
    return list(range(n))


@step
def total(rows: list) -> int:
    return sum(rows)


@pipeline
def totals(n: int = 4):
    return total(load_rows(n))


def test_an_invalidated_result_is_named_with_when_and_why_and_runs_show_marks_it() -> None:
    first = totals.run()
    client = Client()
    client.invalidate("load_rows.output", reason="bad data")
    second = totals.run()
    assert second.steps["load_rows"].cache_hit and not second.steps["total"].cache_hit
    e = client.explain(f"{second.id}:total")
    old = first.steps["total"].step_run_id
    assert e.compared_with is not None and e.compared_with.id == old
    assert e.reason.startswith(f"same key as {old[:8]}, whose result was invalidated"), e.reason
    assert "bad data" in e.reason and "expired" not in e.reason
    marked = client.metadata.get_step_run(old)["invalidated_at"]
    assert marked.isoformat()[:19].replace("T", " ") in e.reason
    code, out = invoke("runs", "show", first.id)
    assert code == 0 and "invalidated" in out and "bad data" in out, out
    code, out = invoke("runs", "show", second.id)
    assert code == 0 and "invalidated" in out  # the why column of its recomputed step
    code, out = invoke("why", f"{second.id}:total", "--json")
    assert code == 0 and "bad data" in json.loads(out)["reason"]


def test_a_rerun_says_its_steps_were_recomputed_on_request() -> None:
    first = totals.run()
    client = Client()
    again = client.rerun(first.id, from_step="total")
    assert again.forced == ["total"]
    e = client.explain(f"{again.run_id}:total")
    assert e.decision == "forced" and "cache=False" not in e.reason
    assert e.reason == f"recomputed on request (rerun --from/--only of run {first.id[:8]})", e.reason
    assert client.explain(f"{again.run_id}:load_rows").decision == "hit"
    forced = totals.run(cache=False)  # an ordinary forced run still says so
    assert client.explain(f"{forced.id}:total").reason == "forced (cache=False)"


@step
def labels(n: int) -> list:
    return [f"b{i}" for i in range(n)]


@step
def band_stats(band: str, k: int) -> str:
    return band * k


@pipeline
def banded(n: int = 2, k: int = 1):
    return band_stats.partial(k=k).map(band=labels(n))


def test_a_new_map_item_is_compared_with_the_same_item_of_an_earlier_run_never_a_sibling() -> None:
    first = banded.run(n=2, k=1)
    second = banded.run(n=3, k=2)  # every item computes; item 2 is new
    client = Client()
    e = client.explain(f"{second.id}:band_stats[1]")
    assert e.compared_with is not None and e.compared_with.id == first.steps["band_stats[1]"].step_run_id
    assert e.reason == "params: k 1 → 2"
    new = client.explain(f"{second.id}:band_stats[2]")
    assert new.compared_with is None, new.compared_with
    assert new.decision == "first" and new.reason == "first run of this item"
    assert new.notes == ["no earlier run of band_stats[2]"]
    third = banded.run(n=4, k=2)  # items 0-2 hit; item 3 is new: never compared with item 2 of its run
    assert third.steps["band_stats[2]"].cache_hit
    e = client.explain(f"{third.id}:band_stats[3]")
    assert e.compared_with is None and e.reason == "first run of this item"
    fourth = banded.run(n=4, k=3)
    e = client.explain(f"{fourth.id}:band_stats[3]")
    assert e.compared_with is not None and e.compared_with.id == third.steps["band_stats[3]"].step_run_id
    assert e.reason == "params: k 2 → 3"
