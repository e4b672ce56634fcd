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


class _UsageLine(click.UsageError):
    """A usage error (a bad option value, an unknown option or command, a missing argument) shown as the
    one line every other isthmus error is, not click's usage block; the exit code stays click's 2."""

    def __init__(self, exc: click.UsageError) -> None:
        super().__init__(exc.format_message(), exc.ctx)

    def show(self, file: Any = None) -> None:
        from isthmus.cli.shared import error_line

        where = self.ctx.command_path if self.ctx is not None else "isthmus"
        error_line(f"{self.format_message()} (see '{where} --help')")


class _OneLineUsage:
    """Mixed into the command classes: usage errors raised while parsing a command line (or resolving a
    subcommand) become :class:`_UsageLine`."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)  # type: ignore[misc]
        except _UsageLine:
            raise
        except click.UsageError as exc:
            raise _UsageLine(exc) from None

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)  # type: ignore[misc]
        except _UsageLine:
            raise
        except click.UsageError as exc:
            raise _UsageLine(exc) from None


# Commands (and groups of commands) that read what was recorded: on a store that does not exist they say
# so rather than create it (:func:`isthmus.cli.shared.require_recorded_store`).
READS_RECORDS = frozenset(
    {"why", "diff", "lineage", "gc", "invalidate", "rollback", "reproduce", "audit", "runs", "artifacts", "cache"}
)


def _top_level_name(ctx: click.Context) -> str | None:
    """The name of the top-level command ``ctx`` runs under (``runs`` for ``isthmus runs list``)."""
    while ctx.parent is not None and ctx.parent.parent is not None:
        ctx = ctx.parent
    return ctx.info_name if ctx.parent is not None else None


class Command(_OneLineUsage, click.Command):
    """A command listing its arguments with their help, and its whole first paragraph in a group's listing."""

    def invoke(self, ctx: click.Context) -> Any:
        if _top_level_name(ctx) in READS_RECORDS:
            from isthmus.cli.shared import require_recorded_store

            require_recorded_store()
        return super().invoke(ctx)

    def get_short_help_str(self, limit: int = 45) -> str:
        return _first_paragraph(self)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        if not _NATIVE_ARGUMENT_HELP:
            rows = [(p.human_readable_name, p.help or "") for p in self.get_params(ctx) if isinstance(p, Argument)]
            if any(help for _, help in rows):
                with formatter.section("Positional arguments"):
                    formatter.write_dl(rows)
        super().format_options(ctx, formatter)


class Group(_OneLineUsage, click.Group):
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
