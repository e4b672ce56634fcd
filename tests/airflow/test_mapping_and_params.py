"""Mapping over isthmus outputs, joins of mapped results, ``isthmus.load`` in plain tasks, and
parameters that reach the step as written — under Airflow's ``dag.test()``, checked against local runs
in fresh processes (the cache promise: an Airflow result is a hit for the same step run locally)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from isthmus.context import derived_run_id
from tests.airflow.conftest import load_dag, put_dag
from tests.airflow.dag_sources import MAP_DAG, PARAMS_DAG, REFUSED_DAG, SECRET_PARAM_DAG
from tests.helpers import REPO, run_python

pytestmark = pytest.mark.usefixtures("airflow_db")

LOCAL_JOIN = """
import json
from isthmus.runner import default_runner
from tests.airflow.steps import count, join, names, shout

r = default_runner()
ns = r.run(names, {})
shouted = [r.run(shout, {"name": n}) for n in r.artifacts.load(ns.outputs["output"])]
joined = r.run(join, {"words": [s.outputs["output"] for s in shouted]})
counted = r.run(count, {"items": ns.outputs["output"]})
print(json.dumps({name: [res.cache_hit, res.source_step_run_id, res.cache_key]
                  for name, res in {"names": ns, "join": joined, "count": counted}.items()}))
"""


def _test_run(dag) -> tuple[object, dict[str, dict]]:
    from isthmus import defaults
    from isthmus_airflow.plugins.run_closer import flush

    dr = dag.test()
    flush(30)
    run_id = derived_run_id("airflow", dag.dag_id, dr.run_id)
    return dr, {s["invocation"]: s for s in defaults.metadata_store().step_runs_of(run_id)}


def test_expand_over_a_list_output_maps_its_items_and_the_join_hits_locally(isthmus_home: Path) -> None:
    from isthmus import ArtifactRef, defaults

    dag = load_dag(put_dag("isthmus_map_outputs", MAP_DAG), "isthmus_map_outputs")
    dr, steps = _test_run(dag)
    states = {(ti.task_id, ti.map_index): ti.state for ti in dr.get_task_instances()}
    assert dr.state == "success", states
    # one mapped task per item (not per field of the ref), each item its own artifact
    assert sorted(k for k in states if k[0] == "shout") == [("shout", 0), ("shout", 1), ("shout", 2)]
    assert sorted(k for k in states if k[0] == "check_item") == [("check_item", i) for i in range(3)]
    store = defaults.artifact_store()
    items = [ArtifactRef.from_dict(steps[f"shout[{i}]"]["inputs"]["name"]) for i in range(3)]
    assert [store.load(ref) for ref in items] == ["ada", "grace", "edsger"]
    assert store.load(ArtifactRef.from_dict(steps["join"]["outputs"]["output"])) == "ADA! GRACE! EDSGER!"
    # the join got the mapped results in map order; the unmapped consumer got the whole list's ref
    assert list(steps["join"]["inputs"]) == ["words[0]", "words[1]", "words[2]"]
    whole = steps["names"]["outputs"]["output"]["content_hash"]
    assert {k: v["content_hash"] for k, v in steps["count"]["inputs"].items()} == {"items": whole}

    # a local run in a fresh process: the join and the count are hits on what Airflow computed
    local = run_python(LOCAL_JOIN, env={"ISTHMUS_HOME": str(isthmus_home)}, cwd=REPO)
    for name in ("names", "join", "count"):
        hit, source, key = local[name]
        assert hit and source == steps[name]["id"], (name, local[name])
        assert key == steps[name]["cache_key"]


def test_joined_refs_are_ordered_by_map_index_and_items_become_their_list() -> None:
    from isthmus import ArtifactRef
    from isthmus_airflow.mapping import ITEM_KEY, joined, tag_mapped

    def ref(n: int, **meta) -> dict:
        r = ArtifactRef(f"file:///x/{n}", "blake3:" + f"{n:064x}", n, "json", "builtins:int", metadata=meta)
        return r.to_dict()

    mapped = [tag_mapped(ref(i), "square", i) for i in range(4)]
    shuffled = [mapped[2], mapped[0], mapped[3], mapped[1]]
    assert [r.size for r in joined(shuffled)] == [0, 1, 2, 3]
    # refs of two different mapped tasks, or untagged refs: left as they came
    other = [tag_mapped(ref(9), "other", 0), mapped[1]]
    assert [r.size for r in joined(other)] == [9, 1]
    assert joined("not refs") == "not refs" and joined([1, 2]) == [1, 2]
    # every item of one output, in any order: the output itself; a subset stays a list of items
    parent = ref(7)
    items = [ref(i, **{ITEM_KEY: {"index": i, "count": 3, "of": parent}}) for i in range(3)]
    assert joined([items[1], items[2], items[0]]) == ArtifactRef.from_dict(parent)
    assert isinstance(joined(items[:2]), list)


def test_expand_over_an_output_that_is_not_a_list_is_refused(capfd: pytest.CaptureFixture) -> None:
    dag = load_dag(put_dag("isthmus_map_refused", REFUSED_DAG), "isthmus_map_refused")
    dr, steps = _test_run(dag)
    states = {(ti.task_id, ti.map_index): ti.state for ti in dr.get_task_instances()}
    assert dr.state == "failed"
    assert states[("settings", -1)] == "failed"
    assert "shout" not in steps  # nothing mapped over the ref's fields
    out = "".join(capfd.readouterr())
    assert "step 'settings' returned a builtins.dict, and .expand() maps only over a list or tuple" in out


@pytest.mark.parametrize("native", [False, True])
def test_parameters_reach_the_step_as_written(native: bool, isthmus_home: Path) -> None:
    from isthmus.runner import default_runner
    from tests.airflow.steps import line_count

    dag_id = f"isthmus_params_{native}"
    dag = load_dag(put_dag(dag_id, PARAMS_DAG.format(native=native)), dag_id)
    dr, steps = _test_run(dag)
    assert dr.state == "success"
    assert steps["literal"]["params"] == {"text": "a,b\n1,2\n"}  # not rendered: byte-for-byte
    assert steps["rendered"]["params"] == {"text": "a,b\n1,2\n"}  # rendered: the trailing newline kept
    assert steps["digits"]["params"] == {"text": "007\n"}  # native rendering would have made it 7
    runner = default_runner()
    assert steps["literal"]["cache_key"] == runner.cache_key(line_count, {"text": "a,b\n1,2\n"})
    assert steps["rendered"]["cache_hit"] or steps["literal"]["cache_hit"]  # one computed, one hit

    local = run_python(
        """
        import json
        from isthmus.runner import default_runner
        from tests.airflow.steps import line_count
        res = default_runner().run(line_count, {"text": "a,b\\n1,2\\n"})
        print(json.dumps([res.cache_hit, res.cache_key]))
        """,
        env={"ISTHMUS_HOME": str(isthmus_home)},
        cwd=REPO,
    )
    assert local == [True, steps["literal"]["cache_key"]]


def test_isthmus_load_validates_the_ref(isthmus_home: Path) -> None:
    import isthmus
    from isthmus import defaults

    ref = defaults.artifact_store().save(["a", "b"])
    assert isthmus.load(ref) == isthmus.load(ref.to_dict()) == isthmus.load(ref.to_json()) == ["a", "b"]
    for bad in (
        {"uri": "file:///etc/passwd"},
        [ref.to_dict()],
        {**ref.to_dict(), "content_hash": "blake3:../../../etc/passwd"},
        {**ref.to_dict(), "size": "12"},
        42,
    ):
        with pytest.raises(ValueError, match=r"isthmus.load\(\)"):
            isthmus.load(bad)
    # bytes that do not match the ref's hash are never loaded
    path = Path(defaults.artifact_store().path_for(ref.content_hash))
    os.chmod(path, 0o644)
    path.write_bytes(b'["tampered"]')
    with pytest.raises(isthmus.ArtifactMissing):
        isthmus.load(ref)


def test_a_secret_dag_param_is_secret_in_every_step_it_reaches(
    isthmus_home: Path, capfd: pytest.CaptureFixture
) -> None:
    """A DAG param named like a secret, passed to a step parameter with an innocent name (by param_ref, by
    a template, and through ``to_airflow_dag``): recorded as ``***``, scrubbed from the error, masked in
    the task log; the same secret is a hit, a rotated one a miss."""
    from airflow.sdk._shared.secrets_masker import _secrets_masker

    canary = "dagparam-CANARY-3c1d9e"
    path = put_dag("isthmus_secret_param", SECRET_PARAM_DAG.format(canary=canary))
    dr, steps = _test_run(load_dag(path, "isthmus_secret_param"))
    assert dr.state == "failed"
    assert steps["login"]["status"] == "FAILED" and steps["login"]["params"] == {"host": "db1", "value": "***"}
    assert "login to db1 refused for ***" in steps["login"]["error"]
    assert steps["templated"]["status"] == "COMPLETED" and steps["templated"]["params"] == {
        "host": "db1",
        "value": "***",
    }
    assert canary not in _secrets_masker().redact(f"a log line with {canary}")

    pipeline_dag = load_dag(path, "isthmus_secret_etl")
    first, etl = _test_run_conf(pipeline_dag, {"password": canary})
    again, etl_again = _test_run_conf(pipeline_dag, {"password": canary})
    rotated, etl_rotated = _test_run_conf(pipeline_dag, {"password": canary + "-rotated"})
    assert first.state == again.state == rotated.state == "success"
    assert etl["value_length"]["params"] == {"host": "db1", "value": "***"}
    assert etl_again["value_length"]["cache_hit"] and not etl_rotated["value_length"]["cache_hit"]
    # the same pipeline run locally in a fresh process: a hit on what Airflow computed with that secret
    local = run_python(
        f"""
        import json
        from tests.airflow.steps import secret_etl
        run = secret_etl.run(host="db1", password={canary!r})
        step = run.steps["value_length"]
        print(json.dumps([step.cache_hit, step.source_step_run_id]))
        """,
        env={"ISTHMUS_HOME": str(isthmus_home)},
        cwd=REPO,
    )
    computed = etl["value_length"]["source_step_run_id"] or etl["value_length"]["id"]  # (the templated task's)
    assert local == [True, computed]

    out = "".join(capfd.readouterr())
    assert "refused for ***" in out and canary not in out  # what dag.test() logged
    from isthmus import defaults

    defaults.metadata_store().dispose()
    leaked = [str(p) for p in isthmus_home.rglob("*") if p.is_file() and canary.encode() in p.read_bytes()]
    assert leaked == []


def _test_run_conf(dag, conf: dict) -> tuple[object, dict[str, dict]]:
    from isthmus import defaults
    from isthmus_airflow.plugins.run_closer import flush

    dr = dag.test(run_conf=conf)
    flush(30)
    run_id = derived_run_id("airflow", dag.dag_id, dr.run_id)
    return dr, {s["invocation"]: s for s in defaults.metadata_store().step_runs_of(run_id)}
