"""Environment snapshot: where a step ran (python, platform, packages, git, image, host, user)."""

from __future__ import annotations

import functools
import getpass
import json
import os
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from isthmus.fingerprint.deps import installed_versions
from isthmus.hashing import hash_parts
from isthmus.redaction import REDACTED, is_secret_name, looks_like_credential, redact_text

# Environment variables whose values are recorded (unless they look like credentials, by name or value).
DEFAULT_ENV_ALLOWLIST = (
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "PYTHONHASHSEED",
    "TZ",
    "LANG",
    "LC_ALL",
    "VIRTUAL_ENV",
    "CONDA_DEFAULT_ENV",
    "SLURM_JOB_ID",
    "SLURM_JOB_PARTITION",
    "SLURM_CLUSTER_NAME",
    "SLURM_JOB_NODELIST",
    "FLYTE_INTERNAL_EXECUTION_PROJECT",
    "FLYTE_INTERNAL_EXECUTION_DOMAIN",
    "ISTHMUS_IMAGE",
)
IMAGE_VARS = ("ISTHMUS_IMAGE", "CONTAINER_IMAGE", "FLYTE_INTERNAL_IMAGE", "IMAGE", "DOCKER_IMAGE")


@dataclass(frozen=True)
class EnvironmentSnapshot:
    hash: str
    data: dict[str, Any] = field(default_factory=dict)


def _git(cwd: str, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.lru_cache(maxsize=16)
def git_info(path: str) -> dict[str, Any] | None:
    """Commit, dirty flag, branch and remote (credentials removed) of the repo holding ``path``."""
    cwd = path if os.path.isdir(path) else os.path.dirname(path) or "."
    if not os.path.isdir(cwd):
        return None
    commit = _git(cwd, "rev-parse", "HEAD")
    if not commit:
        return None
    status = _git(cwd, "status", "--porcelain", "--untracked-files=no")
    remote = _git(cwd, "config", "--get", "remote.origin.url")
    return {
        "commit": commit,
        "dirty": bool(status),
        "branch": _git(cwd, "rev-parse", "--abbrev-ref", "HEAD"),
        "remote": redact_text(remote) if remote else None,
        "root": _git(cwd, "rev-parse", "--show-toplevel"),
    }


def recorded_value(name: str, value: str) -> str:
    """How an allowlisted variable is recorded: ``***`` when its name says credential or its value is
    shaped like one (``ghp_…``, ``sk-…``, ``AKIA…``, a JWT, a long random token — allowlisting a name
    never records a credential), else the value with URL passwords and tokens in it hidden."""
    if is_secret_name(name) or looks_like_credential(value):
        return REDACTED
    return redact_text(value)


def recorded_env(allowlist: tuple[str, ...] = ()) -> dict[str, str]:
    """Allowlisted environment variables, as :func:`recorded_value` records them."""
    out: dict[str, str] = {}
    for name in sorted(set(DEFAULT_ENV_ALLOWLIST) | set(allowlist)):
        if name in os.environ:
            out[name] = recorded_value(name, os.environ[name])
    return out


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return os.environ.get("USER")


@functools.lru_cache(maxsize=16)
def _snapshot(code_path: str, allowlist: tuple[str, ...], env_key: str) -> EnvironmentSnapshot:
    image = next((os.environ[v] for v in IMAGE_VARS if os.environ.get(v)), None)
    data: dict[str, Any] = {
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
        },
        "packages": installed_versions(),
        "git": git_info(code_path) if code_path else None,
        "container_image": redact_text(image) if image else None,
        "host": socket.gethostname(),
        "user": _user(),
        "env": json.loads(env_key),
    }
    digest = hash_parts("env-v1", json.dumps(data, sort_keys=True, default=str))
    return EnvironmentSnapshot(hash=digest, data=data)


def environment_snapshot(code_path: str | None = None, allowlist: tuple[str, ...] = ()) -> EnvironmentSnapshot:
    """Snapshot of this process's environment; ``code_path`` locates the git repo. Cached per process."""
    env = recorded_env(allowlist)
    return _snapshot(code_path or os.getcwd(), tuple(allowlist), json.dumps(env, sort_keys=True))
