"""What a step call's values add to its cache key: one walk over a value, with a visitor per concern.

:func:`walk` knows how values are made (lists, tuples, sets, mappings and, when a visitor asks, the
fields of objects: dataclasses, named tuples, ``__dict__`` and ``__slots__``), stops at cycles and
hands each part to a :class:`Visitor`. The concerns of a step call are visitors:

- :func:`plain_form` — the JSON form of a parameter, with every ``pathlib`` path replaced by what is at
  the path now (``files.path_digest``), and the project classes of the containers it is made of; raises
  :class:`NotPlain` for anything else (such a value becomes an input artifact);
- :func:`code_of_value` — the project functions and classes a value references at any depth: the classes
  of the objects it holds, and functions or classes passed as values (``s.run(ops.double, 10)``);
- :func:`code_of_ref` — the same for an input artifact: its ``python_type`` and the code its
  materializer recorded when it was saved (``metadata["code"]``: a pickled list of ``Model`` objects
  names ``Model``, whose code its content hash does not cover);
- ``isthmus.cache.protect_secrets`` — the secret parts of a parameter, replaced by a keyed hash.

A step that calls ``model.predict(x)`` runs the code of the value's class, annotated or not: that code
joins the code fingerprint of the call. Lookups by name are memoized per process.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
from collections.abc import Iterable, Mapping
from pathlib import PurePath
from typing import Any

from isthmus.fingerprint.files import path_digest
from isthmus.fingerprint.locality import is_project_module, project_module

_SCALARS = frozenset({type(None), bool, int, float, complex, str, bytes, bytearray})
_TYPE_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.<>]*$")
CODE_METADATA = "code"  # ArtifactRef.metadata key: project code the artifact's bytes refer to by name
INCOMPLETE = "code_incomplete"  # ... set when the value was too large to list it all
MAX_NODES = 100_000


class NotPlain(TypeError):
    """The value is not plain data (JSON values and paths)."""


class NotListed(ValueError):
    """The code a value references could not all be listed: more objects than the budget, or reading a
    part of it raised."""


DESCEND: Any = object()


class Visitor:
    """One concern of :func:`walk`. Hooks receive the results of the parts they are made of; ``name`` is
    the key or field a value is held under (for credential names)."""

    objects = False  # open objects (dataclass fields, __dict__, __slots__), not only containers
    budget: int | None = None  # at most this many parts, else NotListed

    def before(self, value: Any, name: str) -> Any:
        """A result for ``value`` without looking inside it, or :data:`DESCEND`."""
        return DESCEND

    def leaf(self, value: Any, name: str) -> Any:
        return value

    def sequence(self, value: Any, items: list[Any]) -> Any:
        return items

    def members(self, value: Any, items: list[Any]) -> Any:
        return items

    def mapping(self, value: Any, pairs: list[tuple[Any, Any]]) -> Any:
        return dict(pairs)

    def obj(self, value: Any, fields: list[tuple[str, Any]]) -> Any:
        return None

    def cycle(self, value: Any) -> Any:
        return None


def _object_fields(value: Any) -> list[tuple[str, Any]] | None:
    """The state an object holds: dataclass fields, ``__dict__`` and ``__slots__`` (None: no such state)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [(f.name, getattr(value, f.name, None)) for f in dataclasses.fields(value)]
    fields: list[tuple[str, Any]] = []
    state = getattr(value, "__dict__", None)
    if isinstance(state, dict):
        fields.extend((k, v) for k, v in state.items() if isinstance(k, str))
    for cls in type(value).__mro__:
        for slot in getattr(cls, "__slots__", ()) if isinstance(getattr(cls, "__slots__", ()), tuple) else ():
            if isinstance(slot, str) and slot not in ("__dict__", "__weakref__") and hasattr(value, slot):
                fields.append((slot, getattr(value, slot)))
    return fields or None


def walk(value: Any, visitor: Visitor, name: str = "") -> Any:
    """Fold ``value`` with ``visitor`` (see the module docstring)."""
    if type(value) in _SCALARS:  # most parameters: no walk to set up
        early = visitor.before(value, name)
        return visitor.leaf(value, name) if early is DESCEND else early
    return _Walk(visitor).run(value, name)


class _Walk:
    def __init__(self, visitor: Visitor) -> None:
        self.visitor = visitor
        self.path: set[int] = set()
        self.left = visitor.budget

    def run(self, value: Any, name: str) -> Any:
        v = self.visitor
        early = v.before(value, name)
        if early is not DESCEND:
            return early
        if self.left is not None:
            self.left -= 1
            if self.left < 0:
                raise NotListed(f"more than {v.budget} objects")
        tp = type(value)
        if tp in _SCALARS or isinstance(value, (PurePath, type, types.FunctionType, types.ModuleType)):
            return v.leaf(value, name)
        if id(value) in self.path:
            return v.cycle(value)
        self.path.add(id(value))
        try:
            if isinstance(value, (list, tuple)):
                return v.sequence(value, [self.run(x, name) for x in value])
            if isinstance(value, (set, frozenset)):
                return v.members(value, [self.run(x, name) for x in value])
            if isinstance(value, Mapping):
                return v.mapping(
                    value,
                    [(self.run(k, ""), self.run(x, k if isinstance(k, str) else name)) for k, x in value.items()],
                )
            if v.objects:
                fields = _object_fields(value)
                if fields is not None:
                    return v.obj(value, [(k, self.run(x, k)) for k, x in fields])
            return v.leaf(value, name)
        finally:
            self.path.discard(id(value))


# -- project code -------------------------------------------------------------------------------------
_is_project_type: dict[type, bool] = {}


def _project_type(tp: type) -> bool:
    hit = _is_project_type.get(tp)
    if hit is None:
        hit = _is_project_type[tp] = is_project_module(getattr(tp, "__module__", None))
    return hit


def project_code(obj: Any) -> Any | None:
    """``obj`` itself when it is a project function or class, else the project class of ``obj``, else None."""
    if isinstance(obj, type):
        return obj if _project_type(obj) else None
    if isinstance(obj, types.FunctionType):
        return obj if _project_function(obj) else None
    tp = type(obj)
    return tp if tp not in _SCALARS and _project_type(tp) else None


@functools.lru_cache(maxsize=4096)
def _project_function(fn: types.FunctionType) -> bool:
    return is_project_module(getattr(fn, "__module__", None))


class _Code(Visitor):
    objects = True
    budget = MAX_NODES

    def __init__(self) -> None:
        self.found: set[Any] = set()

    def _see(self, value: Any) -> None:
        code = project_code(value)
        if code is not None:
            self.found.add(code)

    def leaf(self, value: Any, name: str) -> Any:
        self._see(value)

    def sequence(self, value: Any, items: list[Any]) -> Any:
        self._see(value)

    members = sequence

    def mapping(self, value: Any, pairs: list[tuple[Any, Any]]) -> Any:
        self._see(value)

    def obj(self, value: Any, fields: list[tuple[str, Any]]) -> Any:
        self._see(value)


def code_of_value(value: Any) -> set[Any]:
    """The project functions and classes ``value`` references at any depth; raises :class:`NotListed`
    past ``MAX_NODES`` objects."""
    visitor = _Code()
    try:
        walk(value, visitor)
    except NotListed:
        raise
    except Exception as exc:  # a property or a mapping that raises when read
        raise NotListed(f"reading it raised {type(exc).__name__}") from None
    return visitor.found


def code_paths(code: Iterable[Any]) -> list[str]:
    """``module:qualname`` of each function or class (what ``metadata["code"]`` holds)."""
    return sorted({f"{c.__module__}:{c.__qualname__}" for c in code})


_MAX_CODE_CHARS = 64 * 1024  # a ref's metadata stays small (see isthmus.artifacts.refs)


def code_metadata(code: Iterable[Any]) -> dict[str, Any] | None:
    """The metadata an artifact carries about the project code its bytes name: ``{"code": [...]}``, or
    ``{"code_incomplete": True}`` when the list would be too long for a ref (the key then misses)."""
    paths = code_paths(code)
    if not paths:
        return None
    if sum(len(p) + 4 for p in paths) > _MAX_CODE_CHARS:
        return {INCOMPLETE: True}
    return {CODE_METADATA: paths}


_by_path: dict[str, Any] = {}


def code_of_path(path: str) -> Any | None:
    """The project function or class named ``module:qualname``, else None.

    The name is untrusted (it comes from an artifact ref): only a well-formed name of a project module
    is ever imported (loading the artifact would import it anyway)."""
    if path in _by_path:
        return _by_path[path]
    found: Any = None
    if len(path) <= 1000 and _TYPE_PATH.match(path):
        module_name, _, qualname = path.partition(":")
        obj: Any = project_module(module_name)
        if obj is None:
            return None  # not importable now: looked up again next time
        if isinstance(obj, types.ModuleType):
            for part in qualname.split("."):
                obj = getattr(obj, part, None)
            found = project_code(obj) if isinstance(obj, (type, types.FunctionType)) else None
    _by_path[path] = found
    return found


class IncompleteCode:
    """Stands for code that could not all be listed (a value too large to walk): the key it joins is
    made unique to the process — a miss, never a stale hit."""

    __slots__ = ()


INCOMPLETE_CODE = IncompleteCode()


def code_of_ref(ref: Any) -> set[Any]:
    """The project code an input artifact ref refers to: its ``python_type`` and the code its
    materializer recorded (``INCOMPLETE_CODE`` among them when that list is incomplete)."""
    found = {c for c in [code_of_path(ref.python_type)] if c is not None}
    metadata = ref.metadata if isinstance(ref.metadata, dict) else {}
    listed = metadata.get(CODE_METADATA)
    if isinstance(listed, list):
        found.update(c for p in listed[:10_000] if isinstance(p, str) and (c := code_of_path(p)) is not None)
    if metadata.get(INCOMPLETE):
        found.add(INCOMPLETE_CODE)
    return found


# -- the plain (JSON) form of a parameter ---------------------------------------------------------------
class _Plain(Visitor):
    def __init__(self, code: set[Any], paths: bool) -> None:
        self.code = code
        self.paths = paths

    def before(self, value: Any, name: str) -> Any:
        if isinstance(value, (set, frozenset)) or (isinstance(value, Mapping) and not isinstance(value, dict)):
            raise NotPlain(type(value).__name__)  # without reading it
        if (  # a subclass that holds more than its items: a defaultdict's factory, attributes set on it
            type(value) not in _PLAIN_CONTAINERS
            and isinstance(value, (list, tuple, dict))
            and (getattr(value, "default_factory", None) is not None or getattr(value, "__dict__", None))
        ):
            raise NotPlain(f"a {type(value).__name__} with state besides its items")
        return DESCEND

    def leaf(self, value: Any, name: str) -> Any:
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return value
        if isinstance(value, PurePath) and self.paths:  # counts by what is there now; the step gets the path
            return {"path": str(value), "content_hash": path_digest(value)}
        item = getattr(value, "item", None)  # numpy scalars
        if callable(item) and type(value).__module__ == "numpy" and getattr(value, "ndim", 1) == 0:
            return self.leaf(item(), name)
        raise NotPlain(type(value).__name__)

    def _container(self, value: Any) -> None:
        if type(value) not in (list, tuple, dict) and _project_type(type(value)):
            self.code.add(type(value))  # a project subclass of list or dict: its methods may run

    def sequence(self, value: Any, items: list[Any]) -> Any:
        self._container(value)
        return items

    def mapping(self, value: Any, pairs: list[tuple[Any, Any]]) -> Any:
        if not all(isinstance(k, str) for k, _ in pairs):
            raise NotPlain("dict keys must be strings")
        self._container(value)
        return dict(pairs)

    def cycle(self, value: Any) -> Any:
        raise NotPlain("a value that contains itself")


def plain_form(value: Any, code: set[Any] | None = None, *, paths: bool = True) -> Any:
    """The JSON form of ``value`` (with ``paths``, a path as what is at it; else a path is not plain); adds
    the project classes it is made of to ``code``; raises :class:`NotPlain` when it is not plain data."""
    if type(value) in _JSON_SCALARS:  # most parameters
        return value
    return walk(value, _Plain(set() if code is None else code, paths))


_JSON_SCALARS = frozenset({type(None), bool, int, float, str})
_PLAIN_CONTAINERS = frozenset({list, tuple, dict})
