"""A configuration mistake is one line naming the variable, the value and the fix — never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from isthmus import config
from isthmus.errors import ConfigurationError, IsthmusError
from tests.helpers import REPO


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _not_a_dir(tmp_path: Path) -> str:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    return str(blocker / "home")  # below a regular file: never creatable, even as root


def _cases(tmp_path: Path) -> list[tuple[dict[str, str], list[str]]]:
    """(environment, what the one line must say)."""
    port = _closed_port()
    return [
        (
            {"ISTHMUS_STORE_URL": "postgres://alice:pw-canary-7@db.example:5432/isthmus"},
            ["ISTHMUS_STORE_URL=", "postgres://alice:***@db.example:5432/isthmus", "postgresql+psycopg://alice:***@"],
        ),
        (
            {"ISTHMUS_STORE_URL": f"postgresql+psycopg://alice:pw-canary-7@127.0.0.1:{port}/isthmus"},
            ["ISTHMUS_STORE_URL", f"127.0.0.1:{port}", "cannot open the metadata store", "server is running"],
        ),
        ({"ISTHMUS_STORE_URL": "not a url"}, ["ISTHMUS_STORE_URL='not a url'", "sqlite:///", "postgresql+psycopg"]),
        ({"ISTHMUS_STORE_URL": "nosuchdb://h/x"}, ["ISTHMUS_STORE_URL=", "no dialect 'nosuchdb'"]),
        ({"ISTHMUS_HOME": _not_a_dir(tmp_path)}, ["ISTHMUS_HOME", "a-file", "writable"]),
        ({"ISTHMUS_VERIFY": "sha256"}, ["ISTHMUS_VERIFY='sha256'", "'hash'", "'size'", "'off'"]),
        ({"ISTHMUS_LEASE_TTL": "-5"}, ["ISTHMUS_LEASE_TTL='-5'", "positive number", "ISTHMUS_LEASE_TTL=60"]),
        ({"ISTHMUS_LEASE_TTL": "0"}, ["ISTHMUS_LEASE_TTL='0'", "positive number"]),
        ({"ISTHMUS_LEASE_TTL": "ten"}, ["ISTHMUS_LEASE_TTL='ten'", "positive number"]),
        ({"ISTHMUS_LEASE_TTL": "inf"}, ["ISTHMUS_LEASE_TTL='inf'", "positive number"]),
        (  # credentials in the artifact root: recorded with every run, so refused
            {"ISTHMUS_ARTIFACT_ROOT": "s3://AKIAEXAMPLE:pw-canary-7@bucket/isthmus"},
            ["ISTHMUS_ARTIFACT_ROOT='s3://***@bucket/isthmus'", "holds credentials", "AWS_SECRET_ACCESS_KEY"],
        ),
        (
            {"ISTHMUS_ARTIFACT_ROOT": "abfs://container/x?sig=pw-canary-7"},
            ["ISTHMUS_ARTIFACT_ROOT='abfs://container/x?sig=***'", "holds credentials", "AZURE_STORAGE"],
        ),
        (  # an unencoded '@' in the password: the driver would name a piece of it as the host
            {"ISTHMUS_STORE_URL": "postgresql+psycopg://alice:Pw@pw-canary-7/x@127.0.0.1:1/isthmus"},
            ["ISTHMUS_STORE_URL", "unencoded '@'", "@ → %40", "/ → %2F"],
        ),
        (
            {"ISTHMUS_STORE_URL": "postgresql+psycopg://alice:pw-canary-7@127.0.0.1:54x/isthmus"},
            ["ISTHMUS_STORE_URL='postgresql+psycopg://alice:***@127.0.0.1:54x/isthmus'", "port must be a number"],
        ),
        (
            {"ISTHMUS_STORE_URL": "postgresql+psycopg://alice:pw-canary-7@[::1/isthmus"},
            ["ISTHMUS_STORE_URL=", "not a valid database URL", "IPv6 host written in brackets"],
        ),
        (
            {"ISTHMUS_STORE_URL": f"sqlite:///{tmp_path / 'x.db'}?check_same_thread=maybe"},
            ["ISTHMUS_STORE_URL=", "check_same_thread=maybe", "driver option in the URL is not valid", "'maybe'"],
        ),
    ]


def _cli(args: list[str], env_extra: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISTHMUS_")}
    env.update({"ISTHMUS_HOME": str(tmp_path / "home"), **env_extra})
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "isthmus", *args], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )


def test_cli_reports_each_bad_setting_in_one_line(tmp_path: Path) -> None:
    for env, expected in _cases(tmp_path):
        for args in (["runs", "list"], ["cache", "prune"]):
            proc = _cli(args, env, tmp_path)
            lines = proc.stderr.strip().splitlines()
            assert proc.returncode == 1, (env, proc.stdout, proc.stderr)
            assert len(lines) == 1 and lines[0].startswith("error: "), (env, proc.stderr)
            assert "Traceback" not in proc.stderr and proc.stdout == "", (env, proc.stdout)
            for part in expected:
                assert part in lines[0], (part, lines[0])
            assert "pw-canary-7" not in proc.stderr  # a password in the URL is never echoed


def test_python_api_raises_configuration_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from isthmus import defaults

    for env, expected in _cases(tmp_path):
        for var in ("ISTHMUS_STORE_URL", "ISTHMUS_VERIFY", "ISTHMUS_LEASE_TTL", "ISTHMUS_ARTIFACT_ROOT"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("ISTHMUS_HOME", str(tmp_path / "home"))
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        config.reset()
        with pytest.raises(ConfigurationError) as info:
            defaults.metadata_store()
        message = str(info.value)
        assert isinstance(info.value, IsthmusError) and isinstance(info.value, ValueError)
        assert "\n" not in message and "pw-canary-7" not in message
        exc = info.value  # nothing chained: printing it shows no driver traceback
        assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)
        for part in expected:
            assert part in message, (part, message)
    config.reset()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"lease_ttl": 0}, "lease_ttl=0"),
        ({"lease_ttl": -1.5}, "lease_ttl=-1.5"),
        ({"verify": "maybe"}, "verify='maybe'"),
        ({"store_url": "postgres://u:secretpw@h/db"}, "store_url='postgres://u:***@h/db'"),
        (
            {"artifact_root": "s3://AKIAEXAMPLE:secretpw@bucket/x"},
            "artifact_root='s3://***@bucket/x' holds credentials",
        ),
        ({"artifact_root": "https://ghp_secretpw0123456789abcdefABCDEF@host/x"}, "artifact_root='https://***@host/x'"),
    ],
)
def test_configure_checks_values_like_variables(overrides: dict, expected: str) -> None:
    with pytest.raises(ConfigurationError, match=expected.replace("*", r"\*").replace(".", r"\.")) as info:
        config.configure(**overrides)
    assert "secretpw" not in str(info.value)


def test_good_settings_still_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTHMUS_LEASE_TTL", "2.5")
    monkeypatch.setenv("ISTHMUS_VERIFY", " Size ")
    monkeypatch.setenv("ISTHMUS_STORE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    config.reset()
    settings = config.get_settings()
    assert settings.lease_ttl == 2.5 and settings.verify == "size" and settings.store_setting() == "ISTHMUS_STORE_URL"
    config.reset()
