"""Why a step run computed, or where its cached result came from — from the metadata store alone.

A computed step run is compared with the nearest earlier run of the same step (same pipeline and
invocation first, then same pipeline, then any), component by component of what its cache key is made
of: the code (each changed function, with a unified diff of its stored, already redacted source), the
dependency versions, the parameters (secrets stay ``***``), the input artifacts (and the step runs that
produced them), the policy (its version salt and settings, and the ``@step(...)`` line), each declared
file pattern and environment variable whose contents or value changed (told apart by keyed digests the
step run records; values are never stored or shown), the output names and materializers. What the
store does not record — the values of secret parameters, the store's secret salt — is named as such,
never guessed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import json
from dataclasses import dataclass, field
from typing import Any

from isthmus.governance.scope import Projects, limited, visible_step_runs
from isthmus.records import RunStatus, StepRunRecord
from isthmus.redaction import REDACTED
from isthmus.store.metadata import MetadataStore

_REASON_WIDTH = 160


@dataclass(frozen=True)
class StepRunSummary:
    """Who a step run was: enough to find it again (``isthmus runs show``, ``isthmus why``)."""

    id: str
    invocation: str
    step_name: str
    pipeline_run_id: str | None
    pipeline: str | None
    orchestrator: str
    status: str
    cache_hit: bool
    started_at: str | None

    @classmethod
    def of(cls, sr: dict[str, Any], pipeline: str | None = None) -> StepRunSummary:
        started = sr.get("started_at")
        return cls(
            id=str(sr["id"]),
            invocation=str(sr.get("invocation") or sr.get("step_name")),
            step_name=str(sr.get("step_name")),
            pipeline_run_id=sr.get("pipeline_run_id"),
            pipeline=pipeline or sr.get("pipeline") or (sr.get("context") or {}).get("pipeline_name"),
            orchestrator=str(sr.get("orchestrator")),
            status=str(sr.get("status")),
            cache_hit=bool(sr.get("cache_hit")),
            started_at=started.isoformat() if isinstance(started, dt.datetime) else None,
        )


@dataclass(frozen=True)
class KeyChange:
    """One cache-key component that differs. ``component``: ``code``, ``policy``, ``dependencies``,
    ``params``, ``inputs``, ``files``, ``env`` or ``outputs`` (for ``files`` and ``env``, ``new`` says
    what happened: ``contents changed``, ``value changed``, ``set``, ``unset``, ``declared``...); ``diff``: a unified diff (code, policy); ``produced_by``: for
    inputs, the step runs that produced the old and the new artifact."""

    component: str
    name: str
    old: Any = None
    new: Any = None
    diff: str | None = None
    produced_by: dict[str, StepRunSummary | None] | None = None


@dataclass(frozen=True)
class Explanation:
    """``decision``: ``hit``, ``computed``, ``forced``, ``first`` (no earlier run), ``uncached`` (cache off)
    or ``running``; ``reason``: one line for ``runs show``."""

    step_run: StepRunSummary
    decision: str
    reason: str
    compared_with: StepRunSummary | None = None
    changes: list[KeyChange] = field(default_factory=list)
    source: StepRunSummary | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _changes(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, tuple[Any, Any]]:
    a, b = a or {}, b or {}
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _unified(name: str, before: str, after: str) -> str:
    text = "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True), after.splitlines(keepends=True), fromfile=f"a/{name}", tofile=f"b/{name}"
        )
    )
    return text or f"--- a/{name}\n+++ b/{name}\n-{before}\n+{after}\n"


def _head(source: str) -> str:
    """The lines of a function's source before its ``def`` (its decorators, ``@step(...)`` included)."""
    lines = source.splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith(("def ", "async def ")):
            return "\n".join(lines[:i])
    return ""


def _is_step_component(name: str, step_name: str) -> bool:
    return name == step_name or name.endswith("." + step_name)


def code_changes(store: MetadataStore, old_hash: str | None, new_hash: str | None, step_name: str) -> list[KeyChange]:
    """Changed code components (with their diffs), and a changed ``@step(...)`` line of the step itself
    (its policy: version, declared files and env names — not part of the code hash, part of the key)."""
    if old_hash == new_hash or not old_hash or not new_hash:
        return []
    old = store.get_code_snapshot(old_hash) or {"components": {}, "sources": {}}
    new = store.get_code_snapshot(new_hash) or {"components": {}, "sources": {}}
    out: list[KeyChange] = []
    for name in sorted(set(old["components"]) | set(new["components"])):
        before, after = old["sources"].get(name, ""), new["sources"].get(name, "")
        if old["components"].get(name) != new["components"].get(name):
            state = "added" if name not in old["components"] else "removed" if name not in new["components"] else ""
            out.append(KeyChange("code", name, old=state or None, diff=_unified(name, before, after)))
        elif _is_step_component(name, step_name) and _head(before) != _head(after):
            out.append(KeyChange("policy", "@step(...)", diff=_unified(name, _head(before), _head(after))))
    return out


def _producer(store: MetadataStore, content_hash: str | None) -> StepRunSummary | None:
    if not content_hash:
        return None
    sr = store.artifact_producer(content_hash)
    return StepRunSummary.of(dict(sr)) if sr else None


def _hash_and_materializer(ref: Any) -> tuple[Any, Any]:
    return (ref.get("content_hash"), ref.get("materializer")) if isinstance(ref, dict) else (None, None)


def key_changes(store: MetadataStore, old: StepRunRecord, new: StepRunRecord) -> list[KeyChange]:
    """Every recorded cache-key component that differs from ``old`` to ``new``."""
    out = code_changes(store, old.get("code_hash"), new.get("code_hash"), str(new.get("step_name")))
    out += [KeyChange("dependencies", k, a, b) for k, (a, b) in _changes(old.get("deps"), new.get("deps")).items()]
    out += [KeyChange("params", k, a, b) for k, (a, b) in _changes(old.get("params"), new.get("params")).items()]
    old_in, new_in = old.get("inputs") or {}, new.get("inputs") or {}
    for name in sorted(set(old_in) | set(new_in)):
        (ha, ma), (hb, mb) = _hash_and_materializer(old_in.get(name)), _hash_and_materializer(new_in.get(name))
        if (ha, ma) != (hb, mb):
            producers = {"old": _producer(store, ha), "new": _producer(store, hb)}
            out.append(KeyChange("inputs", name, ha, hb, produced_by=producers))
    out += policy_changes((old.get("context") or {}).get("key_parts"), (new.get("context") or {}).get("key_parts"))
    old_out, new_out = old.get("outputs"), new.get("outputs")
    if old_out and new_out:  # both finished: compare output names and materializers
        for name, (a, b) in _changes(
            {k: _hash_and_materializer(v)[1] for k, v in old_out.items()},
            {k: _hash_and_materializer(v)[1] for k, v in new_out.items()},
        ).items():
            out.append(KeyChange("outputs", name, a, b))
    return out


def policy_changes(old: Any, new: Any) -> list[KeyChange]:
    """The recorded policy parts of the key that differ (both runs must have recorded them): the
    version salt and the code/deps/ignore_inputs settings (old → new), each declared file pattern whose
    contents changed and each declared environment variable whose value changed — named, never shown."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return []
    out = [
        KeyChange("policy", name, old.get(name), new.get(name))
        for name in ("version", "code", "deps", "ignore_inputs")
        if old.get(name) != new.get(name)
    ]
    for component, what in (("files", "contents"), ("env", "value")):
        before, after = old.get(component) or {}, new.get(component) or {}
        for name in sorted(set(before) | set(after)):
            a, b = before.get(name), after.get(name)
            if a == b:
                continue
            if a is None or b is None:
                state = "declared" if a is None else "no longer declared"
            elif "unset" in (a, b):
                state = "set" if a == "unset" else "unset"
            else:
                state = f"{what} changed"
            out.append(KeyChange(component, name, old=None, new=state))
    return out


def _short(value: Any, width: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def summarize(changes: list[KeyChange]) -> str:
    """One line: ``code: scale changed; params: n 1 → 2``."""
    parts: list[str] = []
    by: dict[str, list[KeyChange]] = {}
    for c in changes:
        by.setdefault(c.component, []).append(c)
    for component, items in by.items():
        if component == "code":
            parts.append(f"code: {', '.join(c.name for c in items)} changed")
        elif component == "policy":
            named = [c for c in items if c.name != "@step(...)"]
            parts.append(
                "policy: " + ", ".join(f"{c.name} {_short(c.old)} → {_short(c.new)}" for c in named)
                if named
                else "policy: @step(...) changed"
            )
        elif component in ("files", "env"):
            label = "declared files" if component == "files" else "declared env"
            parts.append(f"{label}: " + ", ".join(f"{c.name} {c.new}" for c in items))
        elif component == "inputs":
            shown = []
            for c in items:
                src = (c.produced_by or {}).get("new")
                shown.append(f"{c.name} (from {src.invocation} {src.id[:8]})" if src else c.name)
            parts.append(f"inputs: {', '.join(shown)} changed")
        elif component == "outputs":
            parts.append(f"outputs: {', '.join(c.name for c in items)} changed")
        else:
            label = "deps" if component == "dependencies" else component
            parts.append(f"{label}: " + ", ".join(f"{c.name} {_short(c.old)} → {_short(c.new)}" for c in items))
    line = "; ".join(parts)
    return line if len(line) <= _REASON_WIDTH else line[: _REASON_WIDTH - 1] + "…"


def _nearest(candidates: list[dict[str, Any]], sr: StepRunRecord, pipeline: str | None) -> dict[str, Any] | None:
    """The nearest earlier run: same pipeline and invocation, then same pipeline, then same invocation,
    then any (candidates are newest first)."""
    same_path = [c for c in candidates if c.get("step_path") == sr.get("step_path")] or candidates
    for wanted in (
        lambda c: c.get("pipeline") == pipeline and c["invocation"] == sr["invocation"],
        lambda c: c.get("pipeline") == pipeline,
        lambda c: c["invocation"] == sr["invocation"],
        lambda c: True,
    ):
        found = next((c for c in same_path if wanted(c)), None)
        if found is not None:
            return found
    return None


def _unexplained(sr: StepRunRecord, prev: dict[str, Any]) -> str:
    secret = sorted(k for k, v in (sr.get("params") or {}).items() if v == REDACTED)
    recorded = all(isinstance((r.get("context") or {}).get("key_parts"), dict) for r in (sr, prev))
    what = [
        *(
            []
            if recorded
            else ["a declared file's contents or environment variable's value (CachePolicy(files=, env=))"]
        ),
        *([f"the value of secret parameter(s) {', '.join(secret)}"] if secret else []),
        "the store's secret salt",
    ]
    return "the cache key differs but no recorded component does: " + ", or ".join(what) + " changed"


def explain_step_run(store: MetadataStore, sr: StepRunRecord, projects: Projects = None) -> Explanation:
    """Explain ``sr`` (see the module docstring); ``projects``: a caller's scope, whose explanation never
    names a step run out of it (a hit's source is then unnamed, earlier runs are only its own)."""
    run_id = sr.get("pipeline_run_id")
    pipeline_run = store.get_pipeline_run(run_id) if run_id else None
    pipeline = pipeline_run["pipeline"] if pipeline_run else (sr.get("context") or {}).get("pipeline_name")
    me = StepRunSummary.of(dict(sr), pipeline)
    if sr.get("cache_hit"):
        source_id = sr.get("source_step_run_id")
        if source_id and limited(projects) and not visible_step_runs(store, [str(source_id)], projects):
            return Explanation(me, "hit", "hit: from a step run of a run you may not see")
        found = store.find_step_runs(str(source_id), limit=1) if source_id else []
        source_sr = found[0] if found and found[0]["id"] == source_id else None
        if source_sr is None:
            return Explanation(me, "hit", f"hit: from step run {str(source_id)[:8]} (no longer recorded)")
        src_run_id = source_sr.get("pipeline_run_id")
        src_run = store.get_pipeline_run(src_run_id) if src_run_id else None
        source = StepRunSummary.of(dict(source_sr), src_run["pipeline"] if src_run else None)
        when = (source.started_at or "?")[:19].replace("T", " ")
        where = f"{source.orchestrator} run {str(source.pipeline_run_id or '-')[:8]}"
        return Explanation(me, "hit", f"hit: from {source.id[:8]} ({where}, {when} UTC)", source=source)
    if not sr.get("cache_key"):
        return Explanation(me, "uncached", "cache off (cache=False on the step)")
    forced = bool((sr.get("context") or {}).get("forced"))
    candidates = store.earlier_step_runs(str(sr["step_name"]), sr["started_at"], exclude=str(sr["id"]))
    if limited(projects) and candidates:
        seen = visible_step_runs(store, [str(c["id"]) for c in candidates], projects)
        candidates = [c for c in candidates if str(c["id"]) in seen]
    prev = _nearest(candidates, sr, pipeline)
    if prev is None:
        reason = "forced (cache=False); first run" if forced else "first run"
        return Explanation(me, "forced" if forced else "first", reason, notes=["no earlier run of this step"])
    compared = StepRunSummary.of(prev)
    changes = key_changes(store, prev, sr)  # type: ignore[arg-type]  # a step_runs row plus its pipeline
    notes: list[str] = []
    if changes:
        reason = summarize(changes)
    elif prev.get("cache_key") == sr.get("cache_key"):
        if prev["status"] != RunStatus.COMPLETED:
            reason = f"same key as {compared.id[:8]}, which {str(prev['status']).lower()}: nothing to reuse"
        else:
            reason = (
                f"same key as {compared.id[:8]}, whose result was not reused "
                "(its cache entry expired or was cleared, or its artifacts were gone)"
            )
    else:
        reason = _unexplained(sr, prev)
    if forced:
        notes.append("forced: computed without looking up the cache (cache=False or recompute=)")
        reason = f"forced (cache=False); {reason}" if changes else "forced (cache=False)"
    decision = "forced" if forced else "running" if sr["status"] == RunStatus.RUNNING else "computed"
    return Explanation(me, decision, reason, compared_with=compared, changes=changes, notes=notes)
