"""``isthmus run-step`` (run one step by import path: the remote entrypoint) and ``isthmus ingest``
(record what ``run-step --record manifest`` wrote)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from isthmus.cli.commands import argument, command
from isthmus.cli.shared import meta
from isthmus.context import RunContext
from isthmus.errors import IsthmusError
from isthmus.records import RunStatus


def _fail_line(message: str) -> None:
    """One plain line on stderr (no wrapping, no markup: the message may quote hostile input), exit 1."""
    click.echo(f"error: {' '.join(message.split())}", err=True)
    raise click.exceptions.Exit(1)


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


@command("run-step")
@click.option("--step", required=True, help="Import path 'package.module:function'.")
@click.option("--inputs", help="JSON object name -> ArtifactRef (or @file).")
@click.option("--params", help="JSON object name -> value (or @file).")
@click.option("--context", help="RunContext JSON (or @file).")
@click.option("--manifest", help="Where to write the result manifest.")
@click.option("--record", default="db", help="'db' (metadata store) or 'manifest' (rows ride in the manifest).")
@click.option("--on", default="local", help="'local' (this process) or 'k8s' (a Kubernetes Job).")
def run_step_cmd(
    step: str,
    inputs: str | None,
    params: str | None,
    context: str | None,
    manifest: str | None,
    record: str,
    on: str,
) -> None:
    """Run one step by import path and write a result manifest (the remote entrypoint)."""
    if on != "local":
        from isthmus.cli.k8s import run_step_on  # the k8s extra: imported when used

        if manifest:
            _fail_line(f"--manifest is chosen by the Job with --on {on}; leave it out")
        data = run_step_on(
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


@command("ingest")
@argument("manifest", help="Path or URL of a result manifest.")
def ingest(manifest: str) -> None:
    """Record a run that was written to a manifest by 'run-step --record manifest'.

    Cache entries are created only from a manifest signed with the key in $ISTHMUS_MANIFEST_KEY (the key
    run-step had); any other manifest records its step runs without cache entries."""
    try:
        from isthmus.manifest import MANIFEST_KEY_ENV, key_from_env
        from isthmus.remote import ingest as ingest_records

        result = ingest_records(meta(), manifest, key=key_from_env())
    except IsthmusError as exc:
        _fail_line(str(exc))
    if result.authenticated:
        note = f"{result.cache_entries} cache entr{'y' if result.cache_entries == 1 else 'ies'}"
    else:
        note = (
            f"not authenticated (no valid tag under ${MANIFEST_KEY_ENV}): step runs recorded without cache entries; "
            f"set {MANIFEST_KEY_ENV} to the key run-step had to create them"
        )
    click.echo(f"ingested {result.added} new record(s); {note}")
