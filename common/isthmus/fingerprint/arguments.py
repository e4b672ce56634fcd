"""What a step call adds to the code fingerprint: the project classes of the values it receives.

A step that calls ``model.predict(x)`` on a parameter or an input artifact runs the code of the value's
class, annotated or not; that class (and what it reaches) joins the code fingerprint of the call. Classes
come from argument values (walked through lists, tuples, sets and dicts) and from the ``python_type`` of
input artifact refs. Both lookups are memoized per process, so a call costs a few dict lookups.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Iterable
from pathlib import PurePath
from typing import Any

from isthmus.fingerprint.files import path_digest
from isthmus.fingerprint.locality import is_project_file, is_project_module

_PLAIN = frozenset({type(None), bool, int, float, complex, str, bytes, bytearray})
_CONTAINERS = (list, tuple, set, frozenset)
_TYPE_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$")
_is_project_type: dict[type, bool] = {}
_type_of_path: dict[str, type | None] = {}


def _project_type(tp: type) -> bool:
    hit = _is_project_type.get(tp)
    if hit is None:
        hit = _is_project_type[tp] = is_project_module(getattr(tp, "__module__", None))
    return hit


def classes_of_values(values: Iterable[Any]) -> set[type]:
    """Project classes of ``values`` and of the items of their lists, tuples, sets and dicts."""
    found: set[type] = set()
    stack = list(values)
    while stack:
        v = stack.pop()
        tp = type(v)
        if tp in _PLAIN:
            continue
        if _project_type(tp):
            found.add(tp)
        elif isinstance(v, _CONTAINERS):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
    return found


def class_of_type_path(python_type: str) -> type | None:
    """The project class named by an artifact ref's ``python_type`` (``module:qualname``), else None.

    The ref is untrusted: only a well-formed name of a module already imported or of a project file is
    imported (loading the artifact would import it anyway)."""
    if python_type in _type_of_path:
        return _type_of_path[python_type]
    found: type | None = None
    if _TYPE_PATH.match(python_type):
        module_name, _, qualname = python_type.partition(":")
        module = sys.modules.get(module_name)
        if module is None:
            try:
                spec = importlib.util.find_spec(module_name)
            except (ImportError, ValueError, AttributeError):
                spec = None
            if spec is not None and spec.origin and os.path.exists(spec.origin) and is_project_file(spec.origin):
                try:
                    module = importlib.import_module(module_name)
                except Exception:  # the materializer will report it when it loads the artifact
                    module = None
        obj: Any = module
        for part in qualname.split(".") if module is not None else ():
            obj = getattr(obj, part, None)
        if isinstance(obj, type) and _project_type(obj):
            found = obj
    _type_of_path[python_type] = found
    return found


def with_path_contents(value: Any) -> Any:
    """``value`` with every ``pathlib`` path (also inside lists, tuples and dicts) replaced by
    ``{"path": ..., "content_hash": ...}``: what is at the path, read now (see ``files.path_digest``)."""
    if isinstance(value, PurePath):
        return {"path": str(value), "content_hash": path_digest(value)}
    if isinstance(value, (list, tuple)):
        return [with_path_contents(v) for v in value]
    if isinstance(value, dict):
        return {k: with_path_contents(v) for k, v in value.items()}
    return value


def holds_path(value: Any) -> bool:
    """True when ``value`` is a path, or a list/tuple/dict holding one."""
    if isinstance(value, PurePath):
        return True
    if isinstance(value, (list, tuple)):
        return any(holds_path(v) for v in value)
    if isinstance(value, dict):
        return any(holds_path(v) for v in value.values())
    return False
