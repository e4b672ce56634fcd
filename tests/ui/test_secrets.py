"""``isthmus.secret()``: read at run time, never recorded — scrubbed from errors, tracebacks and pages,
refused in outputs and logged metadata — from the environment (Slurm, plain Python) or a Flyte secret."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

import isthmus
from isthmus import Client, pipeline, step
from isthmus.errors import StepFailed
from isthmus.governance.secrets import SecretNotFound
from isthmus.ui import create_app

VALUE = "s3cr3t-Value-for-db-7731"


@step
def connect(host: str) -> int:
    password = isthmus.secret("db/password")
    raise ConnectionError(f"login to {host} refused for password {password}")


@step
def leak(host: str) -> str:
    return f"{host}:{isthmus.secret('db/password')}"


@step
def log_it(host: str) -> int:
    isthmus.log_metadata({"dsn": f"{host}?pw={isthmus.secret('db/password')}"})
    return 1


@pipeline
def uses_secret(host: str = "db.example"):
    return connect(host)


def test_secret_from_the_environment_is_never_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTHMUS_SECRET_DB_PASSWORD", VALUE)
    with pytest.raises(StepFailed) as failed:
        uses_secret.run()
    assert VALUE not in str(failed.value)
    client = Client()
    (sr,) = client.step_runs("latest")
    assert "refused for password" in sr["error"] and VALUE not in sr["error"] and VALUE not in (sr["traceback"] or "")
    page = TestClient(create_app(client)).get(f"/step-runs/{sr['id']}").text
    assert "refused for password" in page and VALUE not in page
    with pytest.raises(StepFailed, match="holds a secret") as leaked:
        leak.run(host="h")
    assert VALUE not in str(leaked.value)
    with pytest.raises(StepFailed, match="secret"):
        log_it.run(host="h")
    for run in client.runs(limit=10):
        assert VALUE not in str(run)
        for row in client.step_runs(run["id"]):
            assert VALUE not in str(row)


def test_an_unknown_secret_names_where_it_looked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ISTHMUS_SECRET_NOPE", raising=False)
    with pytest.raises(SecretNotFound, match=r"ISTHMUS_SECRET_NOPE or nope; define it"):
        isthmus.secret("nope")
    with pytest.raises(SecretNotFound, match="a secret name holds"):
        isthmus.secret("<script>")


@pytest.mark.flyte
def test_secret_from_a_flyte_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    flytekit = pytest.importorskip("flytekit")
    monkeypatch.setenv("_FSEC_WAREHOUSE_TOKEN", "flyte-secret-token-991")

    @flytekit.task
    def read() -> bool:
        return isthmus.secret("warehouse/token") == "flyte-secret-token-991"

    assert read() is True
