"""The Flyte 2 interface of a step: small JSON-like values as themselves, everything else as an
:class:`~isthmus.artifacts.refs.ArtifactRef` (a dataclass Flyte 2 carries as a struct; the object
itself stays in the isthmus artifact store, stored once)."""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from isthmus.artifacts.refs import ArtifactRef
from isthmus.errors import StepDefinitionError

_PRIMITIVES = (int, float, str, bool)
_UNIONS = (typing.Union, types.UnionType)


def is_small_type(tp: Any) -> bool:
    """True if values of ``tp`` travel as plain values (JSON-like)."""
    if tp in _PRIMITIVES or tp is dict:
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in _UNIONS:
        members = [a for a in args if a is not type(None)]
        return bool(members) and all(is_small_type(a) for a in members)
    if origin is list:
        return len(args) == 1 and is_small_type(args[0])
    if origin is dict:
        return len(args) == 2 and args[0] is str and is_small_type(args[1])
    return False


def flyte2_type(annotation: Any, default: Any = inspect.Parameter.empty) -> Any:
    """The Flyte-facing type of a step parameter or output."""
    if annotation is inspect.Parameter.empty or annotation is None or isinstance(annotation, str):
        if default is not inspect.Parameter.empty and default is not None and type(default) in _PRIMITIVES:
            return type(default)
        return ArtifactRef | None if default is None else ArtifactRef
    if is_small_type(annotation):
        return annotation
    optional = default is None or (
        typing.get_origin(annotation) in _UNIONS and type(None) in typing.get_args(annotation)
    )
    return ArtifactRef | None if optional else ArtifactRef


def _hints(fn: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolved forward references: use what can be read
        return {k: v for k, v in getattr(fn, "__annotations__", {}).items() if not isinstance(v, str)}


def step_signature(step: Any) -> tuple[inspect.Signature, dict[str, Any], list[Any]]:
    """The Flyte 2 task signature of ``step``, its annotations, and the Flyte type of each output."""
    hints = _hints(step.fn)
    params: list[inspect.Parameter] = []
    annotations: dict[str, Any] = {}
    for name, p in step.signature.parameters.items():
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise StepDefinitionError(
                f"step {step.name!r}: *args/**kwargs parameters cannot become Flyte 2 task inputs; name each parameter"
            )
        tp = flyte2_type(hints.get(name, inspect.Parameter.empty), p.default)
        annotations[name] = tp
        kind = (
            inspect.Parameter.KEYWORD_ONLY
            if p.kind is inspect.Parameter.KEYWORD_ONLY
            else inspect.Parameter.POSITIONAL_OR_KEYWORD
        )
        params.append(inspect.Parameter(name, kind, default=p.default, annotation=tp))
    names = step.output_names
    ret = hints.get("return", inspect.Parameter.empty)
    if len(names) == 1:
        out_types = [ret]
    elif isinstance(ret, type) and issubclass(ret, tuple) and hasattr(ret, "_fields"):
        field_hints = _hints(ret)
        out_types = [field_hints.get(f, inspect.Parameter.empty) for f in ret._fields]
    elif typing.get_origin(ret) is tuple and len(typing.get_args(ret)) == len(names):
        out_types = list(typing.get_args(ret))
    else:
        out_types = [inspect.Parameter.empty] * len(names)
    outputs = [flyte2_type(t) for t in out_types]
    returns: Any = outputs[0] if len(outputs) == 1 else tuple[tuple(outputs)]  # type: ignore[misc]
    annotations["return"] = returns
    return inspect.Signature(params, return_annotation=returns), annotations, outputs
