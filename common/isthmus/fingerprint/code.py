"""Code fingerprint: the normalized source of a step and of every project-local thing it can reach.

The collector starts at the step function and follows every path the code can take into the project
(modules outside site-packages and the standard library):

- names and dotted chains the source loads (``helper(x)``, ``helpers.clean``, ``Model.predict``), in the
  function's globals and in the modules it imports *inside* its body (``from helpers import double``);
- closure cells, default values, function attributes and ``__wrapped__`` (decorators built with
  ``functools.wraps``, ``lru_cache``, ``cache``);
- values: a module constant, a default or a closure cell is hashed by its state (see
  :mod:`isthmus.fingerprint.values`): containers item by item, objects by their attributes, with every
  function, class or module found inside visited in turn (``OPS = {"double": double}``,
  ``functools.partial(scale, 2)``, ``SETTINGS = Settings()`` -> the class's code and the instance's state);
- a project module used as a value (``getattr(helpers, name)``) counts whole: all its functions, classes
  and constants;
- classes: their source, their bases, and class-level data.

Comments, whitespace, docstrings and the isthmus decorators do not count. The source text of every
component is kept so a run diff can show what changed; constants holding a credential are shown as
``***`` and enter the hash through a keyed digest (see :meth:`CodeFingerprint.keyed`).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import logging
import os
import sys
import threading
import types
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from isthmus.fingerprint.locality import is_project_file, is_project_module, is_tool_module
from isthmus.fingerprint.redact import redact_source
from isthmus.fingerprint.source import (
    LocalImport,
    bytecode_digest,
    class_assignments,
    code_names,
    decorator_chain,
    definition_node,
    local_imports,
    normalize,
    referenced_chains,
    source_of,
)
from isthmus.fingerprint.values import StateWalker, render, secret_env_values
from isthmus.hashing import PREFIX, hash_parts, keyed_hash

log = logging.getLogger("isthmus")

# Secret components are keyed with the store's salt by the runner (CodeFingerprint.keyed). Without a
# store they are keyed with this per-process key: the plain ``hash`` then never reveals a secret, at the
# price of being unique to the process for code that reaches one.
_PROCESS_KEY = os.urandom(32)
_SKIP = object()  # a name bound by a local import of a module that is not part of the project


@dataclass(frozen=True)
class CodeFingerprint:
    """``hash`` covers every component; ``sources`` maps component name -> source text."""

    hash: str
    components: dict[str, str] = field(default_factory=dict)  # name -> component hash
    sources: dict[str, str] = field(default_factory=dict)  # name -> source text (or value for constants)
    modules: tuple[str, ...] = ()  # project modules the code was found in
    unstable: dict[str, str] = field(default_factory=dict)  # name -> why its value has no canonical state
    secret_digests: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)  # never stored

    def keyed(self, key: bytes) -> CodeFingerprint:
        """This fingerprint with credential-holding components keyed by ``key`` (a store's salt), so
        processes sharing a store agree on it and the stored hashes reveal nothing about the secrets."""
        if not self.secret_digests:
            return self
        components = dict(self.components)
        for name, digest in self.secret_digests.items():
            components[name] = keyed_hash(key, "secret", digest)
        return replace(self, hash=_total(components), components=components)


def _total(components: dict[str, str]) -> str:
    return hash_parts("code-v2", *[f"{k}={v}" for k, v in sorted(components.items())])


def _is_step(obj: Any) -> bool:
    return type(obj).__name__ == "Step" and type(obj).__module__ == "isthmus.step"


class _Collector:
    def __init__(self, secrets: frozenset[str]) -> None:
        self.components: dict[str, str] = {}
        self.sources: dict[str, str] = {}
        self.modules: set[str] = set()
        self.unstable: dict[str, str] = {}
        self.secret_digests: dict[str, bytes] = {}
        self._secrets = secrets
        self._tokens: dict[int, str] = {}  # id(function/class/module) -> token naming it in values
        self._keep: list[Any] = []
        self._walker = StateWalker(self.code_ref, secrets)

    def _key(self, obj: Any) -> str:
        """The qualname; module-qualified only when two reached objects share it.

        Module names are left out where possible because the same file may be imported as
        ``steps`` by one orchestrator and ``dags_examples.steps`` by another.
        """
        qual = getattr(obj, "__qualname__", getattr(obj, "__name__", type(obj).__name__))
        module = getattr(obj, "__module__", None) or ""
        for key in (qual, f"{module.rsplit('.', 1)[-1]}.{qual}", f"{module}.{qual}"):
            if key not in self.components:
                break
        else:
            n = 2  # e.g. several lambdas: numbered in visiting order, which is deterministic
            while f"{module}.{qual}#{n}" in self.components:
                n += 1
            key = f"{module}.{qual}#{n}"
        self.components[key] = ""  # reserved while its dependencies are visited
        return key

    def _token(self, obj: Any, token: str) -> str:
        self._tokens[id(obj)] = token
        self._keep.append(obj)
        return token

    # -- code ------------------------------------------------------------------------------------
    def code_ref(self, obj: Any, *, root: bool = False) -> str | None:
        """Visit a function, class or module (once) and return its token; None for any other value."""
        if _is_step(obj):
            obj = obj.fn
        token = self._tokens.get(id(obj))
        if token is not None:
            return token
        if isinstance(obj, types.FunctionType):
            return self._function(obj, root=root)
        if isinstance(obj, type):
            return self._class(obj)
        if isinstance(obj, types.ModuleType):
            return self._module(obj)
        if isinstance(obj, types.BuiltinFunctionType) and isinstance(obj.__self__, (types.ModuleType, type(None))):
            return self._token(obj, f"builtin:{obj.__module__}.{obj.__qualname__}")
        return None

    def _function(self, fn: types.FunctionType, *, root: bool) -> str:
        if not (root or is_project_module(fn.__module__)):
            token = self._token(fn, f"fn:{fn.__module__}.{fn.__qualname__}")
            # Library decorators around project code: what they wrap is project code.
            wrapped = getattr(fn, "__wrapped__", None)
            if wrapped is not None:
                self.visit_value(f"{fn.__qualname__}.<wrapped>", wrapped)
            for cell in fn.__closure__ or ():
                try:
                    self.code_ref(cell.cell_contents)
                except ValueError:  # empty cell
                    continue
            return token
        key = self._key(fn)
        token = self._token(fn, f"fn:{key}")
        self.modules.add(fn.__module__)
        code = fn.__code__
        source = source_of(code)
        node = definition_node(source, code.co_name) if source else None
        imports: list[LocalImport] = []
        if node is not None:
            globs = fn.__globals__
            normalized = normalize(node, drop_decorator=lambda d: self._is_tool_decorator(d, globs))
            self.components[key] = hash_parts("src", normalized)
            self.sources[key] = redact_source(source or "", self._secrets)
            chains = referenced_chains(node)
            imports = local_imports(node)
        else:  # no source (lambda, REPL): fall back to bytecode
            self.components[key] = hash_parts("code", bytecode_digest(code))
            self.sources[key] = redact_source(source, self._secrets) if source else f"<no source for {fn.__qualname__}>"
            chains = {(n,) for n in code_names(code)}
        owner = fn.__qualname__
        for name, cell in zip(code.co_freevars, fn.__closure__ or (), strict=False):
            try:
                value = cell.cell_contents
            except ValueError:  # empty cell
                continue
            self.visit_value(f"{owner}.<closure>.{name}", value)
        for name, value in _defaults(fn):
            if root:  # the step's own defaults are parameters: hashed with the call's arguments
                self.code_ref(value)
            else:
                self.visit_value(f"{owner}.<default>.{name}", value)
        for name, value in vars(fn).items():
            if name == "__wrapped__":
                self.visit_value(f"{owner}.<wrapped>", value)
            elif not name.startswith("__"):
                self.visit_value(f"{owner}.<attr>.{name}", value)
        namespace = fn.__globals__
        if imports:
            namespace = {**namespace, **self._resolve_imports(imports, fn.__globals__)}
        self._resolve(chains, namespace, owner=owner)
        return token

    def _class(self, cls: type) -> str:
        if not is_project_module(cls.__module__):
            return self._token(cls, f"cls:{cls.__module__}.{cls.__qualname__}")
        key = self._key(cls)
        token = self._token(cls, f"cls:{key}")
        self.modules.add(cls.__module__)
        module = sys.modules.get(cls.__module__)
        namespace: dict[str, Any] = vars(module) if module is not None else {}
        source = source_of(cls)
        node = definition_node(source, cls.__name__) if source else None
        if node is not None:
            self.components[key] = hash_parts("src", normalize(node))
            self.sources[key] = redact_source(source or "", self._secrets)
            imports = local_imports(node)
            if imports:
                namespace = {**namespace, **self._resolve_imports(imports, namespace)}
            self._resolve(referenced_chains(node), namespace, owner=cls.__qualname__)
        else:  # made at run time (type(), make_dataclass, ...): its attributes are all there is
            bases = [self.code_ref(b) or "" for b in cls.__bases__]
            self.components[key] = hash_parts("class", cls.__qualname__, *bases)
            self.sources[key] = f"<no source for class {cls.__qualname__}>"
        for base in cls.__mro__[1:]:
            self.code_ref(base)
        # Class-level data the body assigns (``WEIGHTS = np.load(...)``) counts by its value; what a
        # metaclass or decorator adds (registries, caches) is machinery, not the class's code.
        assigned = class_assignments(node) if node is not None else None
        for name, value in vars(cls).items():
            if name.startswith("__") or (assigned is not None and name not in assigned):
                continue
            if node is not None and (isinstance(value, types.FunctionType) or hasattr(type(value), "__get__")):
                continue  # methods and descriptors are code, already in the class's source
            self.visit_value(f"{cls.__qualname__}.{name}", value)
        return token

    def _module(self, mod: types.ModuleType) -> str:
        """A project module used as a value (``getattr(helpers, name)``): everything in it counts."""
        if not is_project_module(mod):
            return self._token(mod, f"module:{mod.__name__}")
        short = mod.__name__.rsplit(".", 1)[-1]
        token = self._token(mod, f"module:{short}")
        self.modules.add(mod.__name__)
        for name, value in sorted(vars(mod).items()):
            if not (name.startswith("__") and name.endswith("__")):
                self.visit_value(f"<module {short}>:{name}", value)
        return token

    def _is_tool_decorator(self, node: ast.expr, namespace: dict[str, Any]) -> bool:
        """``@step``, ``@step(...)``, ``@isthmus.step``: their options are in the cache key on their own."""
        chain = decorator_chain(node)
        if chain is None or chain[0] not in namespace:
            return False
        obj = namespace[chain[0]]
        for attr in chain[1:]:
            obj = getattr(obj, attr, None)
        module = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
        return isinstance(module, str) and is_tool_module(module)

    # -- names -----------------------------------------------------------------------------------
    def _resolve(self, chains: set[tuple[str, ...]], namespace: dict[str, Any], *, owner: str) -> None:
        for chain in sorted(chains):
            head = chain[0]
            if head not in namespace:
                continue  # local variable, argument or builtin
            obj = namespace[head]
            label = f"{owner}:{head}"
            for attr in chain[1:]:
                if isinstance(obj, types.ModuleType):
                    if not is_project_module(obj):
                        break
                    nxt = getattr(obj, attr, _SKIP)
                    if nxt is _SKIP:
                        nxt = self._import(f"{obj.__name__}.{attr}", record=False)
                        if not isinstance(nxt, types.ModuleType):
                            break  # not there yet: the module itself counts, whole
                elif isinstance(obj, type):
                    try:
                        nxt = getattr(obj, attr)
                    except Exception:  # a missing attribute, or a class property that raises
                        break
                else:
                    break
                obj = nxt
                label = f"{label}.{attr}"
            self.visit_value(label, obj)

    def _import(self, name: str, *, record: bool = True) -> Any:
        """The project module ``name`` (imported if needed), ``_SKIP`` for a module outside the project,
        or None when it cannot be found or imported (recorded, so that it appearing later counts)."""
        mod = sys.modules.get(name)
        if mod is not None:
            return mod if is_project_module(mod) else _SKIP
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError, AttributeError):
            spec = None
        if spec is not None:
            places = [spec.origin or "", *(spec.submodule_search_locations or [])]
            if not any(p and os.path.exists(p) and is_project_file(p) for p in places):
                return _SKIP
            try:
                return importlib.import_module(name)
            except Exception:  # the step's own import will fail the same way when it runs
                pass
        if record:
            self.components[f"<import {name}>"] = hash_parts("missing", name)
            self.sources[f"<import {name}>"] = f"import {name}  # not importable when fingerprinted"
        return None

    def _resolve_imports(self, imports: list[LocalImport], globs: dict[str, Any]) -> dict[str, Any]:
        """What the imports inside a function body bind, for the project modules among them."""
        package = globs.get("__package__") or (globs.get("__name__") or "").rpartition(".")[0]
        bound: dict[str, Any] = {}
        for imp in imports:
            name = imp.module
            if imp.level:
                try:
                    name = importlib.util.resolve_name("." * imp.level + imp.module, package)
                except (ImportError, ValueError):
                    bound[imp.name] = _SKIP
                    continue
            mod = self._import(name)
            if imp.submodule:
                self._import(imp.submodule)
            if not isinstance(mod, types.ModuleType):
                bound[imp.name] = _SKIP
            elif imp.attr is None:
                bound[imp.name] = mod
            else:
                value = getattr(mod, imp.attr, _SKIP)
                if value is _SKIP:
                    value = self._import(f"{name}.{imp.attr}")
                bound[imp.name] = _SKIP if value is None else value
        return bound

    # -- values ----------------------------------------------------------------------------------
    def visit_value(self, label: str, obj: Any) -> None:
        """A function/class/module is visited; any other value becomes a component hashed by its state."""
        if obj is _SKIP or self.code_ref(obj) is not None or label in self.components:
            return
        shown_name = label.split(":", 1)[-1]
        name = shown_name.rsplit(".", 1)[-1]
        self.components[label] = ""  # reserved: a value may reach code that reaches this label again
        digest, secret, unstable = self._walker.digest(obj, name)
        if secret:
            self.secret_digests[label] = digest
            self.components[label] = keyed_hash(_PROCESS_KEY, "secret", digest)
        else:
            self.components[label] = PREFIX + digest.hex()
        text = f"{shown_name} = {render(obj, name, self._secrets)}"
        if unstable:
            self.unstable[label] = unstable
            text += f"  # no canonical state ({unstable}): this cache key is unique to the process"
        self.sources[label] = text


def _defaults(fn: types.FunctionType) -> list[tuple[str, Any]]:
    code = fn.__code__
    out: list[tuple[str, Any]] = []
    if fn.__defaults__:
        names = code.co_varnames[: code.co_argcount][-len(fn.__defaults__) :]
        out.extend(zip(names, fn.__defaults__, strict=True))
    out.extend((fn.__kwdefaults__ or {}).items())
    return out


_memo: dict[tuple[int, ...], tuple[tuple[Any, ...], CodeFingerprint]] = {}
_memo_lock = threading.Lock()
_warned: set[tuple[str, str]] = set()


def code_fingerprint(fn: Any, extra: Iterable[Any] = ()) -> CodeFingerprint:
    """Fingerprint ``fn`` (a function or Step) and the project-local code it reaches, plus the classes in
    ``extra`` (those of the values a call receives). Memoized per (function, extra classes)."""
    target = fn.fn if _is_step(fn) else fn
    roots = (target, *extra)
    memo_key = tuple(id(r) for r in roots)
    hit = _memo.get(memo_key)
    if hit is not None and all(a is b for a, b in zip(hit[0], roots, strict=True)):
        return hit[1]
    collector = _Collector(secret_env_values())
    if collector.code_ref(target, root=True) is None:  # a callable object: its state and its class
        collector.visit_value(f"<step>:{getattr(target, '__qualname__', type(target).__qualname__)}", target)
    for obj in extra:
        collector.code_ref(obj)
    fp = CodeFingerprint(
        hash=_total(collector.components),
        components=dict(sorted(collector.components.items())),
        sources=collector.sources,
        modules=tuple(sorted(collector.modules)),
        unstable=collector.unstable,
        secret_digests=collector.secret_digests,
    )
    name = getattr(target, "__qualname__", repr(target))
    for label, why in fp.unstable.items():
        if (name, label) not in _warned:
            _warned.add((name, label))
            log.warning(
                "code of %s reaches %s, which has no canonical state (%s): its cache key is unique to this "
                "process, so results are not reused by other processes. Create it inside the step, make it "
                "picklable, or describe it with isthmus.fingerprint.register_state(<its type>, ...)",
                name,
                label.split(":", 1)[-1],
                why,
            )
    with _memo_lock:
        _memo[memo_key] = (roots, fp)
    return fp


def clear_memo() -> None:
    """Forget memoized fingerprints (after reloading modules in the same process)."""
    with _memo_lock:
        _memo.clear()
