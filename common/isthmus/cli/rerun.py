"""Commands ``rerun`` (a recorded pipeline run, again, locally) and ``reproduce`` (a recorded step run's
function, called here with its recorded inputs). Listed on the app by :mod:`isthmus.cli.app`."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click
from rich.markup import escape

from isthmus.cli.commands import argument, command, json_option
from isthmus.cli.render import console, dump_json, short
from isthmus.cli.shared import fail as _fail
from isthmus.client import Client
from isthmus.errors import IsthmusError, StepFailed
from isthmus.recorded_params import ENV_PREFIX, parse_param_options

if TYPE_CHECKING:
    from isthmus.reproduce import Difference, Reproduction

param_option = click.option(
    "--param",
    multiple=True,
    help=f"NAME=VALUE (JSON or text) over the recorded parameters; needed for secrets (or {ENV_PREFIX}NAME).",
)


@contextlib.contextmanager
def _stdout_to_stderr(active: bool) -> Iterator[None]:
    """With ``--json``, what the steps print (``print``, a library writing to file descriptor 1) goes to
    stderr: stdout carries the JSON alone."""
    if not active:
        yield
        return
    sys.stdout.flush()
    try:
        saved: int | None = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no descriptor 1 or 2 to move: Python's own prints still go to stderr
        saved = None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


@command("rerun")
@argument("run", help="Run id, unique prefix, 'latest' or 'latest~N'.")
@click.option("--from", "from_step", help="Recompute this step and everything downstream of it.")
@click.option("--only", help="Recompute just this step.")
@click.option("--pipeline", help="module:attr of the @pipeline, when the run does not record it.")
@param_option
@click.option("--max-workers", type=click.IntRange(min=1))
@json_option
def rerun_cmd(
    run: str,
    from_step: str | None,
    only: str | None,
    pipeline: str | None,
    param: tuple[str, ...],
    max_workers: int | None,
    as_json: bool,
) -> None:
    """Run a recorded pipeline run again, locally, with its recorded parameters and the current code.

    Cached results upstream of --from STEP are reused; STEP and everything downstream of it compute
    again (a mapped step with all its items). Works for runs recorded by any orchestrator."""
    try:
        with _stdout_to_stderr(as_json):
            result = Client().rerun(
                run,
                from_step=from_step,
                only=only,
                pipeline=pipeline,
                params=parse_param_options(list(param)),
                max_workers=max_workers,
            )
    except StepFailed as exc:
        run_id = getattr(exc, "pipeline_run_id", None)
        _fail(f"{exc}" + (f" (run {run_id[:8]}; see 'isthmus runs show {run_id[:8]}')" if run_id else ""))
    except IsthmusError as exc:
        _fail(str(exc))
    if as_json:
        dump_json(result.to_dict())
        return
    console.print(
        f"[bold]{escape(result.pipeline)}[/bold] run {result.run_id} (rerun of {short(result.rerun_of)}, "
        f"pipeline {escape(result.pipeline_path)}): {result.status}"
    )
    console.print(f"recomputed on request: {', '.join(result.forced) or 'nothing'}", markup=False)
    console.print(f"computed: {', '.join(result.computed) or 'nothing'}", markup=False)
    console.print(f"cache hits: {', '.join(result.hits) or 'none'}", markup=False)


def _difference_line(d: Difference) -> str:
    if d.kind == "code":
        return f"code {d.name}: {d.now} since the recorded run"
    if d.kind == "file":
        return f"file {d.name}: what is at the path changed since the recorded run ({d.now})"
    if d.kind == "package":
        return f"package {d.name}: {d.recorded or 'not imported'} recorded, {d.now or 'not imported'} now"
    return f"{d.kind} {d.name}: {d.recorded} recorded, {d.now or 'unknown'} now"


def _print_reproduction(r: Reproduction) -> None:
    console.print(
        f"[bold]reproduce[/bold] step run {r.step_run_id[:8]} ({escape(r.invocation)}, {escape(r.step_path)}), "
        f"recorded {r.recorded_status}"
    )
    if r.recorded_error:
        console.print(f"recorded error: {r.recorded_error}", markup=False)
    for name, content_hash in r.inputs.items():
        console.print(f"input {name}: {content_hash.split(':', 1)[-1][:12]}", markup=False)
    if r.differences:
        console.print("differs from the recorded run:")
        for d in r.differences:
            console.print(f"  {_difference_line(d)}", markup=False)
    else:
        console.print("same python, packages, git commit and code as the recorded run")
    if r.error is not None:
        sys.stderr.write(r.traceback_text or "")  # scrubbed: secrets given, in the environment, in its source
        console.print(f"raised {r.error_text}" + (" (as recorded)" if r.reproduced else ""), markup=False)
    else:
        value = repr(r.value)
        console.print(f"returned {value if len(value) <= 200 else value[:200] + '…'}", markup=False)


@command("reproduce")
@argument("step_run", help="Step run id, unique prefix, or RUN:STEP (e.g. latest:train).")
@param_option
@click.option("--pdb", "debug", is_flag=True, help="Call the step under pdb (stops at its first line).")
@json_option
def reproduce_cmd(step_run: str, param: tuple[str, ...], debug: bool, as_json: bool) -> None:
    """Call a recorded step run's function here, with its exact recorded inputs and parameters.

    Prints what differs from where it ran (python, packages, git commit, code). Records nothing.
    Exits 1 when the function raises."""
    if debug and as_json:
        _fail("--pdb and --json: the debugger's prompt would go to stdout, into the JSON; drop one of them")
    try:
        with _stdout_to_stderr(as_json):
            result = Client().reproduce(step_run, params=parse_param_options(list(param)), debug=debug)
    except IsthmusError as exc:
        _fail(str(exc))
    if as_json:
        dump_json(result.to_dict())
    else:
        _print_reproduction(result)
    if result.raised:
        raise click.exceptions.Exit(1)
