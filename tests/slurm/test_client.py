"""SlurmClient against the real cluster, both backends: submit/status/logs/cancel/find, and bad input:
unknown partition, resources no node has, invalid options, unreachable controller, malformed output."""

from __future__ import annotations

import asyncio
import http.server
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

import pytest

from isthmus.errors import StepDefinitionError
from isthmus.runner import default_runner
from isthmus.slurm import (
    JobSpec,
    SlurmExecutor,
    SlurmParseError,
    SlurmSubmitError,
    SlurmUnavailable,
    connect,
)
from tests.slurm import steps
from tests.slurm.cluster import SlurmCluster


def _name() -> str:
    return f"isthmus-test-{uuid.uuid4().hex[:8]}"


def _spec(tmp_path: Path, script: str, **kw) -> JobSpec:
    kw.setdefault("stdout", str(tmp_path / "job-%j.out"))
    kw.setdefault("stderr", str(tmp_path / "job-%j.err"))
    kw.setdefault("work_dir", str(tmp_path))
    return JobSpec(name=kw.pop("name", _name()), script=script, **kw)


def test_submit_status_logs_find(client, tmp_path: Path):
    spec = _spec(
        tmp_path, "echo to-stdout; echo to-stderr >&2; echo $ISTHMUS_X\n", env={"ISTHMUS_X": "exported"}, mem_mb=50
    )

    async def go():
        job_id = await client.submit(spec)
        found = await client.find(spec.name)
        assert [j.job_id for j in found] == [job_id] and found[0].name == spec.name
        final = await client.wait(job_id, poll_interval=0.2, timeout=60)
        logs = await client.logs(final)
        return job_id, final, logs

    job_id, final, logs = asyncio.run(go())
    assert final.state == "COMPLETED" and final.success and final.terminal
    assert final.partition == "debug" and final.nodes == "localhost"
    assert "to-stdout" in logs["stdout"] and "to-stderr" in logs["stderr"]
    if client.backend == "rest":  # REST jobs get exactly the environment they are given
        assert "exported" in logs["stdout"]
    assert asyncio.run(client.status("999999")) is None


def test_failed_exit_code_and_cancel(client, tmp_path: Path):
    async def go():
        failed = await client.submit(_spec(tmp_path, "exit 3\n"))
        running = await client.submit(_spec(tmp_path, "sleep 120\n"))
        f = await client.wait(failed, poll_interval=0.2, timeout=60)
        await client.cancel(running)
        await client.cancel(running)  # twice is fine
        c = await client.wait(running, poll_interval=0.2, timeout=60)
        return f, c

    f, c = asyncio.run(go())
    assert f.state == "FAILED" and f.exit_code.startswith("3") and not f.retryable
    assert c.state == "CANCELLED"


def test_unknown_partition_is_a_clear_error_and_no_job(client, job_home: Path, slurm_cluster: SlurmCluster):
    before = set(slurm_cluster.jobs())
    with pytest.raises(SlurmSubmitError) as err:
        asyncio.run(SlurmExecutor(client, default_runner()).arun(steps.unknown_partition, {}))
    text = str(err.value)
    assert "nosuchpartition" in text and "sinfo" in text and "unknown_partition" in text
    assert set(slurm_cluster.jobs()) == before


def test_resources_no_node_has(client, job_home: Path, slurm_cluster: SlurmCluster):
    before = set(slurm_cluster.jobs())
    with pytest.raises(SlurmSubmitError) as err:
        asyncio.run(SlurmExecutor(client, default_runner()).arun(steps.too_many_cpus, {}))
    # refused at submission (EnforcePartLimits) or, as here, queued as PartitionConfig and then cancelled
    text = str(err.value)
    assert "too_many_cpus" in text and "'cpus_per_task': 64" in text and "lower" in text
    with pytest.raises(SlurmSubmitError) as err:
        asyncio.run(SlurmExecutor(client, default_runner()).arun(steps.wrong_gpu_type, {}))
    assert "gpu:nosuchgpu:1" in str(err.value)
    new = set(slurm_cluster.jobs()) - before
    assert not set(slurm_cluster.active_jobs(wait_for_ending=30)) & new  # queued ones were cancelled


def test_invalid_specs_fail_before_submitting(tmp_path: Path):
    from isthmus import Resources

    with pytest.raises(StepDefinitionError, match="not allowed: set job_name instead"):
        _spec(tmp_path, "true", extra_options=["--job-name=other"])
    with pytest.raises(StepDefinitionError, match="must start with '-'"):
        _spec(tmp_path, "true", extra_options=["exclusive"])
    with pytest.raises(StepDefinitionError, match="not a valid Slurm partition"):
        _spec(tmp_path, "true", partition="gpu queue")
    with pytest.raises(StepDefinitionError, match="gpu_type"):
        Resources(gpu_type="a100")
    with pytest.raises(StepDefinitionError, match="no slurmrestd equivalent"):
        _spec(tmp_path, "true", extra_options=["--mail-type=END"]).rest_body("v0.0.38")
    ex = SlurmExecutor(connect("cli"), default_runner())
    with pytest.raises(StepDefinitionError, match="step 'square'.*--wrap"):
        SlurmExecutor(connect("cli"), default_runner(), extra_options=["--wrap=x"]).build(
            steps.square, {}, {"x": 1}, _ctx()
        )
    with pytest.raises(StepDefinitionError, match="record="):
        SlurmExecutor(connect("cli"), default_runner(), record="nfs")
    del ex


def _ctx():
    from isthmus.context import RunContext

    return RunContext(orchestrator="slurm", invocation=_name())


def test_unreachable_controller(slurm_cluster: SlurmCluster, tmp_path: Path):
    from tests.slurm.cluster import _free_port

    conf = tmp_path / "slurm.conf"
    text = slurm_cluster.conf.read_text()
    import re

    text = re.sub(r"SlurmctldPort=\d+", f"SlurmctldPort={_free_port()}", text) + "MessageTimeout=2\n"
    conf.write_text(text)
    cli = connect("cli", env={"SLURM_CONF": str(conf)}, timeout=60)
    t0 = time.monotonic()
    with pytest.raises(SlurmUnavailable, match="unreachable|not answering"):
        asyncio.run(cli.ping())
    with pytest.raises(SlurmUnavailable, match="controller is unreachable"):
        asyncio.run(cli.submit(_spec(tmp_path, "true")))
    with pytest.raises(SlurmUnavailable):
        asyncio.run(cli.status("1"))
    assert time.monotonic() - t0 < 120
    with pytest.raises(SlurmUnavailable, match="slurmrestd at unix:.* is unreachable"):
        asyncio.run(connect("rest", socket=str(tmp_path / "nothing.sock")).ping())
    from tests.slurm.cluster import _free_port as port

    with pytest.raises(SlurmUnavailable, match="is unreachable"):
        asyncio.run(connect("rest", url=f"http://127.0.0.1:{port()}").submit(_spec(tmp_path, "true")))


def _wrapped_bin(tmp_path: Path, name: str, body: str) -> Path:
    """A bin dir with the real Slurm commands, except ``name`` which runs ``body`` (the real command
    is ``$REAL``)."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for cmd in ("sbatch", "squeue", "scontrol", "scancel", "sacct", "sinfo"):
        target = bindir / cmd
        if cmd == name:
            target.write_text(f"#!/bin/sh\nREAL={shutil.which(cmd)}\n{body}\n")
            target.chmod(0o755)
        else:
            os.symlink(shutil.which(cmd), target)
    return bindir


def test_malformed_sbatch_output_leaves_no_job(slurm_cluster: SlurmCluster, tmp_path: Path):
    # sbatch submits, but prints something that is not a job id (e.g. a login banner): the job is cancelled
    bindir = _wrapped_bin(tmp_path, "sbatch", '"$REAL" "$@" >/dev/null && echo "Welcome to the cluster!"')
    cli = connect("cli", env=slurm_cluster.env, bin_dir=str(bindir))
    spec = _spec(tmp_path, "sleep 60\n")
    with pytest.raises(SlurmParseError, match="not a job id; any job it made was cancelled"):
        asyncio.run(cli.submit(spec))
    assert _eventually(lambda: not slurm_cluster.active_jobs())


def test_malformed_scontrol_output_falls_back_to_squeue(slurm_cluster: SlurmCluster, tmp_path: Path):
    bindir = _wrapped_bin(tmp_path, "scontrol", 'echo "garbage without fields"')
    cli = connect("cli", env=slurm_cluster.env, bin_dir=str(bindir))

    async def go():
        job_id = await cli.submit(_spec(tmp_path, "true\n"))
        return await cli.wait(job_id, poll_interval=0.2, timeout=60)

    status = asyncio.run(go())
    assert status.state == "COMPLETED" and status.source == "squeue"
    # and when squeue is garbage too, the error says what both printed
    bindir2 = tmp_path / "b2"
    bindir2.mkdir()
    for cmd in ("sbatch", "scancel", "sacct", "sinfo"):
        os.symlink(shutil.which(cmd), bindir2 / cmd)
    for cmd in ("scontrol", "squeue"):
        (bindir2 / cmd).write_text('#!/bin/sh\necho "?? not slurm ??"\n')
        (bindir2 / cmd).chmod(0o755)
    with pytest.raises(SlurmParseError, match="could not read the state of job 1"):
        asyncio.run(connect("cli", env=slurm_cluster.env, bin_dir=str(bindir2)).status("1"))


def test_malformed_rest_answer(tmp_path: Path):
    class Html(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>not slurmrestd</html>")

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Html)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        rest = connect("rest", url=f"http://127.0.0.1:{server.server_port}", version="v0.0.38")
        with pytest.raises(SlurmParseError, match="non-JSON"):
            asyncio.run(rest.submit(_spec(tmp_path, "true")))
        with pytest.raises(SlurmParseError, match="non-JSON"):
            asyncio.run(connect("rest", url=f"http://127.0.0.1:{server.server_port}").status("1"))
    finally:
        server.shutdown()


def test_jwt_over_http(slurm_cluster: SlurmCluster, tmp_path: Path):
    """slurmrestd on a TCP port with auth/jwt: the token and user name travel as headers."""
    rest = connect("rest", url=slurm_cluster.rest_url, token=slurm_cluster.token(), user="root")

    async def go():
        info = await rest.ping()
        job_id = await rest.submit(_spec(tmp_path, "echo jwt\n"))
        final = await rest.wait(job_id, poll_interval=0.2, timeout=60)
        await rest.close()
        return info, final

    info, final = asyncio.run(go())
    assert info["version"] == "v0.0.38" and "gpu" in info["partitions"]
    assert final.state == "COMPLETED"


def _eventually(check, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False
