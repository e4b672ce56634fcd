"""A condition "``column`` is one of a list" bound as one parameter, however long the list.

An expanding ``IN`` renders one placeholder per item, so a long list is cut into chunks (SQLite and psycopg
cap a statement's parameters): 800 statements for the downstream of 100,000 step runs, each a round trip
and the planning of a 500-item list on PostgreSQL. Bound whole instead — a JSON array read by
``json_each`` on SQLite, an array compared with ``= ANY`` on PostgreSQL — one statement takes the list as
it is.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from sqlalchemy import String, any_, bindparam, func, select


def one_of(column: Any, name: str, dialect: str) -> Any:
    """``column`` is one of the items bound to ``name`` (pass them through :func:`bound`)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(bindparam(name, type_=ARRAY(String)))
    items = func.json_each(bindparam(name, type_=String)).table_valued("value")
    return column.in_(select(items.c.value))


def bound(items: Collection[str], dialect: str) -> Any:
    """The value to bind for :func:`one_of` on ``dialect``."""
    return list(items) if dialect == "postgresql" else json.dumps(list(items))
