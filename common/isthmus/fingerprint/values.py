"""Canonical digests of the *state* of values a step's code reaches (module constants, closures, defaults).

A value is hashed by what it holds, never by its identity: containers item by item (dict order ignored),
dataclasses and pydantic models by field, ``SimpleNamespace`` and plain objects by their attributes or,
generally, by what ``pickle`` would save (``copyreg`` / ``__reduce_ex__``: ``__dict__``, ``__slots__``,
constructor arguments), a compiled ``re.Pattern`` by pattern and flags, ``functools.partial`` by function,
arguments and keywords. Functions, classes and modules found inside a value are not hashed here: the
collector visits them (their source becomes components of the code fingerprint) and the value holds a
token naming them, so ``OPS = {"double": double}`` changes when ``double``'s code does.

Two kinds of values get special treatment:

- *Opaque* values (locks, loggers, open streams, executors, queues, threads) carry no state a result can
  depend on; they are hashed by their type. Register more with :func:`register_state`.
- A value with no canonical state (it cannot be pickled: a database connection, a client with a socket)
  is *unstable*: its digest is unique to this process, so the step's cache key is never reused by
  another process (a miss, never a stale hit), and the collector warns once with the fix.

Credentials: a value under a credential-looking name (``API_KEY = ...``, ``{"password": ...}``, an
attribute ``token``), a string equal to (or, for long ones, containing) the value of a credential-looking
environment variable, and a URL with a password are *secret*. The collector keys their digest with the
store's salt and :func:`render` shows ``***`` instead of them.
"""

from __future__ import annotations

import copyreg
import dataclasses
import datetime as _dt
import decimal
import enum
import functools
import io
import logging
import os
import queue
import re
import struct
import threading
import types
import uuid
import weakref
from collections.abc import Callable, Mapping
from pathlib import PurePath
from typing import Any

from blake3 import blake3

from isthmus.hashing import UnhashableValueError, value_digest
from isthmus.redaction import REDACTED, is_secret_env, is_secret_name, redact_url

MAX_NODES = 200_000  # objects walked for one value before it counts as unstable
MAX_DEPTH = 200
PROCESS_NONCE = os.urandom(16)  # makes an unstable value's digest unique to this process

_LEAVES = (type(None), bool, int, float, complex, bytes)
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


_env_seen: tuple[tuple[Any, Any], ...] = ()
_env_secrets: frozenset[str] = frozenset()


def secret_env_values() -> frozenset[str]:
    """Values of the credential-looking environment variables of this process (4 characters or more)."""
    global _env_seen, _env_secrets
    raw = getattr(os.environ, "_data", None)  # CPython's undecoded store: comparing it is cheap
    items = tuple(raw.items()) if isinstance(raw, dict) else tuple(os.environ.items())
    if items != _env_seen:  # rebuilt only when the environment changed
        _env_secrets = frozenset(v for k, v in os.environ.items() if len(v) >= 4 and is_secret_env(k, v))
        _env_seen = items
    return _env_secrets


def is_secret_string(s: str, env_secrets: frozenset[str]) -> bool:
    """A string that holds a credential: a credential environment variable's value (or, for values of 8
    characters or more, contains one), or a URL with a password or token."""
    if s in env_secrets:
        return True
    if len(s) >= 8 and any(len(x) >= 8 and x in s for x in env_secrets):
        return True
    return "://" in s and redact_url(s) != s


def _h(tag: str, *parts: bytes | str) -> bytes:
    h = blake3()
    h.update(tag.encode())
    for p in parts:
        b = p.encode("utf-8", "surrogatepass") if isinstance(p, str) else p
        h.update(struct.pack("<Q", len(b)))
        h.update(b)
    return h.digest()


def type_name(tp: type) -> str:
    return f"{tp.__module__}.{tp.__qualname__}"


class StateWalker:
    """Digests values for one code fingerprint. ``code_ref(obj)`` visits a function, class or module
    and returns the token naming it (None for anything else)."""

    def __init__(self, code_ref: Callable[[Any], str | None], secrets: frozenset[str]) -> None:
        self._code_ref = code_ref
        self._secrets = secrets
        self._memo: dict[tuple[int, bool], tuple[bytes, bool]] = {}
        self._keep: list[Any] = []  # keeps memoized objects alive so their ids stay theirs
        self._path: dict[int, int] = {}
        self._nodes = 0
        self._secret = False
        self.unstable: str | None = None

    def digest(self, value: Any, name: str = "") -> tuple[bytes, bool, str | None]:
        """(digest, holds a secret, why it is unstable or None) of ``value`` held under ``name``."""
        self._nodes, self._secret, self.unstable = 0, False, None
        secret = is_secret_name(name) if name else False
        try:
            d = self._digest(value, secret, 0)
        except Exception as exc:  # a property or a registered state function that raises: never a crash
            self._path.clear()
            d = self._unstable(value, f"reading its state raised {type(exc).__name__}: {exc}")
        return d, self._secret or secret, self.unstable

    # -- the walk --------------------------------------------------------------------------------
    def _is_secret_str(self, s: str) -> bool:
        return is_secret_string(s, self._secrets)

    def _unstable(self, v: Any, why: str) -> bytes:
        if self.unstable is None:
            self.unstable = f"{type_name(type(v))}: {why}"
        return _h("unstable", PROCESS_NONCE, type_name(type(v)))

    def _digest(self, v: Any, secret: bool, depth: int) -> bytes:
        self._nodes += 1
        if self._nodes > MAX_NODES or depth > MAX_DEPTH:
            return self._unstable(v, f"more than {MAX_NODES} objects or {MAX_DEPTH} levels deep")
        tp = type(v)
        if tp in _LEAVES:
            if secret:
                self._secret = True
            return value_digest(v)
        if tp is str:
            if secret or self._is_secret_str(v):
                self._secret = True
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

    def _type(self, tp: type) -> bytes:
        return _h("type", self._code_ref(tp) or type_name(tp))

    def _items(self, pairs: Any, secret: bool, depth: int) -> bytes:
        digests = []
        for k, val in pairs:
            named = secret or (isinstance(k, str) and is_secret_name(k))
            digests.append(self._digest(k, False, depth) + self._digest(val, named, depth))
        digests.sort()
        return _h("map", str(len(digests)), *digests)

    def _compound(self, v: Any, tp: type, secret: bool, depth: int) -> bytes:  # noqa: C901, PLR0911, PLR0912
        declared, state = _declared_state(tp)
        if declared:
            if state is None:
                return _h("opaque", self._type(tp))
            return _h("declared", self._type(tp), self._digest(state(v), secret, depth))
        if isinstance(v, enum.Enum):
            return _h("enum", self._type(tp), v.name)
        if tp in (list, tuple):
            return _h(tp.__name__, str(len(v)), *[self._digest(x, secret, depth) for x in v])
        if tp in (dict, types.MappingProxyType):
            return _h("dict", self._items(v.items(), secret, depth))
        if tp in (set, frozenset):
            members = sorted(self._digest(x, secret, depth) for x in v)
            return _h(tp.__name__, str(len(members)), *members)
        if isinstance(v, tuple) and hasattr(tp, "_fields"):  # NamedTuple
            return _h("namedtuple", self._type(tp), self._items(zip(tp._fields, v, strict=True), secret, depth))
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            fields = ((f.name, getattr(v, f.name)) for f in dataclasses.fields(v))
            return _h("dataclass", self._type(tp), self._items(fields, secret, depth))
        if tp is types.SimpleNamespace:
            return _h("namespace", self._items(vars(v).items(), secret, depth))
        if isinstance(v, re.Pattern):
            return _h("re", self._digest(v.pattern, secret, depth), str(v.flags))
        if isinstance(v, functools.partial):
            parts = (v.func, v.args, v.keywords or {})
            return _h("partial", self._type(tp), *[self._digest(p, secret, depth) for p in parts])
        if isinstance(v, types.MethodType):
            return _h("method", self._digest(v.__func__, secret, depth), self._digest(v.__self__, secret, depth))
        if isinstance(v, types.BuiltinMethodType):
            return self._builtin_method(v, secret, depth)
        if isinstance(v, (staticmethod, classmethod)):
            return _h(tp.__name__, self._digest(v.__func__, secret, depth))
        if isinstance(v, property):
            return _h("property", *[self._digest(f, secret, depth) for f in (v.fget, v.fset, v.fdel)])
        if callable(v) and getattr(v, "__wrapped__", None) is not None:
            return self._wrapper(v, tp, secret, depth)
        if isinstance(v, _HASH_VALUE_TYPES) or tp.__module__.split(".", 1)[0] in _LIBRARY_LEAVES:
            leaf = self._library_leaf(v, secret)
            if leaf is not None:
                return leaf
        pydantic_dump = getattr(v, "model_dump", None)
        if callable(pydantic_dump) and hasattr(tp, "model_fields"):
            try:
                return _h("pydantic", self._type(tp), self._digest(pydantic_dump(mode="python"), secret, depth))
            except Exception:  # a custom serializer failed: fall back to what pickle saves
                pass
        if isinstance(v, Mapping) and tp.__module__ == "builtins":
            return _h("mapping", self._items(v.items(), secret, depth))
        return self._reduced(v, tp, secret, depth)

    def _library_leaf(self, v: Any, secret: bool) -> bytes | None:
        try:
            d = value_digest(v)
        except (UnhashableValueError, RecursionError, TypeError, ValueError):
            return None
        if secret:
            self._secret = True
        return d

    def _builtin_method(self, v: Any, secret: bool, depth: int) -> bytes:
        owner = getattr(v, "__self__", None)
        name = f"{getattr(v, '__module__', None) or ''}.{getattr(v, '__qualname__', v.__name__)}"
        if owner is None or isinstance(owner, (types.ModuleType, type)):
            return _h("builtin", name)
        # CONFIG.get holds CONFIG; random.random's hidden generator is randomness, not state.
        if type(owner).__module__ == "builtins" or self._code_ref(type(owner)) is not None:
            return _h("builtin", name, self._digest(owner, secret, depth))
        return _h("builtin", name, type_name(type(owner)))

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
            self._items(own.items(), secret, depth),
        )

    def _reduced(self, v: Any, tp: type, secret: bool, depth: int) -> bytes:
        """What pickle would save: the constructor, its arguments and the state it restores."""
        try:
            reducer = copyreg.dispatch_table.get(tp)
            rv = reducer(v) if reducer is not None else v.__reduce_ex__(4)
        except Exception as exc:
            return self._unstable(v, f"it cannot be pickled ({type(exc).__name__}: {exc})")
        if isinstance(rv, str):  # pickled by reference to a global of its module
            return _h("global", type_name(tp), rv)
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


# -- what the code snapshot shows -------------------------------------------------------------------
_REPR_LIMIT = 2000


def render(value: Any, name: str, secrets: frozenset[str]) -> str:
    """A readable, credential-free text of a value for the stored code snapshot and run diffs."""
    if is_secret_name(name):
        return REDACTED
    try:
        text = _render(value, 0)
    except Exception:  # a property or repr that raises
        text = f"<{type(value).__qualname__}>"
    for s in sorted(secrets, key=len, reverse=True):
        text = text.replace(s, REDACTED)
    text = redact_url(text)
    return text if len(text) <= _REPR_LIMIT else text[:_REPR_LIMIT] + " ..."


def _render_items(pairs: Any, depth: int) -> list[tuple[Any, str]]:
    return [(k, REDACTED if isinstance(k, str) and is_secret_name(k) else _render(x, depth)) for k, x in pairs]


def _fields(v: Any, tp: type) -> list[tuple[str, Any]] | None:
    """Named fields to show instead of ``repr`` (which may print an address or a credential)."""
    if dataclasses.is_dataclass(v):
        return [(f.name, getattr(v, f.name)) for f in dataclasses.fields(v)]
    state = getattr(v, "__dict__", None)
    if not isinstance(state, dict):
        return None
    if tp is types.SimpleNamespace or tp.__repr__ is object.__repr__ or hasattr(tp, "model_fields"):
        return list(state.items())
    if any(isinstance(k, str) and is_secret_name(k) for k in state):
        return list(state.items())
    return None


def _render(v: Any, depth: int) -> str:
    if depth > 6:
        return "..."
    d = depth + 1
    tp = type(v)
    if tp in (dict, types.MappingProxyType):
        return "{" + ", ".join(f"{k!r}: {x}" for k, x in _render_items(list(v.items())[:200], d)) + "}"
    if tp in (list, tuple, set, frozenset):
        inner = ", ".join(_render(x, d) for x in list(v)[:200])
        return {list: f"[{inner}]", tuple: f"({inner})", set: f"{{{inner}}}", frozenset: f"frozenset({{{inner}}})"}[tp]
    if isinstance(v, (types.FunctionType, type, types.ModuleType)):
        return getattr(v, "__qualname__", getattr(v, "__name__", repr(v)))
    wrapped = getattr(v, "__wrapped__", None) if callable(v) else None
    if wrapped is not None and not isinstance(v, types.FunctionType):
        return f"{tp.__name__}({_render(wrapped, d)})"
    if isinstance(v, functools.partial):
        args = [_render(a, d) for a in v.args] + [f"{k}={x}" for k, x in _render_items((v.keywords or {}).items(), d)]
        return f"partial({_render(v.func, d)}{''.join(', ' + a for a in args)})"
    if not isinstance(v, (types.ModuleType, type)):
        fields = _fields(v, tp)
        if fields is not None:
            return f"{tp.__qualname__}(" + ", ".join(f"{k}={x}" for k, x in _render_items(fields[:200], d)) + ")"
    try:
        text = repr(v)
    except Exception:
        return f"<{tp.__qualname__}>"
    return re.sub(r" at 0x[0-9a-fA-F]+", "", text)  # addresses differ in every process


def _name_token(obj: Any) -> str | None:
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, type)):
        return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    return None


def state_digest(value: Any) -> str:
    """``blake3:<hex>`` of any value's state (functions and classes by name); unique to this process when
    the value has no canonical state."""
    digest, _, _ = StateWalker(_name_token, frozenset()).digest(value)
    return "blake3:" + digest.hex()
