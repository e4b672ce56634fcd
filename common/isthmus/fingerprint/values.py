"""Canonical digests of the *state* of values a step's code reaches (module constants, closures, defaults).

A value is hashed by what it holds, never by its identity or its place in memory: containers item by
item, dataclasses and pydantic models by field, ``SimpleNamespace`` and plain objects by their attributes
or, generally, by what ``pickle`` would save (``copyreg`` / ``__reduce_ex__``: ``__dict__``,
``__slots__``, constructor arguments), a compiled ``re.Pattern`` by pattern and flags,
``functools.partial`` by function, arguments and keywords, an enum member by its name and value.
Functions, classes and modules found inside a value are not hashed here: the collector visits them
(their source becomes components of the code fingerprint) and the value holds a token naming them, so
``OPS = {"double": double}`` changes when ``double``'s code does.

Plain data (numbers, strings, bytes and lists, tuples, dicts and sets of them) is hashed in bulk, so a
150,000-entry vocabulary costs milliseconds. The members of sets and the items of mappings are visited in
an order given by their content, never by their hash or address, so the names given to the functions and
objects they hold — and so the fingerprint — are the same in every process (whatever
``PYTHONHASHSEED`` or where objects were allocated).

Two kinds of values get special treatment:

- *Opaque* values (locks, loggers, open streams, executors, queues, threads) carry no state a result can
  depend on; they are hashed by their type. Register more with :func:`register_state`.
- A value with no canonical state (it cannot be pickled: a database connection, a client with a socket)
  is *unstable*: its digest is unique to this process, so the step's cache key is never reused by
  another process (a miss, never a stale hit), and the collector warns once with the fix.

Credentials: a value under a credential-looking name (``API_KEY = ...``, ``{"password": ...}``, an
attribute ``token``, a named-tuple field ``password``), a string holding a known secret (the value of a
credential environment variable, a literal the source binds to a credential name) and a URL with a
password or an ``Authorization`` value are *secret*. The collector keys their digest with the store's salt
and :func:`render` shows ``***`` instead of them.
"""

from __future__ import annotations

import array
import copyreg
import dataclasses
import datetime as _dt
import decimal
import enum
import functools
import io
import itertools
import logging
import queue
import re
import threading
import types
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import PurePath
from typing import Any

from isthmus.fingerprint.source import bytecode_digest
from isthmus.hashing import PROCESS_KEY, UnhashableValueError, parts_digest, value_digest
from isthmus.redaction import (
    REDACTED,
    declared_fields,
    is_secret_name,
    maybe_secret_name,
    redact_text,
    scrub,
    secret_matcher,
    secret_values,
    shown_secrets,
)

MAX_NODES = 200_000  # objects walked for one value before it counts as unstable
MAX_DEPTH = 200

_LEAVES = frozenset({type(None), bool, int, float, complex, bytes, str})
_HASH_VALUE_TYPES: tuple[type, ...] = (_dt.date, _dt.time, _dt.timedelta, decimal.Decimal, uuid.UUID, PurePath)
_LIBRARY_LEAVES = ("numpy", "pandas", "pyarrow")
# Types whose instances hold no state a result depends on: hashed by type only.
_opaque: list[type] = [
    type(threading.Lock()),
    type(threading.RLock()),
    threading.Condition,
    threading.Event,
    threading.Semaphore,
    threading.Barrier,
    threading.Thread,
    threading.local,
    logging.Logger,
    logging.Handler,
    logging.Formatter,
    logging.Filter,
    io.IOBase,
    queue.Queue,
    weakref.ref,
]
try:
    import concurrent.futures as _futures

    _opaque.append(_futures.Executor)
except ImportError:  # pragma: no cover - always present in CPython
    pass
_state_of: dict[type, Callable[[Any], Any] | None] = {}


def register_state(tp: type, state: Callable[[Any], Any] | None = None) -> None:
    """Declare how instances of ``tp`` (and subclasses) enter a code fingerprint.

    ``state(obj)`` returns plain data standing for what matters in ``obj`` (e.g. a client's endpoint and
    region); ``None`` declares them opaque (hashed by type: for objects whose state cannot change a
    result). Use it for module-level objects isthmus cannot pickle, which otherwise make a step's cache
    key unique to each process::

        register_state(botocore.client.BaseClient, lambda c: (c.meta.region_name, c.meta.endpoint_url))
    """
    if not isinstance(tp, type):
        raise TypeError(f"register_state: {tp!r} is not a class; pass the type of the objects to describe")
    if state is not None and not callable(state):
        raise TypeError(f"register_state({tp.__qualname__}, {state!r}): state must be a function or None")
    _state_of[tp] = state


def _declared_state(tp: type) -> tuple[bool, Callable[[Any], Any] | None]:
    for base in tp.__mro__:
        if base in _state_of:
            return True, _state_of[base]
    if issubclass(tp, tuple(_opaque)):
        return True, None
    return False, None


def _h(tag: str, *parts: bytes | str) -> bytes:
    return parts_digest(tag, *parts)


def type_name(tp: type) -> str:
    return f"{tp.__module__}.{tp.__qualname__}"


# -- plain data, hashed in bulk ----------------------------------------------------------------------
def _strings_digest(items: list[str]) -> bytes:
    encoded = [s.encode("utf-8", "surrogatepass") for s in items]
    return _h("strs", array.array("Q", map(len, encoded)).tobytes(), b"".join(encoded))


def _plain_digest(v: Any, strings: list[str], keys: list[str]) -> bytes | None:
    """The digest of ``v`` when it is plain data (leaves, and lists, tuples, dicts and sets of them), in
    bulk where items share a type or dicts share their keys; None for anything else. Its strings are
    added to ``strings`` and its mapping keys to ``keys`` (to be checked for credentials at once)."""
    tp = type(v)
    if tp in _LEAVES:
        if tp is str:
            strings.append(v)
        return value_digest(v)
    if tp is list or tp is tuple:
        return _plain_sequence(v, tp.__name__, strings, keys)
    if tp is dict:
        if set(map(type, v)) == {str}:
            names = sorted(v)
            keys.extend(names)
            values = _plain_sequence([v[k] for k in names], "list", strings, keys)
            return None if values is None else _h("dict:s", _strings_digest(names), values)
        pairs = []
        for k, x in v.items():
            dk, dx = _plain_digest(k, strings, keys), _plain_digest(x, strings, keys)
            if dk is None or dx is None:
                return None
            pairs.append(dk + dx)
        return _h("dict", str(len(pairs)), *sorted(pairs))
    if tp is set or tp is frozenset:
        members = _plain_all(v, strings, keys)
        return None if members is None else _h(tp.__name__, str(len(members)), *sorted(members))
    return None


def _plain_all(items: Iterable[Any], strings: list[str], keys: list[str]) -> list[bytes] | None:
    """The digest of each item, or None as soon as one is not plain data."""
    out = []
    for x in items:
        d = _plain_digest(x, strings, keys)
        if d is None:
            return None
        out.append(d)
    return out


def _plain_sequence(v: Any, tag: str, strings: list[str], keys: list[str]) -> bytes | None:
    kinds = set(map(type, v))
    if kinds == {float}:
        return _h(tag + ":f", array.array("d", v).tobytes())
    if kinds == {str}:
        strings.extend(v)
        return _h(tag + ":s", _strings_digest(v))
    if kinds == {int} and all(-(2**63) <= x < 2**63 for x in v):
        return _h(tag + ":i", array.array("q", v).tobytes())
    if kinds == {dict} and len(v) > 1:  # records sharing their keys: column by column
        names = v[0].keys()
        if all(type(k) is str for k in names) and all(len(d) == len(names) and d.keys() == names for d in v):
            ordered = sorted(names)
            keys.extend(ordered)
            columns = []
            for name in ordered:
                column = _plain_sequence([d[name] for d in v], "list", strings, keys)
                if column is None:
                    return None
                columns.append(column)
            return _h(tag + ":records", str(len(v)), _strings_digest(ordered), *columns)
    parts = _plain_all(v, strings, keys)
    return None if parts is None else _h(tag, str(len(parts)), *parts)


def _any_secret_name(names: list[str]) -> bool:
    if not names or not maybe_secret_name("\n".join(names)):
        return False
    return any(is_secret_name(n) for n in names)


# -- the walk ----------------------------------------------------------------------------------------
CodeRef = Callable[[Any], "str | None"]


class StateWalker:
    """Digests values for one code fingerprint. ``code_ref(obj)`` visits a function, class or module
    and returns the token naming it (None for anything else); ``secrets`` are the secret strings known
    to this fingerprint (environment values, literals bound to credential names). ``found`` collects the
    secret strings the walk met (under a credential name, or shown by their form, e.g. a URL's password),
    so they can be hidden wherever else they show up."""

    def __init__(self, code_ref: CodeRef, secrets: Iterable[str] = ()) -> None:
        self._code_ref = code_ref
        self._secrets = frozenset(secrets)
        self._is_secret_str = secret_matcher(self._secrets)
        self.found: set[str] = set()
        self._memo: dict[tuple[int, bool], tuple[bytes, bool]] = {}
        self._keep: list[Any] = []  # keeps memoized objects alive so their ids stay theirs
        self._path: dict[int, int] = {}
        self._nodes = 0
        self._secret = False
        self._root: Any = None
        self.unstable: str | None = None

    def digest(self, value: Any, name: str = "") -> tuple[bytes, bool, str | None]:
        """(digest, holds a secret, why it is unstable or None) of ``value`` held under ``name``."""
        self._nodes, self._secret, self.unstable, self._root = 0, False, None, value
        secret = is_secret_name(name) if name else False
        try:
            d = self._digest(value, secret, 0)
        except Exception as exc:  # a property or a registered state function that raises: never a crash
            self._path.clear()
            d = self._unstable(value, f"reading its state raised {type(exc).__name__}: {exc}")
        return d, self._secret or secret, self.unstable

    def _unstable(self, v: Any, why: str) -> bytes:
        if self.unstable is None:
            self.unstable = f"{type_name(type(v))}: {why}"
        return _h("unstable", PROCESS_KEY, type_name(type(v)))

    def _digest(self, v: Any, secret: bool, depth: int) -> bytes:
        self._nodes += 1
        if self._nodes > MAX_NODES or depth > MAX_DEPTH:
            return self._unstable(self._root, f"more than {MAX_NODES} objects or {MAX_DEPTH} levels deep")
        tp = type(v)
        if tp in _LEAVES:
            if secret and tp is str:
                self._secret = True
                self.found.add(v)
            elif secret or (tp is str and self._is_secret_str(v)):
                self._secret = True
                if tp is str:
                    self.found |= shown_secrets(v)
            return value_digest(v)
        token = self._code_ref(v)
        if token is not None:
            return _h("code", token)
        key = (id(v), secret)
        hit = self._memo.get(key)
        if hit is not None:
            self._secret = self._secret or hit[1]
            return hit[0]
        if id(v) in self._path:
            return _h("cycle", str(depth - self._path[id(v)]))
        self._path[id(v)] = depth
        outer, self._secret = self._secret, False
        try:
            d = self._compound(v, tp, secret, depth + 1)
        finally:
            del self._path[id(v)]
        inner = self._secret
        self._secret = outer or inner
        self._memo[key] = (d, inner)
        self._keep.append(v)
        return d

    def _compound(self, v: Any, tp: type, secret: bool, depth: int) -> bytes:
        if tp in _CONTAINERS:
            plain = self._plain(v, secret)
            if plain is not None:
                return plain
        handler = _BY_TYPE.get(tp)
        if handler is None:
            handler = next(h for kind, h in _BY_KIND if kind(v, tp))
        return handler(self, v, tp, secret, depth)

    def _plain(self, v: Any, secret: bool) -> bytes | None:
        """Plain data in bulk: its strings checked for secrets at once, its mapping keys for secret names."""
        strings: list[str] = []
        keys: list[str] = []
        d = _plain_digest(v, strings, keys)
        if d is None:
            return None
        flagged = [s for s in strings if self._is_secret_str(s)]
        if secret:
            self.found.update(strings)
        elif _any_secret_name(keys):
            self.found |= secret_values({"": v}, {})
        for text in flagged:
            self.found |= shown_secrets(text)
        if secret or flagged or _any_secret_name(keys):
            self._secret = True
        return d

    # -- ordering: by content, never by hash or address ---------------------------------------------
    def _content_key(self, x: Any) -> bytes:
        """A digest of ``x`` that names no function, class or object and depends on nothing visited
        before (a fresh walk): visiting set members and mapping items in this order gives the same names
        in every process."""
        if type(x) in _LEAVES:
            return value_digest(x)
        return StateWalker(_anonymous_token, self._secrets).digest(x)[0]

    def _ordered(self, items: list[Any]) -> list[Any]:
        return sorted(items, key=self._content_key) if len(items) > 1 else items

    def _type(self, tp: type) -> bytes:
        return _h("type", self._code_ref(tp) or type_name(tp))

    def _items(self, pairs: Iterable[tuple[Any, Any]], secret: bool, depth: int) -> bytes:
        ordered = list(pairs)
        if len(ordered) > 1:
            if all(type(k) is str for k, _ in ordered):
                ordered.sort(key=lambda kv: kv[0])
            else:
                keys = [self._content_key(k) for k, _ in ordered]
                ordered = [kv for _, kv in sorted(zip(keys, ordered, strict=True), key=lambda p: p[0])]
        digests = []
        for k, val in ordered:
            named = secret or (isinstance(k, str) and is_secret_name(k))
            digests.append(self._digest(k, False, depth) + self._digest(val, named, depth))
        digests.sort()
        return _h("map", str(len(digests)), *digests)

    # -- one handler per kind of value --------------------------------------------------------------
    def _sequence(self, v: Any, tp: type, secret: bool, depth: int) -> bytes:
        return _h(tp.__name__, str(len(v)), *[self._digest(x, secret, depth) for x in v])

    def _mapping(self, v: Any, tp: type, secret: bool, depth: int) -> bytes:
        return _h("dict", self._items(list(v.items()), secret, depth))

    def _set(self, v: Any, tp: type, secret: bool, depth: int) -> bytes:
        members = sorted(self._digest(x, secret, depth) for x in self._ordered(list(v)))
        return _h(tp.__name__, str(len(members)), *members)

    def _namespace(self, v: Any, tp: type, secret: bool, depth: int) -> bytes:
        return _h("namespace", self._items(list(vars(v).items()), secret, depth))

    def _declared(self, v: Any, tp: type, secret: bool, depth: int) -> bytes:
        state = _declared_state(tp)[1]
        if state is None:
            return _h("opaque", self._type(tp))
        return _h("declared", self._type(tp), self._digest(state(v), secret, depth))

    def _enum(self, v: Any, tp: type, secret: bool, depth: int) -> bytes:
        return _h("enum", self._type(tp), v.name, self._digest(v._value_, secret, depth))

    def _namedtuple(self, v: Any, tp: Any, secret: bool, depth: int) -> bytes:
        return _h("namedtuple", self._type(tp), self._items(zip(tp._fields, v, strict=True), secret, depth))

    def _dataclass(self, v: Any, tp: type, secret: bool, depth: int) -> bytes:
        fields = [(f.name, getattr(v, f.name)) for f in dataclasses.fields(v)]  # an unset field raises
        return _h("dataclass", self._type(tp), self._items(fields, secret, depth))

    def _pattern(self, v: Any, tp: type, secret: bool, depth: int) -> bytes:
        return _h("re", self._digest(v.pattern, secret, depth), str(v.flags))

    def _partial(self, v: Any, tp: type, secret: bool, depth: int) -> bytes:
        parts = (v.func, v.args, v.keywords or {})
        return _h("partial", self._type(tp), *[self._digest(p, secret, depth) for p in parts])

    def _method(self, v: Any, tp: type, secret: bool, depth: int) -> bytes:
        return _h("method", self._digest(v.__func__, secret, depth), self._digest(v.__self__, secret, depth))

    def _builtin_method(self, v: Any, tp: type, secret: bool, depth: int) -> bytes:
        owner = getattr(v, "__self__", None)
        name = f"{getattr(v, '__module__', None) or ''}.{getattr(v, '__qualname__', v.__name__)}"
        if owner is None or isinstance(owner, (types.ModuleType, type)):
            return _h("builtin", name)
        # CONFIG.get holds CONFIG; random.random's hidden generator is randomness, not state.
        if type(owner).__module__ == "builtins" or self._code_ref(type(owner)) is not None:
            return _h("builtin", name, self._digest(owner, secret, depth))
        return _h("builtin", name, type_name(type(owner)))

    def _descriptor(self, v: Any, tp: type, secret: bool, depth: int) -> bytes:  # staticmethod, classmethod
        return _h(tp.__name__, self._digest(v.__func__, secret, depth))

    def _property(self, v: Any, tp: type, secret: bool, depth: int) -> bytes:
        return _h("property", *[self._digest(f, secret, depth) for f in (v.fget, v.fset, v.fdel)])

    def _wrapper(self, v: Any, tp: type, secret: bool, depth: int) -> bytes:
        """``functools.lru_cache``/``cache`` wrappers and other callables with ``__wrapped__``."""
        params = getattr(v, "cache_parameters", None)
        extra = self._digest(params(), secret, depth) if callable(params) else b""
        state = getattr(v, "__dict__", None)
        own = {k: x for k, x in (state or {}).items() if not k.startswith("__")}
        return _h(
            "wrapped",
            self._type(tp),
            self._digest(v.__wrapped__, secret, depth),
            extra,
            self._items(list(own.items()), secret, depth),
        )

    def _library(self, v: Any, tp: type, secret: bool, depth: int) -> bytes:
        try:
            d = value_digest(v)
        except (UnhashableValueError, RecursionError, TypeError, ValueError):
            return self._pydantic(v, tp, secret, depth)
        if secret:
            self._secret = True
        return d

    def _pydantic(self, v: Any, tp: type, secret: bool, depth: int) -> bytes:
        dump = getattr(v, "model_dump", None)
        if callable(dump) and hasattr(tp, "model_fields"):
            try:
                return _h("pydantic", self._type(tp), self._digest(dump(mode="python"), secret, depth))
            except Exception:  # a custom serializer failed: fall back to what pickle saves
                pass
        if isinstance(v, Mapping) and tp.__module__ == "builtins":
            return _h("mapping", self._items(list(v.items()), secret, depth))
        return self._reduced(v, tp, secret, depth)

    def _reduced(self, v: Any, tp: type, secret: bool, depth: int) -> bytes:
        """What pickle would save: the constructor, its arguments and the state it restores."""
        try:
            reducer = copyreg.dispatch_table.get(tp)
            rv = reducer(v) if reducer is not None else v.__reduce_ex__(4)
        except Exception as exc:
            return self._unstable(v, f"it cannot be pickled ({type(exc).__name__}: {exc})")
        if isinstance(rv, str):  # pickled by reference to a global of its module (named like its class)
            return _h("global", self._type(tp), rv)
        if not isinstance(rv, tuple) or len(rv) < 2:
            return self._unstable(v, "its __reduce__ returns no constructor and arguments")
        parts = [self._type(tp), self._digest(rv[0], secret, depth), self._digest(rv[1], secret, depth)]
        state = rv[2] if len(rv) > 2 else None
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            state = {"__dict__": state[0] or {}, "__slots__": state[1] or {}}
        parts.append(self._digest(state, secret, depth))
        if len(rv) > 3 and rv[3] is not None:
            parts.append(self._digest(list(rv[3]), secret, depth))
        if len(rv) > 4 and rv[4] is not None:
            parts.append(_h("items", self._items(list(rv[4]), secret, depth)))
        return _h("object", *parts)


_CONTAINERS = frozenset({list, tuple, dict, set, frozenset})
_Handler = Callable[[StateWalker, Any, type, bool, int], bytes]
_BY_TYPE: dict[type, _Handler] = {
    list: StateWalker._sequence,
    tuple: StateWalker._sequence,
    dict: StateWalker._mapping,
    types.MappingProxyType: StateWalker._mapping,
    set: StateWalker._set,
    frozenset: StateWalker._set,
    types.SimpleNamespace: StateWalker._namespace,
}
# Checked in order for every other type; the last one always applies.
_BY_KIND: tuple[tuple[Callable[[Any, type], bool], _Handler], ...] = (
    (lambda v, tp: _declared_state(tp)[0], StateWalker._declared),
    (lambda v, tp: isinstance(v, enum.Enum), StateWalker._enum),
    (lambda v, tp: isinstance(v, tuple) and hasattr(tp, "_fields"), StateWalker._namedtuple),
    (lambda v, tp: dataclasses.is_dataclass(v), StateWalker._dataclass),
    (lambda v, tp: isinstance(v, re.Pattern), StateWalker._pattern),
    (lambda v, tp: isinstance(v, functools.partial), StateWalker._partial),
    (lambda v, tp: isinstance(v, types.MethodType), StateWalker._method),
    (lambda v, tp: isinstance(v, types.BuiltinMethodType), StateWalker._builtin_method),
    (lambda v, tp: isinstance(v, (staticmethod, classmethod)), StateWalker._descriptor),
    (lambda v, tp: isinstance(v, property), StateWalker._property),
    (lambda v, tp: callable(v) and getattr(v, "__wrapped__", None) is not None, StateWalker._wrapper),
    (
        lambda v, tp: isinstance(v, _HASH_VALUE_TYPES) or tp.__module__.split(".", 1)[0] in _LIBRARY_LEAVES,
        StateWalker._library,
    ),
    (lambda v, tp: True, StateWalker._pydantic),
)


_anonymous = threading.local()


def _anonymous_token(obj: Any) -> str | None:
    """A token for a function, class or module that names no place in memory and no import name: what
    orders the members of a set before the collector names them. A function counts with its code, its
    closure cells and its defaults (two closures from one factory differ)."""
    if isinstance(obj, types.FunctionType):
        token = f"fn:{obj.__qualname__}:{bytecode_digest(obj.__code__).hex()}"
        busy: set[int] = getattr(_anonymous, "busy", None) or set()
        _anonymous.busy = busy
        if id(obj) in busy:  # a function its own closure reaches
            return token
        busy.add(id(obj))
        try:
            cells = []
            for cell in obj.__closure__ or ():
                try:
                    cells.append(cell.cell_contents)
                except ValueError:  # an empty cell
                    cells.append(None)
            state = (cells, obj.__defaults__, obj.__kwdefaults__)
            return f"{token}:{StateWalker(_anonymous_token).digest(state)[0].hex()}"
        finally:
            busy.discard(id(obj))
    if isinstance(obj, (types.BuiltinFunctionType, type)):
        return f"{type(obj).__name__}:{getattr(obj, '__qualname__', '')}"
    if isinstance(obj, types.ModuleType):
        return f"module:{obj.__name__.rsplit('.', 1)[-1]}"
    return None


def _name_token(obj: Any) -> str | None:
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, type)):
        return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    return None


def state_digest(value: Any) -> str:
    """``blake3:<hex>`` of any value's state (functions and classes by name); unique to this process when
    the value has no canonical state."""
    digest, _, _ = StateWalker(_name_token).digest(value)
    return "blake3:" + digest.hex()


# -- what the code snapshot shows -------------------------------------------------------------------
REPR_LIMIT = 2000


def render(value: Any, name: str, secrets: Iterable[str]) -> str:
    """A readable, credential-free text of a value for the stored code snapshot and run diffs, at most
    about :data:`REPR_LIMIT` characters (built within that budget: a 50 MB constant is never printed
    whole). Secret-named fields and keys show ``***``, and so do known secrets and URL passwords."""
    if is_secret_name(name):
        return REDACTED
    known = list(secrets)
    # Built a little longer than shown, so a secret cut at the limit is still recognised and hidden.
    budget = [REPR_LIMIT + max((len(s) for s in known), default=0) + 64]
    try:
        text = _render(value, 0, budget)
    except Exception:  # a property or repr that raises
        text = f"<{type(value).__qualname__}>"
    text = redact_text(scrub(text, known))
    return text if len(text) <= REPR_LIMIT else text[:REPR_LIMIT] + " ..."


def _render_items(pairs: Iterable[tuple[Any, Any]], depth: int, budget: list[int]) -> list[tuple[Any, str]]:
    """(key, shown value) for each pair while the budget lasts; values under secret names show ``***``."""
    out: list[tuple[Any, str]] = []
    for n, (k, x) in enumerate(pairs):
        if budget[0] <= 0 or n >= 200:
            out.append((..., "..."))
            break
        shown = REDACTED if isinstance(k, str) and is_secret_name(k) else _render(x, depth, budget)
        out.append((k, shown))
    return out


def _keywords(items: list[tuple[Any, str]]) -> list[str]:
    return [shown if k is ... else f"{k}={shown}" for k, shown in items]


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 200 else text[:200] + "..."


def _fields_of(v: Any, tp: type) -> list[tuple[str, Any]] | None:
    """Named fields to show instead of ``repr`` (which may print an address or a credential)."""
    fields = declared_fields(v)
    if fields is not None:
        return fields
    state = getattr(v, "__dict__", None)
    if not isinstance(state, dict):
        return None
    if tp is types.SimpleNamespace or tp.__repr__ is object.__repr__ or hasattr(tp, "model_fields"):
        return list(state.items())
    if any(isinstance(k, str) and is_secret_name(k) for k in state):
        return list(state.items())
    return None


def _render(v: Any, depth: int, budget: list[int]) -> str:  # noqa: PLR0911 - one return per kind of value
    if depth > 6 or budget[0] <= 0:
        return "..."
    d = depth + 1
    tp = type(v)
    if tp in (str, bytes, bytearray):
        cut = v[: budget[0]]
        text = repr(cut) + ("..." if len(cut) < len(v) else "")
        budget[0] -= len(text)
        return text
    if tp in (dict, types.MappingProxyType):
        items = _render_items(v.items(), d, budget)
        return "{" + ", ".join(shown if k is ... else f"{_short(k)}: {shown}" for k, shown in items) + "}"
    if tp in (set, frozenset):  # members in an order given by their text, not by their hash
        members = sorted(_render(x, d, [200]) for x in itertools.islice(v, 1000))
        body = ", ".join(members)[: max(budget[0], 0)]
        budget[0] -= len(body)
        return f"{{{body}}}" if tp is set else f"frozenset({{{body}}})"
    if tp in (list, tuple):
        inner = []
        for n, x in enumerate(v):
            if budget[0] <= 0 or n >= 200:
                inner.append("...")
                break
            inner.append(_render(x, d, budget))
        body = ", ".join(inner)
        return f"[{body}]" if tp is list else f"({body})"
    if isinstance(v, (types.FunctionType, type, types.ModuleType)):
        return getattr(v, "__qualname__", getattr(v, "__name__", repr(v)))
    wrapped = getattr(v, "__wrapped__", None) if callable(v) else None
    if wrapped is not None and not isinstance(v, types.FunctionType):
        return f"{tp.__name__}({_render(wrapped, d, budget)})"
    if isinstance(v, functools.partial):
        args = [_render(a, d, budget) for a in v.args] + _keywords(_render_items((v.keywords or {}).items(), d, budget))
        return f"partial({_render(v.func, d, budget)}{''.join(', ' + a for a in args)})"
    fields = _fields_of(v, tp)
    if fields is not None:
        return f"{tp.__qualname__}(" + ", ".join(_keywords(_render_items(fields, d, budget))) + ")"
    try:
        text = repr(v)
    except Exception:
        return f"<{tp.__qualname__}>"
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", text[: budget[0] + 200])  # addresses differ in every process
    budget[0] -= len(text)
    return text
