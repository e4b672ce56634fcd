"""A real S3-protocol server for tests: moto's standalone server (``moto_server``, from PyPI) on a free port.

``start_server()`` returns ``(server, None)`` or ``(None, reason)``. The server is a subprocess of this
one, bound to 127.0.0.1, and is killed with it (``PR_SET_PDEATHSIG``) so it never outlives the tests.
``server.env()`` holds the variables that point botocore/s3fs at it (in this process and in subprocesses);
``server.new_bucket()`` creates an empty bucket (versioned on request).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

START_TIMEOUT = 30


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child before exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


@dataclass
class S3Server:
    endpoint: str
    log_path: str
    proc: subprocess.Popen[bytes] = field(repr=False)

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": "isthmus-test",
            "AWS_SECRET_ACCESS_KEY": "isthmus-test-key",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def client(self) -> Any:
        import boto3

        env = self.env()
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )

    def new_bucket(self, *, versioned: bool = False) -> str:
        name = f"isthmus-{uuid.uuid4().hex[:12]}"
        client = self.client()
        client.create_bucket(Bucket=name)
        if versioned:
            client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _executable() -> str | None:
    here = os.path.join(os.path.dirname(sys.executable), "moto_server")
    return here if os.path.exists(here) else shutil.which("moto_server")


def start_server() -> tuple[S3Server | None, str | None]:
    exe = _executable()
    if exe is None:
        return None, "moto_server not installed (pip install 'moto[s3]' flask flask-cors: the dev extra)"
    try:
        import boto3  # noqa: F401
        import s3fs  # noqa: F401
    except ImportError as exc:
        return None, f"S3 client libraries missing ({exc}); install the dev extra"
    port = _free_port()
    log_path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"isthmus-moto-{port}.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [exe, "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    server = S3Server(endpoint=f"http://127.0.0.1:{port}", log_path=log_path, proc=proc)
    deadline = time.time() + START_TIMEOUT
    while time.time() < deadline:
        if proc.poll() is not None:
            with open(log_path, errors="replace") as fh:
                tail = fh.read()[-500:]
            return None, f"moto_server exited with {proc.returncode}: {tail}"
        try:
            server.client().list_buckets()
            return server, None
        except Exception:
            time.sleep(0.2)
    server.stop()
    return None, f"moto_server did not answer on {server.endpoint} within {START_TIMEOUT}s"
