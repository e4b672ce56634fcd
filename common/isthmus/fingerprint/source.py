"""Source-level facts about a function or class: its normalized AST, the names it uses, its local imports,
and whether the code Python runs is the code in its source file.

The normal form ignores comments, formatting, docstrings and the isthmus decorators (``@step(...)``,
whose options are in the cache key on their own); every other decorator counts, since it can change
what the function does.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import inspect
import linecache
import marshal
import os
import sys
import textwrap
import threading
import types
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from isthmus.fingerprint.syntax import parse, scopes


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


def normalize(tree: ast.AST, *, drop_decorator: Callable[[ast.expr], bool] | None = None) -> str:
    """The AST dump of ``tree`` without docstrings (and without the decorators ``drop_decorator`` names)."""
    if drop_decorator is not None and isinstance(tree, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        tree.decorator_list = [d for d in tree.decorator_list if not drop_decorator(d)]
    tree = _StripDocstrings().visit(tree)
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def source_of(obj: Any) -> str | None:
    """Dedented source of a class or a code object (never of what a ``functools.wraps`` wrapper wraps)."""
    try:
        filename = inspect.getsourcefile(obj)
        if filename:
            linecache.checkcache(filename)
        return textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError, IndentationError):
        return None


def definition_node(source: str, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | None:
    """The top-level ``def``/``class`` called ``name`` in ``source``."""
    try:
        module = parse(source)
    except SyntaxError:
        return None
    for node in module.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return node
    return None


def decorator_chain(node: ast.expr) -> tuple[str, ...] | None:
    """``("isthmus", "step")`` for ``@isthmus.step(...)``; None when it is not a dotted name."""
    if isinstance(node, ast.Call):
        node = node.func
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return (node.id, *reversed(parts))


def referenced_chains(node: ast.AST) -> set[tuple[str, ...]]:
    """The longest dotted name chains loaded in ``node``: ``helpers.clean(x)`` -> ("helpers", "clean").

    A name appears on its own only where it is used on its own (``getattr(helpers, name)`` yields
    ("helpers",)), so a module used as a value can be told from a module whose attributes are used.
    """
    bases: set[int] = {id(sub.value) for sub in ast.walk(node) if isinstance(sub, ast.Attribute)}
    chains: set[tuple[str, ...]] = set()
    for sub in ast.walk(node):
        if id(sub) in bases:
            continue
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
        elif isinstance(sub, ast.AugAssign) and isinstance(sub.target, ast.Name):
            chains.add((sub.target.id,))  # ``total += 1`` reads ``total`` first
    return chains


def global_reads(source: str, freevars: Collection[str] = ()) -> set[str] | None:
    """The names the ``def``/``class`` statements in ``source`` (dedented) may read from their module's
    namespace, as Python's own scope analysis resolves them; None when it cannot tell (then every name
    may be one).

    A parameter or local of the scope that uses it is not one, nor a name a nested scope takes from an
    enclosing function (``freevars``: those the compiled function takes from outside ``source``). What a
    ``def``/``class`` line evaluates where it stands (decorators, defaults, annotations, bases), names
    declared ``global`` anywhere, and names a class body reads (its own or not: the module is looked up
    when the class has none yet) all are. One set for all the scopes: a name read as a global in one of
    them counts wherever it is used.
    """
    try:
        top = scopes(source)
    except (SyntaxError, ValueError, RecursionError):  # e.g. ``nonlocal`` bound outside the snippet
        return None
    reads = {sym.get_name() for sym in top.get_symbols() if sym.is_referenced()}
    implicit: set[str] = set()
    stack = list(top.get_children())
    while stack:
        table = stack.pop()
        stack.extend(table.get_children())
        in_function = table.get_type() == "function"
        for sym in table.get_symbols():
            if sym.is_declared_global():
                reads.add(sym.get_name())
            elif sym.is_global():
                implicit.add(sym.get_name())
            elif not in_function and sym.is_referenced() and not sym.is_free():
                reads.add(sym.get_name())
    return reads | (implicit - set(freevars))


def class_assignments(node: ast.ClassDef) -> set[str]:
    """Names a class body binds at its top level (``K = ...``, ``k: int = ...``, ``a, b = ...``, ``def m``),
    also under ``if``/``try``/``with`` blocks."""
    names: set[str] = set()
    for stmt in _flat_body(node.body):
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(stmt.name)
            continue
        targets: list[ast.expr] = []
        if isinstance(stmt, ast.Assign):
            targets = list(stmt.targets)
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
            targets = [stmt.target]
        for target in targets:
            names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def _flat_body(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements of a block, with those of the ``if``/``try``/``with``/``for`` blocks in it."""
    out: list[ast.stmt] = []
    for stmt in body:
        out.append(stmt)
        for name in ("body", "orelse", "finalbody"):
            inner = getattr(stmt, name, None)
            if isinstance(inner, list) and not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                out.extend(_flat_body(inner))
        for handler in getattr(stmt, "handlers", None) or ():
            out.extend(_flat_body(handler.body))
    return out


@dataclass(frozen=True)
class LocalImport:
    """One name bound by an ``import`` inside a function or class body."""

    name: str  # the local name it binds
    module: str  # absolute or relative (``level`` dots) module name
    attr: str | None = None  # ``from module import attr``
    level: int = 0
    submodule: str | None = None  # ``import a.b.c`` binds ``a`` but needs ``a.b.c`` imported


def local_imports(node: ast.AST) -> list[LocalImport]:
    """The ``import`` / ``from ... import`` statements inside ``node`` (a def or class body)."""
    found: list[LocalImport] = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Import):
            for alias in sub.names:
                if alias.asname:
                    found.append(LocalImport(alias.asname, alias.name))
                else:
                    head = alias.name.split(".", 1)[0]
                    found.append(LocalImport(head, head, submodule=alias.name if alias.name != head else None))
        elif isinstance(sub, ast.ImportFrom):
            for alias in sub.names:
                if alias.name == "*":
                    continue  # not allowed inside a function; at class level it binds nothing we can name
                found.append(LocalImport(alias.asname or alias.name, sub.module or "", alias.name, sub.level))
    return found


def code_names(code: types.CodeType) -> set[str]:
    """Global names used by ``code`` and the code objects nested in it (for functions without source)."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= code_names(const)
    return names


def bytecode_digest(code: types.CodeType) -> bytes:
    """A stable form of compiled code (for lambdas and functions whose source is gone), the same in every
    process (a ``frozenset`` constant counts by its sorted members, whatever the hash seed)."""
    consts = tuple(_const_form(c) for c in code.co_consts)
    return marshal.dumps((code.co_code, code.co_names, code.co_varnames, consts), _MARSHAL)


_MARSHAL = 0  # format 0 writes no reference or interning flags: equal values give equal bytes


def _const_form(c: Any) -> bytes:
    if isinstance(c, types.CodeType):
        return bytecode_digest(c)
    if isinstance(c, tuple):
        return b"t" + marshal.dumps(tuple(_const_form(x) for x in c), _MARSHAL)
    if isinstance(c, frozenset):
        return b"f" + marshal.dumps(tuple(sorted(_const_form(x) for x in c)), _MARSHAL)
    try:
        return marshal.dumps(c, _MARSHAL)
    except ValueError:
        return repr(c).encode()


def constant_imports(node: ast.AST) -> list[str]:
    """Modules imported by a constant name in the body: ``importlib.import_module("pkg.mod")``,
    ``import_module(".mod", "pkg")``, ``__import__("pkg.mod")``."""
    found: list[str] = []
    for sub in ast.walk(node):
        if not isinstance(sub, ast.Call) or not sub.args:
            continue
        func = sub.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
        first = sub.args[0]
        if name not in ("import_module", "__import__") or not isinstance(first, ast.Constant):
            continue
        if not isinstance(first.value, str) or not first.value:
            continue
        target = first.value
        if target.startswith(".") and name == "import_module":
            package = (
                sub.args[1] if len(sub.args) > 1 else next((k.value for k in sub.keywords if k.arg == "package"), None)
            )
            if not (isinstance(package, ast.Constant) and isinstance(package.value, str)):
                continue
            try:
                target = importlib.util.resolve_name(target, package.value)
            except (ImportError, ValueError):
                continue
        found.append(target)
    return found


# -- the module's source file: class definitions, and the code Python runs ----------------------------
@dataclass
class ModuleSource:
    """A source file as it is on disk now (re-read when its size, mtime or inode change)."""

    path: str
    text: str
    tree: ast.Module | None
    _code_index: dict[tuple[str, int], set[bytes]] | None = field(default=None, repr=False)
    _classes: dict[str, list[ast.ClassDef]] | None = field(default=None, repr=False)

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines(keepends=True)

    def code_index(self) -> dict[tuple[str, int], set[bytes]]:
        """(name, first line) -> digests of the code objects compiling this text gives."""
        if self._code_index is None:
            index: dict[tuple[str, int], set[bytes]] = {}
            try:
                top = compile(self.text, self.path, "exec", dont_inherit=True)
            except (SyntaxError, ValueError):
                top = None
            stack = [top] if top is not None else []
            while stack:
                code = stack.pop()
                index.setdefault((code.co_name, code.co_firstlineno), set()).add(bytecode_digest(code))
                stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
            self._code_index = index
        return self._code_index

    def classes(self) -> dict[str, list[ast.ClassDef]]:
        """qualname -> every ``class`` statement with that qualname (several under ``if``/``else``)."""
        if self._classes is None:
            found: dict[str, list[ast.ClassDef]] = {}

            def walk(node: ast.AST, prefix: str) -> None:
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.ClassDef):
                        qual = prefix + child.name
                        found.setdefault(qual, []).append(child)
                        walk(child, qual + ".")
                    elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        walk(child, prefix + child.name + ".<locals>.")
                    else:
                        walk(child, prefix)

            if self.tree is not None:
                walk(self.tree, "")
            self._classes = found
        return self._classes


_sources: dict[str, tuple[tuple[int, int, int], ModuleSource]] = {}
_sources_lock = threading.Lock()


def module_source(path: str | None) -> ModuleSource | None:
    """The parsed source file at ``path`` (memoized until the file changes), None if unreadable."""
    if not path or not path.endswith(".py"):
        return None
    try:
        st = os.stat(path)
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with _sources_lock:
            hit = _sources.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        with open(path, "rb") as fh:
            text = importlib.util.decode_source(fh.read())
    except (OSError, UnicodeDecodeError, SyntaxError):
        return None
    try:
        tree: ast.Module | None = parse(text)
    except (SyntaxError, ValueError):
        tree = None
    parsed = ModuleSource(path, text, tree)
    with _sources_lock:
        _sources[path] = (stamp, parsed)
    return parsed


def _segment(lines: list[str], node: ast.ClassDef) -> str:
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    return textwrap.dedent("".join(lines[first - 1 : node.end_lineno or node.lineno]))


def _method_lines(cls: type, path: str) -> set[int]:
    """First lines of the functions defined in ``cls``'s own body (in ``path``)."""
    lines: set[int] = set()
    for value in vars(cls).values():
        for fn in (value, getattr(value, "__func__", None), getattr(value, "fget", None)):
            code = getattr(fn, "__code__", None)
            if isinstance(code, types.CodeType) and code.co_filename == path:
                lines.add(code.co_firstlineno)
    return lines


def class_definitions(cls: type) -> tuple[str, list[ast.ClassDef]] | None:
    """The source text and ``class`` statements of ``cls``, read from its module's file.

    A module that defines the class under several branches (``if sys.platform == ...: class C ...
    else: class C ...``) gives the one whose methods are the loaded class's; when that cannot be told,
    all of them (a change to any counts)."""
    module = sys.modules.get(cls.__module__)
    parsed = module_source(getattr(module, "__file__", None))
    if parsed is None:
        return None
    nodes = parsed.classes().get(cls.__qualname__, [])
    if len(nodes) > 1:
        lines = _method_lines(cls, parsed.path)
        chosen = [n for n in nodes if any(n.lineno <= line <= (n.end_lineno or n.lineno) for line in lines)]
        if len(chosen) == 1:
            nodes = chosen
    if not nodes:
        return None
    text_lines = parsed.lines
    return "\n".join(_segment(text_lines, n) for n in nodes), nodes


def code_matches_source(code: types.CodeType, module: types.ModuleType | None) -> bool:
    """False when the code Python runs is not what its source file compiles to now: a stale ``.pyc`` (an
    edit within the same second at the same size), or a file changed after it was imported. True when it
    matches or cannot be checked (no source file; a module loaded by a loader that rewrites code, such as
    pytest's assertion rewriting)."""
    loader = getattr(module, "__loader__", None)
    if module is not None and not isinstance(
        loader, (importlib.machinery.SourceFileLoader, importlib.machinery.SourcelessFileLoader)
    ):
        return True
    parsed = module_source(code.co_filename)
    if parsed is None:
        return True
    return bytecode_digest(code) in parsed.code_index().get((code.co_name, code.co_firstlineno), ())
