"""Compare two pipeline runs, or two step runs: what changed, apart from how each ran.

*What changed* — code (unified diff per changed function), dependency versions, parameters, inputs,
the ``@step(...)`` parts of the cache key (policy version and settings, declared files and environment
variables whose contents or value changed — never the value; compared as ``isthmus why`` compares them),
outputs, logged metadata, resources, status and errors, the environment — is kept apart from *how it
ran* (cache hit or computed, orchestrator, duration): a computed run and an all-hit run of the same
inputs differ only in the latter. Small outputs (JSON or text of a few hundred bytes, loaded through
the artifact store and checked against their hash) are shown as values, numbers with their change, a
dict of them also key by key (``output_fields``: ``r2``, ``detail.rmse``); anything else by its content
hash, and the hashes of changed inputs and outputs whose artifacts gc deleted are listed
(``deleted_artifacts``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from isthmus.artifacts.refs import ArtifactRef
from isthmus.errors import IsthmusError
from isthmus.explain import code_diffs, step_part_changes, unexplained
from isthmus.records import StepRunRecord
from isthmus.redaction import is_secret_name, redact_params
from isthmus.store.metadata import MetadataStore

if TYPE_CHECKING:
    from isthmus.artifacts.store import ArtifactStore

SMALL_BYTES = 512  # outputs at most this big (JSON or text) are shown as values
_SHOWN_MATERIALIZERS = ("json", "str")


def _changes(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, list[Any]]:
    """``{key: [old, new]}`` for every key whose value differs (None where absent)."""
    a, b = a or {}, b or {}
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _logged(step_run: StepRunRecord) -> dict[str, Any]:
    """What a step logged: its own metadata by key, each output's as ``output.key``."""
    out = dict(step_run.get("metadata") or {})
    for name, ref in (step_run.get("outputs") or {}).items():
        logged = ref.get("metadata", {}).get("logged") if isinstance(ref, dict) else None
        if isinstance(logged, dict):
            out.update({f"{name}.{k}": v for k, v in logged.items()})
    return out


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def metadata_changes(a: StepRunRecord, b: StepRunRecord) -> dict[str, list[Any]]:
    """``{key: [old, new]}`` of logged metadata that differs; numbers as ``[old, new, new - old]``."""
    return _with_delta(_changes(_logged(a), _logged(b)))


def _hashes(refs: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v.get("content_hash") for k, v in (refs or {}).items() if isinstance(v, dict)}


def code_diff(store: MetadataStore, old_hash: str | None, new_hash: str | None) -> dict[str, str]:
    """Unified diff of each changed code component (step function, helpers, constants), as ``isthmus
    why`` shows them (:func:`isthmus.explain.code_diffs`; a missing snapshot counts as empty). The stored
    sources were redacted when the fingerprint was taken (``isthmus.fingerprint.redact``)."""
    return {name: change.diff or "" for name, change in code_diffs(store, old_hash, new_hash).items()}


def _environment_changes(store: MetadataStore, old_hash: str | None, new_hash: str | None) -> dict[str, Any]:
    if old_hash == new_hash or not old_hash or not new_hash:
        return {}
    old = store.get_environment(old_hash) or {}
    new = store.get_environment(new_hash) or {}
    changes: dict[str, Any] = {}
    for section in ("python", "platform", "git", "env"):
        diff = _changes(old.get(section), new.get(section))
        if diff:
            changes[section] = diff
    for key in ("container_image", "host", "user"):
        if old.get(key) != new.get(key):
            changes[key] = [old.get(key), new.get(key)]
    packages = _changes(old.get("packages"), new.get("packages"))
    if packages:
        changes["packages"] = packages
    return changes


def _final_attempts(step_runs: Sequence[StepRunRecord]) -> dict[str, StepRunRecord]:
    out: dict[str, StepRunRecord] = {}
    for sr in step_runs:  # ordered by start time: the last attempt wins
        out[sr["invocation"]] = sr
    return out


def small_value(artifacts: ArtifactStore | None, ref: Any) -> Any:
    """The value of a small JSON or text artifact (loaded and checked against its hash), else its hash."""
    if not isinstance(ref, dict):
        return None
    content_hash = ref.get("content_hash")
    materializer = str(ref.get("materializer") or "").split("@", 1)[0]
    size = ref.get("size")
    if artifacts is None or materializer not in _SHOWN_MATERIALIZERS or not isinstance(size, int) or size > SMALL_BYTES:
        return content_hash
    try:
        value = artifacts.load(ArtifactRef.from_dict(ref), verify=True)
    except (IsthmusError, ValueError, OSError):  # gone, corrupt or not of this store: its hash says enough
        return content_hash
    return value


def _shown_output(name: str, value: Any, content_hash: Any) -> Any:
    """An output's small value as a diff may show it: by its hash when the output's name is a secret's
    (``api_token``), else with secret-named keys and credential-shaped text hidden (as parameters are)."""
    if is_secret_name(name):
        return content_hash
    return redact_params({"value": value})["value"] if isinstance(value, (str, dict, list)) else value


def _delta(old: float, new: float) -> float:
    """``new - old``, a float without the last digits' rounding noise (0.9 -> 0.93: 0.03, not 0.030000000000000027)."""
    change = new - old
    scale = max(abs(old), abs(new))
    if isinstance(change, int) or not (math.isfinite(change) and math.isfinite(scale)) or scale == 0:
        return change
    # the operands hold 15-16 significant digits: digits of the change below that are rounding noise
    return round(change, 14 - math.floor(math.log10(scale)))


def _with_delta(changes: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """``{key: [old, new]}``, numbers as ``[old, new, new - old]``."""
    return {
        k: [old, new, _delta(old, new)] if _number(old) and _number(new) else [old, new]
        for k, (old, new) in changes.items()
    }


def how_it_ran(sr: StepRunRecord) -> dict[str, Any]:
    """How a step run ran (never a change): cache hit / computed / forced / off, orchestrator, duration."""
    if sr.get("cache_hit"):
        cache = "hit"
    elif not sr.get("cache_key"):
        cache = "off"
    else:
        cache = "forced" if (sr.get("context") or {}).get("forced") else "computed"
    return {
        "step_run_id": sr["id"],
        "cache": cache,
        "source_step_run_id": sr.get("source_step_run_id"),
        "orchestrator": sr.get("orchestrator"),
        "attempt": sr.get("attempt"),
        "duration_ms": sr.get("duration_ms"),
    }


def step_changes(
    store: MetadataStore, sa: StepRunRecord, sb: StepRunRecord, artifacts: ArtifactStore | None = None
) -> dict[str, Any]:
    """What changed from step run ``sa`` to ``sb`` (empty when only how they ran differs)."""
    entry: dict[str, Any] = {}
    if sa["status"] != sb["status"]:
        entry["status"] = [sa["status"], sb["status"]]
    if (sa.get("error") or None) != (sb.get("error") or None):
        entry["error"] = [sa.get("error"), sb.get("error")]
    code = code_diff(store, sa["code_hash"], sb["code_hash"])
    if code:
        entry["code"] = code
        entry["code_sources"] = _sources(store, sa["code_hash"], sb["code_hash"], code)
    out_a, out_b = _hashes(sa["outputs"]), _hashes(sb["outputs"])
    outputs = _changes(out_a, out_b)
    output_values = _with_delta(
        {
            k: [
                _shown_output(k, small_value(artifacts, (sa["outputs"] or {}).get(k)), out_a.get(k)),
                _shown_output(k, small_value(artifacts, (sb["outputs"] or {}).get(k)), out_b.get(k)),
            ]
            for k in outputs
        }
    )
    for name, changed in (
        ("dependencies", _changes(sa["deps"], sb["deps"])),
        ("params", _changes(sa["params"], sb["params"])),
        ("inputs", _changes(_hashes(sa["inputs"]), _hashes(sb["inputs"]))),
        ("outputs", outputs),
        ("output_values", output_values),
        ("output_fields", _field_changes(output_values)),
        ("metadata", metadata_changes(sa, sb)),
        ("resources", _changes(sa.get("resources"), sb.get("resources"))),
        # the @step(...) parts of the key as isthmus why names them: policy version and settings, each
        # declared file or env variable whose contents or value changed (never the value), materializers
        ("key_changes", [dataclasses.asdict(c) for c in step_part_changes(sa, sb)]),
    ):
        if changed:
            entry[name] = changed
    named = {h for pair in (*outputs.values(), *entry.get("inputs", {}).values()) for h in pair if h}
    deleted = sorted(named - set(store.artifacts_by_hash(sorted(named), ()))) if named else []
    if deleted:
        entry["deleted_artifacts"] = deleted
    if sa["cache_key"] != sb["cache_key"]:
        entry["cache_key"] = [sa["cache_key"], sb["cache_key"]]
        if not set(entry) & _KEY_PARTS:
            entry["cache_key_unexplained"] = unexplained(sb, sa)
    return entry


# what step_changes shows of the parts of a cache key: when none differs, the key's change is unexplained
_KEY_PARTS = {"code", "dependencies", "params", "inputs", "key_changes"}


def _flat(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A dict's leaves by their key path (``detail.rmse``); an empty dict is a leaf."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        path = f"{prefix}{key}"
        if isinstance(item, dict) and item:
            out.update(_flat(item, path + "."))
        else:
            out[path] = item
    return out


def _field_changes(output_values: dict[str, list[Any]]) -> dict[str, dict[str, list[Any]]]:
    """``{output: {key path: [old, new(, new - old)]}}`` of each output shown as a dict on both sides (a
    small metrics dict): the keys that differ, numbers with their change."""
    out: dict[str, dict[str, list[Any]]] = {}
    for name, (old, new, *_) in output_values.items():
        if isinstance(old, dict) and isinstance(new, dict):
            fields = _with_delta(_changes(_flat(old), _flat(new)))
            if fields:
                out[name] = fields
    return out


def _sources(store: MetadataStore, old_hash: str | None, new_hash: str | None, names: Any) -> dict[str, list[str]]:
    """``{component: [old source, new source]}`` of the changed components (for side-by-side views)."""
    old = (store.get_code_snapshot(old_hash) if old_hash else None) or {"sources": {}}
    new = (store.get_code_snapshot(new_hash) if new_hash else None) or {"sources": {}}
    return {n: [old["sources"].get(n, ""), new["sources"].get(n, "")] for n in names}


def _run_summary(store: MetadataStore, run: Any) -> dict[str, Any]:
    started, ended = run.get("started_at"), run.get("ended_at")
    took = (ended - started).total_seconds() * 1000 if started and ended else None
    return {
        "id": run["id"],
        "pipeline": run["pipeline"],
        "orchestrator": run["orchestrator"],
        "status": run["status"],
        "error": run.get("error"),
        "started_at": started.isoformat() if started else None,
        "duration_ms": took,
    }


def diff_runs(store: MetadataStore, run_a: str, run_b: str, artifacts: ArtifactStore | None = None) -> dict[str, Any]:
    """A JSON-ready description of what differs between two pipeline runs (``steps``, ``params``,
    ``environment``: what changed) and of how each step ran in each (``ran``)."""
    a = store.get_run(run_a)
    b = store.get_run(run_b)
    steps_a = _final_attempts(store.step_runs_of(a["id"]))
    steps_b = _final_attempts(store.step_runs_of(b["id"]))
    steps: dict[str, Any] = {}
    ran: dict[str, Any] = {}
    for name in list(dict.fromkeys([*steps_a, *steps_b])):
        sa, sb = steps_a.get(name), steps_b.get(name)
        ran[name] = {"a": how_it_ran(sa) if sa else None, "b": how_it_ran(sb) if sb else None}
        if sa is None or sb is None:
            steps[name] = {"only_in": "b" if sa is None else "a"}
            continue
        entry = step_changes(store, sa, sb, artifacts)
        if entry:
            steps[name] = entry
    env_a = a.get("environment_hash") or next((s["environment_hash"] for s in steps_a.values()), None)
    env_b = b.get("environment_hash") or next((s["environment_hash"] for s in steps_b.values()), None)
    return {
        "run_a": _run_summary(store, a),
        "run_b": _run_summary(store, b),
        "params": _changes(a["params"], b["params"]),
        "steps": steps,
        "unchanged_steps": sorted(set(steps_a) & set(steps_b) - set(steps)),
        "environment": _environment_changes(store, env_a, env_b),
        "ran": ran,
    }


def diff_step_runs(
    store: MetadataStore, sa: StepRunRecord, sb: StepRunRecord, artifacts: ArtifactStore | None = None
) -> dict[str, Any]:
    """What differs between two step runs (``changes``, ``environment``) and how each ran (``ran``)."""
    return {
        "step_run_a": {k: sa.get(k) for k in ("id", "invocation", "step_name", "pipeline_run_id", "status")},
        "step_run_b": {k: sb.get(k) for k in ("id", "invocation", "step_name", "pipeline_run_id", "status")},
        "changes": step_changes(store, sa, sb, artifacts),
        "environment": _environment_changes(store, sa.get("environment_hash"), sb.get("environment_hash")),
        "ran": {"a": how_it_ran(sa), "b": how_it_ran(sb)},
    }


def is_json_small(value: Any) -> bool:
    """Whether ``value`` reads well inline (a number, a short string, a small list or dict)."""
    try:
        return len(json.dumps(value, default=str)) <= 120
    except (TypeError, ValueError):
        return False
