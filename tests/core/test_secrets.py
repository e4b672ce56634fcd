"""Secrets never reach the metadata store, the artifacts or error records."""

from __future__ import annotations

from pathlib import Path

import pytest

from isthmus import StepFailed, pipeline, step
from isthmus.runner import default_runner

ENV_CANARY = "canary-env-7f3a9c1e5b"
PARAM_CANARY = "canary-param-d41d8cd98f"


@step
def connect(host: str, password: str, retries: int = 1) -> dict:
    # uses the secret, returns something derived from it
    return {"host": host, "password_length": len(password)}


@step
def leaky(password: str) -> int:
    raise ConnectionError(f"login failed for password {password} at db://admin:{password}@db.local/x")


@pipeline
def secret_pipeline(password: str, host: str = "db.local"):
    return connect(host, password=password)


def _all_bytes(root: Path) -> bytes:
    blob = b""
    for path in root.rglob("*"):
        if path.is_file():
            blob += path.read_bytes()
    return blob


def test_canary_secret_appears_nowhere(isthmus_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_API_TOKEN", ENV_CANARY)
    monkeypatch.setenv("DATABASE_PASSWORD", ENV_CANARY)
    # even an explicitly allowlisted secret-looking variable is redacted
    monkeypatch.setenv("ISTHMUS_ENV_ALLOWLIST", "MY_SERVICE_API_TOKEN,DATABASE_PASSWORD,OMP_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    from isthmus import config

    config.reset()
    run = secret_pipeline.run(password=PARAM_CANARY)
    assert run.outputs == {"host": "db.local", "password_length": len(PARAM_CANARY)}
    second = secret_pipeline.run(password=PARAM_CANARY)
    assert second.steps["connect"].cache_hit
    with pytest.raises(StepFailed) as info:
        default_runner().run(leaky, {"password": PARAM_CANARY})
    assert PARAM_CANARY not in str(info.value)

    meta = default_runner().metadata
    sr = meta.get_step_run(run.steps["connect"].step_run_id)
    assert sr["params"]["password"] == "***" and sr["params"]["host"] == "db.local"
    assert meta.get_run(run.id)["params"]["password"] == "***"
    env = meta.get_environment(sr["environment_hash"])
    assert env["env"]["MY_SERVICE_API_TOKEN"] == "***" and env["env"]["OMP_NUM_THREADS"] == "3"
    failed = meta.get_step_run(info.value.step_run_id)
    assert "***" in failed["error"] and "admin:***@" in failed["error"]

    default_runner().metadata.dispose()
    everything = _all_bytes(isthmus_home)  # SQLite file + WAL + artifacts + caches
    assert everything, "nothing was written"
    for canary in (ENV_CANARY, PARAM_CANARY):
        assert canary.encode() not in everything
    # and through SQL, in case of any encoding
    from sqlalchemy import text

    with meta.engine.connect() as conn:
        for table in ("pipeline_runs", "step_runs", "environments", "code_snapshots", "artifacts", "cache_entries"):
            for row in conn.execute(text(f"SELECT * FROM {table}")):
                assert ENV_CANARY not in str(row) and PARAM_CANARY not in str(row)


def test_git_remote_credentials_are_redacted(tmp_path: Path) -> None:
    import subprocess

    from isthmus.fingerprint.environment import git_info

    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "remote", "add", "origin", f"https://user:{PARAM_CANARY}@example.invalid/x.git"],
        check=True,
    )
    (repo / "a.txt").write_text("x")
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], check=True
    )
    info = git_info(str(repo))
    assert info is not None and info["commit"] and info["dirty"] is False
    assert PARAM_CANARY not in info["remote"] and "user:***@" in info["remote"]
    (repo / "a.txt").write_text("changed")
    git_info.cache_clear()
    assert git_info(str(repo))["dirty"] is True
