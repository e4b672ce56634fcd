"""``isthmus diff`` names the cache-key parts ``why`` names (the policy's version, a declared environment
variable or file — never its value), shows a small dict of numbers key by key with each change, and
refuses ambiguous options in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from isthmus import Client, pipeline, step
from tests.helpers import import_fresh, invoke, write_module

POLICY = """
from isthmus import CachePolicy, pipeline, step


@step(cache=CachePolicy(env=["MYP_MODE"], version="{version}"))
def configured(n: int) -> int:
    return n + 1


@pipeline
def policied(n: int = 1):
    return configured(n)
"""


def test_diff_names_a_bumped_version_and_a_changed_declared_env_value_never_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "mode-7c1e9a2b44"
    monkeypatch.setenv("MYP_MODE", "fast")
    write_module(tmp_path, "proj_policied", POLICY.format(version="1"))
    a = import_fresh(tmp_path, "proj_policied").policied.run()
    write_module(tmp_path, "proj_policied", POLICY.format(version="v2"))  # a new size: no stale .pyc
    b = import_fresh(tmp_path, "proj_policied").policied.run()
    monkeypatch.setenv("MYP_MODE", secret)
    c = import_fresh(tmp_path, "proj_policied").policied.run()
    assert not b.steps["configured"].cache_hit and not c.steps["configured"].cache_hit
    client = Client()
    assert client.explain(f"{b.id}:configured").reason == "policy: version 1 → v2"
    assert client.explain(f"{c.id}:configured").reason == "declared env: MYP_MODE value changed"

    entry = client.diff_runs(a.id, b.id)["steps"]["configured"]
    assert [(k["component"], k["name"], k["old"], k["new"]) for k in entry["key_changes"]] == [
        ("policy", "version", "1", "v2")
    ]
    entry = client.diff_runs(b.id, c.id)["steps"]["configured"]
    assert [(k["component"], k["name"], k["new"]) for k in entry["key_changes"]] == [
        ("env", "MYP_MODE", "value changed")
    ]
    code, out = invoke("diff", a.id, b.id)
    assert code == 0 and "policy version: 1 -> v2" in out and "nothing recorded" not in out, out
    code, out = invoke("diff", b.id, c.id)
    assert code == 0 and "declared env MYP_MODE: value changed" in out and "nothing recorded" not in out, out
    page = tmp_path / "diff.html"
    for args in (
        ["diff", b.id, c.id, "--json"],
        ["diff", f"{b.id}:configured", f"{c.id}:configured", "--json"],
        ["diff", b.id, c.id, "--html", str(page)],
    ):
        code, out = invoke(*args)
        shown = out + page.read_text() if page.exists() else out
        assert code == 0 and "MYP_MODE" in shown and secret not in shown and "fast" not in shown, shown
    assert "value changed" in page.read_text()


@step
def evaluate(k: int) -> dict:
    return {"r2": round(0.8 + k * 0.036, 3), "mae": 1.2, "n_test": 100 + k, "detail": {"rmse": 2.0 + k}}


@pipeline
def scoring(k: int = 2):
    return evaluate(k)


def test_a_small_dict_of_numbers_is_diffed_key_by_key_with_deltas(tmp_path: Path) -> None:
    a = scoring.run(k=2)
    b = scoring.run(k=3)
    entry = Client().diff_runs(a.id, b.id)["steps"]["evaluate"]
    assert entry["output_values"]["output"][0]["r2"] == 0.872  # whole values, as before
    fields = entry["output_fields"]["output"]
    assert set(fields) == {"r2", "n_test", "detail.rmse"}  # only what changed; nested keys by path
    old, new, delta = fields["r2"]
    assert (old, new, delta) == (0.872, 0.908, 0.036)  # no float noise in the change
    assert fields["n_test"] == [102, 103, 1] and fields["detail.rmse"] == [4.0, 5.0, 1.0]
    code, out = invoke("diff", a.id, b.id)
    assert code == 0 and "output evaluate.output r2: 0.872 -> 0.908 (+0.036)" in out, out
    assert "output evaluate.output detail.rmse: 4.0 -> 5.0 (+1)" in out
    assert '"mae"' not in out  # no whole JSON blobs
    code, out = invoke("diff", f"{a.id}:evaluate", f"{b.id}:evaluate", "--json")
    assert code == 0 and json.loads(out)["changes"]["output_fields"]["output"]["n_test"] == [102, 103, 1]
    page = tmp_path / "diff.html"
    code, out = invoke("diff", a.id, b.id, "--html", str(page))
    assert code == 0 and "detail.rmse" in page.read_text()


def test_diff_option_errors_name_the_option() -> None:
    scoring.run(k=1)
    scoring.run(k=2)
    code, out = invoke("diff", "--html", "", "latest~1", "latest")
    assert code == 1 and out.startswith("error: --html ''") and "file name" in out, out
    code, out = invoke("diff", "--last", "scoring", "latest~1", "latest")
    assert code == 1 and "--last takes a pipeline name and no run ids" in out, out
    code, out = invoke("diff", "--last-good", "scoring", "latest")
    assert code == 1 and "--last-good takes a pipeline name and no run ids" in out, out
    code, out = invoke("diff", "latest")
    assert code == 1 and "give two runs" in out
    code, out = invoke("diff", "latest~1", "latest", "--html", "-")  # the page alone, on stdout
    assert code == 0 and out.startswith("<!DOCTYPE html>") and out.rstrip().endswith("</html>"), out[:200]
    code, out = invoke("diff", "latest~1", "latest", "--html", "-", "--json")
    assert code == 1 and "--html - and --json both write to stdout" in out, out


@step
def fetch(n: int, api_token: str) -> int:
    return n * len(api_token)


@pipeline
def fetching(api_token: str = "tok-aaaaaaaa11"):
    return fetch(1, api_token=api_token)


def test_an_unexplained_key_change_names_what_is_not_recorded_as_why_does() -> None:
    a = fetching.run(api_token="tok-aaaaaaaa11")
    b = fetching.run(api_token="tok-bbbbbbbb22")  # the same length: the same output, another key
    client = Client()
    why = client.explain(f"{b.id}:fetch").reason
    assert why.startswith("the cache key differs but no recorded component does") and "api_token" in why, why
    entry = client.diff_runs(a.id, b.id)["steps"]["fetch"]
    assert entry["cache_key_unexplained"] == why and "key_changes" not in entry
    code, out = invoke("diff", a.id, b.id)
    assert code == 0 and why in out and "tok-" not in out, out
