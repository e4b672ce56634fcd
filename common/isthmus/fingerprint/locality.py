"""Which modules belong to the user's project (fingerprinted by source) and which are installed."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any

from isthmus.installed import is_project_file

NOT_PROJECT: Any = object()  # what project_module() returns for a module outside the project


def is_tool_module(name: str) -> bool:
    """True for modules of isthmus itself and its adapters (the tool, not the user's code)."""
    top = name.split(".", 1)[0]
    return (
        top in ("isthmus", "isthmus_airflow")
        or name == "flytekitplugins.isthmus"
        or name.startswith("flytekitplugins.isthmus.")
    )


def _places(mod: ModuleType) -> list[str]:
    """Where a module's code lives: its file, or the directories of a namespace package."""
    path = getattr(mod, "__file__", None)
    if path:
        return [path]
    try:
        return [p for p in getattr(mod, "__path__", None) or () if isinstance(p, str)]
    except TypeError:  # a __path__ that cannot be iterated
        return []


def is_project_module(module: ModuleType | str | None) -> bool:
    """True for modules of the user's project: not stdlib, not site-packages, not isthmus itself. A
    namespace package (no ``__init__.py``) counts when one of its directories is in the project."""
    if module is None:
        return False
    mod = sys.modules.get(module) if isinstance(module, str) else module
    if mod is None:
        return False
    name = mod.__name__
    if is_tool_module(name) or name in sys.builtin_module_names:
        return False
    return any(is_project_file(p) for p in _places(mod))


def project_module(name: str) -> ModuleType | Any | None:
    """The project module ``name``, imported if needed; :data:`NOT_PROJECT` for a module outside the
    project; None when it cannot be found or imported. ``name`` may come from untrusted data: only a
    module whose file (or namespace directory) is in the project is ever imported."""
    mod = sys.modules.get(name)
    if mod is not None:
        return mod if is_project_module(mod) else NOT_PROJECT
    if is_tool_module(name):
        return NOT_PROJECT
    parts = name.split(".")
    if not all(part.isidentifier() for part in parts):
        return None
    # Prefix by prefix: find_spec of a dotted name imports its parent packages, so a parent is imported
    # only once it is known to be project code (never an installed package's __init__ or __main__).
    for depth in range(1, len(parts) + 1):
        prefix = ".".join(parts[:depth])
        loaded = sys.modules.get(prefix)
        if loaded is not None:
            if not is_project_module(loaded):
                return NOT_PROJECT
            continue
        try:
            spec = importlib.util.find_spec(prefix)
        except (ImportError, ValueError, AttributeError):
            return None
        if spec is None:
            return None
        places = [p for p in [spec.origin or "", *(spec.submodule_search_locations or [])] if p and os.path.exists(p)]
        if not any(is_project_file(p) for p in places):
            return NOT_PROJECT
        try:
            importlib.import_module(prefix)
        except Exception:  # the step's own import fails the same way when it runs
            return None
    return sys.modules.get(name)
