"""The Airflow provider under real Airflow 3: ``dag.test()`` on a migrated SQLite metadata DB."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.airflow.conftest import DAGS, REPO, lineage_events, load_dag, put_dag

pytestmark = pytest.mark.usefixtures("airflow_db")


def _meta():
    from isthmus import defaults

    return defaults.metadata_store()


def _steps_of(run_id: str) -> dict[str, dict]:
    return {s["invocation"]: s for s in _meta().step_runs_of(run_id)}


def _airflow_run(dag) -> tuple[object, str]:
    """dag.test() and the isthmus pipeline run id of that DAG run."""
    from isthmus.context import derived_run_id
    from isthmus_airflow.plugins.run_closer import flush

    dr = dag.test()
    assert flush(30), "the pipeline run was not closed"  # the listener closes it on its own thread
    return dr, derived_run_id("airflow", dag.dag_id, dr.run_id)


def test_example_dags_record_cache_and_emit_lineage() -> None:
    path = DAGS / "isthmus_ml_dags.py"
    shutil.copy(REPO / "dags_examples" / "airflow" / "isthmus_ml_dags.py", path)
    before = len(lineage_events())
    taskflow = load_dag(path, "isthmus_ml_taskflow")

    # first run: one step run per task, with Airflow's ids, and a completed pipeline run
    dr1, run1 = _airflow_run(taskflow)
    assert dr1.state == "success"
    record = _meta().get_run(run1)
    assert record["orchestrator"] == "airflow" and record["status"] == "COMPLETED"
    assert record["context"]["dag_id"] == "isthmus_ml_taskflow" and record["context"]["run_id"] == dr1.run_id
    steps = _steps_of(run1)
    assert set(steps) == {"ingest", "featurize", "train", "evaluate"}
    assert not any(s["cache_hit"] for s in steps.values())
    native = steps["train"]["context"]["native"]
    assert native["dag_id"] == "isthmus_ml_taskflow" and native["task_id"] == "train"
    assert native["run_id"] == dr1.run_id and native["try_number"] == 1 and native["map_index"] == -1
    assert steps["train"]["params"] == {"n_estimators": 100, "seed": 0}  # native ints from the DAG params

    # second run: all cache hits, each naming the run it came from
    dr2, run2 = _airflow_run(taskflow)
    steps2 = _steps_of(run2)
    assert all(s["cache_hit"] for s in steps2.values())
    assert {k: s["source_step_run_id"] for k, s in steps2.items()} == {k: s["id"] for k, s in steps.items()}

    # the same steps as a to_airflow_dag DAG, with one parameter changed: only its downstream re-runs
    pipeline_dag = load_dag(path, "isthmus_ml_pipeline")
    dr3 = pipeline_dag.test(run_conf={"n_estimators": 50})
    from isthmus.context import derived_run_id

    steps3 = _steps_of(derived_run_id("airflow", "isthmus_ml_pipeline", dr3.run_id))
    assert {k: s["cache_hit"] for k, s in steps3.items()} == {
        "ingest": True,
        "featurize": True,
        "train": False,
        "evaluate": False,
    }
    assert steps3["train"]["params"]["n_estimators"] == 50

    # isthmus runs list shows the Airflow runs
    from isthmus.cli import app

    out = CliRunner().invoke(app, ["runs", "list", "--json"])
    runs = json.loads(out.output)
    assert [r["orchestrator"] for r in runs] == ["airflow"] * 3
    assert {r["pipeline"] for r in runs} == {"isthmus_ml_taskflow", "ml_pipeline"}

    # OpenLineage (file transport): every task's COMPLETE event carries the isthmus facets
    events = lineage_events()[before:]
    completes = [e for e in events if e["eventType"] == "COMPLETE" and "." in e["job"]["name"]]
    assert len(completes) == 12
    for event in completes:
        facet = event["run"]["facets"]["isthmus_step"]
        assert facet["codeFingerprint"].startswith("blake3:") and facet["dependencyFingerprint"].startswith("blake3:")
        assert facet["_schemaURL"].endswith("IsthmusStepRunFacet.json")
        (output,) = event["outputs"]
        assert output["namespace"] == "file" and output["name"].startswith(str(Path(os.environ["ISTHMUS_HOME"])))
        assert output["facets"]["version"]["datasetVersion"].startswith("blake3:")
    by_job = {}
    for e in completes:
        by_job.setdefault(e["job"]["name"], []).append(e["run"]["facets"]["isthmus_step"])
    assert [f["cacheHit"] for f in by_job["isthmus_ml_taskflow.train"]] == [False, True]
    hit = by_job["isthmus_ml_taskflow.train"][1]
    assert hit["sourceStepRunId"] == steps["train"]["id"]
    train_event = next(e for e in completes if e["job"]["name"] == "isthmus_ml_taskflow.train")
    assert (
        train_event["inputs"][0]["facets"]["version"]["datasetVersion"]
        == steps["featurize"]["outputs"]["output"]["content_hash"]
    )
    assert {f["name"] for f in train_event["inputs"][0]["facets"]["schema"]["fields"]} >= {"bmi", "target"}

    # the events are schema-valid, each task's parent is its DAG run, and isthmus itself emitted nothing
    from tests.lineage import schemas

    for event in events:
        schemas.validate_event(event)
    dag_runs = {e["run"]["runId"] for e in events if e["job"]["name"] == "isthmus_ml_taskflow"}
    for e in completes:
        if e["job"]["name"].startswith("isthmus_ml_taskflow."):
            parent = e["run"]["facets"]["parent"]
            assert parent["job"]["name"] == "isthmus_ml_taskflow" and parent["run"]["runId"] in dag_runs
    from isthmus import lineage

    lineage.get_lineage_hook().flush(10)
    assert not (Path(os.environ["ISTHMUS_HOME"]) / "lineage" / "events.jsonl").exists()


EDGE_DAG = """
import os, threading
from airflow.sdk import dag, task
from isthmus import step


@step
def square(x: int) -> int:
    return x * x


@step
def total(values: list) -> int:
    return sum(values)


@step
def flaky(x: int) -> int:
    marker = os.path.join(os.environ["ISTHMUS_HOME"], "flaky-tried")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("transient failure on the first try")
    return x + 1


@step
def broken(x: int) -> int:
    raise ValueError(f"bad value {x} in column y")


@step
def makes_lock() -> object:
    return threading.Lock()


@dag(dag_id="isthmus_edges", schedule=None, default_args={"retry_delay": 0})
def isthmus_edges():
    squares = task.isthmus(square).expand(x=[1, 2, 3])
    task.isthmus(total)(squares)
    task.isthmus(flaky, retries=1)(5)
    task.isthmus(broken)(42)
    task.isthmus(makes_lock)()
    task.isthmus(square, task_id="no_connection", isthmus_conn_id="does_not_exist")(7)
    task.isthmus(square, task_id="store_down", isthmus_conn_id="isthmus_down")(8)
    task.isthmus(square, task_id="templated")("{{ dag_run.conf.get('x', 9) }}")


isthmus_edges()
"""


def test_mapping_retries_failures_and_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    down = {"conn_type": "isthmus", "host": "127.0.0.1", "port": 9, "login": "me", "schema": "meta"}
    monkeypatch.setenv("AIRFLOW_CONN_ISTHMUS_DOWN", json.dumps(down))
    before = len(lineage_events())
    path = put_dag("isthmus_edges", EDGE_DAG)
    dag = load_dag(path, "isthmus_edges")
    dr, run_id = _airflow_run(dag)
    states = {(ti.task_id, ti.map_index): ti.state for ti in dr.get_task_instances()}
    assert dr.state == "failed"
    assert states[("square", 0)] == states[("square", 2)] == "success"
    assert states[("total", -1)] == "success"
    assert states[("flaky", -1)] == "success"
    assert states[("broken", -1)] == "failed"
    assert states[("makes_lock", -1)] == "failed"
    assert states[("no_connection", -1)] == "failed"

    meta = _meta()
    runs = meta.step_runs_of(run_id)
    by_inv: dict[str, list[dict]] = {}
    for s in runs:
        by_inv.setdefault(s["invocation"], []).append(s)
    # a mapped task: one step run per map index
    assert {k for k in by_inv if k.startswith("square[")} == {"square[0]", "square[1]", "square[2]"}
    assert [by_inv[f"square[{i}]"][0]["context"]["native"]["map_index"] for i in range(3)] == [0, 1, 2]
    assert set(by_inv["total"][0]["inputs"]) == {"values[0]", "values[1]", "values[2]"}
    # Airflow retried the flaky task: two attempts, the second one completed
    assert [(s["attempt"], s["status"]) for s in by_inv["flaky"]] == [(1, "FAILED"), (2, "COMPLETED")]
    assert "transient failure" in by_inv["flaky"][0]["error"]
    # a failing step: FAIL recorded with its error, nothing cached
    (broken,) = by_inv["broken"]
    assert broken["status"] == "FAILED" and "ValueError: bad value 42 in column y" in broken["error"]
    assert meta.list_cache_entries(step_name="broken") == []
    (lock,) = by_inv["makes_lock"]
    assert lock["status"] == "FAILED" and "register_materializer" in lock["error"]
    # a missing connection fails before anything is recorded
    assert "no_connection" not in by_inv
    assert states[("store_down", -1)] == "failed"
    # a rendered template ("9") reaches an int parameter as an int
    assert states[("templated", -1)] == "success"
    assert by_inv["templated"][0]["params"] == {"x": 9}
    record = meta.get_run(run_id)
    assert record["status"] == "FAILED"
    # the FAIL event of the failing step carries the isthmus facet with the failed status
    fails = [
        e for e in lineage_events()[before:] if e["eventType"] == "FAIL" and e["job"]["name"] == "isthmus_edges.broken"
    ]
    assert fails and fails[-1]["run"]["facets"]["isthmus_step"]["status"] == "FAILED"


def test_operator_maps_retries_queue_and_pool_from_the_step() -> None:
    from airflow.sdk import DAG

    from isthmus import Resources, step
    from isthmus_airflow.operators.step import StepOperator

    @step(retries=2, resources=Resources(cpu=1, partition="gpu-queue", extra={"pool": "gpus"}))
    def heavy(x: int) -> int:
        return x

    with DAG("retries_mapping", schedule=None):
        op = StepOperator(task_id="heavy", step=heavy, op_kwargs={"x": 1})
        explicit = StepOperator(task_id="explicit", step=heavy, op_kwargs={"x": 1}, retries=5, queue="default")
    with DAG("retries_from_dag", schedule=None, default_args={"retries": 0}):
        from_dag = StepOperator(task_id="heavy", step=heavy, op_kwargs={"x": 1})
    assert (op.retries, op.queue, op.pool) == (2, "gpu-queue", "gpus")
    assert (explicit.retries, explicit.queue) == (5, "default")
    assert from_dag.retries == 0
    by_path = StepOperator(task_id="by_path", step="dags_examples.steps:train", dag=DAG("by_path", schedule=None))
    assert by_path.step.name == "train" and by_path.retries == 1


def test_total_of_mapped_squares_reads_refs_from_xcom() -> None:
    src = textwrap.dedent(
        """
        from airflow.sdk import dag, task
        from isthmus import step

        @step
        def square(x: int) -> int:
            return x * x

        @step
        def total(values: list) -> int:
            return sum(values)

        @dag(dag_id="isthmus_mapped_total", schedule=None)
        def isthmus_mapped_total():
            task.isthmus(total)(task.isthmus(square).expand(x=[1, 2, 3]))

        isthmus_mapped_total()
        """
    )
    dag = load_dag(put_dag("isthmus_mapped_total", src), "isthmus_mapped_total")
    dr, run_id = _airflow_run(dag)
    assert dr.state == "success"
    steps = _steps_of(run_id)
    from isthmus import ArtifactRef, defaults

    assert defaults.artifact_store().load(ArtifactRef.from_dict(steps["total"]["outputs"]["output"])) == 14


def test_provider_is_discovered_by_airflow() -> None:
    airflow_bin = str(Path(sys.executable).with_name("airflow"))
    script = f"{airflow_bin} providers list; echo @@SEP@@; {airflow_bin} providers hooks; echo @@SEP@@; {airflow_bin} providers behaviours; echo @@SEP@@; {airflow_bin} plugins"
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    listing, hooks, behaviours, plugins = out.stdout.split("@@SEP@@")
    assert "isthmus" in listing
    assert "isthmus_airflow.hooks.isthmus.IsthmusHook" in hooks and "isthmus_conn_id" in hooks
    assert "isthmus" in behaviours
    assert "isthmus" in plugins
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    assert "isthmus" in ProvidersManagerTaskRuntime().taskflow_decorators
    from airflow.sdk import task

    assert callable(task.isthmus)


def test_hook_reads_its_connection_and_tests_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from isthmus_airflow.hooks.isthmus import IsthmusHook

    store = tmp_path / "shared.db"
    conn = {
        "conn_type": "isthmus",
        "extra": {"store_url": f"sqlite:///{store}", "artifact_root": str(tmp_path / "arts")},
    }
    monkeypatch.setenv("AIRFLOW_CONN_ISTHMUS_SHARED", json.dumps(conn))
    hook = IsthmusHook("isthmus_shared")
    assert hook.locations() == (f"sqlite:///{store}", str(tmp_path / "arts"), "hash")
    ok, message = hook.test_connection()
    assert ok, message
    assert store.exists()

    pg = {
        "conn_type": "isthmus",
        "host": "127.0.0.1",
        "port": 9,
        "login": "me",
        "password": "s3cr3t/pw",
        "schema": "meta",
    }
    monkeypatch.setenv("AIRFLOW_CONN_ISTHMUS_DOWN", json.dumps(pg))
    down = IsthmusHook("isthmus_down")
    assert down.locations()[0] == "postgresql+psycopg://me:s3cr3t%2Fpw@127.0.0.1:9/meta"
    ok, message = down.test_connection()
    assert not ok and "unreachable" in message and "s3cr3t" not in message

    with pytest.raises(ValueError, match="isthmus connection 'nope' does not exist"):
        IsthmusHook("nope").locations()

    from isthmus.errors import ConfigurationError

    with_keys = {"conn_type": "isthmus", "extra": {"artifact_root": "s3://AKIAEXAMPLE:hook-canary-9@bucket/x"}}
    monkeypatch.setenv("AIRFLOW_CONN_ISTHMUS_KEYS", json.dumps(with_keys))
    with pytest.raises(ConfigurationError, match=r"artifact_root='s3://\*\*\*@bucket/x' holds credentials") as info:
        IsthmusHook("isthmus_keys").locations()
    assert "hook-canary-9" not in str(info.value) and "AKIAEXAMPLE" not in str(info.value)
    assert IsthmusHook().locations()[0].startswith("sqlite:///")  # default: isthmus's own settings


def test_every_secret_the_arguments_hold_is_registered_with_airflows_masker() -> None:
    from airflow.sdk._shared.secrets_masker import _secrets_masker
    from pydantic import SecretStr

    from isthmus_airflow.operators.step import _mask_secret_values

    canaries = ["A-CANARY-top-level-1", "B-CANARY-nested-2", "C-CANARY-header-3", "D-CANARY-secretstr-4"]
    _mask_secret_values(
        {
            "api_token": canaries[0],
            "cfg": {"password": canaries[1]},
            "headers": [["Authorization", f"Bearer {canaries[2]}"]],
            "db": SecretStr(canaries[3]),
            "rows": 3,
        }
    )
    masker = _secrets_masker()
    for canary in canaries:
        assert canary not in masker.redact(f"log line with {canary} in it"), canary


PROJECT_DAG = """
from airflow.sdk import dag, task
from isthmus import step


@step
def cube(x: int) -> int:
    return x * x * x


@dag(dag_id="isthmus_team_project", schedule=None)
def isthmus_team_project():
    task.isthmus(cube, isthmus_conn_id="isthmus_team")(3)


isthmus_team_project()
"""


def test_the_connections_project_owns_the_dag_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """``extra.project`` of the isthmus connection is the project of the DAG run's pipeline run."""
    conn = {"conn_type": "isthmus", "extra": {"project": "team-a"}}
    monkeypatch.setenv("AIRFLOW_CONN_ISTHMUS_TEAM", json.dumps(conn))
    dag = load_dag(put_dag("isthmus_team_project", PROJECT_DAG), "isthmus_team_project")
    dr, run_id = _airflow_run(dag)
    assert dr.state == "success"
    assert _meta().get_pipeline_run(run_id)["project"] == "team-a"

    from isthmus.errors import ConfigurationError
    from isthmus_airflow.hooks.isthmus import IsthmusHook

    monkeypatch.setenv("AIRFLOW_CONN_ISTHMUS_TEAM", json.dumps({"conn_type": "isthmus", "extra": {"project": "a b"}}))
    with pytest.raises(
        ConfigurationError, match=r"isthmus connection 'isthmus_team' extra.project='a b' is not a project"
    ):
        IsthmusHook("isthmus_team").project()
    assert IsthmusHook().project() is None  # no connection: ISTHMUS_PROJECT or 'default' decide


SECRET_DAG = """
import isthmus
from airflow.sdk import dag, task
from isthmus import step


@step
def with_connection_password() -> int:
    return len(isthmus.secret("warehouse_db"))


@step
def with_variable() -> int:
    return len(isthmus.secret("api_key"))


@step
def leaks_it() -> int:
    raise RuntimeError("could not log in with " + isthmus.secret("warehouse_db"))


@dag(dag_id="isthmus_secrets", schedule=None)
def isthmus_secrets():
    task.isthmus(with_connection_password)()
    task.isthmus(with_variable)()
    task.isthmus(leaks_it)()


isthmus_secrets()
"""


def test_isthmus_secret_reads_airflow_connections_and_variables_and_never_records_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    password, api_key = "pw-canary-7731xq", "var-canary-5519zk"
    conn = {"conn_type": "postgres", "host": "db.internal", "login": "etl", "password": password}
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_DB", json.dumps(conn))
    monkeypatch.setenv("AIRFLOW_VAR_API_KEY", api_key)
    dag = load_dag(put_dag("isthmus_secrets", SECRET_DAG), "isthmus_secrets")
    dr, run_id = _airflow_run(dag)
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert states == {"with_connection_password": "success", "with_variable": "success", "leaks_it": "failed"}
    steps = _steps_of(run_id)
    from isthmus import defaults, load

    store = defaults.artifact_store()
    assert load(steps["with_connection_password"]["outputs"]["output"], store=store) == len(password)
    assert load(steps["with_variable"]["outputs"]["output"], store=store) == len(api_key)
    error = str(steps["leaks_it"]["error"]) + str(steps["leaks_it"]["traceback"])
    assert "could not log in with" in error and password not in error
    home = Path(os.environ["ISTHMUS_HOME"])
    for path in [home / "isthmus.db", *home.rglob("*.jsonl")]:
        data = path.read_bytes()
        assert password.encode() not in data and api_key.encode() not in data, path
