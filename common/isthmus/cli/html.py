"""``isthmus diff --html FILE``: one self-contained page (no scripts, no external resources), every
recorded value escaped (its control characters shown as ``\\x1b``, as in the terminal), code changes
side by side (:class:`difflib.HtmlDiff`, which escapes the lines), hashes gc deleted marked."""

from __future__ import annotations

import difflib
import html
from typing import Any

from isthmus.explain import recorded_json
from isthmus.printable import printable

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.3em} h2{font-size:1.1em;margin-top:1.5em} h3{font-size:1em}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ccc;padding:.2em .5em;vertical-align:top}
table.diff{font-family:monospace;font-size:.85em} .diff_header{background:#eee}
.diff_add{background:#cfc} .diff_chg{background:#ff9} .diff_sub{background:#fcc} .ran{color:#666}
"""


def _e(value: Any) -> str:
    """A recorded value as page text: controls shown as escapes (``\\x1b``, as in the terminal), then
    HTML-escaped."""
    return html.escape(printable(value if isinstance(value, str) else recorded_json(value)), quote=True)


def _marked(changes: dict[str, Any], deleted: set[str]) -> dict[str, Any]:
    """``changes`` with each hash gc deleted marked ``(deleted)``."""
    return {
        k: [f"{x} (deleted)" if isinstance(x, str) and x in deleted else x for x in change]
        for k, change in changes.items()
    }


def _rows(title: str, changes: dict[str, Any]) -> str:
    if not changes:
        return ""
    rows = "".join(
        f"<tr><td>{_e(k)}</td><td>{_e(v[0])}</td><td>{_e(v[1])}</td><td>{_e(v[2]) if len(v) > 2 else ''}</td></tr>"
        for k, v in changes.items()
    )
    return f"<h3>{_e(title)}</h3><table><tr><th>name</th><th>old</th><th>new</th><th>change</th></tr>{rows}</table>"


def _step(name: str, entry: dict[str, Any]) -> str:
    parts = [f"<h2>step {_e(name)}</h2>"]
    if "only_in" in entry:
        return parts[0] + f"<p>only in run {_e(entry['only_in'])}</p>"
    for field in ("status", "error"):
        if field in entry:
            parts.append(_rows(field, {field: entry[field]}))
    fields = entry.get("output_fields", {})
    outputs: dict[str, Any] = {}
    for output, change in entry.get("output_values", {}).items():  # a small dict: key by key
        outputs.update(
            {f"{output} {k}": v for k, v in fields[output].items()} if output in fields else {output: change}
        )
    key_parts = {
        f"{c['component']} {c['name']}": [c["old"], c["new"]]
        if c["component"] in ("policy", "outputs")
        else ["", c["new"]]
        for c in entry.get("key_changes", [])
    }  # a declared file or env variable: what happened to it, never a value
    deleted = set(entry.get("deleted_artifacts", []))
    for label, changes in (
        ("params", entry.get("params", {})),
        ("dependencies", entry.get("dependencies", {})),
        ("inputs", _marked(entry.get("inputs", {}), deleted)),
        ("cache key parts of @step(...)", key_parts),
        ("outputs", _marked(outputs, deleted)),
        ("metadata", entry.get("metadata", {})),
        ("resources", entry.get("resources", {})),
    ):
        parts.append(_rows(label, changes))
    if "cache_key_unexplained" in entry:
        parts.append(f"<p>{_e(entry['cache_key_unexplained'])}</p>")
    differ = difflib.HtmlDiff(wrapcolumn=90)
    for component, (old, new) in entry.get("code_sources", {}).items():
        table = differ.make_table(
            printable(old).splitlines(),
            printable(new).splitlines(),
            fromdesc=_e(f"a/{component}"),
            todesc=_e(f"b/{component}"),
        )
        parts.append(f"<h3>code {_e(component)}</h3>{table}")
    return "".join(parts)


def _ran(ran: dict[str, Any]) -> str:
    rows = []
    for name, sides in ran.items():
        cells = []
        for side in ("a", "b"):
            r = sides.get(side)
            cells.append(
                "-" if not r else f"{_e(r['cache'])} · {_e(r['orchestrator'])} · {_e(round(r['duration_ms'] or 0))} ms"
            )
        rows.append(f"<tr><td>{_e(name)}</td><td>{cells[0]}</td><td>{cells[1]}</td></tr>")
    return (
        "<h2>how it ran</h2><table class='ran'><tr><th>step</th><th>a</th><th>b</th></tr>" + "".join(rows) + "</table>"
    )


def diff_page(d: dict[str, Any]) -> str:
    """The page for a diff of two runs (``diff_runs``) or two step runs (``diff_step_runs``)."""
    if "run_a" in d:
        a, b = d["run_a"], d["run_b"]
        title = f"diff {a['id'][:8]} → {b['id'][:8]} ({a['pipeline']})"
        body = [_rows("pipeline parameters", d["params"])]
        body += [_step(name, entry) for name, entry in d["steps"].items()]
        if not d["steps"]:
            body.append(f"<p>No step changed ({len(d['unchanged_steps'])} identical).</p>")
        ran = d["ran"]
    else:
        a, b = d["step_run_a"], d["step_run_b"]
        title = f"diff step runs {a['id'][:8]} → {b['id'][:8]} ({a['invocation']})"
        body = [_step(str(a["invocation"]), d["changes"]) if d["changes"] else "<p>Nothing changed.</p>"]
        ran = {str(a["invocation"]): d["ran"]}
    env = d.get("environment") or {}
    flat: dict[str, Any] = {}
    for section, changes in env.items():
        if isinstance(changes, dict):
            flat.update({f"{section}.{k}": v for k, v in changes.items()})
        else:
            flat[section] = changes
    body.append(_rows("environment", flat))
    body.append(_ran(ran))
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body><h1>{_e(title)}</h1>"
        "<p>What changed, then how each step ran (cache, orchestrator, duration: not a change).</p>"
        + "".join(body)
        + "</body></html>\n"
    )
