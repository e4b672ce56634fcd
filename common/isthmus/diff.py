"""Compare two pipeline runs: code, dependencies, parameters, inputs/outputs and environment."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from isthmus.records import StepRunRecord
from isthmus.store.metadata import MetadataStore


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
    changes = _changes(_logged(a), _logged(b))
    return {
        k: [old, new, new - old] if _number(old) and _number(new) else [old, new] for k, (old, new) in changes.items()
    }


def _hashes(refs: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v.get("content_hash") for k, v in (refs or {}).items() if isinstance(v, dict)}


def code_diff(store: MetadataStore, old_hash: str | None, new_hash: str | None) -> dict[str, str]:
    """Unified diff of each changed code component (step function, helpers, constants). The stored
    sources were redacted when the fingerprint was taken (``isthmus.fingerprint.redact``)."""
    if old_hash == new_hash:
        return {}
    old = (store.get_code_snapshot(old_hash) if old_hash else None) or {"components": {}, "sources": {}}
    new = (store.get_code_snapshot(new_hash) if new_hash else None) or {"components": {}, "sources": {}}
    out: dict[str, str] = {}
    for name in sorted(set(old["components"]) | set(new["components"])):
        if old["components"].get(name) == new["components"].get(name):
            continue
        before = old["sources"].get(name, "")
        after = new["sources"].get(name, "")
        text = "".join(
            difflib.unified_diff(
                before.splitlines(keepends=True),
                after.splitlines(keepends=True),
                fromfile=f"a/{name}",
                tofile=f"b/{name}",
            )
        )
        if not text:  # same text, different normalized form (e.g. a constant's value)
            text = f"--- a/{name}\n+++ b/{name}\n-{before}\n+{after}\n"
        out[name] = text
    return out


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


def diff_runs(store: MetadataStore, run_a: str, run_b: str) -> dict[str, Any]:
    """A JSON-ready description of everything that differs between two pipeline runs."""
    a = store.get_run(run_a)
    b = store.get_run(run_b)
    steps_a = _final_attempts(store.step_runs_of(a["id"]))
    steps_b = _final_attempts(store.step_runs_of(b["id"]))
    steps: dict[str, Any] = {}
    for name in list(dict.fromkeys([*steps_a, *steps_b])):
        sa, sb = steps_a.get(name), steps_b.get(name)
        if sa is None or sb is None:
            steps[name] = {"only_in": "b" if sa is None else "a"}
            continue
        entry: dict[str, Any] = {}
        if sa["status"] != sb["status"]:
            entry["status"] = [sa["status"], sb["status"]]
        if sa["cache_hit"] != sb["cache_hit"]:
            entry["cache_hit"] = [sa["cache_hit"], sb["cache_hit"]]
        code = code_diff(store, sa["code_hash"], sb["code_hash"])
        if code:
            entry["code"] = code
        for field, changed in (
            ("dependencies", _changes(sa["deps"], sb["deps"])),
            ("params", _changes(sa["params"], sb["params"])),
            ("inputs", _changes(_hashes(sa["inputs"]), _hashes(sb["inputs"]))),
            ("outputs", _changes(_hashes(sa["outputs"]), _hashes(sb["outputs"]))),
            ("metadata", metadata_changes(sa, sb)),
        ):
            if changed:
                entry[field] = changed
        if sa["cache_key"] != sb["cache_key"]:
            entry["cache_key"] = [sa["cache_key"], sb["cache_key"]]
        if entry:
            steps[name] = entry
    env_a = a.get("environment_hash") or next((s["environment_hash"] for s in steps_a.values()), None)
    env_b = b.get("environment_hash") or next((s["environment_hash"] for s in steps_b.values()), None)
    return {
        "run_a": {"id": a["id"], "pipeline": a["pipeline"], "orchestrator": a["orchestrator"], "status": a["status"]},
        "run_b": {"id": b["id"], "pipeline": b["pipeline"], "orchestrator": b["orchestrator"], "status": b["status"]},
        "params": _changes(a["params"], b["params"]),
        "steps": steps,
        "unchanged_steps": sorted(set(steps_a) & set(steps_b) - set(steps)),
        "environment": _environment_changes(store, env_a, env_b),
    }
