"""What the query commands share: one-line errors and the configured stores."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

from isthmus import defaults
from isthmus.errors import ConfigurationError
from isthmus.printable import printable

if TYPE_CHECKING:
    from isthmus.client import Client


def error_line(message: str) -> None:
    """One plain line on stderr (no markup, no wrapping: messages hold URLs, brackets and long paths)."""
    text = printable(" ".join(str(message).split()))  # ids may be hostile: no terminal controls
    prefix = click.style("error:", fg="red") if sys.stderr.isatty() else "error:"
    click.echo(f"{prefix} {text}", err=True)


def fail(message: str) -> NoReturn:
    error_line(message)
    raise click.exceptions.Exit(1)


def require_recorded_store() -> None:
    """For a command that reads what was recorded: when the store is a SQLite file that does not exist (a
    typo in ``ISTHMUS_HOME``, or nothing run there yet), say so in one line, instead of creating an empty
    store there and answering as if it had recorded nothing."""
    from isthmus.config import get_settings

    try:
        settings = get_settings()
    except ConfigurationError as exc:
        fail(str(exc))
    url = settings.store_url
    if not url.startswith("sqlite:"):
        return
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:") or os.path.exists(database):
        return
    nearest = os.path.dirname(os.path.abspath(database))
    while not os.path.exists(nearest) and os.path.dirname(nearest) != nearest:
        nearest = os.path.dirname(nearest)
    if not os.path.isdir(nearest) or not os.access(nearest, os.W_OK | os.X_OK):
        return  # no store could be made there either: opening it names what is wrong with the setting
    setting = settings.store_setting()
    where = f"ISTHMUS_HOME={settings.home}" if setting == "ISTHMUS_HOME" else setting
    fail(
        f"no isthmus store at {database} ({where}): nothing was recorded there; run a pipeline first, or point "
        "ISTHMUS_HOME (or ISTHMUS_STORE_URL) at the store you meant"
    )


def meta() -> Any:
    try:
        return defaults.metadata_store()
    except ConfigurationError as exc:
        fail(str(exc))


def client() -> Client:
    from isthmus.client import Client

    return Client(meta())


def named_project(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A ``--project`` callback: an empty name is a mistake (an unset variable), not the default project."""
    if value is not None and not value.strip():
        fail(f"--project {value!r}: give a project name, or leave --project out (ISTHMUS_PROJECT, else 'default')")
    return value


def at_least_one(ctx: click.Context, param: click.Parameter, value: int) -> int:
    """A ``--limit`` callback: 1 or more, else one line naming the option and the fix (no usage block)."""
    if value < 1:
        name = param.opts[0] if param.opts else str(param.name)
        fail(f"{name} {value}: give how many to list, 1 or more (e.g. {name} 20)")
    return value
