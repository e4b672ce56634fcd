"""Which modules belong to the user's project (fingerprinted by source) and which are installed."""

from __future__ import annotations

import functools
import os
import site
import sys
import sysconfig
from types import ModuleType

# isthmus itself and its adapters are the tool, not the user's code.
_TOOL_PACKAGES = {"isthmus", "isthmus_airflow", "flytekitplugins"}


@functools.cache
def _installed_roots() -> tuple[str, ...]:
    roots: set[str] = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(os.path.realpath(path))
    for path in [*getattr(site, "getsitepackages", lambda: [])(), site.getusersitepackages()]:
        if path:
            roots.add(os.path.realpath(path))
    return tuple(sorted(roots))


@functools.lru_cache(maxsize=4096)
def _file_is_local(path: str) -> bool:
    real = os.path.realpath(path)
    parts = real.split(os.sep)
    if "site-packages" in parts or "dist-packages" in parts:
        return False
    return not any(real == root or real.startswith(root + os.sep) for root in _installed_roots())


def is_project_file(path: str) -> bool:
    """True for a file or package directory of the user's project (outside site-packages and stdlib)."""
    return _file_is_local(path)


def is_tool_module(name: str) -> bool:
    """True for modules of isthmus itself and its adapters."""
    top = name.split(".", 1)[0]
    return (
        top in ("isthmus", "isthmus_airflow")
        or name == "flytekitplugins.isthmus"
        or name.startswith("flytekitplugins.isthmus.")
    )


def is_project_module(module: ModuleType | str | None) -> bool:
    """True for modules of the user's project: not stdlib, not site-packages, not isthmus itself."""
    if module is None:
        return False
    mod = sys.modules.get(module) if isinstance(module, str) else module
    if mod is None:
        return False
    name = mod.__name__
    if name.split(".", 1)[0] in _TOOL_PACKAGES or name in sys.builtin_module_names:
        return False
    path = getattr(mod, "__file__", None)
    if not path:
        return False
    return _file_is_local(path)
