"""The ``pyslurm`` backend (no cluster needed: pyslurm cannot be built for this machine's Slurm here).

A real pyslurm needs a Slurm of its own major release (PyPI has none for Debian's 22.05), so these tests
put a small fake ``pyslurm`` module in ``sys.modules``. It mirrors only the surface the backend uses, as
read in PySlurm/pyslurm:

- ``JobSubmitDescription``: a Cython ``cdef class`` whose ``cdef public`` attributes
  (``pyslurm/core/job/submission.pxd``) default to None and are the only ones that can be set;
  ``__init__(**kwargs)`` sets them; ``submit()`` loads ``script`` from a file when it is one, rejects a
  script without ``#!`` (``ValueError``), and returns the job id or raises ``RPCError``
  (``submission.pyx``); ``gres_per_node`` becomes ``tres_per_node`` like ``cstr.from_gres_dict``;
- ``Job(job_id)``, ``Job.load(job_id)`` (``RPCError`` errno 2017 for an unknown job), ``Job.cancel()``
  (ignores ESLURM_ALREADY_DONE and an unknown job), and the properties read (``job.pyx``);
- ``Jobs.load()`` (a mapping of id -> Job), ``Partitions.load()`` (``partition.pyx``);
- ``RPCError(errno, msg)`` (``pyslurm/core/error.pyx``);
- ``slurm_api_version()`` (``deprecated.pyx``), ``__version__`` (``pyslurm/version.py``: ``24.5.1`` is
  pyslurm for Slurm 24.05) and ``slurmctld.Config.load().version`` (``core/slurmctld/config.pyx``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from isthmus.slurm import JobSpec, SlurmError, SlurmSubmitError, SlurmUnavailable, connect
from isthmus.slurm.backends.pyslurm import PySlurmClient

ESLURM_INVALID_PARTITION_NAME = 2000
ESLURM_INVALID_JOB_ID = 2017
ESLURM_ALREADY_DONE = 2021
SLURMCTLD_COMMUNICATIONS_CONNECTION_ERROR = 1800

# submission.pxd, `cdef public` of JobSubmitDescription
_PUBLIC = """name account user_id group_id priority site_factor wckey array batch_constraints begin_time
clusters cluster_constraints comment admin_comment requires_contiguous_nodes cores_reserved_for_system
threads_reserved_for_system working_directory cpu_frequency nodes deadline delay_boot_time dependencies
excluded_nodes required_nodes constraints kill_on_node_fail licenses mail_user mail_types mcs_label memory_per_cpu
memory_per_node memory_per_gpu network nice log_files_open_mode overcommit partitions profile_types
accounting_gather_frequency qos requires_node_reboot is_requeueable reservations script script_args environment
resource_sharing distribution time_limit time_limit_min container container_id cpus_per_task cpus_per_gpu
sockets_per_node cores_per_socket threads_per_core gpus gpus_per_socket gpus_per_task gres_per_node gpu_binding ntasks
ntasks_per_node ntasks_per_socket ntasks_per_core ntasks_per_gpu switches signal standard_in standard_output
standard_error kill_on_invalid_dependency spreads_over_nodes use_min_nodes gres_binding gres_tasks_per_sharing
temporary_disk_per_node get_user_environment min_cpus_per_node wait_all_nodes selinux_context segment_size
reserved_ports extra"""
SUBMIT_ATTRIBUTES = _PUBLIC.split()


def fake_pyslurm(controller: str = "24.05.3", partitions: tuple[str, ...] = ("debug", "gpu")) -> types.ModuleType:
    ps = types.ModuleType("pyslurm")
    ps.__version__ = "24.5.1"
    ps.cluster = types.SimpleNamespace(version=controller, partitions=set(partitions), jobs={}, up=True, submitted=[])

    class RPCError(Exception):
        def __init__(self, errno: int = -1, msg: str | None = None) -> None:
            self.errno, self.msg = errno, msg or f"Slurm error {errno}"
            super().__init__(self.msg)

    def rpc() -> None:
        if not ps.cluster.up:
            raise RPCError(
                SLURMCTLD_COMMUNICATIONS_CONNECTION_ERROR, "Unable to contact slurm controller (connect failure)"
            )

    class JobSubmitDescription:
        __slots__ = (*SUBMIT_ATTRIBUTES, "tres_per_node", "script_text")

        def __init__(self, **kwargs: Any) -> None:
            for attr in self.__slots__:
                setattr(self, attr, None)
            for key, value in kwargs.items():
                setattr(self, key, value)

        def submit(self) -> int:
            text = Path(self.script).read_text() if Path(self.script).is_file() else self.script
            if not str(text).startswith("#!"):
                raise ValueError("Not a valid Batch script. First line must start with '#!'")
            if self.gres_per_node:  # cstr.from_gres_dict, dict form
                self.tres_per_node = ",".join(f"gres:{k}:{int(v)}" for k, v in self.gres_per_node.items())
            self.script_text = text
            rpc()
            if self.partitions and self.partitions not in ps.cluster.partitions:
                raise RPCError(ESLURM_INVALID_PARTITION_NAME, "Invalid partition name specified")
            job_id = 100 + len(ps.cluster.submitted)
            ps.cluster.submitted.append(self)
            ps.cluster.jobs[job_id] = Job(job_id, name=self.name, partition=self.partitions or "debug")
            return job_id

    class Job:
        def __init__(self, job_id: int, **props: Any) -> None:
            self.id = job_id
            self.name, self.state, self.state_reason = props.get("name"), props.get("state", "PENDING"), "None"
            self.exit_code, self.exit_code_signal = props.get("exit_code", 0), props.get("exit_code_signal", 0)
            self.partition, self.allocated_nodes = props.get("partition"), props.get("allocated_nodes")
            self.standard_output = props.get("standard_output", f"/home/u/slurm-{job_id}.out")
            self.standard_error = props.get("standard_error", self.standard_output)
            self.requeue_count, self.time_limit = props.get("requeue_count", 0), props.get("time_limit", 60)
            self.batch_host, self.cpus, self.gres_per_node = props.get("allocated_nodes"), 1, props.get("gres", {})
            if "state_reason" in props:
                self.state_reason = props["state_reason"]

        @staticmethod
        def load(job_id: int) -> Job:
            rpc()
            if job_id not in ps.cluster.jobs:
                raise RPCError(ESLURM_INVALID_JOB_ID, "Invalid job id specified")
            return ps.cluster.jobs[job_id]

        def cancel(self) -> None:  # send_signal(9): an ended or purged job is not an error
            rpc()
            job = ps.cluster.jobs.get(self.id)
            if job is not None and job.state in ("PENDING", "RUNNING"):
                job.state = "CANCELLED"

    class Jobs(dict):
        @staticmethod
        def load() -> Jobs:
            rpc()
            return Jobs(ps.cluster.jobs)

    class Partitions(dict):
        @staticmethod
        def load() -> Partitions:
            rpc()
            return Partitions({n: types.SimpleNamespace(name=n) for n in ps.cluster.partitions})

    class Config:
        @staticmethod
        def load() -> Any:
            rpc()
            return types.SimpleNamespace(version=ps.cluster.version, cluster_name="c")

    ps.RPCError, ps.JobSubmitDescription, ps.Job, ps.Jobs, ps.Partitions = (
        RPCError,
        JobSubmitDescription,
        Job,
        Jobs,
        Partitions,
    )
    ps.slurmctld = types.SimpleNamespace(Config=Config)
    ps.slurm_api_version = lambda: (24, 5, 3)
    return ps


@pytest.fixture
def ps(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = fake_pyslurm()
    monkeypatch.setitem(sys.modules, "pyslurm", module)
    return module


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_without_pyslurm_the_error_says_why_and_the_fix(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "pyslurm", None)  # "import pyslurm" raises ImportError
    with pytest.raises(SlurmError) as err:
        connect("pyslurm")
    text = str(err.value)
    assert "importing pyslurm failed (ModuleNotFoundError" in text
    assert "pip install 'pyslurm==<major>.<minor>.*'" in text and "24.5.* for Slurm 24.05" in text
    assert "backend='cli'" in text and "backend='rest'" in text


def test_pyslurm_without_the_object_api_is_refused(monkeypatch: pytest.MonkeyPatch):
    old = types.ModuleType("pyslurm")
    old.__version__ = "22.5.1"
    monkeypatch.setitem(sys.modules, "pyslurm", old)
    with pytest.raises(SlurmError, match=r"pyslurm 22\.5\.1 lacks JobSubmitDescription.*23\.2"):
        connect("pyslurm")


def test_spec_becomes_a_submit_description(ps: types.ModuleType, tmp_path: Path):
    client = connect("pyslurm", job_env={"PATH": "/usr/bin:/bin"})
    assert isinstance(client, PySlurmClient) and client.backend == "pyslurm"
    spec = JobSpec(
        name="isthmus-train-abc",
        script="echo hi",
        cpus_per_task=4,
        mem_mb=2048,
        gpus=2,
        gpu_type="a100",
        time_limit=90 * 60,
        partition="gpu",
        account="proj",
        qos="normal",
        constraint="fast",
        extra_options=["--exclusive", "--nice=10", "--no-requeue"],
        env={"FOO": "bar"},
        work_dir=str(tmp_path),
        stdout=str(tmp_path / "out-%j.log"),
        stderr=str(tmp_path / "err-%j.log"),
    )
    assert run(client.submit(spec)) == "100"
    desc = ps.cluster.submitted[0]
    assert desc.name == "isthmus-train-abc" and desc.partitions == "gpu"
    assert (desc.account, desc.qos, desc.constraints) == ("proj", "normal", "fast")
    assert desc.cpus_per_task == 4 and desc.memory_per_node == 2048  # MiB, as --mem=2048M
    assert desc.gres_per_node == {"gpu:a100": 2} and desc.tres_per_node == "gres:gpu:a100:2"  # --gres=gpu:a100:2
    assert desc.time_limit == "01:30:00"
    assert desc.working_directory == str(tmp_path)
    assert desc.standard_output.endswith("out-%j.log") and desc.standard_error.endswith("err-%j.log")
    assert desc.environment == {"PATH": "/usr/bin:/bin", "FOO": "bar"}
    assert desc.resource_sharing == "exclusive" and desc.nice == 10 and desc.is_requeueable is False
    assert desc.script_text == spec.full_script()
    assert not Path(desc.script).exists()  # the script file was only needed while submitting
    assert desc.gpus is None and desc.memory_per_cpu is None


def test_untyped_gpus_and_the_default_environment(ps: types.ModuleType, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ISTHMUS_TEST_MARK", "1")
    monkeypatch.setenv("SLURM_JWT", "header.payload.signature")
    monkeypatch.setenv("ISTHMUS_STORE_URL", "postgresql+psycopg://isthmus:hunter2@db/isthmus")
    client = connect("pyslurm")
    run(client.submit(JobSpec(name="j", script="#!/bin/sh\necho hi\n", gpus=1)))
    desc = ps.cluster.submitted[0]
    assert desc.gres_per_node == {"gpu": 1} and desc.tres_per_node == "gres:gpu:1"
    assert desc.environment["ISTHMUS_TEST_MARK"] == "1"  # like sbatch: this process's environment
    # ... minus its credentials (slurmctld keeps a job's environment with the job)
    assert "SLURM_JWT" not in desc.environment and "ISTHMUS_STORE_URL" not in desc.environment
    assert desc.is_requeueable is True and desc.time_limit is None and desc.partitions is None


def test_refused_submission_names_slurms_message_and_leaves_no_job(ps: types.ModuleType):
    client = connect("pyslurm")
    with pytest.raises(SlurmSubmitError) as err:
        run(client.submit(JobSpec(name="j", script="echo", partition="nosuch")))
    assert "Invalid partition name specified" in str(err.value) and "sinfo -s" in str(err.value)
    assert ps.cluster.jobs == {}


def test_option_without_a_pyslurm_field_is_refused_before_submitting(ps: types.ModuleType):
    client = connect("pyslurm")
    with pytest.raises(SlurmSubmitError, match=r"'--gpu-bind=closest' has no pyslurm equivalent.*'cli'"):
        run(client.submit(JobSpec(name="j", script="echo", extra_options=["--gpu-bind=closest"])))
    with pytest.raises(SlurmSubmitError, match="--nice needs a value"):
        run(client.submit(JobSpec(name="j", script="echo", extra_options=["--nice"])))
    assert ps.cluster.submitted == []


@pytest.mark.parametrize(
    "props,state,reason,exit_code",
    [
        ({"state": "PENDING", "state_reason": "Resources"}, "PENDING", "Resources", "0:0"),
        ({"state": "RUNNING", "allocated_nodes": "n1", "gres": {"gres/gpu:a100": 2}}, "RUNNING", None, "0:0"),
        ({"state": "COMPLETING"}, "COMPLETING", None, "0:0"),
        ({"state": "COMPLETED"}, "COMPLETED", None, "0:0"),
        ({"state": "FAILED", "exit_code": 3, "state_reason": "NonZeroExitCode"}, "FAILED", "NonZeroExitCode", "3:0"),
        ({"state": "CANCELLED", "exit_code": 0, "exit_code_signal": 9}, "CANCELLED", None, "0:9"),
        ({"state": "TIMEOUT"}, "TIMEOUT", None, "0:0"),
        ({"state": "NODE_FAIL"}, "NODE_FAIL", None, "0:0"),
    ],
)
def test_job_status(ps: types.ModuleType, props: dict[str, Any], state: str, reason: str | None, exit_code: str):
    ps.cluster.jobs[7] = ps.Job(7, name="j", partition="debug", requeue_count=1, time_limit=90, **props)
    status = run(connect("pyslurm").status("7"))
    assert (status.job_id, status.state, status.reason, status.exit_code) == ("7", state, reason, exit_code)
    assert status.partition == "debug" and status.name == "j" and status.source == "pyslurm"
    assert status.stdout == "/home/u/slurm-7.out" and status.restarts == 1 and status.time_limit == "01:30:00"
    assert status.nodes == props.get("allocated_nodes")
    assert status.tres == ("gres/gpu:a100:2" if props.get("gres") else None)


def test_unknown_job_is_none(ps: types.ModuleType):
    assert run(connect("pyslurm").status("999999")) is None


def test_find_newest_first(ps: types.ModuleType):
    for job_id, name in ((5, "a"), (12, "a"), (9, "b"), (10, "a")):
        ps.cluster.jobs[job_id] = ps.Job(job_id, name=name, state="RUNNING")
    found = run(connect("pyslurm").find("a"))
    assert [s.job_id for s in found] == ["12", "10", "5"] and {s.name for s in found} == {"a"}


def test_cancel(ps: types.ModuleType, monkeypatch: pytest.MonkeyPatch):
    client = connect("pyslurm")
    ps.cluster.jobs[3] = ps.Job(3, state="RUNNING")
    ps.cluster.jobs[4] = ps.Job(4, state="COMPLETED")
    run(client.cancel("3"))
    run(client.cancel("4"))  # ended: no error, still COMPLETED
    run(client.cancel("404"))  # purged: no error
    assert ps.cluster.jobs[3].state == "CANCELLED" and ps.cluster.jobs[4].state == "COMPLETED"

    def refuse(self: Any) -> None:  # a pyslurm that reports the ended job instead of ignoring it
        raise ps.RPCError(ESLURM_ALREADY_DONE, "Job/step already completing or completed")

    monkeypatch.setattr(ps.Job, "cancel", refuse)
    run(client.cancel("4"))


def test_version_mismatch_names_both_versions(ps: types.ModuleType):
    ps.cluster.version = "23.11.6"
    client = connect("pyslurm")
    for call in (client.ping(), client.submit(JobSpec(name="j", script="echo"))):
        with pytest.raises(SlurmError) as err:
            run(call)
        text = str(err.value)
        assert "built for Slurm 24.05" in text and "controller runs Slurm 23.11.6" in text
        assert "needs pyslurm==23.11.*" in text
        assert "pip install 'pyslurm==" in text and "backend='cli'" in text
    assert ps.cluster.submitted == []


def test_matching_versions_ping_and_describe(ps: types.ModuleType):
    client = connect("pyslurm")
    assert client.describe()["slurm_version"] == "24.05"  # pyslurm's own, until the controller is asked
    info = run(client.ping())
    assert info["partitions"] == ["debug", "gpu"] and info["slurm"] == "24.05.3" and info["pyslurm"] == "24.5.1"
    assert client.describe() == {"backend": "pyslurm", "slurm_version": "24.05.3", "pyslurm": "24.5.1"}
    assert client.serialize() == {}
    assert connect("pyslurm", job_env={"A": "b"}).serialize() == {"job_env": {"A": "b"}}


def test_unreadable_controller_version_is_not_a_match(ps: types.ModuleType, caplog: pytest.LogCaptureFixture):
    ps.slurmctld.Config.load = staticmethod(lambda: types.SimpleNamespace(cluster_name="c"))  # 23.x: no version
    client = connect("pyslurm")
    with caplog.at_level(logging.DEBUG, logger="isthmus.slurm.pyslurm"):
        info = run(client.ping())
    assert info["slurm"] is None and info["library_slurm"] == "24.05"
    assert client.describe()["slurm_version"] == "24.05"
    assert "cannot read the Slurm controller's version" in caplog.text and "without comparing" in caplog.text


def test_unreachable_controller(ps: types.ModuleType):
    ps.cluster.up = False
    with pytest.raises(SlurmUnavailable, match="unreachable"):
        run(connect("pyslurm").status("1"))


def test_job_files_are_local(ps: types.ModuleType, tmp_path: Path):
    client = connect("pyslurm")
    target = tmp_path / "d" / "job.env"
    run(client.make_dirs(str(target.parent)))
    run(client.write_file(str(target), "A=1\n" * 10))
    assert target.stat().st_mode & 0o777 == 0o600
    assert run(client.read_file(str(target), max_bytes=4)) == "A=1\n"
    run(client.remove_file(str(target)))
    run(client.remove_file(str(target)))
    assert run(client.read_file(str(target))) is None


def test_the_airflow_connection_and_the_flyte_task_config_choose_pyslurm(ps: types.ModuleType):
    from flytekitplugins.isthmus import SlurmJob
    from isthmus_airflow.hooks.slurm import settings_from_connection

    conn = types.SimpleNamespace(
        host="", login=None, password=None, port=None, schema=None, extra_dejson={"backend": "pyslurm"}
    )
    cfg = settings_from_connection(conn, "slurm_pyslurm")
    assert cfg == {"backend": "pyslurm", "client": {}, "defaults": {}}
    assert isinstance(connect(cfg["backend"], **cfg["client"]), PySlurmClient)
    conn.extra_dejson = {"backend": "pyslurm", "slurm_conf": "/etc/other/slurm.conf"}
    with pytest.raises(ValueError, match="set SLURM_CONF for the worker"):
        settings_from_connection(conn, "slurm_pyslurm")

    client = SlurmJob(backend="pyslurm", partition="gpu").connect()
    assert isinstance(client, PySlurmClient) and client.describe()["backend"] == "pyslurm"
