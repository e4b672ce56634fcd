"""Why a step run computed, or where its cached result came from — from the metadata store alone.

A computed step run is compared with the nearest earlier run of the same invocation (same pipeline
first); failing that, of the same step in another pipeline run — never another invocation of its own
run, and never another item for a map item (``band_stats[4]``: then it is that item's first run). It is
compared component by component of what its cache key is made of, as each step run recorded it: the
code (each changed function, with a unified diff of its stored, already redacted source), the
dependency versions, the parameters (secrets stay ``***``), the input artifacts (and the step runs that
produced them: the one of the consumer's own pipeline run when there is one, else the first), the policy
(its version salt and settings), each declared file pattern and environment variable whose contents or
value changed (told apart by keyed digests the step run records; values are never stored or shown), the
output names and materializers. What the store does not record — the values of secret parameters, the
store's secret salt — is named as such, never guessed. The same key as the earlier run says why its
result was not reused (invalidated: when and why; failed; gone); when the nearest earlier run has another
key but an earlier run was recorded under this one, that run is the one named (its result could have been
reused), with what the nearest run differs in as a note.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, or_, select

from isthmus.governance.scope import Projects, limited, visible_step_runs
from isthmus.records import RunStatus, StepRunRecord
from isthmus.redaction import REDACTED
from isthmus.store import schema as s
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
    what happened: ``contents changed``, ``value changed``, ``set``, ``unset``, ``declared``...); ``diff``:
    a unified diff (code); ``produced_by``: for inputs, the step runs that produced the old and the new
    artifact."""

    component: str
    name: str
    old: Any = None
    new: Any = None
    diff: str | None = None
    produced_by: dict[str, StepRunSummary | None] | None = None


@dataclass(frozen=True)
class Explanation:
    """``decision``: ``hit``, ``computed``, ``forced`` (``cache=False``, ``recompute=``, or recomputed on
    request by ``isthmus rerun --from/--only``), ``first`` (no earlier run), ``uncached`` (cache off) or
    ``running``; ``reason``: one line for ``runs show``."""

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


def unified_diff(name: str, before: str, after: str) -> str:
    """A unified diff of two sources, one line per line (a source without a final newline included), or,
    when their texts are the same but their normal forms are not, every line of each as removed and added."""
    a, b = before.splitlines(), after.splitlines()
    lines = list(difflib.unified_diff(a, b, fromfile=f"a/{name}", tofile=f"b/{name}", lineterm=""))
    if not lines:
        lines = [f"--- a/{name}", f"+++ b/{name}", *(f"-{x}" for x in a), *(f"+{x}" for x in b)]
    return "\n".join(lines) + "\n"


def code_diffs(store: MetadataStore, old_hash: str | None, new_hash: str | None) -> dict[str, KeyChange]:
    """Each code component (step function, helper, constant) whose normal form differs between two code
    snapshots, with a unified diff of its stored source (redacted when the fingerprint was taken); a
    missing snapshot counts as empty. The sources are the first ones stored under each hash, and the
    hash leaves the isthmus decorators out: a ``@step(...)`` line in them may be another run's, so it is
    never compared (the policy it holds is recorded per step run, ``context.key_parts``)."""
    if old_hash == new_hash:
        return {}
    old = (store.get_code_snapshot(old_hash) if old_hash else None) or {"components": {}, "sources": {}}
    new = (store.get_code_snapshot(new_hash) if new_hash else None) or {"components": {}, "sources": {}}
    out: dict[str, KeyChange] = {}
    for name in sorted(set(old["components"]) | set(new["components"])):
        if old["components"].get(name) == new["components"].get(name):
            continue
        before, after = old["sources"].get(name, ""), new["sources"].get(name, "")
        state = "added" if name not in old["components"] else "removed" if name not in new["components"] else None
        out[name] = KeyChange("code", name, old=state, diff=unified_diff(name, before, after))
    return out


def code_changes(store: MetadataStore, old_hash: str | None, new_hash: str | None) -> list[KeyChange]:
    """The changed code components of two recorded code hashes (none when either is missing)."""
    if not old_hash or not new_hash:
        return []
    return list(code_diffs(store, old_hash, new_hash).values())


def _producer(store: MetadataStore, content_hash: str | None, pipeline_run_id: str | None) -> StepRunSummary | None:
    """The step run an input ``content_hash`` of a step run of ``pipeline_run_id`` came from: the first of
    that pipeline run that output it (by start, ties by id; a cache hit is that run's producer), else the
    first that computed it anywhere (:meth:`MetadataStore.artifact_producer`) — the same bytes may have
    been computed earlier by another step, which is not where this run's input came from. The run's own
    step runs are read by the pipeline-run index (few), each output probed by the links' key."""
    if not content_hash:
        return None
    if pipeline_run_id:
        link, r, p = s.step_run_artifacts, s.step_runs, s.pipeline_runs
        query = (
            select(r, p.c.pipeline.label("pipeline"))
            .select_from(r.join(link, link.c.step_run_id == r.c.id).outerjoin(p, p.c.id == r.c.pipeline_run_id))
            .where(r.c.pipeline_run_id == pipeline_run_id, link.c.role == "output", link.c.content_hash == content_hash)
            .order_by(r.c.started_at, r.c.id)
            .limit(1)
        )
        with store.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        if row:
            return StepRunSummary.of(dict(row))
    sr = store.artifact_producer(content_hash)
    return StepRunSummary.of(dict(sr)) if sr else None


def _hash_and_materializer(ref: Any) -> tuple[Any, Any]:
    return (ref.get("content_hash"), ref.get("materializer")) if isinstance(ref, dict) else (None, None)


def key_changes(store: MetadataStore, old: StepRunRecord, new: StepRunRecord) -> list[KeyChange]:
    """Every recorded cache-key component that differs from ``old`` to ``new``."""
    out = code_changes(store, old.get("code_hash"), new.get("code_hash"))
    out += [KeyChange("dependencies", k, a, b) for k, (a, b) in _changes(old.get("deps"), new.get("deps")).items()]
    out += [KeyChange("params", k, a, b) for k, (a, b) in _changes(old.get("params"), new.get("params")).items()]
    old_in, new_in = old.get("inputs") or {}, new.get("inputs") or {}
    for name in sorted(set(old_in) | set(new_in)):
        (ha, ma), (hb, mb) = _hash_and_materializer(old_in.get(name)), _hash_and_materializer(new_in.get(name))
        if (ha, ma) != (hb, mb):
            producers = {
                "old": _producer(store, ha, old.get("pipeline_run_id")),
                "new": _producer(store, hb, new.get("pipeline_run_id")),
            }
            out.append(KeyChange("inputs", name, ha, hb, produced_by=producers))
    return out + step_part_changes(old, new)


def step_part_changes(old: StepRunRecord | dict[str, Any], new: StepRunRecord | dict[str, Any]) -> list[KeyChange]:
    """The parts of the key that come from the step's ``@step(...)`` options, as each step run recorded
    them: its policy (:func:`policy_changes`) and, when both finished, its output names and materializers."""
    out = policy_changes((old.get("context") or {}).get("key_parts"), (new.get("context") or {}).get("key_parts"))
    old_out, new_out = old.get("outputs"), new.get("outputs")
    if old_out and new_out:
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


# a JSON escape: \uXXXX or one character (so an escaped backslash is never read as the start of another)
_JSON_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)")
_JSON_SHORT_CONTROLS = {"b": "\b", "f": "\f", "r": "\r"}


def recorded_json(value: Any) -> str:
    """``value`` as one line of JSON (keys sorted) whose control characters are left as the characters,
    as a recorded string's are, for whoever shows it to escape by one rule (the CLI: ``printable``);
    newline and tab stay ``\\n`` and ``\\t``, so the text stays one line."""

    def unescaped(m: re.Match[str]) -> str:
        escape = m.group(1)
        if escape in _JSON_SHORT_CONTROLS:
            return _JSON_SHORT_CONTROLS[escape]
        if len(escape) == 5 and int(escape[1:], 16) < 0x20:
            return chr(int(escape[1:], 16))
        return m.group()

    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return _JSON_ESCAPE.sub(unescaped, text)


def _short(value: Any, width: int = 40) -> str:
    text = value if isinstance(value, str) else recorded_json(value)
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


_MAP_ITEM = re.compile(r"\[\d+\]$")  # a mapped step's item: band_stats[4]
_SAME_INVOCATION = 20  # earlier runs of one invocation looked at (the scope may hide some)


def _earlier_of_invocation(store: MetadataStore, sr: StepRunRecord) -> list[dict[str, Any]]:
    """The newest finished earlier runs of ``sr``'s own invocation (its earlier attempts included), each
    with its pipeline's name, by the step-name index. A mapped step's items start close together, so the
    step's newest earlier runs may all be this run's other items: its own item is looked up by name."""
    r, p = s.step_runs, s.pipeline_runs
    query = (
        select(r, p.c.pipeline.label("pipeline"))
        .select_from(r.outerjoin(p, p.c.id == r.c.pipeline_run_id))
        .where(
            r.c.step_name == str(sr["step_name"]),
            r.c.invocation == str(sr["invocation"]),
            r.c.started_at < sr["started_at"],
            r.c.status.in_([RunStatus.COMPLETED, RunStatus.FAILED]),
            r.c.id != str(sr["id"]),
        )
        .order_by(r.c.started_at.desc())
        .limit(_SAME_INVOCATION)
    )
    with store.engine.connect() as conn:
        rows = [dict(row) for row in conn.execute(query).mappings()]
    for row in rows:
        row["status"] = RunStatus(row["status"])
    return rows


def _preferred(candidates: list[dict[str, Any]], sr: StepRunRecord, pipeline: str | None) -> dict[str, Any] | None:
    """The first (newest) candidate of the same step path, else any; of the same pipeline first."""
    same_path = [c for c in candidates if c.get("step_path") == sr.get("step_path")] or candidates
    return next((c for c in same_path if c.get("pipeline") == pipeline), same_path[0] if same_path else None)


def _visible(store: MetadataStore, candidates: list[dict[str, Any]], projects: Projects) -> list[dict[str, Any]]:
    if not limited(projects) or not candidates:
        return candidates
    seen = visible_step_runs(store, [str(c["id"]) for c in candidates], projects)
    return [c for c in candidates if str(c["id"]) in seen]


def _nearest(
    store: MetadataStore, sr: StepRunRecord, pipeline: str | None, projects: Projects
) -> dict[str, Any] | None:
    """The nearest earlier run to compare ``sr`` with: of the same invocation (same pipeline first), else
    — but never for a map item, whose other items are other work — of the same step in another pipeline
    run (same pipeline first). Another invocation of ``sr``'s own pipeline run is never an earlier run."""
    found = _preferred(_visible(store, _earlier_of_invocation(store, sr), projects), sr, pipeline)
    if found is not None or _MAP_ITEM.search(str(sr["invocation"])):
        return found
    mine = sr.get("pipeline_run_id")
    candidates = [
        c
        for c in store.earlier_step_runs(str(sr["step_name"]), sr["started_at"], exclude=str(sr["id"]))
        if mine is None or c.get("pipeline_run_id") != mine
    ]
    return _preferred(_visible(store, candidates, projects), sr, pipeline)


def _same_key_run(store: MetadataStore, sr: StepRunRecord, projects: Projects) -> dict[str, Any] | None:
    """The newest earlier completed run recorded under ``sr``'s cache key (its result is the one that
    could have been reused), else the newest failed one; of ``sr``'s own pipeline run only an earlier
    attempt of its own invocation; None when the one found is out of ``projects``. Read by the cache-key
    index: the newest by ``max(started_at)`` over that key's few rows, never by sorting them."""
    r, p = s.step_runs, s.pipeline_runs
    mine = sr.get("pipeline_run_id")
    where = [
        r.c.cache_key == str(sr["cache_key"]),
        r.c.started_at < sr["started_at"],
        r.c.id != str(sr["id"]),
    ]
    if mine is not None:
        where.append(
            or_(r.c.pipeline_run_id.is_(None), r.c.pipeline_run_id != mine, r.c.invocation == str(sr["invocation"]))
        )
    with store.engine.connect() as conn:
        for status in (RunStatus.COMPLETED, RunStatus.FAILED):
            newest = conn.execute(select(func.max(r.c.started_at)).where(*where, r.c.status == status)).scalar()
            if newest is None:
                continue
            query = (
                select(r, p.c.pipeline.label("pipeline"))
                .select_from(r.outerjoin(p, p.c.id == r.c.pipeline_run_id))
                .where(*where, r.c.status == status, r.c.started_at == newest)
            )
            row = conn.execute(query).mappings().first()
            if row is not None:
                found = dict(row)
                found["status"] = RunStatus(found["status"])
                return found if _visible(store, [found], projects) else None
    return None


def unexplained(new: StepRunRecord, old: StepRunRecord | dict[str, Any]) -> str:
    """What may have changed when two step runs' cache keys differ and no recorded component does: what
    the store does not record (a secret parameter's value, the secret salt), and a step's policy when
    either run predates recording it (``context.key_parts``)."""
    secret = sorted(k for k, v in (new.get("params") or {}).items() if v == REDACTED)
    recorded = all(isinstance((r.get("context") or {}).get("key_parts"), dict) for r in (new, old))
    what = [
        *([] if recorded else ["the step's CachePolicy (version, declared files' contents, env values)"]),
        *([f"the value of secret parameter(s) {', '.join(secret)}"] if secret else []),
        "the store's secret salt",
    ]
    return "the cache key differs but no recorded component does: " + ", or ".join(what) + " changed"


_LONG_HASH = re.compile(r"\b(blake3:[0-9a-f]{12})[0-9a-f]+")


def short_hashes(text: str) -> str:
    """``text`` with each full content hash cut to its first 12 hex digits (``blake3:9f87ac776bcb…``)."""
    return _LONG_HASH.sub(lambda m: m.group(1) + "…", text)


def _same_key(compared: StepRunSummary, prev: dict[str, Any]) -> tuple[str, list[str]]:
    """Why ``prev``'s result, under the same key, was not reused (the reason, and notes)."""
    same = f"same key as {compared.id[:8]}"
    marked = prev.get("invalidated_at")
    if marked is not None:  # isthmus invalidate: derived from a bad artifact, never a hit again
        why = str(prev.get("invalidated_reason") or "no reason recorded")
        when = marked.isoformat()[:19].replace("T", " ") + " UTC" if isinstance(marked, dt.datetime) else marked
        return f"{same}, whose result was invalidated at {when}: {short_hashes(why)}", [f"invalidated: {why}"]
    if prev["status"] != RunStatus.COMPLETED:
        return f"{same}, which {str(prev['status']).lower()}: nothing to reuse", []
    gone = "its cache entry expired or was cleared, or its artifacts were gone"
    return f"{same}, whose result was not reused ({gone})", []


def _not_reused(
    store: MetadataStore, sr: StepRunRecord, me: StepRunSummary, same: dict[str, Any], prev: dict[str, Any] | None
) -> Explanation:
    """``sr`` computed although ``same``, an earlier run, had its cache key: why that result was not
    reused, and (a note) what the nearest earlier run ``prev`` differs in."""
    compared = StepRunSummary.of(same)
    reason, notes = _same_key(compared, same)
    if prev is not None:
        changes = key_changes(store, prev, sr)  # type: ignore[arg-type]  # a step_runs row plus its pipeline
        differs = summarize(changes) if changes else unexplained(sr, prev)
        notes.append(f"the nearest earlier run, {str(prev['id'])[:8]}, differs: {differs}")
    decision = "running" if sr["status"] == RunStatus.RUNNING else "computed"
    return Explanation(me, decision, reason, compared_with=compared, notes=notes)


def _forced_by(sr: StepRunRecord, pipeline_run: Any) -> tuple[str, str]:
    """How a forced step run was forced: the reason's prefix and a note."""
    rerun_of = ((sr.get("context") or {}).get("native") or {}).get("rerun_of")
    rerun_of = rerun_of or ((pipeline_run or {}).get("context") or {}).get("rerun_of")
    if rerun_of:
        return (
            f"recomputed on request (rerun --from/--only of run {str(rerun_of)[:8]})",
            "recomputed on request: isthmus rerun --from/--only computed it without looking up the cache",
        )
    return "forced (cache=False)", "forced: computed without looking up the cache (cache=False or recompute=)"


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
    how, forced_note = _forced_by(sr, pipeline_run) if forced else ("", "")
    prev = _nearest(store, sr, pipeline, projects)
    if not forced and (prev is None or prev.get("cache_key") != sr.get("cache_key")):
        same = _same_key_run(store, sr, projects)
        if same is not None:  # its result could have been reused: why it was not says more than prev
            return _not_reused(store, sr, me, same, prev)
    if prev is None:
        item = bool(_MAP_ITEM.search(str(sr["invocation"])))
        first = "first run of this item" if item else "first run"
        note = f"no earlier run of {sr['invocation']}" if item else "no earlier run of this step"
        if forced:
            return Explanation(me, "forced", f"{how}; {first}", notes=[note, forced_note])
        return Explanation(me, "first", first, notes=[note])
    compared = StepRunSummary.of(prev)
    changes = key_changes(store, prev, sr)  # type: ignore[arg-type]  # a step_runs row plus its pipeline
    notes: list[str] = []
    if changes:
        reason = summarize(changes)
    elif prev.get("cache_key") == sr.get("cache_key"):
        reason, notes = _same_key(compared, prev)
    else:
        reason = unexplained(sr, prev)
    if forced:
        notes.append(forced_note)
        reason = f"{how}; {reason}" if changes else how
    decision = "forced" if forced else "running" if sr["status"] == RunStatus.RUNNING else "computed"
    return Explanation(me, decision, reason, compared_with=compared, changes=changes, notes=notes)
