"""Source text fit to store and show: credentials written into it are replaced by ``***``.

Redaction reads the syntax tree, so layout does not matter (a literal on the first line of a body, after
an annotation, inside a dict, a triple-quoted or implicitly concatenated string, an f-string). A literal
is a credential when the code binds it to a credential-looking name:

- an assignment target (``API_KEY = ...``, ``self.token: str = ...``, ``conf["password"] = ...``,
  ``token += ...``, ``(token := ...)``), including class attributes;
- a keyword argument (``connect(password=...)``) or a positional argument bound to a credential-named
  parameter of a function or class the code calls (when ``params_of`` can tell its parameters);
- a parameter default (``def f(x: int, api_key: str = ...)``);
- a dict key (``{"token": ...}``), a pair (``("password", ...)``), a command line's flag
  (``["--token", ...]``), ``setattr(obj, "password", ...)`` and a comparison (``if password == ...``);
- the default of an environment lookup of a credential-named variable (``os.getenv("MY_TOKEN", ...)``,
  ``os.environ.get(...)``) — the variable's name itself stays;
- what a function with a credential-looking name returns (``def api_key(): return ...``).

Any literal equal to a known secret (a credential environment variable's value), holding a URL password
or an ``Authorization`` value is replaced too, and so is what a regular expression recognises in comments.
The code fingerprint still hashes the real source, so changing such a literal changes the key.
"""

from __future__ import annotations

import ast
import functools
import linecache
import re
import traceback
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType

from isthmus.fingerprint.syntax import parse
from isthmus.installed import is_project_file
from isthmus.redaction import REDACTED, is_secret_name, scrub, secret_env_values, secret_matcher

# ``API_KEY = "..."``, ``token: str = '...'``, ``password=1234`` (a literal assigned to a credential name)
_SECRET_LITERAL = re.compile(
    r"""(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<annotation>\s*:\s*[^=\n]+?)?(?P<eq>\s*=\s*)(?P<value>[rbfuRBFU]{0,2}(?:'[^'\n]*'?|"[^"\n]*"?)|-?\d[\w.]*)"""
)
_ENV_LOOKUPS = frozenset({"getenv", "get", "setdefault", "pop"})  # os.getenv, os.environ.get, ...

ParamsOf = Callable[[tuple[str, ...]], "tuple[str, ...] | None"]


def _chain(node: ast.AST) -> tuple[str, ...] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return (node.id, *reversed(parts))
    return None


def _target_name(node: ast.AST) -> str | None:
    """The name a target binds: ``x``, ``obj.x``, ``conf["x"]``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
        return node.slice.value
    return None


def _is_env_lookup(call: ast.Call) -> bool:
    chain = _chain(call.func)
    if chain is None:
        return False
    return chain[-1] == "getenv" or (len(chain) >= 2 and chain[-2] == "environ" and chain[-1] in _ENV_LOOKUPS)


class _Finder(ast.NodeVisitor):
    """Collects the literal nodes that hold credentials."""

    def __init__(self, params_of: ParamsOf | None, is_secret_text: Callable[[str], bool]) -> None:
        self.found: list[ast.expr] = []
        self._params_of = params_of
        self._is_secret_text = is_secret_text

    # -- what to hide in a value bound to a credential name -----------------------------------------
    def _hide(self, value: ast.AST | None) -> None:
        if value is None:
            return
        for node in _literals(value):
            self.found.append(node)

    def _bind(self, target: ast.AST, value: ast.AST | None) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            if isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(target.elts):
                for t, v in zip(target.elts, value.elts, strict=True):
                    self._bind(t, v)
            elif any(_is_secret_target(t) for t in target.elts):
                self._hide(value)
            return
        if _is_secret_target(target):
            self._hide(value)

    # -- statements and expressions that bind --------------------------------------------------------
    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._bind(target, node.value)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._bind(node.target, node.value)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._bind(node.target, node.value)
        self.generic_visit(node)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self._bind(node.target, node.value)
        self.generic_visit(node)

    def _arguments(self, args: ast.arguments) -> None:
        positional = [*args.posonlyargs, *args.args]
        for arg, default in zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True):
            if is_secret_name(arg.arg):
                self._hide(default)
        for arg, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
            if kw_default is not None and is_secret_name(arg.arg):
                self._hide(kw_default)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._arguments(node.args)
        if is_secret_name(node.name):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Return):
                    self._hide(sub.value)
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._arguments(node.args)
        self.generic_visit(node)

    def visit_Dict(self, node: ast.Dict) -> None:
        for key, value in zip(node.keys, node.values, strict=True):
            if isinstance(key, ast.Constant) and isinstance(key.value, str) and is_secret_name(key.value):
                self._hide(value)
        self.generic_visit(node)

    def visit_Tuple(self, node: ast.Tuple | ast.List) -> None:
        """A pair (``("password", ...)``) or a command line's flag and value (``["--token", ...]``)."""
        elts = node.elts
        for name, value in zip(elts, elts[1:], strict=False):
            text = name.value if isinstance(name, ast.Constant) and isinstance(name.value, str) else None
            if not text:
                continue
            if (text.startswith("-") and is_secret_name(text.lstrip("-"))) or (len(elts) == 2 and _pair_name(text)):
                self._hide(value)
        self.generic_visit(node)

    visit_List = visit_Tuple

    def visit_Compare(self, node: ast.Compare) -> None:
        sides = [node.left, *node.comparators]
        if any(_is_secret_target(s) for s in sides):
            for side in sides:
                if not _is_secret_target(side):
                    self._hide(side)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        for kw in node.keywords:
            if kw.arg is not None and is_secret_name(kw.arg):
                self._hide(kw.value)
        if isinstance(node.func, ast.Name) and node.func.id == "setattr" and len(node.args) >= 3:
            name = node.args[1]
            if isinstance(name, ast.Constant) and isinstance(name.value, str) and is_secret_name(name.value):
                self._hide(node.args[2])
        if _is_env_lookup(node) and node.args:
            name = node.args[0]
            if isinstance(name, ast.Constant) and isinstance(name.value, str) and is_secret_name(name.value):
                for default in [*node.args[1:], *(kw.value for kw in node.keywords if kw.arg == "default")]:
                    self._hide(default)
        chain = _chain(node.func)
        if self._params_of is not None and chain is not None and node.args:
            params = self._params_of(chain)
            for param, arg in zip(params or (), node.args, strict=False):
                if is_secret_name(param):
                    self._hide(arg)
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and self._is_secret_text(node.value):
            self.found.append(node)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        # Before Python 3.12 the pieces of an f-string carry the position of the whole: hide it whole.
        for part in node.values:
            if isinstance(part, ast.Constant):
                if isinstance(part.value, str) and self._is_secret_text(part.value):
                    self.found.append(node)
            else:
                self.visit(part)


def _pair_name(text: str) -> bool:
    """The first of a pair that is a credential's name (``("password", …)``); narrower than
    :func:`is_secret_name`, as pairs are also (column, type) and (name, value) schemas: ``("token", "string")``."""
    return text.lower().replace("-", "_").endswith(_PAIR_ENDINGS)


_PAIR_ENDINGS = ("password", "passwd", "pwd", "secret", "api_key", "apikey", "access_key", "private_key")


def _is_secret_target(node: ast.AST) -> bool:
    name = _target_name(node)
    return name is not None and is_secret_name(name)


def _literals(value: ast.AST) -> Iterator[ast.expr]:
    """The literals inside an expression (an f-string whole), except the names of environment lookups."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.JoinedStr):
            yield node
            continue
        if isinstance(node, ast.Constant):
            if node.value is not None and node.value is not Ellipsis and not isinstance(node.value, bool):
                yield node
            continue
        children = list(ast.iter_child_nodes(node))
        if isinstance(node, ast.Call) and _is_env_lookup(node) and node.args:
            children.remove(node.args[0])
        stack.extend(children)


def _line_starts(data: bytes) -> list[int]:
    """Byte offset of each line as the parser counts lines (``\\n``, ``\\r\\n`` and ``\\r`` end one)."""
    starts = [0]
    i, n = 0, len(data)
    while i < n:
        c = data[i]
        if c == 10 or (c == 13 and (i + 1 >= n or data[i + 1] != 10)):
            starts.append(i + 1)
        i += 1
    return starts


def _spans(text: str, nodes: Iterable[ast.expr]) -> tuple[bytes, list[tuple[int, int]]]:
    data = text.encode("utf-8", "surrogatepass")
    starts = _line_starts(data)
    spans = []
    for node in nodes:
        end_line, end_col = node.end_lineno, node.end_col_offset
        if end_line is None or end_col is None:
            continue
        spans.append((starts[node.lineno - 1] + node.col_offset, starts[end_line - 1] + end_col))
    merged: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if merged and a < merged[-1][1]:  # nested in (or overlapping) the previous one
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return data, merged


def _finder(text: str, params_of: ParamsOf | None, known: frozenset[str]) -> tuple[_Finder, ast.Module] | None:
    try:
        tree = parse(text)
    except (SyntaxError, ValueError):
        return None
    finder = _Finder(params_of, secret_matcher(known))
    finder.visit(tree)
    return finder, tree


def redact_source(text: str, secrets: Iterable[str] | None = None, params_of: ParamsOf | None = None) -> str:
    """``text`` with the literals its code binds to credential names (see the module docstring), known
    secrets (``secrets``, default: the environment's) and URL passwords replaced by ``***``.
    ``params_of(chain)`` may name the positional parameters of the callable a call's dotted name refers to."""
    known = frozenset(secret_env_values() if secrets is None else secrets)
    found = _finder(text, params_of, known)
    if found is not None:
        data, spans = _spans(text, found[0].found)
        pieces, pos = [], 0
        for a, b in spans:
            pieces.append(data[pos:a])
            pieces.append(REDACTED.encode())
            pos = b
        pieces.append(data[pos:])
        text = b"".join(pieces).decode("utf-8", "surrogatepass")
    text = _SECRET_LITERAL.sub(_redact_literal, text)  # comments, and text that does not parse
    return scrub(text, known)


def _redact_literal(m: re.Match[str]) -> str:
    if not is_secret_name(m.group("name")):
        return m.group(0)
    return f"{m.group('name')}{m.group('annotation') or ''}{m.group('eq')}{REDACTED}"


@functools.lru_cache(maxsize=512)
def secret_literals(text: str) -> frozenset[str]:
    """The strings (4 characters or more) the code in ``text`` binds to credential names: known secrets
    wherever they show up again (a rendered constant, another function's source)."""
    found = _finder(text, None, frozenset())
    if found is None:
        return frozenset()
    out: set[str] = set()
    for node in found[0].found:
        parts = node.values if isinstance(node, ast.JoinedStr) else [node]
        for part in parts:
            if isinstance(part, ast.Constant) and isinstance(part.value, str) and len(part.value) >= 4:
                if isinstance(node, ast.JoinedStr) and len(part.value) < 8:
                    continue  # a short piece of an f-string is no secret on its own
                out.add(part.value)
    return frozenset(out)


def traceback_secret_literals(tb: TracebackType | None) -> frozenset[str]:
    """The credential literals (see :func:`secret_literals`) written in the project files a traceback
    passes through: a traceback shows those lines, so what is scrubbed from it must include them."""
    found: set[str] = set()
    for frame, _ in traceback.walk_tb(tb):
        filename = frame.f_code.co_filename
        if filename.startswith("<") or not is_project_file(filename):
            continue
        lines = linecache.getlines(filename, frame.f_globals)
        if lines:
            found |= secret_literals("".join(lines))
    return frozenset(found)
