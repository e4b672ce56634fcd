"""Fan-out and fan-in: ``step.partial(...).map(...)``, lists of outputs as one argument, parallel local runs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import pytest

import isthmus
from isthmus import pipeline, step
from isthmus.errors import PipelineDefinitionError, StepDefinitionError, StepFailed
from isthmus.records import RunStatus
from tests.helpers import REPO, import_fresh, run_python, write_module

MOVIES = """
import json
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

RUN = f"""
import json, sys
from movies import movie_stats
run = movie_stats.run(csv="{CSV}", top=int(sys.argv[-1]), max_workers=int(sys.argv[-2]))
print(json.dumps({{
    "outputs": run.outputs,
    "steps": {{k: [v.cache_hit, v.cache_key] for k, v in run.steps.items()}},
}}))
"""


def _calls(directory: Path) -> list[str]:
    log = directory / "calls.log"
    calls = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    return calls


def _run(tmp_path: Path, home: Path, workers: int, top: int) -> dict[str, Any]:
    code = f"import sys; sys.argv += ['{workers}', '{top}']\n" + RUN
    return run_python(code, env={"ISTHMUS_HOME": str(home)}, cwd=tmp_path)


def test_fan_out_and_fan_in_across_fresh_processes(tmp_path: Path, isthmus_home: Path) -> None:
    """Day 1 computes one step run per genre; day 2 hits everything; day 3 adds a genre: only that item,
    the list it came from and the join are computed."""
    write_module(tmp_path, "movies", MOVIES)
    first = _run(tmp_path, isthmus_home, 4, 2)
    assert first["outputs"] == {"genres": ["action", "animation"], "best": 0.99}
    assert sorted(first["steps"]) == [
        "genre_stats[0]", "genre_stats[1]", "join", "list_genres", "pick_best", "train", "train_2",
    ]  # fmt: skip
    assert not any(hit for hit, _ in first["steps"].values())
    assert sorted(_calls(tmp_path)) == sorted(
        ["list_genres", "genre_stats:action", "genre_stats:animation", "train:0.01", "train:0.1", "pick_best", "join"]
    )

    second = _run(tmp_path, isthmus_home, 4, 2)
    assert all(hit for hit, _ in second["steps"].values())
    assert second["outputs"] == first["outputs"]
    assert _calls(tmp_path) == []

    third = _run(tmp_path, isthmus_home, 4, 3)
    assert third["outputs"] == {"genres": ["action", "animation", "horror"], "best": 0.99}
    computed = sorted(k for k, (hit, _) in third["steps"].items() if not hit)
    assert computed == ["genre_stats[2]", "join", "list_genres"]
    assert sorted(_calls(tmp_path)) == ["genre_stats:horror", "join", "list_genres"]
    # An item's key is its own: the same genre at the same index keeps its key.
    assert third["steps"]["genre_stats[0]"][1] == first["steps"]["genre_stats[0]"][1]


def test_parallel_and_sequential_runs_record_the_same_keys_and_results(tmp_path: Path, isthmus_home: Path) -> None:
    write_module(tmp_path, "movies", MOVIES)
    parallel = _run(tmp_path, isthmus_home / "a", 4, 3)
    sequential = _run(tmp_path, isthmus_home / "b", 1, 3)
    assert parallel["outputs"] == sequential["outputs"]
    assert {k: key for k, (_, key) in parallel["steps"].items()} == {
        k: key for k, (_, key) in sequential["steps"].items()
    }


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
def describe(x: int) -> tuple[Annotated[int, "value"], Annotated[str, "label"]]:
    return x, f"#{x}"


def test_map_records_one_step_run_per_item_with_its_map_index() -> None:
    @pipeline
    def squares(n: int):
        return total(square.partial(offset=1).map(x=numbers(n)))

    run = squares.run(n=3)
    assert run.outputs == 1 + 2 + 5
    assert sorted(run.steps) == ["numbers", "square[0]", "square[1]", "square[2]", "total"]
    store = run.runner.metadata
    rows = {r["invocation"]: r for r in store.step_runs_of(run.id)}
    assert [rows[f"square[{i}]"]["context"]["native"]["map_index"] for i in range(3)] == [0, 1, 2]
    assert rows["square[1]"]["params"] == {"offset": 1}
    assert set(rows["square[1]"]["inputs"]) == {"x"}
    assert set(rows["total"]["inputs"]) == {"values[0]", "values[1]", "values[2]"}
    assert store.get_run(run.id)["status"] == RunStatus.COMPLETED


def test_map_over_literals_params_handle_lists_and_mapped_results() -> None:
    @pipeline
    def chained(xs: list):
        first = square.map(x=xs)  # a pipeline parameter
        again = square.map(x=first)  # the results of a mapped step
        pairs = [square(x=2), square(x=3)]
        fixed = square.partial(offset=10).map(x=pairs)  # a list of outputs
        literal = square.map(x=[4, 5], offset=[0, 1])  # literals, zipped
        return {"again": total(again), "fixed": total(fixed), "literal": total(literal)}

    run = chained.run(xs=[1, 2])
    assert run.outputs == {"again": 1 + 16, "fixed": 16 + 10 + 81 + 10, "literal": 16 + 26}


def test_a_mapped_step_with_named_outputs_returns_one_list_per_output() -> None:
    @step
    def labels(values: list, names: list) -> list:
        return [f"{n}={v}" for v, n in zip(values, names, strict=True)]

    @pipeline
    def described():
        value, label = describe.map(x=[3, 4])
        return labels(value, label)

    assert described.run().outputs == ["#3=3", "#4=4"]


def test_an_empty_list_maps_to_no_step_runs_and_the_join_gets_an_empty_list() -> None:
    @pipeline
    def nothing():
        return total(square.map(x=numbers(0)))

    run = nothing.run()
    assert run.outputs == 0
    assert sorted(run.steps) == ["numbers", "total"]


def test_join_sees_results_in_map_order_whatever_order_they_finish_in() -> None:
    finished: list[int] = []

    @step
    def slow_first(i: int) -> int:
        time.sleep(0.05 * (3 - i))
        finished.append(i)
        return i

    @pipeline
    def ordered():
        return collect(slow_first.map(i=[0, 1, 2]))

    @step
    def collect(values: list) -> list:
        return values

    parallel = ordered.run(max_workers=3)
    assert finished == [2, 1, 0]
    assert parallel.outputs == [0, 1, 2]
    sequential = ordered.run(max_workers=1)
    assert sequential.steps["collect"].cache_hit  # the same key: order of arrival is not in it
    assert parallel.steps["collect"].cache_key == sequential.steps["collect"].cache_key


def test_independent_steps_run_at_the_same_time() -> None:
    """Both branches must be inside their step at once to pass the barrier (one after the other, the first
    would wait out the barrier's timeout and fail)."""
    barrier = threading.Barrier(2, timeout=20)

    @step
    def meet(tag: str) -> str:
        barrier.wait()
        return tag

    @step
    def both(a: str, b: str) -> str:
        return a + b

    @pipeline
    def branches():
        return both(meet("a"), meet("b"))

    assert branches.run(max_workers=2).outputs == "ab"
    barrier.reset()
    mapped = pipeline(lambda: collect_all(meet.map(tag=["x", "y"])), name="mapped_branches")
    assert mapped.run(max_workers=2).outputs == ["x", "y"]


@step
def collect_all(values: list) -> list:
    return values


def test_a_step_that_is_the_only_one_ready_runs_in_the_calling_thread_and_others_still_overlap() -> None:
    """A chain hands nothing to a pool thread (the hand-off costs more than a cached step); a step that
    becomes ready while another runs goes to the pool, so the two still overlap."""
    threads: dict[str, str] = {}
    barrier = threading.Barrier(2, timeout=20)

    @step
    def where(tag: str, after: str = "") -> str:
        threads[tag] = threading.current_thread().name
        return tag

    @step
    def meet(tag: str, after: str = "") -> str:
        barrier.wait()
        return tag

    @pipeline
    def chain_then_branches():
        first = where("first")
        second = where("second", first)
        slow = meet("slow", second)  # waits at the barrier until the step below is inside it too
        late = meet("late", where("ready-while-slow-runs", second))
        return both_of(slow, late)

    @step
    def both_of(a: str, b: str) -> str:
        return a + b

    assert chain_then_branches.run(max_workers=4).outputs == "slowlate"
    caller = threading.current_thread().name
    assert threads["first"] == threads["second"] == caller


def test_a_step_made_ready_by_an_empty_map_starts_beside_the_other_ready_step() -> None:
    """An empty map is complete at once: the step after it is ready together with the other root, and
    the two run at the same time (neither waits for the other to finish)."""
    barrier = threading.Barrier(2, timeout=20)

    @step
    def meet(tag: str, after: Any = None) -> str:
        barrier.wait()
        return tag

    @pipeline
    def empty_then_meet():
        nothing = square.map(x=[])
        return both_tags(meet("root"), meet("after-empty-map", nothing))

    @step
    def both_tags(a: str, b: str) -> str:
        return a + "+" + b

    assert empty_then_meet.run(max_workers=4).outputs == "root+after-empty-map"


def test_a_failing_item_fails_the_run_and_the_other_items_are_recorded() -> None:
    @step
    def fragile(x: int) -> int:
        if x == 1:
            raise ValueError("bad item 1")
        return x

    @pipeline
    def fails():
        return collect_all(fragile.map(x=[0, 1, 2]))

    with pytest.raises(StepFailed, match="bad item 1") as info:
        fails.run(max_workers=3)
    run_id = info.value.pipeline_run_id  # type: ignore[attr-defined]
    store = isthmus.defaults.metadata_store()
    assert store.get_run(run_id)["status"] == RunStatus.FAILED
    rows = {r["invocation"]: r["status"] for r in store.step_runs_of(run_id)}
    assert rows == {
        "fragile[0]": RunStatus.COMPLETED,
        "fragile[1]": RunStatus.FAILED,
        "fragile[2]": RunStatus.COMPLETED,
    }


def test_map_outside_a_pipeline_calls_the_function_per_item() -> None:
    assert square.partial(offset=1).map(x=[1, 2]) == [2, 5]
    assert square.map(x=(3,), offset=[1]) == [10]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (lambda: square.map(x=5), "map\\(\\) maps over a list"),
        (lambda: square.map(x=[1, 2], offset=[1]), "same length"),
        (lambda: square.partial(offset=1).map(offset=[1]), "both partial\\(\\) and map\\(\\)"),
        (lambda: square.partial(nope=1), "not parameters"),
        (lambda: square.map(), "at least one list"),
        (lambda: total([numbers(2), 3]), "mixes step outputs with other values"),
        (lambda: total([square.map(x=[1])]), "inside a list"),
        (lambda: total({"a": numbers(2)}), "nests step outputs inside a dict"),
    ],
)
def test_bad_fan_out_is_a_one_line_error(body: Any, message: str) -> None:
    bad = pipeline(body, name="bad")
    with pytest.raises((PipelineDefinitionError, StepDefinitionError), match=message) as info:
        bad.run()
    assert "\n" not in str(info.value)


def test_mapping_over_an_output_that_is_not_a_list_names_the_step() -> None:
    @step
    def scalar() -> int:
        return 3

    bad = pipeline(lambda: total(square.map(x=scalar())), name="not_a_list")
    with pytest.raises(StepDefinitionError, match="step 'scalar' returned a builtins.int as 'output'"):
        bad.run()


def test_max_workers_must_be_a_positive_whole_number() -> None:
    flow = pipeline(lambda: total(square.map(x=[1])), name="workers")
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(PipelineDefinitionError, match="max_workers"):
            flow.run(max_workers=bad)


def test_the_fan_out_example_runs_twice_with_all_hits_the_second_time(tmp_path: Path, isthmus_home: Path) -> None:
    """``python -m dags_examples.fanout_pipeline`` as the README shows it, in a fresh process."""
    env = {**os.environ, "ISTHMUS_HOME": str(isthmus_home), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "dags_examples.fanout_pipeline", "--max-workers", "2"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    first, second = (line for line in proc.stdout.splitlines() if line.endswith(("none",)) or "computed:" in line)
    assert "11 step runs, 0 cache hits" in first and "band_stats[3]" in first
    assert "11 step runs, 11 cache hits, computed: none" in second
    assert "metadata of band_stats[0]" in proc.stdout and "best_r2" in proc.stdout


PROCS = """
import json, sys
from movies import movie_stats
run = movie_stats.run(csv="{csv}", top=3, max_workers=2, pool=sys.argv[-1])
print(json.dumps({{"outputs": run.outputs, "steps": {{k: [v.cache_hit, v.cache_key] for k, v in run.steps.items()}}}}))
"""


def test_a_process_pool_records_the_same_runs_as_threads(tmp_path: Path, isthmus_home: Path) -> None:
    write_module(tmp_path, "movies", MOVIES)
    code = PROCS.format(csv=CSV)
    by_process = run_python(
        "import sys; sys.argv.append('processes')\n" + code, env={"ISTHMUS_HOME": str(isthmus_home / "p")}, cwd=tmp_path
    )
    by_thread = run_python(
        "import sys; sys.argv.append('threads')\n" + code, env={"ISTHMUS_HOME": str(isthmus_home / "t")}, cwd=tmp_path
    )
    assert by_process["outputs"] == by_thread["outputs"] == {"genres": ["action", "animation", "horror"], "best": 0.99}
    assert {k: key for k, (_, key) in by_process["steps"].items()} == {
        k: key for k, (_, key) in by_thread["steps"].items()
    }
    again = run_python(
        "import sys; sys.argv.append('processes')\n" + code, env={"ISTHMUS_HOME": str(isthmus_home / "p")}, cwd=tmp_path
    )
    assert all(hit for hit, _ in again["steps"].values())


FAILING = """
from isthmus import pipeline, step

@step
def fragile(x: int) -> int:
    if x == 1:
        raise ValueError("bad item 1")
    return x

@step
def keep(values: list) -> list:
    return values

@pipeline
def fails():
    return keep(fragile.map(x=[0, 1, 2]))
"""


def test_a_step_failing_in_a_worker_process_fails_the_run_with_its_scrubbed_traceback(tmp_path: Path) -> None:
    write_module(tmp_path, "fanout_failing", FAILING)
    mod = import_fresh(tmp_path, "fanout_failing")
    with pytest.raises(StepFailed, match="bad item 1") as info:
        mod.fails.run(max_workers=2, pool="processes")
    assert info.value.step_name == "fragile" and info.value.step_run_id
    assert "raise ValueError" in "".join(getattr(info.value.__cause__, "__notes__", []))
    store = isthmus.defaults.metadata_store()
    run_id = info.value.pipeline_run_id  # type: ignore[attr-defined]
    assert store.get_run(run_id)["status"] == RunStatus.FAILED
    assert store.get_step_run(info.value.step_run_id)["status"] == RunStatus.FAILED


def test_a_process_pool_refuses_steps_it_cannot_import() -> None:
    @step
    def local_step(x: int) -> int:
        return x

    flow = pipeline(lambda: collect_all(local_step.map(x=[1, 2])), name="unimportable")
    with pytest.raises(
        PipelineDefinitionError, match="step 'local_step' cannot run in a worker process.*pool='threads'"
    ):
        flow.run(max_workers=2, pool="processes")
    with pytest.raises(PipelineDefinitionError, match="pool='fibers'"):
        flow.run(pool="fibers")


AT_IMPORT = """
import json
from isthmus import pipeline, step

@step
def double(x: int) -> int:
    return 2 * x

@step
def keep(values: list) -> list:
    return values

@pipeline
def flow():
    return keep(double.map(x=[1, 2, 3]))

print(json.dumps(flow.run(max_workers=4).outputs))
"""


def test_a_pipeline_run_while_its_module_is_imported_does_not_wait_on_the_import_lock(
    tmp_path: Path, isthmus_home: Path
) -> None:
    write_module(tmp_path, "runs_at_import", AT_IMPORT)
    out = run_python("import runs_at_import", env={"ISTHMUS_HOME": str(isthmus_home)}, cwd=tmp_path, timeout=120)
    assert out == [2, 4, 6]


def test_a_step_that_runs_its_own_event_loop_works_in_a_run_started_under_one() -> None:
    """In Jupyter the calling thread runs an event loop: a step's own ``asyncio.run()`` works only in a
    pool thread, so there no step runs in the calling thread, even alone."""
    import asyncio

    @step
    def fetch(n: int) -> int:
        async def get() -> int:
            await asyncio.sleep(0)
            return n + 1

        return asyncio.run(get())

    @pipeline
    def fetch_twice(n: int = 0):
        return fetch(fetch(n))

    async def notebook_cell() -> int:
        return fetch_twice.run(n=40, max_workers=4).outputs

    assert asyncio.run(notebook_cell()) == 42
