"""What the query commands share: one-line errors and the configured stores."""

from __future__ import annotations

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


def meta() -> Any:
    try:
        return defaults.metadata_store()
    except ConfigurationError as exc:
        fail(str(exc))


def client() -> Client:
    from isthmus.client import Client

    return Client(meta())


def at_least_one(ctx: click.Context, param: click.Parameter, value: int) -> int:
    """A ``--limit`` callback: 1 or more, else one line naming the option and the fix (no usage block)."""
    if value < 1:
        name = param.opts[0] if param.opts else str(param.name)
        fail(f"{name} {value}: give how many to list, 1 or more (e.g. {name} 20)")
    return value
