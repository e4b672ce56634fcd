"""A server store pings a pooled connection only after it sat idle, and survives the server dropping its
connections: busy work costs no ``SELECT 1`` per transaction, an idle or broken connection is replaced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

import isthmus
from isthmus.store import MetadataStore
from isthmus.store import engine as engine_module

pytestmark = pytest.mark.postgres


@isthmus.step
def double(x: int) -> int:
    return 2 * x


@pytest.fixture
def pg_store(pg_server: Any) -> Any:
    url = pg_server.create_database()
    store = MetadataStore(url)
    yield store, pg_server, url
    store.dispose()
    pg_server.drop_database(url)


def _count_pings(store: MetadataStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    pings = [0]
    ping = store.engine.dialect.do_ping

    def counted(dbapi_conn: Any) -> bool:
        pings[0] += 1
        return ping(dbapi_conn)

    monkeypatch.setattr(store.engine.dialect, "do_ping", counted)
    return pings


def _kill_connections(server: Any, url: str) -> int:
    database = url.rsplit("/", 1)[1].split("?", 1)[0]
    with server.admin_engine().connect() as conn:
        return len(
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": database},
            ).all()
        )


def test_busy_steps_send_no_pings(pg_store: Any, isthmus_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, _server, url = pg_store
    monkeypatch.setenv("ISTHMUS_STORE_URL", url)
    isthmus.config.reset()
    from isthmus.runner import default_runner

    runner = default_runner()
    pings = _count_pings(runner.metadata, monkeypatch)
    for i in range(5):
        assert runner.run(double, {"x": i}).value == 2 * i  # misses
        assert runner.run(double, {"x": i}).cache_hit  # hits
    assert pings[0] == 0


def test_an_idle_connection_the_server_dropped_is_replaced(
    pg_store: Any, isthmus_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, server, url = pg_store
    monkeypatch.setenv("ISTHMUS_STORE_URL", url)
    isthmus.config.reset()
    from isthmus.runner import default_runner

    runner = default_runner()
    assert runner.run(double, {"x": 21}).value == 42
    pings = _count_pings(runner.metadata, monkeypatch)
    monkeypatch.setattr(engine_module, "IDLE_PING_SECONDS", 0.0)  # every pooled connection counts as idle now
    assert _kill_connections(server, url) >= 1
    assert runner.run(double, {"x": 21}).cache_hit
    assert runner.run(double, {"x": 22}).value == 44
    assert pings[0] >= 1


def test_a_connection_broken_in_use_fails_once_then_the_pool_recovers(
    pg_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not idle (no ping): the statement on the dead connection fails, SQLAlchemy invalidates the pool,
    the next transaction reconnects."""
    store, server, url = pg_store
    from sqlalchemy.exc import OperationalError

    with store.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    _kill_connections(server, url)
    with pytest.raises(OperationalError), store.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
