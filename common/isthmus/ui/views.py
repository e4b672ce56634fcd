"""What the pages show, shaped from records: how a step run ran, links back to the orchestrator,
the graph of a run and of a lineage answer, side-by-side code. Every value stays text for the templates
to escape; only :func:`side_by_side` returns markup (built by :class:`difflib.HtmlDiff`, which escapes)."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from markupsafe import Markup, escape

from isthmus.lineage_query import Lineage
from isthmus.ui.layout import Drawing, Node, layered


@dataclass(frozen=True)
class UISettings:
    """Where the orchestrators' own pages are: ``airflow_url`` (``""``: the same server, as inside
    Airflow; None: no links), ``flyte_url`` (a Flyte console); ``public_static``: serve the stylesheet,
    script and OpenAPI schema to anonymous callers."""

    airflow_url: str | None = None
    flyte_url: str | None = None
    title: str = "isthmus"
    public_static: bool = True  # stylesheet, script and API schema without sign-in (the sign-in page uses them)


def q(text: Any) -> str:
    """``text`` quoted for one URL path segment or query value."""
    return quote(str(text), safe="")


def step_kind(sr: dict[str, Any]) -> str:
    """``failed``, ``running``, ``hit`` or ``computed``: told apart by colour and word on every page."""
    status = str(sr.get("status"))
    if status in ("FAILED", "ABORTED", "RETRY"):
        return "failed"
    if status == "RUNNING":
        return "running"
    return "hit" if sr.get("cache_hit") else "computed"


def run_links(run: dict[str, Any], settings: UISettings) -> list[tuple[str, str]]:
    """``(label, url)`` of the Airflow DAG run or Flyte execution a pipeline run stands for."""
    ctx = run.get("context") or {}
    out: list[tuple[str, str]] = []
    if run.get("orchestrator") == "airflow" and settings.airflow_url is not None and ctx.get("dag_id"):
        base = settings.airflow_url.rstrip("/")
        if ctx.get("run_id"):
            out.append(("Airflow DAG run", f"{base}/dags/{q(ctx['dag_id'])}/runs/{q(ctx['run_id'])}"))
        else:
            out.append(("Airflow DAG", f"{base}/dags/{q(ctx['dag_id'])}"))
    if run.get("orchestrator") == "flyte" and settings.flyte_url:
        url = flyte_execution_url(str(ctx.get("execution_id") or ""), settings.flyte_url)
        if url:
            out.append(("Flyte execution", url))
    return out


def flyte_execution_url(execution_id: str, console: str) -> str | None:
    parts = execution_id.split(":")
    if len(parts) != 3 or "local" in parts:
        return None
    project, domain, name = parts
    return f"{console.rstrip('/')}/console/projects/{q(project)}/domains/{q(domain)}/executions/{q(name)}"


def step_links(sr: dict[str, Any], settings: UISettings) -> list[tuple[str, str]]:
    """The orchestrator's page (and log) of one step run."""
    native = (sr.get("context") or {}).get("native") or {}
    out: list[tuple[str, str]] = []
    if sr.get("orchestrator") == "airflow" and settings.airflow_url is not None and native.get("task_id"):
        base = settings.airflow_url.rstrip("/")
        task = f"{base}/dags/{q(native.get('dag_id'))}/runs/{q(native.get('run_id'))}/tasks/{q(native['task_id'])}"
        if int(native.get("map_index", -1) or -1) >= 0:
            task += f"/mapped/{q(native['map_index'])}"
        out.append(("Airflow task instance", task))
        out.append(("Airflow log", f"{task}?try_number={q(native.get('try_number') or 1)}"))
    if sr.get("orchestrator") == "flyte" and settings.flyte_url:
        url = flyte_execution_url(str(native.get("execution_id") or ""), settings.flyte_url)
        if url:
            out.append(("Flyte execution", url))
    if native.get("job_id"):
        out.append(("Slurm job", f"slurm:{native['job_id']}"))
    return out


def pretty(value: Any) -> str:
    """A recorded value as readable text (JSON, keys sorted)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=1, sort_keys=True, default=str)


def run_graph(base: str, steps: list[dict[str, Any]], links: list[dict[str, Any]]) -> Drawing:
    """The steps of a run (last attempt of each invocation) joined where one's output is another's input."""
    last: dict[str, dict[str, Any]] = {}
    for sr in steps:
        last[str(sr["invocation"])] = sr
    ids = {str(sr["id"]): inv for inv, sr in last.items()}
    producers: dict[str, str] = {}
    consumers: list[tuple[str, str]] = []
    for link in links:
        inv = ids.get(str(link["step_run_id"]))
        if inv is None:
            continue
        if link["role"] == "output":
            producers[str(link["content_hash"])] = inv
        else:
            consumers.append((str(link["content_hash"]), inv))
    edges = [(producers[h], inv) for h, inv in consumers if h in producers]
    nodes = [
        Node(
            key=inv,
            label=inv,
            sub=f"{step_kind(sr)} · {_ms(sr.get('duration_ms'))}",
            kind=step_kind(sr),
            href=f"{base}/step-runs/{q(sr['id'])}",
        )
        for inv, sr in last.items()
    ]
    return layered(nodes, edges)


def lineage_graph(base: str, found: Lineage) -> Drawing:
    """Artifacts (boxes) and step runs (coloured by how they ran) of a lineage answer."""
    nodes = [
        Node(
            key=a.content_hash,
            label=", ".join(a.names) or "artifact",
            sub=a.content_hash.split(":", 1)[-1][:12] + ("" if a.present else " (deleted)"),
            kind="artifact" if a.present else "artifact deleted",
            href=f"{base}/artifacts/{q(a.content_hash)}",
        )
        for a in found.artifacts.values()
    ]
    nodes += [
        Node(
            key=s.id,
            label=s.invocation,
            sub=f"{s.orchestrator} · {s.pipeline or '-'} · {s.id[:8]}",
            kind=step_kind({"status": s.status, "cache_hit": s.cache_hit}),
            href=f"{base}/step-runs/{q(s.id)}",
        )
        for s in found.step_runs.values()
    ]
    return layered(nodes, [(e.source, e.target) for e in found.edges])


def side_by_side(component: str, old: str, new: str) -> Markup:
    """An HTML table of two sources side by side (every line escaped by :class:`difflib.HtmlDiff`)."""
    table = difflib.HtmlDiff(wrapcolumn=80).make_table(
        old.splitlines(),
        new.splitlines(),
        fromdesc=str(escape(f"a/{component}")),
        todesc=str(escape(f"b/{component}")),
        context=True,
    )
    return Markup(table)  # HtmlDiff escapes the lines; the descriptions are escaped above


def _ms(value: Any) -> str:
    if value is None:
        return "-"
    ms = float(value)
    return f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


duration = _ms
