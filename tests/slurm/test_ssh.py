"""The ``cli`` backend over SSH: a real SSH server (asyncssh, in a thread) in front of the test cluster's
login commands; host keys are verified against known_hosts unless turned off explicitly."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from isthmus.runner import default_runner
from isthmus.slurm import SlurmExecutor, SlurmUnavailable, connect
from tests.slurm import steps
from tests.slurm.cluster import SlurmCluster, _free_port

asyncssh = pytest.importorskip("asyncssh")


class LoginNode:
    """An SSH server on 127.0.0.1 that runs each command with a shell, like a login node."""

    def __init__(self, base: Path, env: dict[str, str]) -> None:
        self.port = _free_port()
        self.env = {**os.environ, **env}
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key = base / "id_ed25519"
        client_key.write_private_key(str(self.client_key))
        self.client_key.chmod(0o600)
        (base / "authorized_keys").write_bytes(client_key.export_public_key())
        self.known_hosts = base / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_key.export_public_key().decode().strip()}\n")
        self._host_key = host_key
        self._authorized = str(base / "authorized_keys")
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        assert self._ready.wait(20), "SSH server did not start"

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def handle(process) -> None:
            proc = await asyncio.create_subprocess_shell(
                process.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self.env,
            )

            async def pump_in() -> None:
                try:
                    while True:
                        data = await process.stdin.read(65536)
                        if not data:
                            break
                        proc.stdin.write(data.encode() if isinstance(data, str) else data)
                        await proc.stdin.drain()
                except Exception:
                    pass
                finally:
                    proc.stdin.close()

            feeder = asyncio.ensure_future(pump_in())
            out, err = await asyncio.gather(proc.stdout.read(), proc.stderr.read())
            rc = await proc.wait()
            feeder.cancel()
            process.stdout.write(out.decode(errors="replace"))
            process.stderr.write(err.decode(errors="replace"))
            process.exit(rc)

        async def start() -> None:
            self.server = await asyncssh.create_server(
                asyncssh.SSHServer,
                "127.0.0.1",
                self.port,
                server_host_keys=[self._host_key],
                authorized_client_keys=self._authorized,
                process_factory=handle,
            )
            self._ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def stop(self) -> None:
        def close() -> None:
            self.server.close()
            self.loop.stop()

        self.loop.call_soon_threadsafe(close)
        self.thread.join(10)


@pytest.fixture
def login_node(slurm_cluster: SlurmCluster, tmp_path: Path):
    node = LoginNode(tmp_path, slurm_cluster.env)
    yield node
    node.stop()


def test_steps_run_through_an_ssh_login_node(login_node: LoginNode, job_home: Path):
    ssh = connect(
        "cli",
        host="127.0.0.1",
        port=login_node.port,
        user="root",
        key_file=str(login_node.client_key),
        known_hosts=str(login_node.known_hosts),
    )
    jobs = []
    result = asyncio.run(
        SlurmExecutor(ssh, default_runner(), poll_interval=0.2).arun(steps.square, {"x": 11}, on_submit=jobs.append)
    )
    assert result.value == 121 and jobs[0].job_id
    assert asyncio.run(ssh.ping())["partitions"] == ["debug", "gpu"]
    logs = asyncio.run(_logs(ssh, jobs[0]))
    assert "isthmus: step square in Slurm job" in logs.get("stdout", "")


async def _logs(client, job):
    from isthmus.slurm.states import JobStatus

    try:
        return await client.logs(JobStatus(job_id=job.job_id, state="COMPLETED", stdout=job.stdout, stderr=job.stderr))
    finally:
        await client.close()


def test_unknown_host_key_is_refused_by_default(login_node: LoginNode, tmp_path: Path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    ssh = connect(
        "cli",
        host="127.0.0.1",
        port=login_node.port,
        user="root",
        key_file=str(login_node.client_key),
        known_hosts=str(empty),
    )
    with pytest.raises(SlurmUnavailable, match="not trusted|Host key"):
        asyncio.run(ssh.ping())
    # only when asked explicitly
    insecure = connect(
        "cli",
        host="127.0.0.1",
        port=login_node.port,
        user="root",
        key_file=str(login_node.client_key),
        verify_host_key=False,
    )
    assert "debug" in asyncio.run(insecure.ping())["partitions"]
    with pytest.raises(SlurmUnavailable, match="cannot reach Slurm login node"):
        asyncio.run(connect("cli", host="127.0.0.1", port=_free_port(), user="root", known_hosts=str(empty)).ping())
