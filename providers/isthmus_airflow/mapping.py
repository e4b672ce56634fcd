"""Airflow task mapping (``.expand()``) over isthmus outputs, and joins of mapped results in order.

An isthmus task pushes an ``ArtifactRef`` dict; Airflow maps over whatever the upstream task pushed,
so ``.expand()`` over a ref would map over the ref's fields. Instead, a task whose output a mapped
task expands over pushes one ref per item of its list/tuple output (each item stored as its own
artifact, tagged with its index and the whole output's ref: :func:`isthmus.local_run.split_items`, the
split a local run makes, so an item's cache key is the same everywhere), and refuses any other output
with an error that names the fix.

A task that receives a list of refs puts it back in order before the StepRunner sees it:
- all the item refs of one output, complete: the whole output's ref (so the step's cache key is the
  one a local run computes from the same list);
- the outputs of a mapped task: by map index (Airflow may hand them over in another order).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from isthmus.artifacts.refs import ArtifactRef
from isthmus.local_run import ITEM_KEY, SEQUENCE_TYPES, split_items

__all__ = ["ITEM_KEY", "MAPPED_KEY", "expanded_over", "item_refs", "joined", "tag_mapped"]

MAPPED_KEY = "airflow_mapped"  # ref metadata of a mapped task's output: {"task_id": ..., "map_index": i}


def expanded_over(task: Any, context: Any) -> bool:
    """Whether a mapped task expands over this (unmapped) task's return value."""
    map_index = getattr(context.get("ti"), "map_index", -1)
    if map_index is not None and map_index >= 0:
        return False
    try:
        return next(task.iter_mapped_dependants(), None) is not None
    except Exception:  # an operator outside a DAG
        return False


def item_refs(step_name: str, outputs: dict[str, ArtifactRef], artifacts: Any) -> list[dict[str, Any]]:
    """One ref per item of the step's list/tuple output; AirflowFailException for anything else."""
    if len(outputs) != 1:
        raise AirflowFailException(
            f"step {step_name!r} has outputs {list(outputs)}: .expand() cannot map over several outputs; "
            "map over a step that returns one list"
        )
    ((name, ref),) = outputs.items()
    if ref.python_type not in SEQUENCE_TYPES:
        raise AirflowFailException(
            f"step {step_name!r} returned a {ref.python_type.replace(':', '.')}, and .expand() maps only over "
            "a list or tuple output (it would map over the fields of its artifact ref); return a list "
            "from the step, or expand over a plain @task that loads it with isthmus.load(ref)"
        )
    return [item.to_dict() for item in split_items(step_name, name, ref, artifacts)]


def tag_mapped(ref: dict[str, Any], task_id: str, map_index: int) -> dict[str, Any]:
    """A mapped task's output ref, marked with the map index it came from."""
    meta = dict(ref.get("metadata") or {})
    meta[MAPPED_KEY] = {"task_id": task_id, "map_index": map_index}
    return {**ref, "metadata": meta}


def _items(value: Any) -> list[Any] | None:
    """The items of a list, tuple or Airflow lazy XCom sequence; None for anything else (or a mapping)."""
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__len__") or not hasattr(value, "__getitem__"):
        return None
    try:  # by index: iterating Airflow's lazy XCom sequence logs an error at its end
        return [value[i] for i in range(len(value))]
    except Exception:
        return None


def _refs(value: Any) -> list[ArtifactRef] | None:
    """The refs of a list/tuple/lazy sequence made only of refs, else None."""
    items = _items(value)
    if items is None:
        return None
    refs = [ArtifactRef.coerce(item) for item in items]
    return refs if refs and all(r is not None for r in refs) else None  # type: ignore[return-value]


def _meta(ref: ArtifactRef, key: str) -> dict[str, Any] | None:
    meta = ref.metadata.get(key)
    return meta if isinstance(meta, dict) else None


def whole_output(refs: list[ArtifactRef]) -> ArtifactRef | None:
    """The output ref when ``refs`` are all its items, in order; else None."""
    tags = [_meta(r, ITEM_KEY) for r in refs]
    if any(t is None for t in tags):
        return None
    parents = {str(t.get("of", {}).get("content_hash")) for t in tags}  # type: ignore[union-attr]
    if len(parents) != 1 or [t.get("index") for t in tags] != list(range(len(refs))):  # type: ignore[union-attr]
        return None
    if any(t.get("count") != len(refs) for t in tags):  # type: ignore[union-attr]
        return None
    parent = ArtifactRef.coerce(tags[0]["of"])  # type: ignore[index]
    if parent is None:
        return None
    return parent


def in_map_order(refs: list[ArtifactRef]) -> list[ArtifactRef] | None:
    """Refs of one mapped task sorted by map index (None unless every ref is tagged by that task)."""
    tags = [_meta(r, MAPPED_KEY) for r in refs]
    if any(t is None or not isinstance(t.get("map_index"), int) for t in tags):
        return None
    if len({t.get("task_id") for t in tags}) != 1:  # type: ignore[union-attr]
        return None
    order = sorted(range(len(refs)), key=lambda i: tags[i]["map_index"])  # type: ignore[index]
    return [refs[i] for i in order]


def joined(value: Any) -> Any:
    """An argument as the step should see it: see the module docstring. An empty lazy XCom sequence (the
    results of a mapped task with no map index) is ``[]``; in a list of outputs (a fan-in list) each one
    is joined; anything else is unchanged."""
    refs = _refs(value)
    if refs is None:
        items = _items(value)
        if items is None:
            return value
        if not isinstance(value, (list, tuple)):  # Airflow's lazy sequence of a mapped task's results
            return items
        if any(_refs(v) is not None for v in items):
            return type(value)(joined(v) for v in items)  # a fan-in list holding a list output's items
        return value
    ordered = in_map_order(refs)
    if ordered is not None:
        return ordered
    items = sorted(refs, key=lambda r: (_meta(r, ITEM_KEY) or {}).get("index", -1))
    whole = whole_output(items)
    return whole if whole is not None else refs


# A ``zip`` fill value: the mapped task's lists are zipped with ``fillvalue`` so that one shorter than the
# others shows up as a missing item (an error naming it), never as a silently shorter map.
MISSING_ITEM = {"__isthmus_missing_item__": True}


def map_arguments(step_name: str, names: tuple[str, ...], values: Any, map_index: int) -> dict[str, Any]:
    """The mapped arguments of one map index: ``values`` is the item (one name) or the zipped items."""
    if len(names) == 1:
        return {names[0]: values}
    items = _items(values)
    if items is None or len(items) != len(names):
        raise AirflowFailException(
            f"step {step_name!r}: map index {map_index} got {type(values).__name__} for the zipped arguments "
            f"{list(names)}; expected one item each (expand it over XComArg.zip of their lists)"
        )
    short = [name for name, item in zip(names, items, strict=True) if item == MISSING_ITEM]
    if short:
        raise AirflowFailException(
            f"step {step_name!r}: map() lists must have the same length, but {short} have no item {map_index} "
            f"(zipped: {list(names)}); make the steps that return them return lists of the same length"
        )
    return dict(zip(names, items, strict=True))
