"""The click pieces every command module uses: groups that list commands in the order they were added
(the top-level one imports a command's module only when that command is used), commands that show their
arguments' help, the ``--json`` option."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import click


class Argument(click.Argument):
    """A positional argument with a help text (click 8.5 lists it under "Positional arguments"; on an older
    click :class:`Command` does)."""

    def __init__(self, param_decls: list[str], help: str | None = None, **attrs: Any) -> None:
        super().__init__(param_decls, **attrs)
        self.help = help


_NATIVE_ARGUMENT_HELP = hasattr(click.Command, "format_arguments")


def _first_paragraph(command: click.Command) -> str:
    """The first paragraph of a command's help, whole (the listing of a group wraps it)."""
    if command.short_help:
        return command.short_help
    return " ".join(inspect.cleandoc(command.help or "").split("\n\n")[0].split())


class Command(click.Command):
    """A command listing its arguments with their help, and its whole first paragraph in a group's listing."""

    def get_short_help_str(self, limit: int = 45) -> str:
        return _first_paragraph(self)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        if not _NATIVE_ARGUMENT_HELP:
            rows = [(p.human_readable_name, p.help or "") for p in self.get_params(ctx) if isinstance(p, Argument)]
            if any(help for _, help in rows):
                with formatter.section("Positional arguments"):
                    formatter.write_dl(rows)
        super().format_options(ctx, formatter)


class Group(click.Group):
    """A group listing its commands in the order they were added; ``group.command`` makes a :class:`Command`."""

    command_class = Command

    def get_short_help_str(self, limit: int = 45) -> str:
        return _first_paragraph(self)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """With no arguments: the help on stdout, exit code 2."""
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            click.echo(ctx.get_help(), color=ctx.color)
            ctx.exit(2)
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


class LazyGroup(Group):
    """A group that knows its commands as ``name -> "module:attribute"`` and imports a module only when
    one of its commands is used (or the help lists them), so each command starts fast."""

    def __init__(self, *args: Any, lazy_commands: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*self.lazy_commands, *(name for name in self.commands if name not in self.lazy_commands)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy_commands:
            module, attribute = self.lazy_commands[cmd_name].split(":")
            command = getattr(importlib.import_module(module), attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self.lazy_commands[cmd_name]} is not a click command")
            self.commands[cmd_name] = command
        return self.commands.get(cmd_name)


def command(name: str) -> Any:
    """``@command("why")``: a top-level :class:`Command` (registered by name in :mod:`isthmus.cli.app`)."""
    return click.command(name, cls=Command)


def group(name: str, help: str) -> Group:
    """A :class:`Group` of subcommands (``runs``, ``cache``, ``artifacts`` …)."""
    return Group(name, help=help, no_args_is_help=True)


def argument(name: str, help: str | None = None, **attrs: Any) -> Any:
    """A positional argument with a help text."""
    return click.argument(name, cls=Argument, help=help, **attrs)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
