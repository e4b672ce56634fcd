"""State mapping and job specs (no cluster needed)."""

from __future__ import annotations

import pytest

from isthmus import Resources
from isthmus.context import RunContext
from isthmus.slurm import JobSpec, job_name_for, normalize_state
from isthmus.slurm.backends.rest import choose_version, status_from_rest
from isthmus.slurm.states import ALL_STATES, is_retryable, is_success, is_terminal, is_transient, phase

ISSUE_STATES = {
    "PENDING": "transient",
    "CONFIGURING": "transient",
    "RUNNING": "transient",
    "COMPLETING": "transient",
    "COMPLETED": "success",
    "FAILED": "failed",
    "CANCELLED": "failed",
    "TIMEOUT": "failed",
    "PREEMPTED": "retryable",
    "NODE_FAIL": "retryable",
    "OUT_OF_MEMORY": "failed",
    "REQUEUED": "transient",
    "SUSPENDED": "transient",
    "BOOT_FAIL": "retryable",
    "DEADLINE": "failed",
}


@pytest.mark.parametrize("state,kind", sorted(ISSUE_STATES.items()))
def test_every_state_of_the_issue_is_classified(state: str, kind: str):
    assert state in ALL_STATES
    assert is_success(state) == (kind == "success")
    assert is_transient(state) == (kind == "transient")
    assert is_terminal(state) == (kind != "transient")
    assert is_retryable(state) == (kind == "retryable")


def test_unknown_states_are_never_success():
    for raw in ("WEIRD_NEW_STATE", "", None, [], "??"):
        state = normalize_state(raw)
        assert not is_success(state) and not is_terminal(state) and phase(state) == "unknown"


def test_state_spellings():
    assert normalize_state("CANCELLED by 0") == "CANCELLED"
    assert normalize_state("COMPLETING+") == "COMPLETING"
    assert normalize_state("CG") == "COMPLETING" and normalize_state("OOM") == "OUT_OF_MEMORY"
    # data_parser flag lists: a terminal base state still completing is not done yet
    assert normalize_state(["COMPLETED", "COMPLETING"]) == "COMPLETING"
    assert normalize_state(["PENDING", "REQUEUED"]) == "REQUEUED"
    assert normalize_state(["FAILED"]) == "FAILED"


def test_rest_job_entries_of_both_api_generations():
    old = status_from_rest(
        {"job_id": 7, "job_state": "COMPLETED", "exit_code": 256, "nodes": "n1", "partition": "p", "restart_cnt": 1}
    )
    assert old.state == "COMPLETED" and old.exit_code == "1:0" and old.restarts == 1
    new = status_from_rest(
        {
            "job_id": 8,
            "job_state": ["TIMEOUT"],
            "exit_code": {
                "status": ["SIGNALED"],
                "return_code": {"set": True, "number": 0},
                "signal": {"id": {"set": True, "number": 15}},
            },
            "time_limit": {"set": True, "infinite": False, "number": 1},
            "nodes": "n2",
        }
    )
    assert new.state == "TIMEOUT" and new.exit_code == "0:15" and new.time_limit == "1"
    assert (
        choose_version(["/slurm/v0.0.38/job/submit", "/slurm/v0.0.40/job/submit", "/slurm/v0.0.41/jobs"]) == "v0.0.40"
    )
    assert choose_version(["/openapi"]) is None


def test_job_spec_from_resources_and_both_request_forms():
    res = Resources(
        cpu=1.5,
        memory="1.5Gi",
        gpu=2,
        gpu_type="a100",
        time_limit="1h30m",
        partition="gpu",
        qos="high",
        extra={"constraint": "ib", "--exclusive": ""},
    )
    spec = JobSpec.from_resources(res, name="isthmus-train-abc", script="echo hi", account="proj", env={"A": "1"})
    args = spec.sbatch_args()
    for expected in (
        "--cpus-per-task=2",
        "--mem=1536M",
        "--gres=gpu:a100:2",
        "--time=01:30:00",
        "--partition=gpu",
        "--account=proj",
        "--qos=high",
        "--constraint=ib",
        "--exclusive",
        "--job-name=isthmus-train-abc",
    ):
        assert expected in args, (expected, args)
    legacy = spec.rest_body("v0.0.38")
    job = legacy["job"]
    assert legacy["script"].startswith("#!/bin/bash\n") and job["memory_per_node"] == 1536 and job["time_limit"] == 90
    assert job["gres"] == "gpu:a100:2" and job["environment"]["A"] == "1" and job["exclusive"] is True
    modern = spec.rest_body("v0.0.40")["job"]
    assert modern["memory_per_node"] == {"set": True, "infinite": False, "number": 1536}
    assert modern["time_limit"]["number"] == 90 and modern["tres_per_node"] == "gres/gpu:a100:2"
    assert "A=1" in modern["environment"] and modern["script"].startswith("#!/bin/bash")
    assert spec.to_dict()["gres"] == "gpu:a100:2" and "script" not in spec.to_dict()
    # a bare time limit rounds up to Slurm's minutes; days are written D-HH:MM:SS
    assert "--time=00:01:00" in JobSpec(name="x", script="", time_limit=5).sbatch_args()
    assert "--time=2-00:00:00" in JobSpec(name="x", script="", time_limit=2 * 86400).sbatch_args()


def test_job_name_is_stable_across_tries_but_not_across_inputs():
    a = RunContext(orchestrator="airflow", pipeline_run_id="p", invocation="train", attempt=1, native={"try_number": 1})
    b = RunContext(orchestrator="airflow", pipeline_run_id="p", invocation="train", attempt=2, native={"try_number": 2})
    assert job_name_for("train", a, "k1") == job_name_for("train", b, "k1")
    assert job_name_for("train", a, "k1") != job_name_for("train", a, "k2")
    assert job_name_for("train", a, "k1").startswith("isthmus-train-")


def _job_record(**changes: object) -> dict:
    work = "/shared/isthmus/slurm/train-abc123"
    record = {
        "job_id": "17",
        "job_name": "train-abc123",
        "step_path": "pkg.steps:train",
        "step_name": "train",
        "work_dir": work,
        "manifest": f"{work}/manifest-17.json",
        "stdout": f"{work}/slurm-17.out",
        "stderr": f"{work}/slurm-17.err",
        "secret_env_file": f"{work}/job.env",
    }
    record.update(changes)
    return record


def test_a_job_record_names_only_files_of_its_job_directory() -> None:
    from isthmus.slurm.executor import SlurmJobRecordError, SubmittedJob

    job = SubmittedJob.from_dict(_job_record())
    assert job.secret_env_file == "/shared/isthmus/slurm/train-abc123/job.env"
    # trigger kwargs and connector metadata are stored outside isthmus: a crafted record must not make the
    # executor read or remove another file
    for field, value in [
        ("secret_env_file", "/etc/passwd"),
        ("secret_env_file", "/shared/isthmus/slurm/train-abc123/../../../../home/user/.ssh/job.env"),
        ("secret_env_file", "/shared/isthmus/slurm/train-abc123/other.env"),
        ("manifest", "/var/lib/airflow/airflow.cfg"),
        ("stdout", "/shared/isthmus/slurm/train-abc123/sub/slurm-17.out"),
        ("work_dir", "/shared/isthmus/slurm/../../etc"),
        ("manifest", "/shared/isthmus/slurm/train-abc123/manifest\x00.json"),
        ("work_dir", 17),
    ]:
        with pytest.raises(SlurmJobRecordError, match=field):
            SubmittedJob.from_dict(_job_record(**{field: value}))
