"""Types named by an artifact ref's ``python_type`` (``module:qualname``), which is untrusted text.

Naming a module must never run it. Two rules, one per use:

- :func:`resolve_type` gives the class a ``python_type`` names, importing nothing but the user's own
  project: the module is already imported, or it is a source file of the project (not the standard
  library, not site-packages, not isthmus itself) found without importing anything, parents included.
  The qualname is followed through class and module ``__dict__`` entries only (no ``__getattr__`` hook
  runs). Loaders that build a type from a ref (pydantic, dataclasses) and the code fingerprint use it.
- :func:`check_type_path` refuses a ``python_type`` that ``importlib.util.find_spec`` (which imports every
  parent package of a dotted name) could not look up without running a module that is not a package:
  a ``__main__`` module (``venv.__main__.x``) or a plain module named as a parent (``this.x``). Every ref a store is asked about passes it, so no ref can make any lookup run
  such a module.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import re
import sys
from typing import Any

from isthmus.artifacts.errors import InvalidArtifactRef
from isthmus.installed import is_project_file

_IDENT = re.compile(r"[^\W\d]\w*")
# isthmus and its adapters are the tool: their modules are never imported because a ref names them
_TOOL_TOPS = frozenset({"isthmus", "isthmus_airflow", "flytekitplugins"})
_checked: set[str] = set()  # python_type strings check_type_path accepted (positive verdicts only)


def split_type_path(path: Any) -> tuple[str, list[str]] | None:
    """(module, qualname parts) of a well-formed ``module:qualname`` of identifiers, else None."""
    if not isinstance(path, str) or len(path) > 1024:
        return None
    module, sep, qualname = path.partition(":")
    parts = qualname.split(".")
    names = module.split(".")
    if not sep or not all(_IDENT.fullmatch(p) for p in [*names, *parts]):
        return None
    return module, parts


def check_type_path(python_type: str) -> None:
    """Raise InvalidArtifactRef when looking ``python_type`` up by name could run a module that is not a
    package ``__init__`` (see the module docstring). Imports nothing; accepted names are remembered."""
    if python_type in _checked:
        return
    module = python_type.partition(":")[0]
    names = module.split(".")
    if "__main__" in names and module != "__main__":
        _refuse(python_type, "names a __main__ module, which runs a program when imported")
    search: Any = None
    for depth in range(1, len(names)):  # the parents a lookup of the module imports first
        parent = ".".join(names[:depth])
        loaded = sys.modules.get(parent)
        if loaded is not None:
            search = getattr(loaded, "__path__", None)
            if search is None:
                break  # an imported module, not a package: a lookup fails here without importing anything
            continue
        spec = _find(parent, search)
        if spec is None:
            break  # not installed here: a lookup fails without importing anything
        if spec.submodule_search_locations is None:
            _refuse(python_type, f"names {parent!r} as a package, but it is a module (importing it runs it)")
        search = list(spec.submodule_search_locations)
    if len(_checked) > 10_000:
        _checked.clear()
    _checked.add(python_type)


def _refuse(python_type: str, why: str) -> None:
    raise InvalidArtifactRef(
        f"artifact ref: python_type {python_type!r:.200} {why}; pass the ref exactly as isthmus wrote it"
    )


def resolve_type(path: str) -> type | None:
    """The class ``path`` (``module:qualname``) names, or None. Imports a module only when it is a source
    file of the user's project and so are all its parents (found without importing anything); any other
    module must be imported already. Never raises for a bad or hostile name."""
    parsed = split_type_path(path)
    if parsed is None:
        return None
    module_name, parts = parsed
    module = sys.modules.get(module_name)
    if module is None:
        if not is_project_module_name(module_name):
            return None
        try:
            module = importlib.import_module(module_name)
        except Exception:  # a broken project module: the caller reports the type as unknown
            return None
    obj: Any = module
    for part in parts:
        try:
            namespace = vars(obj)
        except TypeError:
            return None
        obj = namespace.get(part)
        if obj is None:
            return None
    return obj if isinstance(obj, type) else None


def is_project_module_name(name: str) -> bool:
    """Whether module ``name`` and each of its parents is a source file (or namespace directory) of the
    user's project, found on ``sys.path`` without importing anything. Parents already imported count as
    found; ``__main__`` modules and isthmus's own modules never do."""
    names = name.split(".")
    if not all(_IDENT.fullmatch(n) for n in names) or "__main__" in names or names[0] in _TOOL_TOPS:
        return False
    search: Any = None
    for depth in range(1, len(names) + 1):
        current = ".".join(names[:depth])
        loaded = sys.modules.get(current)
        if loaded is not None and depth < len(names):
            search = getattr(loaded, "__path__", None)
            if search is None or not all(is_project_file(p) for p in search):
                return False
            continue
        spec = _find(current, search)
        if spec is None or not _is_project_spec(spec):
            return False
        search = spec.submodule_search_locations
        if depth < len(names) and search is None:
            return False
    return True


def _find(name: str, search: Any) -> Any:
    """The spec of ``name`` on ``search`` (a parent's ``__path__``; ``sys.path`` when None), found by the
    path finder alone: nothing is imported or executed."""
    try:
        return importlib.machinery.PathFinder.find_spec(name, None if search is None else list(search))
    except (ImportError, ValueError, OSError):
        return None


def _is_project_spec(spec: Any) -> bool:
    if spec.loader is None or type(spec.loader).__name__ == "NamespaceLoader":  # a namespace package
        locations = list(spec.submodule_search_locations or [])
        return bool(locations) and all(is_project_file(p) for p in locations)
    if not isinstance(spec.loader, importlib.machinery.SourceFileLoader):  # no extension, zip or bytecode
        return False
    return isinstance(spec.origin, str) and is_project_file(spec.origin)


__all__ = ["check_type_path", "is_project_module_name", "resolve_type", "split_type_path"]
