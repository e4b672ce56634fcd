"""Code fingerprint: the normalized source of a step and of every project-local thing it can reach.

The collector starts at the step function and follows every path the code can take into the project
(modules outside site-packages and the standard library, namespace packages included):

- names and dotted chains the source loads (``helper(x)``, ``helpers.clean``, ``Model.predict``), in the
  function's globals and in the modules it imports *inside* its body (``from helpers import double``,
  ``importlib.import_module("helpers")`` with a constant name); a global counts only where Python's scope
  analysis reads it as one, not where a parameter, local or closure variable of the same name is used;
- closure cells, default values, function attributes and ``__wrapped__`` (decorators built with
  ``functools.wraps``, ``lru_cache``, ``cache``);
- values: a module constant, a default or a closure cell is hashed by its state (see
  :mod:`isthmus.fingerprint.values`): containers item by item, objects by their attributes, with every
  function, class or module found inside visited in turn (``OPS = {"double": double}``,
  ``functools.partial(scale, 2)``, ``SETTINGS = Settings()`` -> the class's code and the instance's state);
- a project module used as a value (``getattr(helpers, name)``) counts whole: all its functions, classes
  and constants; so does a function's own module when the function reads its namespace
  (``globals()``, ``vars()``, ``sys.modules[__name__]``, ``eval``/``exec``);
- classes: their source (the branch Python ran, when a module defines one under ``if``/``else``), their
  bases, the data their body assigns, and what the module adds afterwards (``Model.FACTOR = 2``, a
  method patched in).

Every reached object gets a name of its own (its qualname, qualified by module only where two share it),
and the values it holds are labelled with that name, so two closures from one factory or two helpers
called ``helper`` in different modules are both hashed. Comments, whitespace, docstrings and the isthmus
decorators do not count. The source text of every component is kept so a run diff can show what changed;
credentials in it are shown as ``***`` (:mod:`isthmus.fingerprint.redact`) and constants holding one enter
the hash through a keyed digest (see :meth:`CodeFingerprint.keyed`).

When the code Python runs is not the code in its source file (a stale ``.pyc`` after an edit within the
same second at the same size, or a file changed after it was imported), the fingerprint is made unique to
the process — a miss, never a stale hit — and a warning says why.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
import logging
import sys
import threading
import types
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from isthmus.fingerprint.locality import NOT_PROJECT, is_project_module, is_tool_module, project_module
from isthmus.fingerprint.redact import redact_source, secret_literals
from isthmus.fingerprint.source import (
    LocalImport,
    bytecode_digest,
    class_assignments,
    class_definitions,
    code_matches_source,
    code_names,
    constant_imports,
    decorator_chain,
    definition_node,
    global_reads,
    local_imports,
    module_source,
    normalize,
    referenced_chains,
    source_of,
)
from isthmus.fingerprint.values import StateWalker, render
from isthmus.hashing import PREFIX, PROCESS_KEY, hash_parts, keyed_hash
from isthmus.redaction import secret_env_values

log = logging.getLogger("isthmus")

_SKIP = object()  # a name bound by a local import of a module that is not part of the project
# Names whose use reads the namespace of the function's module: the whole module counts.
_NAMESPACE_READERS = frozenset({"globals", "vars", "eval", "exec"})


@dataclass(frozen=True)
class CodeFingerprint:
    """``hash`` covers every component; ``sources`` maps component name -> source text."""

    hash: str
    components: dict[str, str] = field(default_factory=dict)  # name -> component hash
    sources: dict[str, str] = field(default_factory=dict)  # name -> source text (or value for constants)
    modules: tuple[str, ...] = ()  # project modules the code was found in
    unstable: dict[str, str] = field(default_factory=dict)  # name -> why its value has no canonical state
    secret_digests: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)  # never stored
    _keyed: dict[bytes, CodeFingerprint] = field(default_factory=dict, repr=False, compare=False)

    def keyed(self, key: bytes) -> CodeFingerprint:
        """This fingerprint with credential-holding components keyed by ``key`` (a store's salt), so
        processes sharing a store agree on it and the stored hashes reveal nothing about the secrets."""
        if not self.secret_digests:
            return self
        hit = self._keyed.get(key)
        if hit is None:
            components = dict(self.components)
            for name, digest in self.secret_digests.items():
                components[name] = keyed_hash(key, "secret", digest)
            hit = self._keyed[key] = replace(self, hash=_total(components), components=components, _keyed={})
        return hit


def _total(components: dict[str, str]) -> str:
    return hash_parts("code-v3", *[f"{k}={v}" for k, v in sorted(components.items())])


def _is_step(obj: Any) -> bool:
    return type(obj).__name__ == "Step" and type(obj).__module__ == "isthmus.step"


def _functions_of(value: Any) -> Iterable[types.FunctionType]:
    """The functions behind a class attribute (a method, staticmethod, classmethod or property)."""
    for fn in (value, getattr(value, "__func__", None), getattr(value, "fget", None)):
        if isinstance(fn, types.FunctionType):
            yield fn


_literals_memo: dict[str, tuple[int, frozenset[str]]] = {}


def _imported_names(tree: ast.Module, package: str) -> Iterable[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                yield from (".".join(parts[: i + 1]) for i in range(len(parts)))
        elif isinstance(node, ast.ImportFrom):
            try:
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            except (ImportError, ValueError):
                continue
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _secret_literals_near(module_name: str) -> frozenset[str]:
    """Strings bound to a credential name in the source of ``module_name`` and of the project modules it
    imports, transitively (already imported ones): known secrets wherever they show up again. Only
    strings of 8 characters or more that are not a plain word count by value elsewhere."""
    count = len(sys.modules)
    hit = _literals_memo.get(module_name)
    if hit is not None and hit[0] == count:
        return hit[1]
    found: set[str] = set()
    seen: set[str] = set()
    stack = [module_name]
    while stack:
        name = stack.pop()
        mod = sys.modules.get(name)
        if name in seen or mod is None or not is_project_module(mod):
            continue
        seen.add(name)
        parsed = module_source(getattr(mod, "__file__", None))
        if parsed is None or parsed.tree is None:
            continue
        found |= {s for s in secret_literals(parsed.text) if len(s) >= 8 and not s.isalpha()}
        package = mod.__name__ if hasattr(mod, "__path__") else mod.__name__.rpartition(".")[0]
        stack.extend(_imported_names(parsed.tree, package))
    result = frozenset(found)
    _literals_memo[module_name] = (count, result)
    return result


class _Collector:
    def __init__(self, secrets: frozenset[str]) -> None:
        self.components: dict[str, str] = {}
        self.sources: dict[str, str] = {}
        self.modules: set[str] = set()
        self.unstable: dict[str, str] = {}
        self.stale: dict[str, str] = {}  # component -> source file whose loaded code differs
        self.secret_digests: dict[str, bytes] = {}
        self._secrets = secrets
        self._tokens: dict[int, str] = {}  # id(function/class/module) -> token naming it in values
        self._labels: dict[str, int] = {}  # value label -> id of the value hashed under it
        self._keep: list[Any] = []
        self._walker = StateWalker(self.code_ref, secrets)

    def _key(self, obj: Any) -> str:
        """The qualname; module-qualified only when two reached objects share it.

        Module names are left out where possible because the same file may be imported as
        ``steps`` by one orchestrator and ``dags_examples.steps`` by another.
        """
        if isinstance(obj, types.ModuleType):
            module, qual = obj.__name__, obj.__name__.rsplit(".", 1)[-1]
        else:
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

    def _check_loaded(self, key: str, code: types.CodeType, module: types.ModuleType | None) -> None:
        """A component whose running code is not its source's: unique to this process (see module doc)."""
        if not code_matches_source(code, module):
            self.stale[key] = code.co_filename
            self.components[key] = keyed_hash(PROCESS_KEY, "stale-code", key)

    def found_secrets(self) -> set[str]:
        """The secret strings met while hashing values (see :class:`~isthmus.fingerprint.values.StateWalker`)."""
        return self._walker.found

    def _redact(self, text: str, namespace: dict[str, Any]) -> str:
        return redact_source(text, self._secrets, functools.partial(_positional_params, namespace))

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

    def _library_function(self, fn: types.FunctionType) -> str:
        token = self._token(fn, f"fn:{fn.__module__}.{fn.__qualname__}")
        # Library decorators around project code: what they wrap is project code.
        wrapped = getattr(fn, "__wrapped__", None)
        if wrapped is not None:
            self.code_ref(wrapped)
        for cell in fn.__closure__ or ():
            try:
                self.code_ref(cell.cell_contents)
            except ValueError:  # empty cell
                continue
        return token

    def _function(self, fn: types.FunctionType, *, root: bool) -> str:
        if not (root or is_project_module(fn.__module__)):
            return self._library_function(fn)
        key = self._key(fn)
        token = self._token(fn, f"fn:{key}")
        self.modules.add(fn.__module__)
        code = fn.__code__
        globs = fn.__globals__
        source = source_of(code)
        node = definition_node(source, code.co_name) if source else None
        imports: list[LocalImport] = []
        by_name: list[str] = []
        if node is not None:
            normalized = normalize(node, drop_decorator=lambda d: self._is_tool_decorator(d, globs))
            self.components[key] = hash_parts("src", normalized)
            self.sources[key] = self._redact(source or "", globs)
            imports = local_imports(node)
            chains = _read_from_module(referenced_chains(node), global_reads(source or "", code.co_freevars), imports)
            by_name = constant_imports(node)
        else:  # no source (lambda, REPL): fall back to bytecode
            self.components[key] = hash_parts("code", bytecode_digest(code))
            self.sources[key] = self._redact(source, globs) if source else f"<no source for {fn.__qualname__}>"
            chains = {(n,) for n in code_names(code)}
        self._check_loaded(key, code, sys.modules.get(fn.__module__))
        for name, cell in zip(code.co_freevars, fn.__closure__ or (), strict=False):
            try:
                value = cell.cell_contents
            except ValueError:  # empty cell
                continue
            self.visit_value(f"{key}.<closure>.{name}", value)
        for name, value in _defaults(fn):
            if root:  # the step's own defaults are parameters: hashed with the call's arguments
                self.code_ref(value)
            else:
                self.visit_value(f"{key}.<default>.{name}", value)
        for name, value in vars(fn).items():
            if name == "__wrapped__":
                self.visit_value(f"{key}.<wrapped>", value)
            elif not name.startswith("__"):
                self.visit_value(f"{key}.<attr>.{name}", value)
        namespace = globs
        if imports:
            namespace = {**namespace, **self._resolve_imports(imports, globs)}
        self._resolve(chains, namespace, owner=key)
        for name in by_name:
            module = self._import(name)
            if isinstance(module, types.ModuleType):
                self.visit_value(f"{key}:<import {name}>", module)
        if self._reads_namespace(chains, globs):
            module = sys.modules.get(fn.__module__)
            if module is not None:
                self.visit_value(f"{key}:<module namespace>", module)
        return token

    @staticmethod
    def _reads_namespace(chains: set[tuple[str, ...]], globs: dict[str, Any]) -> bool:
        """``globals()``, ``vars()``, ``eval``/``exec`` or ``sys.modules``: the module is read by name."""
        for chain in chains:
            head = chain[0]
            if head in _NAMESPACE_READERS and head not in globs:
                return True
            if chain[:2] == ("sys", "modules") and globs.get("sys") is sys:
                return True
            if head == "modules" and globs.get("modules") is sys.modules:
                return True
        return False

    def _class(self, cls: type) -> str:
        if not is_project_module(cls.__module__):
            return self._token(cls, f"cls:{cls.__module__}.{cls.__qualname__}")
        key = self._key(cls)
        token = self._token(cls, f"cls:{key}")
        self.modules.add(cls.__module__)
        module = sys.modules.get(cls.__module__)
        namespace: dict[str, Any] = vars(module) if module is not None else {}
        found = class_definitions(cls)
        assigned: set[str] | None = None
        if found is not None:
            text, nodes = found
            self.components[key] = hash_parts("src", *[normalize(n) for n in nodes])
            self.sources[key] = self._redact(text, namespace)
            assigned = set().union(*(class_assignments(n) for n in nodes))
            imports = [imp for n in nodes for imp in local_imports(n)]
            if imports:
                namespace = {**namespace, **self._resolve_imports(imports, namespace)}
            chains = _read_from_module(set().union(*(referenced_chains(n) for n in nodes)), global_reads(text), imports)
            self._resolve(chains, namespace, owner=key)
            path = getattr(module, "__file__", None)
            for value in list(vars(cls).values()):
                for fn in _functions_of(value):
                    if fn.__code__.co_filename == path:
                        self._check_loaded(key, fn.__code__, module)
        else:  # made at run time (type(), make_dataclass, ...): its attributes are all there is
            bases = [self.code_ref(b) or "" for b in cls.__bases__]
            self.components[key] = hash_parts("class", cls.__qualname__, *bases)
            self.sources[key] = f"<no source for class {cls.__qualname__}>"
        for base in cls.__mro__[1:]:
            self.code_ref(base)
        for name, value in list(vars(cls).items()):
            if name.startswith("__") and name.endswith("__"):
                continue
            if assigned is None or name in assigned:
                if assigned is not None and (isinstance(value, types.FunctionType) or hasattr(type(value), "__get__")):
                    continue  # methods and descriptors are code, already in the class's source
                self.visit_value(f"{key}:{name}", value)
            else:
                # Set on the class after its body ran (``Model.FACTOR = 2``, a method patched in): it
                # counts. What a metaclass or decorator adds without a canonical state (``_abc_impl``) is
                # machinery, not the class's code, and is left out.
                self.visit_value(f"{key}:{name}", value, machinery_ok=True)
        return token

    def _module(self, mod: types.ModuleType) -> str:
        """A project module used as a value (``getattr(helpers, name)``): everything in it counts."""
        if not is_project_module(mod):
            return self._token(mod, f"module:{mod.__name__}")
        key = self._key(mod)
        token = self._token(mod, f"module:{key}")
        self.components[key] = hash_parts("module")
        self.sources[key] = f"<module {mod.__name__}, used as a value: all of it counts>"
        self.modules.add(mod.__name__)
        for name, value in sorted(vars(mod).items()):
            if not (name.startswith("__") and name.endswith("__")):
                self.visit_value(f"<module {key}>:{name}", value)
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
    def _resolve(self, chains: Iterable[tuple[str, ...]], namespace: dict[str, Any], *, owner: str) -> None:
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
        mod = project_module(name)
        if mod is NOT_PROJECT:
            return _SKIP
        if mod is None and record:
            self.components[f"<import {name}>"] = hash_parts("missing", name)
            self.sources[f"<import {name}>"] = f"import {name}  # not importable when fingerprinted"
        return mod

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
    def visit_value(self, label: str, obj: Any, *, machinery_ok: bool = False) -> None:
        """A function/class/module is visited; any other value becomes a component hashed by its state.
        With ``machinery_ok``, a value with no canonical state is left out instead of making the
        fingerprint unique to the process."""
        if obj is _SKIP or self.code_ref(obj) is not None:
            return
        seen = self._labels.get(label)
        if seen == id(obj):
            return
        if seen is not None or label in self.components:  # another value under that name: never dropped
            n = 2
            while f"{label}#{n}" in self._labels or f"{label}#{n}" in self.components:
                n += 1
            label = f"{label}#{n}"
        self._labels[label] = id(obj)
        self._keep.append(obj)
        shown_name = label.split(":", 1)[-1].split("#", 1)[0]
        name = shown_name.rsplit(".", 1)[-1]
        self.components[label] = ""  # reserved: a value may reach code that reaches this label again
        digest, secret, unstable = self._walker.digest(obj, name)
        if unstable and machinery_ok:
            del self.components[label]
            return
        if secret:
            self.secret_digests[label] = digest
            self.components[label] = keyed_hash(PROCESS_KEY, "secret", digest)
        else:
            self.components[label] = PREFIX + digest.hex()
        text = f"{shown_name} = {render(obj, name, self._secrets)}"
        if unstable:
            self.unstable[label] = unstable
            text += f"  # no canonical state ({unstable}): this cache key is unique to the process"
        self.sources[label] = text


def _read_from_module(
    chains: set[tuple[str, ...]], reads: set[str] | None, imports: list[LocalImport]
) -> set[tuple[str, ...]]:
    """The chains whose head is a name the code reads from its module (see
    :func:`~isthmus.fingerprint.source.global_reads`; all of them when that cannot be told) or binds by a
    local import: a parameter or local that shares a global's name does not make the global count."""
    if reads is None:
        return chains
    keep = reads | {imp.name for imp in imports}
    return {chain for chain in chains if chain[0] in keep}


def _positional_params(namespace: dict[str, Any], chain: tuple[str, ...]) -> tuple[str, ...] | None:
    """The positional parameter names of what ``chain`` names in ``namespace`` (for redacting literals
    passed positionally to a credential-named parameter: ``Creds("admin", "pw")``)."""
    obj = namespace.get(chain[0])
    for attr in chain[1:]:
        obj = getattr(obj, attr, None) if isinstance(obj, (types.ModuleType, type)) else None
    if obj is None or not callable(obj):
        return None
    try:
        return _signature_params(obj)
    except TypeError:  # an unhashable callable: not memoized
        return _signature_params.__wrapped__(obj)


@functools.lru_cache(maxsize=1024)
def _signature_params(obj: Any) -> tuple[str, ...] | None:
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(p.name for p in params if p.kind in kinds)


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


def _collect(target: Any, extra: Iterable[Any], secrets: frozenset[str]) -> _Collector:
    collector = _Collector(secrets)
    if collector.code_ref(target, root=True) is None:  # a callable object: its state and its class
        collector.visit_value(f"<step>:{getattr(target, '__qualname__', type(target).__qualname__)}", target)
    for obj in extra:
        collector.code_ref(obj)
    return collector


def code_fingerprint(fn: Any, extra: Iterable[Any] = ()) -> CodeFingerprint:
    """Fingerprint ``fn`` (a function or Step) and the project-local code it reaches, plus the functions
    and classes in ``extra`` (the code of the values a call receives). Memoized per process by the
    identity of ``fn`` and ``extra``: the one memo of fingerprints."""
    target = fn.fn if _is_step(fn) else fn
    roots = (target, *extra)
    memo_key = tuple(id(r) for r in roots)
    hit = _memo.get(memo_key)
    if hit is not None and all(a is b for a, b in zip(hit[0], roots, strict=True)):
        return hit[1]
    known = secret_env_values() | _secret_literals_near(getattr(target, "__module__", "") or "")
    collector = _collect(target, roots[1:], known)
    # A value seen secret in one place (a constant under a credential name, a URL's password) is hidden
    # wherever else the code holds it (a pattern, a message built from it): collected again knowing it.
    seen = {s for s in collector.found_secrets() if len(s) >= 8 and not s.isalpha()} - known
    if seen:
        collector = _collect(target, roots[1:], known | seen)
    fp = CodeFingerprint(
        hash=_total(collector.components),
        components=dict(sorted(collector.components.items())),
        sources=collector.sources,
        modules=tuple(sorted(collector.modules)),
        unstable={**collector.unstable, **{k: "its loaded code does not match its source" for k in collector.stale}},
        secret_digests=collector.secret_digests,
    )
    _warn(getattr(target, "__qualname__", repr(target)), collector)
    with _memo_lock:
        _memo[memo_key] = (roots, fp)
    return fp


def _warn(name: str, collector: _Collector) -> None:
    for label, why in collector.unstable.items():
        if (name, label) not in _warned:
            _warned.add((name, label))
            log.warning(
                "code of %s reaches %s, which has no canonical state (%s): its cache key is unique to this "
                "process, so results are not reused by other processes. Create it inside the step, or "
                "describe what matters in it with isthmus.fingerprint.register_state(<its type>, ...)",
                name,
                label.split(":", 1)[-1],
                why,
            )
    for label, path in collector.stale.items():
        if (name, path) not in _warned:
            _warned.add((name, path))
            log.warning(
                "code of %s: %s as loaded in this process does not match its source file %s (a stale .pyc "
                "after an edit within the same second at the same size, or the file changed after it was "
                "imported): its cache key is unique to this process. Delete the __pycache__ folder next to "
                "it (or set PYTHONDONTWRITEBYTECODE=1) and restart the process",
                name,
                label,
                path,
            )


def shown_source(fn: Any) -> str:
    """The source of a function (or Step) as a code snapshot shows it: credentials replaced by ``***``
    (for lineage's ``sourceCode`` facet and other places that show a step's code)."""
    target = fn.fn if _is_step(fn) else fn
    text = inspect.getsource(target)
    known = secret_env_values() | _secret_literals_near(getattr(target, "__module__", "") or "")
    namespace = getattr(target, "__globals__", {})
    return redact_source(text, known, functools.partial(_positional_params, namespace))


def clear_memo() -> None:
    """Forget memoized fingerprints (after reloading modules in the same process)."""
    with _memo_lock:
        _memo.clear()
