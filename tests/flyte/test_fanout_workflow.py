"""Mapped steps (``step.partial(...).map(...)``) as Flyte map tasks (ArrayNodes): one isthmus step run per
item with the same invocation names, map indexes and cache keys as a local run, fan-in in map order, big
fixed inputs stored once, and the ``isthmus_cache`` workflow input."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Any

import pytest

from isthmus import defaults, pipeline, step
from isthmus.artifacts.refs import ArtifactRef
from isthmus.records import RunStatus
from tests.helpers import run_python, write_module

MOVIES = """
from pathlib import Path
from isthmus import pipeline, step

LOG = Path(__file__).with_name("calls.log")


def _note(name):
    with LOG.open("a") as f:
        f.write(name + "\\n")


@step
def list_genres(csv: str, top: int) -> list[str]:
    _note("list_genres")
    return sorted({line.split(",")[1] for line in csv.strip().splitlines()})[:top]


@step
def genre_stats(csv: str, genre: str) -> dict:
    _note("genre_stats:" + genre)
    rows = [r.split(",") for r in csv.strip().splitlines() if r.split(",")[1] == genre]
    return {"genre": genre, "n": len(rows), "mean": sum(float(r[2]) for r in rows) / len(rows)}


@step
def train(lr: float) -> float:
    _note("train:" + str(lr))
    return round(1 - lr, 3)


@step
def pick_best(scores: list) -> float:
    _note("pick_best")
    return max(scores)


@step
def join(stats: list, best: float) -> dict:
    _note("join")
    return {"genres": [s["genre"] for s in stats], "best": best}


@pipeline
def movie_stats(csv: str, top: int = 2):
    genres = list_genres(csv, top)
    per_genre = genre_stats.partial(csv=csv).map(genre=genres)
    best = [train(lr=lr) for lr in (0.01, 0.1)]
    return join(per_genre, pick_best(best))
"""

CSV = "heat,action,4\\nup,animation,5\\nalien,horror,3\\nrocky,action,2\\n"

STEPS_OF_LATEST = """
def steps_of(orchestrator):
    from isthmus import defaults
    store = defaults.metadata_store()
    (latest, *_) = store.list_runs(orchestrator=orchestrator)
    rows = store.step_runs_of(latest["id"])
    return latest["status"], {r["invocation"]: [r["cache_hit"], r["cache_key"], r["id"]] for r in rows}
"""

RUN_LOCAL = f"""
import json, sys
from movies import movie_stats
{STEPS_OF_LATEST}
run = movie_stats.run(csv="{CSV}", top=int(sys.argv[-1]))
status, steps = steps_of("local")
print(json.dumps({{"outputs": run.outputs, "status": status, "steps": steps}}))
"""

RUN_FLYTE = f"""
import json, sys
from movies import movie_stats
{STEPS_OF_LATEST}
out = movie_stats.to_flyte_workflow()(csv="{CSV}", top=int(sys.argv[-1]))
status, steps = steps_of("flyte")
print(json.dumps({{"outputs": out, "status": status, "steps": steps}}))
"""

ALL_STEPS = ["genre_stats[0]", "genre_stats[1]", "join", "list_genres", "pick_best", "train", "train_2"]


def _calls(directory: Path) -> list[str]:
    log = directory / "calls.log"
    calls = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    return calls


def _run(which: str, tmp_path: Path, home: Path, top: int) -> dict[str, Any]:
    code = f"import sys; sys.argv += ['{top}']\n" + (RUN_LOCAL if which == "local" else RUN_FLYTE)
    return run_python(code, env={"ISTHMUS_HOME": str(home)}, cwd=tmp_path, timeout=300)


@pytest.mark.parametrize("first", ["local", "flyte"])
def test_a_run_under_one_orchestrator_is_all_hits_under_the_other(
    first: str, tmp_path: Path, isthmus_home: Path
) -> None:
    """Two fresh processes: the first computes every step run (one per genre), the second — under the other
    orchestrator — hits every one of them with the same keys; then adding a genre under Flyte computes only
    that item, the list it came from and the join."""
    second = "flyte" if first == "local" else "local"
    write_module(tmp_path, "movies", MOVIES)
    a = _run(first, tmp_path, isthmus_home, 2)
    assert a["outputs"] == {"genres": ["action", "animation"], "best": 0.99}
    assert a["status"] == RunStatus.COMPLETED
    assert sorted(a["steps"]) == ALL_STEPS
    assert not any(hit for hit, _, _ in a["steps"].values())
    assert sorted(_calls(tmp_path)) == sorted(
        ["list_genres", "genre_stats:action", "genre_stats:animation", "train:0.01", "train:0.1", "pick_best", "join"]
    )

    b = _run(second, tmp_path, isthmus_home, 2)
    assert b["outputs"] == a["outputs"]
    assert b["status"] == RunStatus.COMPLETED
    assert sorted(b["steps"]) == ALL_STEPS
    for inv, (hit, key, _) in b["steps"].items():
        assert hit, f"{inv} recomputed under {second}"
        assert key == a["steps"][inv][1], inv
    assert _calls(tmp_path) == []

    c = _run("flyte", tmp_path, isthmus_home, 3)
    assert c["outputs"] == {"genres": ["action", "animation", "horror"], "best": 0.99}
    computed = sorted(inv for inv, (hit, _, _) in c["steps"].items() if not hit)
    assert computed == ["genre_stats[2]", "join", "list_genres"]
    assert sorted(_calls(tmp_path)) == ["genre_stats:horror", "join", "list_genres"]
    assert c["steps"]["genre_stats[0]"][1] == a["steps"]["genre_stats[0]"][1]


# -- in-process ------------------------------------------------------------------------------------


@step
def numbers(n: int) -> list[int]:
    return list(range(n))


@step
def square(x: int, offset: int = 0) -> int:
    return x * x + offset


@step
def total(values: list) -> int:
    return sum(values)


@step
def listed(values: list) -> list:
    return values


@step
def label(x: int, text: str) -> str:
    return f"{text}{x}"


@step
def fragile(x: int) -> int:
    if x == 1:
        raise ValueError("bad item 1")
    return x


@step
def describe(x: int) -> tuple[Annotated[int, "value"], Annotated[str, "label"]]:
    return x, f"#{x}"


@step
def pair_up(values: list, labels: list) -> list:
    return [f"{b}={a}" for a, b in zip(values, labels, strict=True)]


@pipeline
def chained(xs: list[int], n: int = 3):
    first = square.map(x=xs)  # a pipeline parameter
    again = square.map(x=first)  # the results of a mapped step
    pairs = [square(x=2), square(x=3)]
    fixed = square.partial(offset=10).map(x=pairs)  # a list of outputs
    literal = square.map(x=[4, 5], offset=[0, 1])  # literals, zipped
    zipped = label.map(x=numbers(n), text=["a", "b", "c"])  # a step output zipped with literals
    return {
        "again": total(again),
        "fixed": total(fixed),
        "literal": total(literal),
        "zipped": listed(zipped),
        "raw": listed(first),
    }


@pipeline
def squares(n: int = 3):
    return total(square.partial(offset=1).map(x=numbers(n)))


@pipeline
def fails():
    return total(fragile.map(x=[0, 1, 2]))


@pipeline
def described():
    value, text = describe.map(x=[3, 4])
    return pair_up(value, text)


BIG = "a,b,1\n" * 40_000  # a 240 KB literal fixed with partial()


@step
def count_of(csv: str, col: str) -> int:
    return sum(1 for line in csv.splitlines() if col in line)


@pipeline
def big_param(csv: str, cols: list[str]):
    return total(count_of.partial(csv=csv).map(col=cols))


@pipeline
def big_literal():
    return total(count_of.partial(csv=BIG).map(col=["a", "b", "c"]))


def _latest(orchestrator: str) -> tuple[dict, dict[str, dict]]:
    store = defaults.metadata_store()
    (latest, *_) = store.list_runs(orchestrator=orchestrator)
    return latest, {r["invocation"]: r for r in store.step_runs_of(latest["id"])}


def _loaded(value: Any) -> Any:
    """A workflow output: a value, or the ref of an artifact (a bare ``list`` is no Flyte type)."""
    ref = ArtifactRef.coerce(value)
    return defaults.artifact_store().load(ref) if ref is not None else value


def _keys(rows: dict[str, dict]) -> dict[str, str]:
    return {inv: r["cache_key"] for inv, r in rows.items()}


def test_mapped_steps_run_per_item_with_map_index_and_fan_in_in_order() -> None:
    wf = squares.to_flyte_workflow()
    assert wf(n=3) == 1 + 2 + 5
    run, rows = _latest("flyte")
    assert run["status"] == RunStatus.COMPLETED
    assert sorted(rows) == ["numbers", "square[0]", "square[1]", "square[2]", "total"]
    assert [rows[f"square[{i}]"]["context"]["native"]["map_index"] for i in range(3)] == [0, 1, 2]
    assert rows["square[1]"]["params"] == {"offset": 1}  # the fixed value stays a parameter
    assert set(rows["square[1]"]["inputs"]) == {"x"}  # the item is an artifact (its own content hash)
    assert set(rows["total"]["inputs"]) == {"values[0]", "values[1]", "values[2]"}
    local = squares.run(n=3)
    assert all(s.cache_hit for s in local.steps.values())
    assert {k: s.cache_key for k, s in local.steps.items()} == _keys(rows)


def test_params_mapped_results_output_lists_literals_and_zips_match_a_local_run() -> None:
    local = chained.run(xs=[1, 2])
    expected = {
        "again": 1 + 16,
        "fixed": 16 + 10 + 81 + 10,
        "literal": 16 + 26,
        "zipped": ["a0", "b1", "c2"],
        "raw": [1, 4],
    }
    assert local.outputs == expected
    out = chained.to_flyte_workflow()(xs=[1, 2])
    assert {k: _loaded(getattr(out, k)) for k in expected} == expected
    run, rows = _latest("flyte")
    assert run["status"] == RunStatus.COMPLETED
    assert set(rows) == set(local.steps)
    assert all(r["cache_hit"] for r in rows.values()), [k for k, r in rows.items() if not r["cache_hit"]]
    assert _keys(rows) == {k: s.cache_key for k, s in local.steps.items()}


def test_an_empty_list_maps_to_no_step_runs_and_the_join_gets_an_empty_list() -> None:
    assert squares.to_flyte_workflow()(n=0) == 0
    run, rows = _latest("flyte")
    assert run["status"] == RunStatus.COMPLETED
    assert sorted(rows) == ["numbers", "total"]
    assert squares.run(n=0).steps["total"].cache_hit


def test_a_failing_item_fails_the_pipeline_run() -> None:
    with pytest.raises(Exception, match="bad item 1"):
        fails.to_flyte_workflow()()
    run, rows = _latest("flyte")
    assert run["status"] == RunStatus.FAILED and "bad item 1" in run["error"]
    assert rows["fragile[0]"]["status"] == RunStatus.COMPLETED
    assert rows["fragile[1]"]["status"] == RunStatus.FAILED


def test_a_mapped_step_with_several_outputs() -> None:
    local = described.run()
    assert local.outputs == ["#3=3", "#4=4"]
    assert _loaded(described.to_flyte_workflow()()) == ["#3=3", "#4=4"]
    _, rows = _latest("flyte")
    assert all(r["cache_hit"] for r in rows.values())
    assert _keys(rows) == {k: s.cache_key for k, s in local.steps.items()}


def test_isthmus_cache_false_computes_every_step_again() -> None:
    wf = squares.to_flyte_workflow()
    assert wf.python_interface.inputs["isthmus_cache"] is bool
    wf(n=2)
    wf(n=2)
    _, rows = _latest("flyte")
    assert all(r["cache_hit"] for r in rows.values())
    assert wf(n=2, isthmus_cache=False) == 1 + 2
    _, rows = _latest("flyte")
    assert sorted(rows) == ["numbers", "square[0]", "square[1]", "total"]
    assert not any(r["cache_hit"] for r in rows.values())
    wf(n=2)  # the fresh results are cached
    _, rows = _latest("flyte")
    assert all(r["cache_hit"] for r in rows.values())


def _literal_sizes(wf: Any, monkeypatch: pytest.MonkeyPatch, **inputs: Any) -> dict[str, int]:
    """The bytes of the literal inputs each mapped node hands to its map task, and to one of its items."""
    sizes: dict[str, int] = {}
    for inv, mt in wf.isthmus_map_tasks.items():
        original = mt.dispatch_execute

        def record(ctx: Any, literal_map: Any, inv: str = inv, mt: Any = mt, original: Any = original) -> Any:
            lits = literal_map.literals
            sizes[inv] = literal_map.to_flyte_idl().ByteSize()
            per_item = 0
            for name, lit in lits.items():
                if name in mt.bound_inputs:
                    per_item += lit.to_flyte_idl().ByteSize()
                elif lit.collection is not None and lit.collection.literals:
                    per_item += lit.collection.literals[0].to_flyte_idl().ByteSize()
            sizes[f"{inv}[item]"] = per_item
            return original(ctx, literal_map)

        monkeypatch.setattr(mt, "dispatch_execute", record)
    wf(**inputs)
    return sizes


def test_a_big_fixed_input_is_stored_once_and_keyed_as_the_parameter_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    csv = "x,y,1\n" * 37_700  # 226 KB
    assert 220_000 < len(csv) < 230_000
    cols = ["x", "y", "z", "w"]
    wf = big_param.to_flyte_workflow()
    sizes = _literal_sizes(wf, monkeypatch, csv=csv, cols=cols)
    print(
        f"226 KB csv parameter, 4 items: map task inputs {sizes['count_of']} bytes, one item {sizes['count_of[item]']} bytes"
    )
    assert sizes["count_of"] < 8_000
    assert sizes["count_of[item]"] < 2_000
    _, rows = _latest("flyte")
    # the csv and the mapped column are parameters, as in a local run, though each travelled as a ref
    assert set(rows["count_of[0]"]["params"]) == {"csv", "col"} and not rows["count_of[0]"]["inputs"]
    assert rows["count_of[1]"]["params"]["col"] == "y"
    local = big_param.run(csv=csv, cols=cols)
    assert local.outputs == 37_700 * 2
    assert all(s.cache_hit for s in local.steps.values())
    assert _keys(_latest("flyte")[1]) == {k: s.cache_key for k, s in local.steps.items()}


def _serialized(wf: Any) -> tuple[list[Any], int]:
    from flytekit.configuration import Image, ImageConfig, SerializationSettings
    from flytekit.tools.translator import get_serializable

    settings = SerializationSettings(
        project="proj",
        domain="development",
        version="v1",
        image_config=ImageConfig(default_image=Image(name="default", fqn="isthmus-example", tag="1")),
        env={},
    )
    entities: OrderedDict = OrderedDict()
    get_serializable(entities, settings, wf)
    idls = [e.to_flyte_idl() for e in entities.values()]
    return idls, sum(i.ByteSize() for i in idls)


def test_the_serialized_workflow_holds_an_array_node_and_no_copy_of_the_big_literal() -> None:
    from flyteidl.admin import workflow_pb2

    for pipe in (big_literal, big_param, chained, described):
        idls, size = _serialized(pipe.to_flyte_workflow())
        specs = [i for i in idls if isinstance(i, workflow_pb2.WorkflowSpec)]
        (spec,) = specs
        nodes = list(spec.template.nodes)
        kinds = {n.WhichOneof("target") for n in nodes}
        assert "array_node" in kinds or "task_node" in kinds
        mapped = [n for n in nodes if n.WhichOneof("target") == "array_node"]
        print(f"{pipe.name}: {len(idls)} entities, {size} bytes serialized, {len(mapped)} array nodes")
        if pipe is described:
            continue
        assert mapped, pipe.name
        assert size < 60_000, (pipe.name, size)  # BIG (240 KB) is not in it, not even once


def _container_run(task: Any, inputs: Any, workdir: Path, home: Path, **env_extra: str) -> Any:
    """Run a serialized task's container command line as a Flyte pod would; returns its output LiteralMap."""
    import os
    import subprocess
    import sys

    from flyteidl.core import literals_pb2
    from flytekit.models.literals import LiteralMap
    from flytekit.tools.translator import get_serializable

    from tests.flyte.test_entrypoint import EXECUTION, REPO, SETTINGS

    spec = get_serializable(OrderedDict(), SETTINGS, task)
    args = list(spec.template.container.args)
    binary = Path(sys.executable).with_name(args[0])
    workdir.mkdir()
    (workdir / "inputs.pb").write_bytes(inputs.to_flyte_idl().SerializeToString())
    for d in ("outputs", "raw", "checkpoint"):
        (workdir / d).mkdir()
    substitutions = {
        "{{.input}}": str(workdir / "inputs.pb"),
        "{{.outputPrefix}}": str(workdir / "outputs"),
        "{{.rawOutputDataPrefix}}": str(workdir / "raw"),
        "{{.checkpointOutputPrefix}}": str(workdir / "checkpoint"),
        "{{.prevCheckpointPrefix}}": "",
    }
    env = {
        **os.environ,
        **EXECUTION,
        "ISTHMUS_HOME": str(home),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "FLYTE_INTERNAL_TASK_NAME": spec.template.id.name,
        **env_extra,
    }
    command = [str(binary), *[substitutions.get(a, a) for a in args[1:]]]
    proc = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not (workdir / "outputs" / "error.pb").exists(), proc.stderr[-3000:]
    msg = literals_pb2.LiteralMap()
    msg.ParseFromString((workdir / "outputs" / "outputs.pb").read_bytes())
    return LiteralMap.from_flyte_idl(msg)


def test_items_and_one_map_item_run_in_containers(tmp_path: Path, isthmus_home: Path) -> None:
    """The items task (pyflyte-execute) and item 1 of the map task (pyflyte-map-execute, with the array
    index environment an ArrayNode pod gets), rebuilt from their import paths in fresh processes."""
    from flytekit.core.context_manager import FlyteContextManager
    from flytekit.core.type_engine import TypeEngine
    from flytekit.models.literals import LiteralMap

    from flytekitplugins.isthmus.transformer import REF_METADATA_KEY
    from isthmus.context import derived_run_id
    from isthmus.runner import default_runner

    def literal(value: Any, tp: Any) -> Any:
        ctx = FlyteContextManager.current_context()
        return TypeEngine.to_literal(ctx, value, tp, TypeEngine.to_literal_type(tp))

    wf = squares.to_flyte_workflow()
    upstream = default_runner().run(numbers, {"n": 3}).outputs["output"]
    given = literal([0, 1, 2], list[int])
    given.set_metadata({REF_METADATA_KEY: upstream.to_json()})  # as the numbers task hands it on
    items = _container_run(wf.isthmus_items_tasks["square"], LiteralMap({"x": given}), tmp_path / "items", isthmus_home)
    assert set(items.literals) == {"x", "offset", "isthmus_map_index"}
    assert len(items.literals["x"].collection.literals) == 3

    inputs = LiteralMap({**items.literals, "isthmus_cache": literal(True, bool)})
    out = _container_run(
        wf.isthmus_map_tasks["square"],
        inputs,
        tmp_path / "item1",
        isthmus_home,
        BATCH_JOB_ARRAY_INDEX_VAR_NAME="FLYTE_K8S_ARRAY_INDEX",
        FLYTE_K8S_ARRAY_INDEX="1",
    )
    ref = TypeEngine.to_python_value(FlyteContextManager.current_context(), out.literals["output"], ArtifactRef)
    assert defaults.artifact_store().load(ref) == 1 * 1 + 1
    run_id = derived_run_id("flyte", "proj", "development", EXECUTION_ID)
    (row,) = defaults.metadata_store().step_runs_of(run_id)
    assert row["invocation"] == "square[1]" and row["context"]["native"]["map_index"] == 1
    assert row["params"] == {"offset": 1} and not row["cache_hit"]
    local = squares.run(n=3)
    assert local.steps["square[1]"].cache_hit and local.steps["square[1]"].source_step_run_id == row["id"]
    assert not local.steps["square[0]"].cache_hit


EXECUTION_ID = "f3a9c2e1b"


def test_the_resolver_rebuilds_mapped_items_and_gather_tasks() -> None:
    from flytekitplugins.isthmus import isthmus_task_resolver
    from tests.flyte.test_entrypoint import SETTINGS

    wf = described.to_flyte_workflow()
    tasks = [*wf.isthmus_tasks.values(), *wf.isthmus_items_tasks.values(), *wf.isthmus_gather_tasks.values()]
    assert len(tasks) == 4
    for original in tasks:
        rebuilt = isthmus_task_resolver.load_task(isthmus_task_resolver.loader_args(SETTINGS, original))
        assert (rebuilt.name, rebuilt.interface) == (original.name, original.interface)


@step
def login(host: str, token: str) -> int:
    return len(host) + len(token)


def test_hostile_map_indexes_and_secrets_are_refused_with_the_fix() -> None:
    from flytekitplugins.isthmus.mapping import map_index
    from isthmus.errors import StepDefinitionError

    for bad in (-1, True, "1", 1.0, None):
        with pytest.raises(StepDefinitionError, match="isthmus_map_index"):
            map_index("square", bad)

    @pipeline
    def fixed(hosts: list[str], password: str):
        return total(login.partial(token=password).map(host=hosts))

    wf = fixed.to_flyte_workflow()  # a secret fixed with partial() is bound as itself, never stored
    assert wf.isthmus_tasks["login"].task_config.secret_inputs == ("token",)
    assert wf(hosts=["ab", "c"], password="s3cret-Value") == 2 + 1 + 2 * len("s3cret-Value")
    _, rows = _latest("flyte")
    assert rows["login[0]"]["params"]["token"] == "***"

    @pipeline
    def over(passwords: list[str]):
        return total(login.partial(host="h").map(token=passwords))

    with pytest.raises(StepDefinitionError, match="maps over secret parameter 'passwords'"):
        over.to_flyte_workflow()


@step
def text_length(text: str, note: str = "") -> int:
    return len(text) + len(note)


@pytest.mark.parametrize("where", ["mapped item", "fixed argument"])
def test_a_value_holding_a_known_secret_is_never_stored_for_a_map_task(
    where: str, isthmus_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The items task stores mapped values and fixed arguments as artifacts: one that holds a secret the
    run knows (here the environment's) is refused in one line, and no artifact holds the secret."""
    word = "env-secret-" + uuid.uuid4().hex
    monkeypatch.setenv("WAREHOUSE_PASSWORD", word)
    holding = f"postgresql-dsn with {word} inside"

    @pipeline
    def lengths(texts: list[str], note: str):
        return total(text_length.partial(note=note).map(text=texts))

    wf = lengths.to_flyte_workflow()
    texts, note = (["plain", holding], "n") if where == "mapped item" else (["plain"], holding)
    with pytest.raises(Exception, match="holds a secret") as info:
        wf(texts=texts, note=note)
    assert word not in str(info.value)
    stored = [p.read_bytes() for p in isthmus_home.rglob("*") if p.is_file()]
    assert stored and not [b for b in stored if word.encode() in b]
    monkeypatch.delenv("WAREHOUSE_PASSWORD")
    assert wf(texts=texts, note=note) == len("".join(texts)) + len(note) * len(texts)


UNANNOTATED = """
from isthmus import pipeline, step

@step
def make() -> list:
    return [1, 2]

@step
def scale(rows, factor):
    return [r * factor for r in rows]

@pipeline
def scaled():
    return scale(make(), 3)
"""

RUN_UNANNOTATED = """
import json, sys
from unannotated import scaled
from isthmus import defaults
if sys.argv[-1] == "local":
    scaled.run()
else:
    scaled.to_flyte_workflow()()
store = defaults.metadata_store()
(latest, *_) = store.list_runs(orchestrator=sys.argv[-1])
rows = store.step_runs_of(latest["id"])
print(json.dumps({r["invocation"]: [r["cache_hit"], r["cache_key"], r["params"]] for r in rows}))
"""


def test_a_literal_for_an_unannotated_parameter_is_keyed_as_a_parameter_under_flyte_too(
    tmp_path: Path, isthmus_home: Path
) -> None:
    """Flyte carries the literal ``3`` as an artifact (the parameter has no type); the task loads it back, so
    the step is keyed as a local run keys it: a local run is a hit under Flyte (two fresh processes)."""
    write_module(tmp_path, "unannotated", UNANNOTATED)
    env = {"ISTHMUS_HOME": str(isthmus_home)}
    local = run_python("import sys; sys.argv.append('local')\n" + RUN_UNANNOTATED, env=env, cwd=tmp_path)
    flyte = run_python("import sys; sys.argv.append('flyte')\n" + RUN_UNANNOTATED, env=env, cwd=tmp_path)
    assert local["scale"][0] is False and local["scale"][2] == {"factor": 3}
    assert flyte["scale"] == [True, local["scale"][1], {"factor": 3}]
