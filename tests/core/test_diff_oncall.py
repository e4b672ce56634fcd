"""``isthmus diff`` for the person on call: what changed apart from how it ran, small values shown,
``--last`` / ``--last-good``, two step runs, ``--json`` and an escaped, self-contained ``--html`` page."""

from __future__ import annotations

import json
import re
from pathlib import Path

from isthmus import Client, pipeline, step
from tests.helpers import import_fresh, invoke, write_module


@step
def load_rows(n: int) -> list:
    return list(range(n))


@step
def score(rows: list, fail: bool = False) -> float:
    if fail:
        raise ValueError("the scorer broke")
    return round(0.8 + len(rows) / 100, 3)


@pipeline
def scoring(n: int = 7, fail: bool = False):
    return score(load_rows(n), fail=fail)


def test_a_computed_run_and_an_all_hit_run_differ_only_in_how_they_ran() -> None:
    first = scoring.run()
    second = scoring.run()
    assert all(s.cache_hit for s in second.steps.values())
    d = Client().diff_runs(first.id, second.id)
    assert d["steps"] == {} and d["params"] == {} and d["unchanged_steps"] == ["load_rows", "score"]
    assert d["ran"]["score"]["a"]["cache"] == "computed" and d["ran"]["score"]["b"]["cache"] == "hit"
    assert d["ran"]["score"]["b"]["source_step_run_id"] == first.steps["score"].step_run_id
    code, out = invoke("diff", first.id, second.id)
    changed, _, ran = out.partition("what changed")[2].partition("How it ran")
    assert code == 0 and changed.strip() == "steps: no changes (2 identical)"
    assert "computed" in ran and "hit from" in ran


def test_small_outputs_read_as_values_with_their_change() -> None:
    a = scoring.run(n=7)
    b = scoring.run(n=10)
    d = Client().diff_runs(a.id, b.id)
    old, new, delta = d["steps"]["score"]["output_values"]["output"]
    assert (old, new) == (0.87, 0.9) and abs(delta - 0.03) < 1e-9
    assert d["steps"]["score"]["outputs"]["output"][0].startswith("blake3:")  # hashes, as before
    assert d["steps"]["load_rows"]["output_values"]["output"] == [list(range(7)), list(range(10))]
    code, out = invoke("diff", "latest~1", "latest")
    assert code == 0 and "output output: 0.87 -> 0.9 (+0.03)" in out and "param n: 7 -> 10" in out


def test_last_and_last_good() -> None:
    good = scoring.run(n=7)
    try:
        scoring.run(n=7, fail=True)
    except Exception:
        pass
    client = Client()
    bad = client.run("latest")
    assert bad["status"] == "FAILED"
    d = client.diff_last_good("scoring")
    assert d["run_a"]["id"] == good.id and d["run_b"]["id"] == bad["id"]
    assert d["steps"]["score"]["status"] == ["COMPLETED", "FAILED"]
    assert "the scorer broke" in d["steps"]["score"]["error"][1]
    assert d["steps"]["score"]["params"] == {"fail": [False, True]} and "load_rows" in d["unchanged_steps"]
    code, out = invoke("diff", "--last-good", "scoring")
    assert code == 0 and "status: COMPLETED -> FAILED" in out and "the scorer broke" in out
    code, out = invoke("diff", "--last", "scoring", "--json")
    assert code == 0 and json.loads(out)["run_b"]["id"] == bad["id"]
    code, out = invoke("diff", "--last", "nope")
    assert code == 1 and out.startswith("error: pipeline 'nope' has 0 recorded run(s)")
    code, out = invoke("diff", "--last-good", "tiny_other")
    assert code == 1 and "no successful run" in out
    code, out = invoke("diff", "--last", "scoring", "latest")
    assert code == 1 and "--last takes a pipeline name and no run ids" in out


def test_two_step_runs() -> None:
    a = scoring.run(n=3)
    b = scoring.run(n=4)
    code, out = invoke("diff", f"{a.id}:score", f"{b.id}:score", "--json")
    d = json.loads(out)
    assert code == 0 and d["changes"]["output_values"]["output"][:2] == [0.83, 0.84]
    assert d["ran"]["a"]["cache"] == "computed" and d["step_run_b"]["id"] == b.steps["score"].step_run_id
    code, out = invoke("diff", a.steps["load_rows"].step_run_id, b.steps["load_rows"].step_run_id)
    assert code == 0 and "param n: 3 -> 4" in out
    code, out = invoke("diff", f"{a.id}:score", "latest:nothing")
    assert code == 1 and "has no step 'nothing'" in out and "Traceback" not in out


def test_html_page_is_self_contained_and_escaped(tmp_path: Path) -> None:
    source = """
        from isthmus import pipeline, step

        @step
        def page(x: int) -> str:
            banner = "<script>alert('x')</script>"
            return banner + str(x * {factor})

        @pipeline
        def paged():
            return page(2)
        """
    write_module(tmp_path, "proj_paged", source.replace("{factor}", "1"))
    import_fresh(tmp_path, "proj_paged").paged.run()
    write_module(tmp_path, "proj_paged", source.replace("{factor}", "33"))  # a new size: no stale .pyc
    import_fresh(tmp_path, "proj_paged").paged.run()
    out_file = tmp_path / "diff.html"
    code, out = invoke("diff", "--last", "paged", "--html", str(out_file))
    assert code == 0 and "wrote" in out
    page = out_file.read_text()
    assert "<script" not in page.lower() and "&lt;script&gt;" in page
    assert not re.search(r"(src|href)=['\"]?https?:", page)  # nothing fetched from elsewhere
    assert "diff_add" in page or "diff_chg" in page  # the side-by-side code table
    text = re.sub(r"<[^>]+>", "", page.replace("&nbsp;", " "))
    assert "x * 33" in text and "x * 1" in text  # both sides of the code
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;66" in text  # the small output, escaped


@step(outputs=["api_token", "config"])
def issue(n: int) -> tuple:
    return f"issued-token-{n}-abcdef", {"password": f"pw-{n}-zz", "threads": n}


@pipeline
def issuing(n: int = 1):
    return issue(n)


def test_a_diff_never_shows_secret_named_outputs_or_secret_named_keys_of_small_values(tmp_path: Path) -> None:
    a, b = issuing.run(n=1), issuing.run(n=2)
    d = Client().diff_runs(a.id, b.id)
    values = d["steps"]["issue"]["output_values"]
    assert values["api_token"] == [
        d["steps"]["issue"]["outputs"]["api_token"][0],
        d["steps"]["issue"]["outputs"]["api_token"][1],
    ]  # hashes only
    assert values["config"] == [{"password": "***", "threads": 1}, {"password": "***", "threads": 2}]
    page = tmp_path / "diff.html"
    for args in (["diff", a.id, b.id], ["diff", a.id, b.id, "--json"], ["diff", a.id, b.id, "--html", str(page)]):
        code, out = invoke(*args)
        shown = out + (page.read_text() if page.exists() else "")
        assert code == 0 and "issued-token-" not in shown and "pw-1-zz" not in shown and "pw-2-zz" not in shown
