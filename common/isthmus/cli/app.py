"""The ``isthmus`` command group. Each command lives in its own module, imported only when that command
runs (or the help lists the commands), so a query does not pay for importing every other command."""

from __future__ import annotations

import os
import sys

import click

from isthmus.cli.commands import LazyGroup, command
from isthmus.errors import IsthmusError

# name -> "module:attribute", in the order the help lists them
COMMANDS = {
    "rollback": "isthmus.cli.artifacts:rollback",
    "invalidate": "isthmus.cli.artifacts:invalidate",
    "lineage": "isthmus.cli.lineage_gc:lineage_cmd",
    "gc": "isthmus.cli.lineage_gc:gc_cmd",
    "why": "isthmus.cli.why:why",
    "diff": "isthmus.cli.diff:diff",
    "run-step": "isthmus.cli.remote:run_step_cmd",
    "ingest": "isthmus.cli.remote:ingest",
    "version": "isthmus.cli.app:version",
    "rerun": "isthmus.cli.rerun:rerun_cmd",
    "reproduce": "isthmus.cli.rerun:reproduce_cmd",
    "ui": "isthmus.cli.ui:ui_cmd",
    "audit": "isthmus.cli.governance:audit_cmd",
    "runs": "isthmus.cli.runs:runs_app",
    "artifacts": "isthmus.cli.artifacts:artifacts_app",
    "cache": "isthmus.cli.cache:cache_app",
    "k8s": "isthmus.cli.k8s:k8s_app",
    "tokens": "isthmus.cli.governance:tokens_app",
    "roles": "isthmus.cli.governance:roles_app",
}

_FROM_MAIN = "isthmus.cli.app:main"


@click.pass_context
def _before_a_command(ctx: click.Context) -> None:
    """Run by :func:`main`, what a command records says it came from the command line. ``version`` records
    nothing: it does not import the audit log (nor SQLAlchemy with it)."""
    if ctx.obj == _FROM_MAIN and ctx.invoked_subcommand != "version":
        from isthmus.governance.audit import set_default_via

        set_default_via("cli")


app = LazyGroup(
    "isthmus",
    callback=_before_a_command,
    help="isthmus: recorded, cached, portable pipeline steps.",
    no_args_is_help=True,
    lazy_commands=COMMANDS,
    context_settings={"show_default": True},
)


@command("version")
def version() -> None:
    """Print the isthmus version."""
    from isthmus import __version__

    print(__version__)


def main() -> None:
    # Steps are named by import path ('mymodule:train'): like 'python -m isthmus' (the entrypoint of remote
    # jobs and pods), the console script imports them from the directory it is run in.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        app(obj=_FROM_MAIN)
    except IsthmusError as exc:
        from isthmus.cli.shared import error_line

        error_line(str(exc))
        sys.exit(1)
