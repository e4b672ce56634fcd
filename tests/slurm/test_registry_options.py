"""The backend registry and the job options: one name list and one options type for the core and both
adapters; connection defaults under a task's own options; hostile names and values refused in one line."""

from __future__ import annotations

import ast
import subprocess
import sys
import types
from pathlib import Path

import pytest

from isthmus.errors import StepDefinitionError
from isthmus.slurm import BACKENDS, SlurmExecutor, SlurmJobOptions, connect, merge_options
from isthmus.slurm.backends import backend_class, check_kind, register
from isthmus.slurm.backends.base import ConnectionFields, SlurmClient
from isthmus.slurm.errors import SlurmConfigError, SlurmError
from tests.slurm import steps

REPO = Path(__file__).resolve().parents[2]


# -- the registry ----------------------------------------------------------------------------------
def test_every_registered_backend_is_a_client_class_named_by_its_kind():
    assert set(BACKENDS) == {"cli", "rest", "pyslurm"}
    for kind in BACKENDS:
        cls = backend_class(kind)
        assert issubclass(cls, SlurmClient) and cls.kind == kind and cls.summary
    client = connect("cli")
    assert client.kind == client.backend == "cli" and client.describe()["backend"] == "cli"
    assert check_kind(" REST ") == "rest" and check_kind(None) == "cli" and check_kind("") == "cli"


@pytest.mark.parametrize("name", ["slurmrest", "cli; rm -rf /", "../rest", "\x00", "cli-ssh", 42])
def test_an_unknown_backend_is_refused_with_the_choices(name: object):
    with pytest.raises(SlurmConfigError) as info:
        connect(name)  # type: ignore[arg-type]
    text = str(info.value)
    assert "\n" not in text.strip() and "is not a Slurm backend" in text
    assert all(f"'{kind}' (" in text for kind in BACKENDS)
    assert isinstance(info.value, SlurmError) and isinstance(info.value, ValueError)


def test_a_registered_backend_is_found_by_its_name(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(BACKENDS, "cli", BACKENDS["cli"])  # restored after the test
    register("local-cli", BACKENDS["cli"])
    try:
        assert backend_class("local-cli") is backend_class("cli")
    finally:
        BACKENDS.pop("local-cli")
    with pytest.raises(SlurmConfigError, match="must be 'module:Class'"):
        register("bad", "isthmus.slurm.backends.cli")


def test_importing_the_package_loads_no_backend():
    code = (
        "import sys, isthmus.slurm\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('isthmus.slurm.backends.') "
        "and not m.endswith('.base'))\n"
        "assert not loaded, loaded\n"
        "assert 'httpx' not in sys.modules and 'asyncssh' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_adapters_name_no_backend():
    """Backend names are string literals in isthmus.slurm.backends only (docstrings aside)."""
    files = [
        REPO / "providers/isthmus_airflow/hooks/slurm.py",
        REPO / "providers/isthmus_airflow/operators/slurm.py",
        REPO / "providers/isthmus_airflow/triggers/slurm.py",
        *sorted((REPO / "flyte_plugin/flytekitplugins/isthmus/slurm").glob("*.py")),
    ]
    found = []
    for path in files:
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            literal = isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            if literal and node.value.strip().lower() in BACKENDS:
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert not found, found


def test_connection_fields_become_each_backends_options():
    extra = {"slurm_conf": "/etc/slurm/other.conf", "key_file": "~/.ssh/id", "verify_host_key": "false"}
    cli = backend_class("cli").connection_options(ConnectionFields(host="login", port=2222, extra=extra), "c")
    assert cli["host"] == "login" and cli["port"] == 2222 and cli["verify_host_key"] is False
    assert cli["env"] == {"SLURM_CONF": "/etc/slurm/other.conf"}
    rest = backend_class("rest").connection_options(
        ConnectionFields(host="slurm", port=6820, password="jwt", schema="https"), "c"
    )
    assert rest["url"] == "https://slurm:6820" and rest["token"] == "jwt"
    with pytest.raises(SlurmConfigError, match="Slurm connection 'x': the rest backend needs host"):
        backend_class("rest").connection_options(ConnectionFields(), "Slurm connection 'x'")


# -- the options -----------------------------------------------------------------------------------
def test_options_are_normalised_and_validated():
    options = SlurmJobOptions(partition="", extra_options=["--exclusive"], env={"N": 4}, pythonpath=("a",))
    assert options.partition is None and options.extra_options == ("--exclusive",)
    assert options.env == {"N": "4"} and options.pythonpath == ("a",) and options.record_mode == "db"
    for bad in (
        {"record": "sqlite"},
        {"env": ["A=1"]},
        {"extra_options": "--exclusive"},
        {"pythonpath": "/a:/b"},
    ):
        with pytest.raises(StepDefinitionError) as info:
            SlurmJobOptions(**bad)  # type: ignore[arg-type]
        assert "\n" not in str(info.value) and next(iter(bad)) in str(info.value)
    assert SlurmJobOptions.from_mapping({"partition": "gpu", "backend": "rest", "qos": ""}) == SlurmJobOptions(
        partition="gpu"
    )
    assert SlurmJobOptions(partition="gpu").to_dict(set_only=True) == {"partition": "gpu"}


def test_a_tasks_own_options_win_over_the_connections_defaults():
    defaults = SlurmJobOptions(
        partition="debug",
        account="lab",
        env={"A": "conn", "B": "conn"},
        pythonpath=["/conn"],
        extra_options=["--nice=10"],
        record="manifest",
    )
    own = SlurmJobOptions(partition="gpu", env={"B": "task"}, pythonpath=["/task"], extra_options=["--nice=1"])
    merged = merge_options(SlurmJobOptions(env={"OPENLINEAGE_PARENT": "x", "A": "lineage"}), defaults, own)
    assert merged.partition == "gpu" and merged.account == "lab" and merged.record == "manifest"
    assert merged.env == {"OPENLINEAGE_PARENT": "x", "A": "conn", "B": "task"}
    assert merged.pythonpath == ("/task", "/conn")  # the task's import roots first
    assert merged.extra_options == ("--nice=10", "--nice=1")  # the last of a repeated sbatch option applies
    assert merge_options() == SlurmJobOptions() and merge_options(own) == own


def test_the_executor_takes_options_or_their_fields(isthmus_home: Path):
    ex = SlurmExecutor(connect("cli"), partition="gpu", record="manifest", pythonpath=["/x"])
    assert ex.options == SlurmJobOptions(partition="gpu", record="manifest", pythonpath=["/x"])
    assert ex.record == "manifest" and ex.python == sys.executable and ex.work_root.endswith("slurm")
    ex = SlurmExecutor(connect("cli"), options=SlurmJobOptions(partition="a", qos="q"), partition="b")
    assert ex.options.partition == "b" and ex.options.qos == "q"
    with pytest.raises(TypeError, match="partitoin"):
        SlurmExecutor(connect("cli"), partitoin="gpu")
    with pytest.raises(StepDefinitionError, match="record='sqlite' must be 'db' or 'manifest'"):
        SlurmExecutor(connect("cli"), record="sqlite")


def test_the_airflow_operator_merges_the_connection_defaults_in_one_place(monkeypatch: pytest.MonkeyPatch):
    from isthmus_airflow.hooks.slurm import SlurmHook, settings_from_connection
    from isthmus_airflow.operators.slurm import SlurmStepOperator

    conn = types.SimpleNamespace(
        host="",
        login=None,
        password=None,
        port=None,
        schema=None,
        extra_dejson={"backend": "cli", "partition": "debug", "account": "lab", "env": {"A": "1"}, "python": ""},
    )
    cfg = settings_from_connection(conn, "slurm_x")
    assert cfg["backend"] == "cli" and cfg["defaults"] == {"partition": "debug", "account": "lab", "env": {"A": "1"}}
    conn.extra_dejson = {"backend": "slurmrest"}
    with pytest.raises(ValueError, match=r"Slurm connection 'slurm_x': extra.backend='slurmrest' is not a Slurm"):
        settings_from_connection(conn, "slurm_x")
    conn.extra_dejson = {"partition": "debug", "account": "lab", "env": {"A": "1", "B": "1"}}
    monkeypatch.setattr(SlurmHook, "settings", lambda self: settings_from_connection(conn, "slurm_x"))

    op = SlurmStepOperator(task_id="sq", step=steps.square, partition="gpu", env={"B": "2"})
    op.env = {"B": "{{ rendered }}"}  # what Airflow's template rendering does to a templated field
    assert op.job_options.env == {"B": "{{ rendered }}"} and op.partition == "gpu"
    ex = op._executor(None, client=connect("cli"), lineage_env={"OPENLINEAGE_PARENT": "p"})
    assert ex.options.partition == "gpu" and ex.options.account == "lab"
    assert ex.options.env == {"OPENLINEAGE_PARENT": "p", "A": "1", "B": "{{ rendered }}"}
    with pytest.raises(StepDefinitionError, match=r"step 'square': record='x' must be"):
        SlurmStepOperator(task_id="bad", step=steps.square, record="x")


def test_flytes_slurm_job_keeps_its_options_in_one_object():
    from flytekitplugins.isthmus import SlurmJob

    job = SlurmJob(partition="gpu", env={"OMP_NUM_THREADS": "4"}, backend="REST", client_options={"socket": "/s"})
    assert job.options == SlurmJobOptions(partition="gpu", env={"OMP_NUM_THREADS": "4"})
    assert job.partition == "gpu" and job.backend == "rest"
    data = job.to_dict()
    assert data["partition"] == "gpu" and data["backend"] == "rest" and "token" not in data
    assert SlurmJob.from_dict({**data, "unknown_field": 1}) == job
    with pytest.raises(TypeError, match="partitoin"):
        SlurmJob(partitoin="gpu")
    with pytest.raises(ValueError, match=r"SlurmJob: record='x' must be 'db' or 'manifest'"):
        SlurmJob(record="x")
    with pytest.raises(AttributeError):
        _ = job.no_such_option
