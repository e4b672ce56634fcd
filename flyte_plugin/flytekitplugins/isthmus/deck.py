"""The isthmus Flyte Deck: what the StepRunner did for this task, as HTML.

Cache status and the run it came from, fingerprints, inputs and outputs with their hashes, the metadata
the step logged (``isthmus.log_metadata``; a cache hit's is its source's), and the changes against the
previous run of the same step. Every value is HTML-escaped: parameter values, metadata, error texts and
code come from users.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import quote

from isthmus.artifacts.refs import ArtifactRef
from isthmus.diff import code_diff
from isthmus.lineage.facets import shown_metadata
from isthmus.redaction import REDACTED, find_secret, is_secret_name, redact_params, secret_values, secrets_in

# Fits a 1400 px window: tables take the width they are given and long hashes, URIs and values wrap.
_STYLE = """
<style>
.isthmus { max-width: 1360px; box-sizing: border-box; overflow-wrap: anywhere; }
.isthmus table { border-collapse: collapse; margin: 0.4em 0 1em 0; width: 100%; table-layout: fixed; }
.isthmus th, .isthmus td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
.isthmus td code { word-break: break-all; }
.isthmus th { background: #f5f5f5; }
.isthmus pre { background: #f8f8f8; padding: 6px; white-space: pre-wrap; word-break: break-all; }
.isthmus .hit { color: #1a7f37; font-weight: bold; }
.isthmus .miss { color: #9a6700; font-weight: bold; }
</style>
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _json(value: Any) -> str:
    try:
        text = json.dumps(value, sort_keys=True, default=str)
    except Exception:
        text = repr(value)
    if len(text) > 500:
        text = text[:500] + " …"
    return _e(text)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def ui_url() -> str | None:
    """The isthmus web UI's address (``ISTHMUS_UI_URL``, e.g. ``http://isthmus.example:8765``), if set."""
    url = (os.environ.get("ISTHMUS_UI_URL") or "").strip().rstrip("/")
    return url if url.startswith(("http://", "https://")) else None


def _ui_link(kind: str, ident: Any) -> str:
    """An id, linked to its page in the isthmus UI when ``ISTHMUS_UI_URL`` is set."""
    code = f"<code>{_e(ident)}</code>"
    base = ui_url()
    if not base or not ident:
        return code
    href = f"{base}/{kind}/{quote(str(ident), safe='')}"
    return f"<a href='{_e(href)}' target='_blank' rel='noopener'>{code}</a>"


def publish(html_text: str) -> Any:
    """Add the isthmus deck in front of the task's other decks, so that the deck page opens on it."""
    from flytekit import Deck
    from flytekit.core.context_manager import FlyteContextManager

    made = Deck("isthmus", html_text)
    params = FlyteContextManager.current_context().user_space_params
    decks = getattr(params, "decks", None)
    if isinstance(decks, list) and made in decks:
        decks.remove(made)
        decks.insert(0, made)
    return made


def _ref_cells(ref: ArtifactRef) -> list[str]:
    return [
        f"<code>{_e(ref.content_hash)}</code>",
        f"{ref.size:,}",
        _e(ref.python_type),
        _e(ref.materializer),
        f"<code>{_e(ref.uri)}</code>",
    ]


def redact_inputs(inputs: Mapping[str, Any], secret: Collection[str] = ()) -> dict[str, Any]:
    """Task inputs as flytekit's own Input deck may show them: a secret-named input, one named in
    ``secret`` (fed by a secret-named workflow input), or one that holds a secret (a ``SecretStr``, a header
    pair, a secret-named field, the value of another secret input) becomes ``***``; credentials in strings,
    lists and dicts (URL passwords, bearer tokens, secret-named keys) are hidden; artifact refs stay."""
    known = secret_values(inputs)
    for name in secret:
        if name in inputs:
            known |= secrets_in(inputs[name])
    out: dict[str, Any] = {}
    for name, value in inputs.items():
        if ArtifactRef.coerce(value) is not None:
            out[name] = value
        elif name in secret or is_secret_name(name) or find_secret(value, known, by_key=True) is not None:
            out[name] = REDACTED
        elif isinstance(value, (str, list, tuple, dict)):
            out[name] = redact_params({name: value}, known)[name]
        else:
            out[name] = value
    return out


def _changes(old: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, list[Any]]:
    old, new = old or {}, new or {}
    return {k: [old.get(k), new.get(k)] for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def _hashes(refs: dict[str, Any] | None) -> dict[str, Any]:
    return {k: (v or {}).get("content_hash") for k, v in (refs or {}).items() if isinstance(v, dict)}


def changes_against(store: Any, row: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """What differs between this step run and ``previous`` (code diff, dependencies, params, logged metadata,
    inputs, outputs)."""
    if previous is None:
        return {}
    out: dict[str, Any] = {}
    code = code_diff(store, previous.get("code_hash"), row.get("code_hash"))
    if code:
        out["code"] = code
    for label, key in (("dependencies", "deps"), ("parameters", "params")):
        changed = _changes(previous.get(key), row.get(key))
        if changed:
            out[label] = changed
    changed = _changes(shown_metadata(previous.get("metadata") or {}), shown_metadata(row.get("metadata") or {}))
    if changed:
        out["logged metadata"] = changed
    for label, key in (("inputs", "inputs"), ("outputs", "outputs")):
        changed = _changes(_hashes(previous.get(key)), _hashes(row.get(key)))
        if changed:
            out[label] = changed
    return out


def render(
    *,
    step_name: str,
    invocation: str,
    result: Any,
    row: dict[str, Any],
    previous: dict[str, Any] | None,
    changes: dict[str, Any],
    run_context: dict[str, Any],
    source: dict[str, Any] | None = None,
) -> str:
    """The deck's HTML (``source``: the step run a cache hit reused)."""
    parts = [_STYLE, "<div class='isthmus'>", f"<h3>isthmus step <code>{_e(step_name)}</code></h3>"]
    if result.cache_hit:
        src = source or {}
        where = ", ".join(
            f"{label} {_e(src[key])}"
            for label, key in (("by", "orchestrator"), ("in pipeline run", "pipeline_run_id"), ("at", "started_at"))
            if src.get(key)
        )
        parts.append(
            "<p>Cache: <span class='hit'>hit</span> — outputs reused from step run "
            f"<code>{_e(result.source_step_run_id)}</code>{' (' + where + ')' if where else ''}</p>"
        )
    else:
        parts.append("<p>Cache: <span class='miss'>computed</span> (no earlier result with this cache key)</p>")
    native = run_context.get("native") or {}
    overview = [
        ["invocation", _e(invocation)],
        ["step run", _ui_link("step-runs", result.step_run_id)],
        ["pipeline run", _ui_link("runs", run_context.get("pipeline_run_id"))],
        ["Flyte execution", _e(native.get("execution_id"))],
        ["attempt", _e(run_context.get("attempt"))],
        ["duration", f"{result.duration_ms:.1f} ms"],
    ]
    parts.append(_table(["", ""], overview))

    parts.append("<h4>Fingerprints</h4>")
    fps = [
        ["code", f"<code>{_e(row.get('code_hash'))}</code>"],
        ["dependencies", f"<code>{_e(row.get('deps_hash'))}</code>"],
        ["environment", f"<code>{_e(row.get('environment_hash'))}</code>"],
        ["cache key", f"<code>{_e(row.get('cache_key'))}</code>"],
    ]
    parts.append(_table(["", "hash"], fps))

    parts.append("<h4>Inputs</h4>")
    in_rows = []
    for name, value in (row.get("inputs") or {}).items():
        ref = ArtifactRef.coerce(value)
        if ref is not None:
            in_rows.append([f"<code>{_e(name)}</code>", "artifact", *_ref_cells(ref)])
    for name, value in (row.get("params") or {}).items():
        in_rows.append([f"<code>{_e(name)}</code>", "parameter", f"<code>{_json(value)}</code>", "", "", "", ""])
    parts.append(_table(["name", "kind", "hash / value", "size", "type", "materializer", "uri"], in_rows))

    parts.append("<h4>Outputs</h4>")
    out_rows = [[f"<code>{_e(name)}</code>", *_ref_cells(ref)] for name, ref in result.outputs.items()]
    parts.append(_table(["name", "content hash", "size", "type", "materializer", "uri"], out_rows))

    parts.append("<h4>Logged metadata</h4>")
    parts.append(_metadata_section(row, result))

    parts.append("<h4>Changes against the previous run of this step</h4>")
    if previous is None:
        parts.append("<p><em>first recorded run of this step</em></p>")
    else:
        parts.append(
            f"<p>previous: step run <code>{_e(previous.get('id'))}</code> "
            f"({_e(previous.get('orchestrator'))}, {_e(previous.get('started_at'))})</p>"
        )
        if not changes:
            parts.append("<p>no changes in code, dependencies, parameters, inputs or outputs</p>")
        for name, diff in (changes.get("code") or {}).items():
            parts.append(f"<p>code of <code>{_e(name)}</code>:</p><pre>{_e(diff)}</pre>")
        for label in ("dependencies", "parameters", "logged metadata", "inputs", "outputs"):
            changed = changes.get(label)
            if changed:
                rows = [[f"<code>{_e(k)}</code>", _json(a), _json(b)] for k, (a, b) in changed.items()]
                parts.append(f"<p>{_e(label)}:</p>" + _table(["name", "before", "now"], rows))
    parts.append("</div>")
    return "\n".join(parts)


def _metadata_section(row: dict[str, Any], result: Any) -> str:
    """What the step logged about its run and its outputs, as ``logged_metadata`` tables; text that could
    hold a credential shown as ``***`` (as in lineage events)."""
    logged = row.get("metadata")
    rows = [["run", f"<code>{_e(k)}</code>", _json(v)] for k, v in shown_metadata(logged or {}).items()]
    for name, ref in result.outputs.items():
        per_output = (getattr(ref, "metadata", None) or {}).get("logged")
        if isinstance(per_output, Mapping):
            rows += [
                [f"output <code>{_e(name)}</code>", f"<code>{_e(k)}</code>", _json(v)]
                for k, v in shown_metadata(per_output).items()
            ]
    if not rows:
        return "<p><em>nothing logged (isthmus.log_metadata)</em></p>"
    note = ""
    if result.cache_hit and logged:
        note = f"<p>logged by step run <code>{_e(result.source_step_run_id)}</code> (reused from the cache)</p>"
    return note + _table(["about", "name", "value"], rows)


def build(runner: Any, step: Any, invocation: str, result: Any, run_context: dict[str, Any]) -> str:
    """Read this step run and its predecessor from the store and render the deck."""
    store = runner.metadata
    row = store.get_step_run(result.step_run_id)
    previous = None
    started = row.get("started_at")
    if started is not None:
        previous = store.previous_step_run(step.name, started, exclude=result.step_run_id)
    source = store.get_step_run(result.source_step_run_id) if result.cache_hit and result.source_step_run_id else None
    return render(
        step_name=step.name,
        invocation=invocation,
        result=result,
        row=row,
        previous=previous,
        changes=changes_against(store, row, previous),
        run_context=run_context,
        source=source,
    )
