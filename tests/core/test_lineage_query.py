"""``isthmus lineage`` / ``Client.lineage``: upstream and downstream of artifacts, step runs and runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from isthmus import Client
from tests.core import gc_steps as g
from tests.helpers import invoke


def test_upstream_of_an_artifact_reaches_the_first_step_with_params_and_code() -> None:
    run = g.chain.run(n=3)
    final = run.steps["double"].outputs["output"].content_hash
    lin = Client().lineage(final, direction="upstream")
    assert {s.step_name for s in lin.step_runs.values()} == {"make", "count", "double"}
    make = next(s for s in lin.step_runs.values() if s.step_name == "make")
    assert make.params == {"n": 3} and make.code_hash and make.environment_hash and make.depth == 3
    double = next(s for s in lin.step_runs.values() if s.step_name == "double")
    assert double.params == {"token": "***"}
    assert all(a.present for a in lin.artifacts.values()) and len(lin.artifacts) == 3
    assert Client().lineage(final, direction="upstream", depth=1).step_runs.keys() == {double.id}


def test_downstream_of_an_artifact_lists_every_consumer_across_runs() -> None:
    first = g.chain.run(n=3)
    again = g.chain.run(n=3)  # all hits: its step runs consumed the same hashes
    made = first.steps["make"].outputs["output"].content_hash
    lin = Client().lineage(made[:20], direction="downstream")
    consumers = {s.pipeline_run_id for s in lin.step_runs.values() if s.step_name == "count"}
    assert consumers == {first.id, again.id}
    assert {s.step_name for s in lin.step_runs.values()} == {"count", "double"}
    assert lin.target_kind == "artifact" and lin.target == made


def test_cli_json_dot_and_one_line_errors() -> None:
    run = g.chain.run(n=2)
    code, out = invoke("lineage", f"{run.id}:count", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["target"]["kind"] == "step_run" and data["orchestrators"] == ["local"]
    assert {s["step_name"] for s in data["step_runs"]} == {"make", "count", "double"}
    code, out = invoke("lineage", "latest", "--dot", "--upstream")
    assert code == 0 and out.startswith("digraph lineage {") and "make.output" in out
    for bad in ("zzz-no-such", "0" * 8 + "-nope", "latest~7", "nope@prod", "blake3:00ff"):
        code, out = invoke("lineage", bad)
        assert code == 1 and out.startswith("error:") and "Traceback" not in out and len(out.splitlines()) == 1, bad
    code, out = invoke("lineage", "latest", "--upstream", "--downstream")
    assert code == 1 and "not both" in out


def test_dot_labels_are_escaped() -> None:
    from isthmus.lineage_query import ArtifactNode, Lineage

    lin = Lineage("artifact", "blake3:ab", "both", None)
    lin.artifacts["blake3:ab"] = ArtifactNode("blake3:ab", ('evil"];\nx -> y [label="\\',), 3, None, None, True, 0)
    dot = lin.to_dot()
    line = next(x for x in dot.splitlines() if "evil" in x)
    assert 'evil\\"];\\nx -> y [label=\\"\\\\' in line and dot.count("\n") == 5


def test_alias_target_and_deleted_artifacts_stay_in_the_graph() -> None:
    run = g.chain.run(n=4)
    made = run.steps["make"].outputs["output"].content_hash
    client = Client()
    client.metadata.set_alias("make.output", "prod", made)
    assert client.lineage("make.output@prod", direction="downstream").target == made
    client.metadata.forget_artifacts([made])
    lin = client.lineage(made, direction="downstream")
    assert lin.artifacts[made].present is False and len(lin.step_runs) == 2
    assert client.lineage("make.output@prod", direction="downstream").target == made  # the row is gone
    code, out = invoke("lineage", "make.output")
    assert code == 1 and "every version of make.output (1) was deleted" in out


def test_every_artifact_id_that_artifacts_show_takes_is_a_lineage_target() -> None:
    first = g.chain.run(n=5).steps["make"].outputs["output"].content_hash
    second = g.chain.run(n=6).steps["make"].outputs["output"].content_hash
    client = Client()
    for ref, want in {
        "make.output": second,
        "make.output@latest": second,
        "make.output~0": second,
        "make.output~1": first,
        first[7:19]: first,
    }.items():
        assert client.lineage(ref, direction="upstream").target == want, ref
        assert client.artifact(ref).content_hash == want, ref
        code, out = invoke("lineage", ref, "--json")
        assert code == 0 and json.loads(out)["target"]["id"] == want, ref
    for bad, says in {
        "make.output~2": "make.output has 2 version(s) in this store",
        "make.nope": "no artifact named 'make.nope'",
        "make": "did you mean 'make.output'",
    }.items():
        code, out = invoke("lineage", bad)
        assert code == 1 and says in out and len(out.splitlines()) == 1, (bad, out)


def test_cli_shows_the_nearest_step_runs_of_a_wide_lineage_and_says_there_are_more() -> None:
    runs = [g.chain.run(n=2, recompute=["count", "double"]) for _ in range(3)]  # three consumers of one dataset
    made = runs[0].steps["make"].outputs["output"].content_hash
    code, out = invoke("lineage", made, "--downstream", "--limit", "2")
    assert code == 0, out
    assert "2 step run(s)" in out.splitlines()[0]
    assert out.count("[1] step run ") == 2  # the nearest first: consumers of the dataset, not what they fed
    assert "more step runs than the 2 shown" in out and "--limit" in out
    assert "[local]" in out  # the orchestrator, printed as text (not taken for a style)
    code, out = invoke("lineage", made, "--downstream")
    assert code == 0 and "more step runs than" not in out
    data = json.loads(invoke("lineage", made, "--downstream", "--limit", "2", "--json")[1])
    assert data["truncated"] is True and len(data["step_runs"]) == 2
    from click.testing import CliRunner

    from isthmus.cli import app

    dot = CliRunner().invoke(app, ["lineage", made, "--downstream", "--limit", "2", "--dot"])
    assert dot.exit_code == 0 and dot.stdout.startswith("digraph") and dot.stdout.rstrip().endswith("}")
    assert "the graph holds the 2 nearest step runs, there are more" in dot.stderr  # stdout stays a graph
    code, out = invoke("lineage", made, "--limit", "0")
    assert code == 2 and "Traceback" not in out


def test_run_step_ids_full_hashes_and_numbers_after_gc() -> None:
    """``latest~1:STEP`` is a step run (not an artifact name), a whole hex digest names an artifact whose
    row gc deleted, and version numbers and ``NAME~N`` count the versions still stored, saying how many
    more were deleted."""
    runs = [g.chain.run(n=n) for n in (3, 4, 5)]
    hashes = [r.steps["make"].outputs["output"].content_hash for r in runs]
    client = Client()
    code, out = invoke("lineage", "latest~1:make", "--json")
    assert code == 0 and json.loads(out)["target"]["id"] == runs[1].steps["make"].step_run_id
    client.metadata.forget_artifacts([hashes[1]])  # the middle version, as gc deletes it
    hex_digest = hashes[1].split(":", 1)[1]
    assert client.lineage(hex_digest).target == hashes[1]
    assert client.lineage(hex_digest.upper()[:64]).target == hashes[1]
    oldest = client.artifact("make.output~1")
    assert oldest.content_hash == hashes[0] and (oldest.number, oldest.versions, oldest.deleted_versions) == (1, 2, 1)
    code, out = invoke("artifacts", "show", "make.output~1")
    assert code == 0 and "version 1 of 2 stored (1 more deleted by gc)" in out
    code, out = invoke("lineage", "make.output~2")
    assert code == 1 and "make.output has 2 version(s) in this store (1 more deleted by gc)" in out
    code, out = invoke("runs", "show", "latest~99999999999999999999")
    assert code == 1 and out.startswith("error: there is no run 'latest~99999999999999999999'")
    assert len(out.splitlines()) == 1
    code, out = invoke("runs", "show", runs[0].id[:8].upper())
    assert code == 0 and runs[0].id in out


def test_a_version_gc_deleted_is_named_deleted_by_every_command() -> None:
    """After gc, a deleted version's hash (whole or a prefix) is not 'no such artifact': show says gc
    deleted it and where its lineage is, lineage marks it, reproduce says its input was deleted."""
    from isthmus.errors import ArtifactMissing

    old = g.chain.run(n=3)
    g.chain.run(n=4)
    made = old.steps["make"].outputs["output"].content_hash
    client = Client()
    client.metadata.forget_artifacts([made])  # as gc deletes a version: its row and its object
    Path(client.artifacts.path_for(made)).unlink()
    for ref in (made, made[7:], made[7:20]):
        code, out = invoke("artifacts", "show", ref)
        assert code == 1 and "was deleted from this store (gc)" in out and f"isthmus lineage {made}" in out, out
    code, out = invoke("lineage", made[7:])
    assert code == 0 and "(deleted by gc)" in out.splitlines()[0]
    with pytest.raises(ArtifactMissing, match="input 'items' .* was deleted from this store"):
        client.reproduce(old.steps["count"].step_run_id)
