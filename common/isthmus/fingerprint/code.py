"""Code fingerprint: normalized source of a step and of the project-local code it reaches.

Comments, whitespace, docstrings and decorators do not count; a change to a helper function, class or
module-level constant that the step reaches (transitively, through project modules only) does. The
source text of every component is kept so a run diff can show what changed.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import linecache
import marshal
import textwrap
import threading
import types
from dataclasses import dataclass, field
from typing import Any

from isthmus.fingerprint.locality import is_project_module
from isthmus.hashing import UnhashableValueError, hash_parts, hash_value

_BUILTINS = frozenset(dir(builtins))


@dataclass(frozen=True)
class CodeFingerprint:
    """``hash`` covers every component; ``sources`` maps component name -> source text."""

    hash: str
    components: dict[str, str] = field(default_factory=dict)  # name -> component hash
    sources: dict[str, str] = field(default_factory=dict)  # name -> source text (or repr for constants)
    modules: tuple[str, ...] = ()  # project modules the code was found in


class _StripDocstrings(ast.NodeTransformer):
    def _strip(self, node: Any) -> Any:
        self.generic_visit(node)
        body = node.body
        first = body[0] if body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            body = body[1:] or [ast.Pass()]
        node.body = body
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _strip


def _normalize(tree: ast.AST, *, drop_decorators: bool) -> str:
    if drop_decorators and isinstance(tree, (ast.FunctionDef, ast.AsyncFunctionDef)):
        tree.decorator_list = []
    tree = _StripDocstrings().visit(tree)
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def _source_of(obj: Any) -> str | None:
    try:
        filename = inspect.getsourcefile(obj)
        if filename:
            linecache.checkcache(filename)
        return textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError):
        return None


def _definition_node(source: str, obj: Any) -> ast.AST | None:
    try:
        module = ast.parse(source)
    except SyntaxError:
        return None
    name = getattr(obj, "__name__", None)
    for node in module.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return node
    return None


def _bytecode_digest(code: types.CodeType) -> bytes:
    consts = []
    for c in code.co_consts:
        consts.append(
            _bytecode_digest(c)
            if isinstance(c, types.CodeType)
            else marshal.dumps(c)
            if _marshalable(c)
            else repr(c).encode()
        )
    return marshal.dumps((code.co_code, code.co_names, code.co_varnames, tuple(consts)))


def _marshalable(c: Any) -> bool:
    try:
        marshal.dumps(c)
        return True
    except ValueError:
        return False


def _referenced_chains(node: ast.AST) -> set[tuple[str, ...]]:
    """Dotted name chains loaded in ``node``: ``helpers.clean(x)`` -> ("helpers", "clean")."""
    chains: set[tuple[str, ...]] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute):
            parts: list[str] = []
            cur: ast.AST = sub
            while isinstance(cur, ast.Attribute):
                parts.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name):
                chains.add((cur.id, *reversed(parts)))
        elif isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
            chains.add((sub.id,))
    return chains


class _Collector:
    def __init__(self) -> None:
        self.components: dict[str, str] = {}
        self.sources: dict[str, str] = {}
        self.seen: set[int] = set()
        self.modules: set[str] = set()

    def _key(self, obj: Any) -> str:
        """The qualname; module-qualified only when two reached objects share it.

        Module names are left out where possible because the same file may be imported as
        ``steps`` by one orchestrator and ``dags_examples.steps`` by another.
        """
        qual = getattr(obj, "__qualname__", getattr(obj, "__name__", repr(obj)))
        module = getattr(obj, "__module__", None) or ""
        for key in (qual, f"{module.rsplit('.', 1)[-1]}.{qual}", f"{module}.{qual}"):
            if key not in self.components:
                return key
        return f"{module}.{qual}#{id(obj)}"

    def visit(self, obj: Any, *, root: bool = False) -> None:
        step_fn = getattr(obj, "fn", None)
        if step_fn is not None and type(obj).__name__ == "Step":
            obj = step_fn
        if id(obj) in self.seen:
            return
        self.seen.add(id(obj))
        if isinstance(obj, types.MethodType):
            obj = obj.__func__
        if isinstance(obj, types.FunctionType):
            if root or is_project_module(obj.__module__):
                self._visit_function(obj, root=root)
            wrapped = getattr(obj, "__wrapped__", None)
            if wrapped is not None:
                self.visit(wrapped)
        elif isinstance(obj, type):
            if is_project_module(obj.__module__):
                self._visit_class(obj)
        elif isinstance(obj, types.ModuleType):
            return  # modules are followed through attribute chains only

    def _visit_function(self, fn: types.FunctionType, *, root: bool) -> None:
        key = self._key(fn)
        self.modules.add(fn.__module__)
        source = _source_of(fn)
        node = _definition_node(source, fn) if source else None
        if node is not None:
            normalized = _normalize(node, drop_decorators=True)
            self.components[key] = hash_parts("src", normalized)
            self.sources[key] = source or ""
            chains = _referenced_chains(node)
        else:  # no source (lambda, REPL): fall back to bytecode
            self.components[key] = hash_parts("code", _bytecode_digest(fn.__code__))
            self.sources[key] = source or f"<no source for {fn.__qualname__}>"
            chains = {(n,) for n in fn.__code__.co_names}
        if fn.__closure__:
            for name, cell in zip(fn.__code__.co_freevars, fn.__closure__, strict=False):
                try:
                    self._visit_value(f"{key}.<closure>.{name}", cell.cell_contents)
                except ValueError:  # empty cell
                    continue
        if fn.__defaults__:
            for i, value in enumerate(fn.__defaults__):
                self._visit_value(f"{key}.<default>.{i}", value, constants=False)
        self._resolve(chains, fn.__globals__, owner=fn)

    def _visit_class(self, cls: type) -> None:
        key = self._key(cls)
        self.modules.add(cls.__module__)
        source = _source_of(cls)
        node = _definition_node(source, cls) if source else None
        if node is None:
            self.components[key] = hash_parts("class", key)
            self.sources[key] = f"<no source for class {cls.__qualname__}>"
            return
        self.components[key] = hash_parts("src", _normalize(node, drop_decorators=False))
        self.sources[key] = source or ""
        module = inspect.getmodule(cls)
        if module is not None:
            self._resolve(_referenced_chains(node), vars(module), owner=cls)
        for base in cls.__mro__[1:]:
            self.visit(base)

    def _resolve(self, chains: set[tuple[str, ...]], namespace: dict[str, Any], *, owner: Any) -> None:
        for chain in sorted(chains):
            head = chain[0]
            if head not in namespace:
                continue  # local variable, argument or builtin
            obj = namespace[head]
            label = f"{getattr(owner, '__qualname__', '?')}:{head}"
            for attr in chain[1:]:
                if not isinstance(obj, (types.ModuleType, type)):
                    break
                if isinstance(obj, types.ModuleType) and not is_project_module(obj):
                    break
                try:
                    obj = getattr(obj, attr)
                except AttributeError:
                    break
                label = f"{label}.{attr}"
            self._visit_value(label, obj)

    def _visit_value(self, label: str, obj: Any, *, constants: bool = True) -> None:
        if isinstance(obj, (types.FunctionType, types.MethodType, type)) or type(obj).__name__ == "Step":
            self.visit(obj)
            return
        if isinstance(obj, (types.ModuleType, types.BuiltinFunctionType)):
            return
        if not constants or label in self.components:
            return
        # Module-level constants of the project (numbers, strings, config dicts, ...).
        try:
            self.components[label] = hash_value(obj)
        except (UnhashableValueError, RecursionError):
            cls = type(obj)
            if is_project_module(cls.__module__):
                self.visit(cls)
            return
        text = repr(obj)
        self.sources[label] = f"{label.split(':', 1)[-1]} = {text if len(text) <= 2000 else text[:2000] + ' ...'}"


_memo: dict[int, tuple[Any, CodeFingerprint]] = {}
_memo_lock = threading.Lock()


def code_fingerprint(fn: Any) -> CodeFingerprint:
    """Fingerprint ``fn`` (a function or Step) and the project-local code it reaches. Memoized per object."""
    target = getattr(fn, "fn", fn) if type(fn).__name__ == "Step" else fn
    hit = _memo.get(id(target))
    if hit is not None and hit[0] is target:
        return hit[1]
    collector = _Collector()
    collector.visit(target, root=True)
    items = sorted(collector.components.items())
    fp = CodeFingerprint(
        hash=hash_parts("code-v1", *[f"{k}={v}" for k, v in items]),
        components=dict(items),
        sources=collector.sources,
        modules=tuple(sorted(collector.modules)),
    )
    with _memo_lock:
        _memo[id(target)] = (target, fp)
    return fp


def clear_memo() -> None:
    """Forget memoized fingerprints (after reloading modules in the same process)."""
    with _memo_lock:
        _memo.clear()
