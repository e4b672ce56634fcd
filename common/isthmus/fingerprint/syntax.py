"""``ast.parse`` and ``symtable`` for fingerprinting, one call at a time in this process.

CPython 3.11 keeps the depth counter of its AST conversion in interpreter-wide state: two threads parsing
at once (steps of a parallel local run, fingerprinted in their worker threads) can make one of them fail
with ``SystemError: AST constructor recursion depth mismatch`` (CPython gh-106905). Parsing a step's
sources takes well under a millisecond, so holding a lock costs nothing measurable.
"""

from __future__ import annotations

import ast
import symtable
import threading

_PARSING = threading.RLock()  # re-entrant: a finalizer run mid-parse may parse too


def parse(source: str | bytes, filename: str = "<unknown>") -> ast.Module:
    """``ast.parse(source, filename)``, never concurrently with another call of this function."""
    with _PARSING:
        return ast.parse(source, filename=filename)


def scopes(source: str) -> symtable.SymbolTable:
    """Python's own scope analysis of ``source`` (``symtable.symtable``), under the same lock as
    :func:`parse`, since it parses too."""
    with _PARSING:
        return symtable.symtable(source, "<fingerprint>", "exec")
