"""Steps the Slurm tests run as jobs (importable by path: the job imports this module)."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretBytes, SecretStr

from isthmus import Resources, step


@step
def square(x: int) -> int:
    return x * x


@step
def add(a: int, b: int) -> int:
    return a + b


@step(resources=Resources(cpu=1, memory="200Mi", gpu=2, partition="gpu"))
def gpu_env() -> dict:
    """What the job sees of its GPUs."""
    return {
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "SLURM_JOB_GPUS": os.environ.get("SLURM_JOB_GPUS"),
        "host": socket.gethostname(),
    }


@step(resources=Resources(gpu=1, gpu_type="nosuchgpu"))
def wrong_gpu_type() -> int:
    return 1


@step
def explode(message: str) -> int:
    raise ValueError(f"boom: {message}")


@step(resources=Resources(time_limit=60), cache=False)
def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@step(cache=False)
def wait_for_file(path: str, seconds: float = 60) -> str:
    """Run until ``path`` exists (or ``seconds`` pass); returns the job's restart count."""
    deadline = time.monotonic() + seconds
    while not Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return os.environ.get("SLURM_RESTART_COUNT", "0")


@step(resources=Resources(partition="nosuchpartition"))
def unknown_partition() -> int:
    return 1


@step(resources=Resources(cpu=64))
def too_many_cpus() -> int:
    return 1


@step(cache=False)
def job_env(names: list) -> dict:
    """The job's values of some environment variables."""
    return {name: os.environ.get(name) for name in names}


@step
def token_length(api_token: str, x: int) -> int:
    return len(api_token) + x


@step
def secret_length(token: SecretStr, salt: SecretBytes) -> int:
    return len(token.get_secret_value()) + len(salt.get_secret_value())


@step
def text_length(text: str) -> int:
    return len(text)


@step
def reject_token(api_token: str) -> int:
    raise ValueError(f"the server refused {api_token}")


@dataclass
class Login:
    user: str
    password: str


@step
def login_user(login: Login) -> str:
    return login.user
