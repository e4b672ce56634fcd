"""Source-level facts about a function or class: its normalized AST, the names it uses, its local imports.

The normal form ignores comments, formatting, docstrings and the isthmus decorators (``@step(...)``,
whose options are in the cache key on their own); every other decorator counts, since it can change
what the function does.
"""

from __future__ import annotations

import ast
import inspect
import linecache
import marshal
import textwrap
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


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
        module = ast.parse(source)
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
    return chains


def class_assignments(node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """Names a class body assigns at its top level (``K = ...``, ``k: int = ...``, ``a, b = ...``)."""
    names: set[str] = set()
    for stmt in node.body:
        targets: list[ast.expr] = []
        if isinstance(stmt, ast.Assign):
            targets = list(stmt.targets)
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
            targets = [stmt.target]
        for target in targets:
            names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


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
    """A stable digest of compiled code (for lambdas and functions whose source is gone)."""
    consts = []
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            consts.append(bytecode_digest(c))
        else:
            try:
                consts.append(marshal.dumps(c))
            except ValueError:
                consts.append(repr(c).encode())
    return marshal.dumps((code.co_code, code.co_names, code.co_varnames, tuple(consts)))
