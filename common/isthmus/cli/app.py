"""Commands: runs, why, diff, artifacts (and rollback, invalidate), cache, run-step, ingest. Queries go through :class:`isthmus.Client`."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape

from isthmus import defaults
from isthmus.cli import artifacts as artifacts_cli
from isthmus.cli import governance as governance_cli
from isthmus.cli import k8s as k8s_cli
from isthmus.cli.html import diff_page
from isthmus.cli.lineage_gc import gc_cmd, lineage_cmd
from isthmus.cli.render import (
    console,
    dump_json,
    duration,
    pinned_lines,
    print_changes,
    print_explanation,
    print_ran,
    short,
    status_text,
    table,
    when,
)
from isthmus.cli.rerun import reproduce_cmd, rerun_cmd
from isthmus.cli.runs_close import runs_close
from isthmus.cli.ui import ui_cmd
from isthmus.client import Client
from isthmus.context import RunContext
from isthmus.errors import ConfigurationError, IsthmusError
from isthmus.governance.audit import set_default_via
from isthmus.records import RunStatus

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="isthmus: recorded, cached, portable pipeline steps."
)
runs_app = typer.Typer(no_args_is_help=True, help="Pipeline runs.")
cache_app = typer.Typer(no_args_is_help=True, help="The step cache.")
app.add_typer(runs_app, name="runs")
runs_app.command("close")(runs_close)
app.add_typer(artifacts_cli.artifacts_app, name="artifacts")
app.command("rollback")(artifacts_cli.rollback)
app.command("invalidate")(artifacts_cli.invalidate)
app.add_typer(cache_app, name="cache")
app.command("lineage")(lineage_cmd)
app.command("gc")(gc_cmd)
app.add_typer(k8s_cli.k8s_app, name="k8s")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _meta() -> Any:
    try:
        return defaults.metadata_store()
    except ConfigurationError as exc:
        _fail(str(exc))


def _artifacts() -> Any:
    try:
        return defaults.artifact_store()
    except ConfigurationError as exc:
        _fail(str(exc))


def _client() -> Client:
    return Client(_meta())


def _error_line(message: str) -> None:
    """One plain line on stderr (no markup, no wrapping: messages hold URLs, brackets and long paths)."""
    text = " ".join(str(message).split())
    prefix = typer.style("error:", fg="red") if sys.stderr.isatty() else "error:"
    typer.echo(f"{prefix} {text}", err=True)


def _fail(message: str) -> NoReturn:
    _error_line(message)
    raise typer.Exit(code=1)


# -- runs -----------------------------------------------------------------------------------------
@runs_app.command("list")
def runs_list(
    limit: Annotated[int, typer.Option("--limit", "-n")] = 20,
    pipeline: Annotated[str | None, typer.Option("--pipeline", "-p")] = None,
    orchestrator: Annotated[str | None, typer.Option("--orchestrator", "-o")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List recent pipeline runs."""
    rows = _meta().list_runs(limit=limit, pipeline=pipeline, orchestrator=orchestrator)
    if as_json:
        dump_json(rows)
        return
    t = table("Pipeline runs", ["run", "pipeline", "orchestrator", "status", "steps", "cache hits", "started", "took"])
    for r in rows:
        t.add_row(
            r["id"][:8],
            r["pipeline"],
            r["orchestrator"],
            status_text(r["status"]),
            str(r["steps"] or 0),
            str(r["hits"] or 0),
            when(r["started_at"]),
            duration(r["started_at"], r["ended_at"]),
        )
    console.print(t)


@runs_app.command("show")
def runs_show(
    run: Annotated[str, typer.Argument(help="Run id, unique prefix, 'latest' or 'latest~N'.")], as_json: JsonOpt = False
) -> None:
    """Show one pipeline run and its step runs (each with why it computed, or where its hit came from)."""
    client = _client()
    try:
        r = client.run(run)
        steps = client.step_runs(r["id"])
        reasons = client.reasons(r["id"])
    except IsthmusError as exc:
        _fail(str(exc))
    if as_json:
        dump_json({"run": r, "steps": steps, "reasons": reasons})
        return
    console.print(
        f"[bold]{r['pipeline']}[/bold] run {r['id']}  {status_text(r['status'])}  "
        f"orchestrator={r['orchestrator']}  started {when(r['started_at'])}  took {duration(r['started_at'], r['ended_at'])}"
    )
    if r["params"]:
        console.print(f"params: {json.dumps(r['params'], sort_keys=True)}", markup=False)
    if r["context"]:
        console.print(f"context: {json.dumps(r['context'], sort_keys=True, default=str)}", markup=False)
    if r["error"]:
        console.print(f"[red]error:[/red] {escape(r['error'])}")
    t = table("Steps", ["step", "step run", "attempt", "status", "cache", "took", "outputs", "why"])
    for sr in steps:
        cache = (
            f"hit (from {short(sr['source_step_run_id'])})"
            if sr["cache_hit"]
            else ("miss" if sr["cache_key"] else "off")
        )
        outs = ", ".join(f"{k}={short(v.get('content_hash'))}" for k, v in (sr["outputs"] or {}).items())
        t.add_row(
            escape(sr["invocation"]),
            short(sr["id"]),
            str(sr["attempt"]),
            status_text(sr["status"]),
            cache,
            f"{sr['duration_ms']:.0f} ms" if sr["duration_ms"] is not None else "-",
            escape(outs or (sr["error"] or "")[:80]),
            "" if sr["cache_hit"] else escape(reasons.get(sr["id"], "")),
        )
    console.print(t)
    for sr in steps:
        for line in pinned_lines(dict(sr)) + _metadata_lines(dict(sr)):
            console.print(line, markup=False, highlight=False)


def _metadata_lines(step_run: dict[str, Any]) -> list[str]:
    """``runs show`` lines for what a step logged (``isthmus.log_metadata``), its own and its outputs'."""
    shown = [("", step_run.get("metadata"))]
    shown += [
        (f" output {k}", (v.get("metadata") or {}).get("logged")) for k, v in (step_run.get("outputs") or {}).items()
    ]
    return [
        f"metadata of {step_run['invocation']}{where}: {json.dumps(data, sort_keys=True)}"
        for where, data in shown
        if isinstance(data, dict) and data
    ]


# -- why ------------------------------------------------------------------------------------------
@app.command("why")
def why(
    step_run: Annotated[str, typer.Argument(help="Step run id, unique prefix, or RUN:STEP (e.g. latest:train).")],
    as_json: JsonOpt = False,
) -> None:
    """Why a step run computed (what in its cache key changed), or where its cache hit came from."""
    try:
        explanation = _client().explain(step_run)
    except IsthmusError as exc:
        _fail(str(exc))
    if as_json:
        dump_json(explanation.to_dict())
        return
    print_explanation(explanation)


# -- diff -----------------------------------------------------------------------------------------
@app.command("diff")
def diff(
    run_a: Annotated[
        str | None, typer.Argument(help="Older run (id, prefix, latest~N) or step run (RUN:STEP).")
    ] = None,
    run_b: Annotated[str | None, typer.Argument(help="Newer run, or step run.")] = None,
    last: Annotated[str | None, typer.Option("--last", help="The last two runs of this pipeline.")] = None,
    last_good: Annotated[
        str | None,
        typer.Option("--last-good", help="This pipeline's latest successful run against its latest failed one."),
    ] = None,
    html_file: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML page here.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """What changed between two runs (or two step runs), then how each step ran.

    Changes: code (a diff per changed function), dependencies, parameters, inputs, outputs (small values
    shown), logged metadata, resources, status and errors, environment. How it ran: cache hit or computed,
    orchestrator, duration."""
    client = _client()
    given = [x for x in (run_a, run_b) if x is not None]
    try:
        if sum(bool(x) for x in (last, last_good, given)) != 1 or (given and len(given) != 2):
            _fail("give two runs (or two step runs), --last PIPELINE, or --last-good PIPELINE")
        if last:
            d = client.diff_last(last)
        elif last_good:
            d = client.diff_last_good(last_good)
        else:
            assert run_a is not None and run_b is not None
            d = _diff_pair(client, run_a, run_b)
    except IsthmusError as exc:
        _fail(str(exc))
    if html_file is not None:
        try:
            html_file.write_text(diff_page(d), encoding="utf-8")
        except OSError as exc:
            _fail(f"--html {str(html_file)!r}: cannot write the page ({exc.strerror or exc})")
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
            print_changes(d["changes"], "  ")
        else:
            console.print("  nothing changed")
        _print_environment(d["environment"])
        print_ran({b["invocation"]: d["ran"]})
    if html_file is not None:
        console.print(f"wrote {escape(str(html_file))}")


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
                console.print(f"    {section}.{k}: {old} -> {new}", markup=False)
        else:
            console.print(f"    {section}: {changes[0]} -> {changes[1]}", markup=False)


def _print_run_diff(d: dict[str, Any]) -> None:
    a, b = d["run_a"], d["run_b"]
    console.print(
        f"[bold]diff[/bold] {a['id'][:8]} ({a['orchestrator']}, {a['status']}) -> {b['id'][:8]} ({b['orchestrator']}, {b['status']})"
    )
    console.print("[bold]what changed[/bold]")
    if d["params"]:
        for k, (old, new) in d["params"].items():
            console.print(f"  param {k}: {old!r} -> {new!r}", markup=False)
    if not d["steps"]:
        console.print(f"  steps: no changes ({len(d['unchanged_steps'])} identical)")
    for name, entry in d["steps"].items():
        if "only_in" in entry:
            console.print(f"  step {name}: only in run {entry['only_in']}", markup=False)
            continue
        console.print(f"  step {name}:", markup=False)
        print_changes(entry, "    ")
    if d["unchanged_steps"] and d["steps"]:
        console.print(f"  unchanged: {', '.join(d['unchanged_steps'])}", markup=False)
    _print_environment(d["environment"])
    print_ran(d["ran"])


# -- cache ----------------------------------------------------------------------------------------
@cache_app.command("list")
def cache_list(
    step: Annotated[str | None, typer.Option("--step")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Cache entries (step, key, producing step run, expiry)."""
    rows = _meta().list_cache_entries(step_name=step, limit=limit)
    if as_json:
        dump_json(rows)
        return
    t = table("Cache entries", ["step", "key", "step run", "created", "expires"])
    for r in rows:
        t.add_row(
            r["step_name"],
            short(r["cache_key"], 12),
            short(r["step_run_id"]),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created_at"])),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["expires_at"])) if r["expires_at"] else "never",
        )
    console.print(t)


@cache_app.command("clear")
def cache_clear(
    step: Annotated[str | None, typer.Option("--step", help="Only this step's entries.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Forget cache entries (run history and artifacts are kept)."""
    what = f"step {step!r}" if step else "ALL steps"
    if not yes and sys.stdin.isatty() and not typer.confirm(f"Clear cache entries of {what}?"):
        raise typer.Exit(code=1)
    n = _client().clear_cache(step)
    console.print(f"cleared {n} cache entr{'y' if n == 1 else 'ies'}")


@cache_app.command("prune")
def cache_prune(
    artifacts: Annotated[
        bool, typer.Option("--artifacts", help="Also delete stored objects no run refers to.")
    ] = False,
) -> None:
    """Drop expired entries and entries whose artifacts are gone; remove abandoned partial writes; mark step
    runs of dead processes ABORTED."""
    report = _client().prune_cache(delete_unreferenced=artifacts)
    console.print(
        f"expired entries: {report['expired']}, entries with missing artifacts: {report['missing']}, "
        f"partial writes removed: {report['tmp']}, unreferenced objects removed: {report['unreferenced']}"
    )
    console.print(f"abandoned step runs marked ABORTED: {report['aborted']}")


# -- remote entrypoint ----------------------------------------------------------------------------
def _fail_line(message: str) -> None:
    """One plain line on stderr (no wrapping, no markup: the message may quote hostile input), exit 1."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code=1)


def _json_arg(value: str | None, what: str) -> dict[str, Any]:
    if not value:
        return {}
    try:
        text = Path(value[1:]).read_text(encoding="utf-8") if value.startswith("@") else value
    except (OSError, UnicodeDecodeError) as exc:
        _fail_line(f"--{what} {value!r}: cannot read the file ({getattr(exc, 'strerror', None) or exc})")
    try:
        from isthmus.artifacts.refs import loads_bounded

        data = loads_bounded(text, f"--{what}")
    except ValueError as exc:
        _fail_line(f"{exc}; pass a JSON object or @file.json")
    if not isinstance(data, dict):
        _fail_line(f"--{what} must be a JSON object of name -> value")
    return data


@app.command("run-step")
def run_step_cmd(
    step: Annotated[str, typer.Option("--step", help="Import path 'package.module:function'.")],
    inputs: Annotated[str | None, typer.Option("--inputs", help="JSON object name -> ArtifactRef (or @file).")] = None,
    params: Annotated[str | None, typer.Option("--params", help="JSON object name -> value (or @file).")] = None,
    context: Annotated[str | None, typer.Option("--context", help="RunContext JSON (or @file).")] = None,
    manifest: Annotated[str | None, typer.Option("--manifest", help="Where to write the result manifest.")] = None,
    record: Annotated[
        str, typer.Option("--record", help="'db' (metadata store) or 'manifest' (rows ride in the manifest).")
    ] = "db",
    on: Annotated[str, typer.Option("--on", help="'local' (this process) or 'k8s' (a Kubernetes Job).")] = "local",
) -> None:
    """Run one step by import path and write a result manifest (the remote entrypoint)."""
    if on != "local":
        if manifest:
            _fail_line(f"--manifest is chosen by the Job with --on {on}; leave it out")
        data = k8s_cli.run_step_on(
            on, step, _json_arg(inputs, "inputs"), _json_arg(params, "params"), _json_arg(context, "context"), record
        )
        print(json.dumps(data, default=str))
        if data["status"] != RunStatus.COMPLETED:
            _fail_line(str(data.get("error") or "the step failed"))
        return
    try:
        ctx = RunContext.from_dict(_json_arg(context, "context")) if context else RunContext(orchestrator="remote")
    except TypeError as exc:  # a field the context does not have the shape for
        _fail_line(f"--context is not a run context ({exc})")
    try:
        from isthmus.remote import run_remote  # runs a step: imported when used, so queries start fast

        result = run_remote(
            step,
            inputs=_json_arg(inputs, "inputs"),
            params=_json_arg(params, "params"),
            context=ctx,
            manifest_path=manifest,
            record=record,
        )
    except IsthmusError as exc:  # nothing ran, and no manifest could be written
        _fail_line(str(exc))
    summary = {k: result.get(k) for k in ("status", "step_run_id", "cache_hit", "path", "error")}
    print(json.dumps(summary, default=str))
    if result["status"] != RunStatus.COMPLETED:
        _fail_line(str(result.get("error") or "the step failed"))


@app.command("ingest")
def ingest(manifest: Annotated[str, typer.Argument(help="Path or URL of a result manifest.")]) -> None:
    """Record a run that was written to a manifest by 'run-step --record manifest'.

    Cache entries are created only from a manifest signed with the key in $ISTHMUS_MANIFEST_KEY (the key
    run-step had); any other manifest records its step runs without cache entries."""
    try:
        from isthmus.manifest import MANIFEST_KEY_ENV, key_from_env
        from isthmus.remote import ingest as ingest_records

        result = ingest_records(_meta(), manifest, key=key_from_env())
    except IsthmusError as exc:
        _fail_line(str(exc))
    if result.authenticated:
        note = f"{result.cache_entries} cache entr{'y' if result.cache_entries == 1 else 'ies'}"
    else:
        note = (
            f"not authenticated (no valid tag under ${MANIFEST_KEY_ENV}): step runs recorded without cache entries; "
            f"set {MANIFEST_KEY_ENV} to the key run-step had to create them"
        )
    typer.echo(f"ingested {result.added} new record(s); {note}")


@app.command("version")
def version() -> None:
    """Print the isthmus version."""
    from isthmus import __version__

    print(__version__)


app.command("rerun")(rerun_cmd)
app.command("reproduce")(reproduce_cmd)
app.command("ui")(ui_cmd)
app.add_typer(governance_cli.tokens_app, name="tokens")
app.add_typer(governance_cli.roles_app, name="roles")
app.command("audit")(governance_cli.audit_cmd)


def main() -> None:
    # Steps are named by import path ('mymodule:train'): like 'python -m isthmus' (the entrypoint of remote
    # jobs and pods), the console script imports them from the directory it is run in.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    set_default_via("cli")
    try:
        app()
    except IsthmusError as exc:
        _error_line(str(exc))
        sys.exit(1)
