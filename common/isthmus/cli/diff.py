"""``isthmus diff``: what changed between two runs (or two step runs), then how each step ran."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape

from isthmus.cli.commands import argument, command, json_option
from isthmus.cli.render import console, dump_json, print_changes, print_ran, shown_change
from isthmus.cli.shared import client, fail
from isthmus.errors import IsthmusError

if TYPE_CHECKING:
    from isthmus.client import Client


@command("diff")
@argument("run_a", help="Older run (id, prefix, latest~N) or step run (RUN:STEP).", required=False)
@argument("run_b", help="Newer run, or step run.", required=False)
@click.option("--last", help="The last two runs of this pipeline.")
@click.option("--last-good", help="What changed from this pipeline's latest successful run to its latest failed one.")
@click.option("--html", "html_path", help="Also write a self-contained HTML page to this file ('-': stdout only).")
@json_option
def diff(
    run_a: str | None,
    run_b: str | None,
    last: str | None,
    last_good: str | None,
    html_path: str | None,
    as_json: bool,
) -> None:
    """What changed between two runs (or two step runs), then how each step ran.

    Changes: code (a diff per changed function), dependencies, parameters, inputs, the cache-key parts of
    @step(...) (policy version, declared files and env: never their values), outputs (small values shown, a
    dict key by key), logged metadata, resources, status and errors, environment. How it ran: cache hit or
    computed, orchestrator, duration."""
    given = [x for x in (run_a, run_b) if x is not None]
    _check_choice(given, last, last_good)
    if html_path is not None and not html_path.strip():
        fail(f"--html {html_path!r}: give a file name for the page, e.g. --html diff.html")
    to_stdout = html_path is not None and html_path.strip() == "-"
    if to_stdout and as_json:
        fail("--html - and --json both write to stdout; give the page a file name, e.g. --html diff.html")
    html_file = Path(html_path) if html_path is not None and not to_stdout else None
    c = client()
    try:
        if last:
            d = c.diff_last(last)
        elif last_good:
            d = c.diff_last_good(last_good)
        else:
            assert run_a is not None and run_b is not None
            d = _diff_pair(c, run_a, run_b)
    except IsthmusError as exc:
        fail(str(exc))
    if to_stdout:  # the page alone, for a pipe or a redirect
        from isthmus.cli.html import diff_page

        sys.stdout.write(diff_page(d))
        return
    if html_file is not None:
        from isthmus.cli.html import diff_page

        try:
            html_file.write_text(diff_page(d), encoding="utf-8")
        except OSError as exc:
            fail(f"--html {html_path!r}: cannot write the page ({exc.strerror or exc})")
    if as_json:
        dump_json(d)
        return
    if "run_a" in d:
        _print_run_diff(d)
    else:
        a, b = d["step_run_a"], d["step_run_b"]
        console.print(
            f"[bold]diff[/bold] step run {a['id'][:8]} ({escape(a['invocation'])}, {a['status']}) -> "
            f"{b['id'][:8]} ({escape(b['invocation'])}, {b['status']})"
        )
        if d["changes"]:
            print_changes(d["changes"], "  ", step=str(a["invocation"]))
        else:
            console.print("  nothing changed")
        _print_environment(d["environment"])
        print_ran({b["invocation"]: d["ran"]})
    if html_file is not None:
        console.print(f"wrote {escape(str(html_file))}")


def _check_choice(given: list[str], last: str | None, last_good: str | None) -> None:
    """One way of naming what to compare: two runs, --last PIPELINE or --last-good PIPELINE."""
    if last is not None and last_good is not None:
        fail("give --last PIPELINE or --last-good PIPELINE, not both")
    for option, value in (("--last", last), ("--last-good", last_good)):
        if value is not None and given:
            shown = " ".join(repr(x) for x in given)
            fail(f"{option} takes a pipeline name and no run ids (got {shown}); drop them, or drop {option}")
        if value is not None and not value.strip():
            fail(f"{option} {value!r}: give a pipeline name, e.g. {option} ml_pipeline")
    if last is None and last_good is None and len(given) != 2:
        fail("give two runs (or two step runs), --last PIPELINE, or --last-good PIPELINE")


def _diff_pair(client: Client, a: str, b: str) -> dict[str, Any]:
    """Two runs, or two step runs (``RUN:STEP`` or a step run id)."""
    if ":" in a or ":" in b:
        return client.diff_step_runs(a, b)
    try:
        return client.diff_runs(a, b)
    except IsthmusError:
        try:  # not two pipeline runs: maybe two step run ids
            return client.diff_step_runs(a, b)
        except IsthmusError:
            pass
        raise


def _print_environment(env: dict[str, Any]) -> None:
    if not env:
        return
    console.print("  environment:")
    for section, changes in env.items():
        if isinstance(changes, dict):
            for k, (old, new) in changes.items():
                console.print(f"    {section}.{k}{shown_change(old, new)}", markup=False)
        else:
            console.print(f"    {section}{shown_change(changes[0], changes[1])}", markup=False)


def _print_run_diff(d: dict[str, Any]) -> None:
    a, b = d["run_a"], d["run_b"]
    console.print(
        f"[bold]diff[/bold] {a['id'][:8]} ({a['orchestrator']}, {a['status']}) -> {b['id'][:8]} ({b['orchestrator']}, {b['status']})"
    )
    console.print("[bold]what changed[/bold]")
    if d["params"]:
        for k, (old, new) in d["params"].items():
            console.print(f"  param {k}{shown_change(old, new)}", markup=False)
    if not d["steps"]:
        console.print(f"  steps: no changes ({len(d['unchanged_steps'])} identical)")
    for name, entry in d["steps"].items():
        if "only_in" in entry:
            console.print(f"  step {name}: only in run {entry['only_in']}", markup=False)
            continue
        console.print(f"  step {name}:", markup=False)
        print_changes(entry, "    ", step=name)
    if d["unchanged_steps"] and d["steps"]:
        console.print(f"  unchanged: {', '.join(d['unchanged_steps'])}", markup=False)
    _print_environment(d["environment"])
    print_ran(d["ran"])
