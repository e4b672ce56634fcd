"""A new SQLite store is created from :mod:`isthmus.store.schema` in one transaction, not by running the
migrations one by one: the two must build the same schema — tables, columns (order, types, defaults),
keys, indexes, foreign keys, triggers and the recorded revision — or stores would differ by how they were
made, and the next migration would meet a schema it was not written for."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from isthmus.store.metadata import SCHEMA_HEAD, MetadataStore, upgrade_with_alembic


def _describe(path: Path) -> dict[str, Any]:
    conn = sqlite3.connect(path)
    try:
        out: dict[str, Any] = {}
        rows = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name")
        for kind, name, sql in rows.fetchall():
            if kind == "table":
                indexes = {}
                for _, index, unique, origin, partial in conn.execute(f"PRAGMA index_list('{name}')"):
                    columns = [r[2] for r in conn.execute(f"PRAGMA index_info('{index}')")]
                    key = index if not index.startswith("sqlite_autoindex") else f"auto:{columns}"
                    indexes[key] = (unique, origin, partial, columns)
                out[f"table {name}"] = {
                    "columns": conn.execute(f"PRAGMA table_xinfo('{name}')").fetchall(),
                    "foreign keys": sorted(r[2:] for r in conn.execute(f"PRAGMA foreign_key_list('{name}')")),
                    "indexes": indexes,
                }
            elif kind == "trigger":
                out[f"trigger {name}"] = " ".join(sql.split())
            elif kind == "index":
                out.setdefault("index names", []).append(name)
        out["revision"] = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        return out
    finally:
        conn.close()


def test_a_new_store_has_the_schema_the_migrations_build(tmp_path: Path) -> None:
    migrated = tmp_path / "migrated.db"
    upgrade_with_alembic(create_engine(f"sqlite:///{migrated}"))
    created = tmp_path / "created.db"
    MetadataStore(f"sqlite:///{created}")
    want, got = _describe(migrated), _describe(created)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == want[key], key
    assert got["revision"] == [(SCHEMA_HEAD,)]


def test_a_new_store_keeps_the_audit_log_append_only(tmp_path: Path) -> None:
    path = tmp_path / "created.db"
    MetadataStore(f"sqlite:///{path}")
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO audit_log (at, actor, action, via) VALUES ('2026-01-01', 'a', 'x', 'cli')")
    for statement in ("UPDATE audit_log SET action = 'y'", "DELETE FROM audit_log"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(statement)


def test_an_existing_store_is_upgraded_by_the_migrations(tmp_path: Path) -> None:
    """A store that has tables (made by an earlier isthmus) is never re-created: alembic upgrades it."""
    path = tmp_path / "old.db"
    engine = create_engine(f"sqlite:///{path}")
    from alembic import command
    from alembic.config import Config

    from isthmus.store import metadata as m

    cfg = Config()
    cfg.set_main_option("script_location", str(m._MIGRATIONS))
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0005")
        conn.commit()
        conn.exec_driver_sql(
            "INSERT INTO artifact_aliases (name, alias, content_hash, updated_at) "
            "VALUES ('m.output', 'prod', 'blake3:' || hex(zeroblob(32)), '2026-01-01')"
        )
        conn.commit()
    store = MetadataStore(f"sqlite:///{path}")
    assert store._current_revision() == SCHEMA_HEAD
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT project, name, alias FROM artifact_aliases").fetchall() == [
            ("default", "m.output", "prod")
        ]
