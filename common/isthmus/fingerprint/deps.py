"""Dependency fingerprint: versions of the installed distributions a step's code imports."""

from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from isthmus.config import get_settings
from isthmus.hashing import hash_parts

_IGNORED_DISTS = {"isthmus"}


@dataclass(frozen=True)
class DependencyFingerprint:
    hash: str
    versions: dict[str, str] = field(default_factory=dict)  # distribution -> version


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _name_version(dist: md.Distribution) -> tuple[str | None, str | None]:
    """Name and version from the ``name-version.dist-info`` folder name, parsing METADATA only if needed."""
    path = getattr(dist, "_path", None)
    folder = getattr(path, "name", "")
    if folder.endswith(".dist-info"):
        name, sep, version = folder[: -len(".dist-info")].partition("-")
        if sep and name and version:
            return name, version
    meta = dist.metadata
    return (meta["Name"] if meta else None), dist.version


def _scan() -> dict[str, Any]:
    versions: dict[str, str] = {}
    for dist in md.distributions():
        name, version = _name_version(dist)
        if name and version:
            versions.setdefault(_norm(name), version)
    top = {k: sorted({_norm(d) for d in v}) for k, v in md.packages_distributions().items()}
    return {"versions": dict(sorted(versions.items())), "top_level": top}


def _path_signature() -> str:
    parts = []
    for entry in sys.path:
        try:
            parts.append(f"{entry}:{os.stat(entry or '.').st_mtime_ns}")
        except OSError:
            parts.append(f"{entry}:-")
    return hash_parts("dists-v1", sys.version, *parts).split(":", 1)[1][:24]


@functools.cache
def _distributions() -> dict[str, Any]:
    """Installed distributions, cached on disk per ``sys.path`` state (an install changes folder mtimes)."""
    cache_file = get_settings().home / "cache" / f"dists-{_path_signature()}.json"
    try:
        return json.loads(cache_file.read_text())
    except (OSError, ValueError):
        pass
    data = _scan()
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.part")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, cache_file)
    except OSError:
        pass
    return data


def installed_versions() -> dict[str, str]:
    """Every installed distribution (normalized name -> version)."""
    return _distributions()["versions"]


def _top_level_to_dists() -> dict[str, list[str]]:
    return _distributions()["top_level"]


@functools.lru_cache(maxsize=1024)
def _imports_of_file(path: str, mtime: float) -> frozenset[str]:
    try:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), filename=path)
    except (OSError, SyntaxError, UnicodeDecodeError):
        return frozenset()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".", 1)[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".", 1)[0])
    return frozenset(names)


def imported_top_levels(module_names: list[str] | tuple[str, ...]) -> set[str]:
    """Top-level package names imported anywhere in the given (project) modules' source files."""
    names: set[str] = set()
    for mod_name in module_names:
        mod = sys.modules.get(mod_name)
        path = getattr(mod, "__file__", None)
        if path and path.endswith(".py") and os.path.exists(path):
            names |= _imports_of_file(path, os.path.getmtime(path))
    return names


def dependency_fingerprint(policy_deps: Any, modules: list[str] | tuple[str, ...]) -> DependencyFingerprint:
    """Fingerprint per ``CachePolicy.deps``: 'imports' (of ``modules``), 'all', a name list, or None."""
    versions: dict[str, str]
    installed = installed_versions()
    if policy_deps is None:
        versions = {}
    elif policy_deps == "all":
        versions = {k: v for k, v in installed.items() if k not in _IGNORED_DISTS}
    elif policy_deps == "imports":
        mapping = _top_level_to_dists()
        dists: set[str] = set()
        for top in imported_top_levels(modules):
            dists.update(mapping.get(top, ()))
        versions = {d: installed.get(d, "unknown") for d in sorted(dists) if d not in _IGNORED_DISTS}
    else:
        versions = {_norm(n): installed.get(_norm(n), "not-installed") for n in policy_deps}
        versions = dict(sorted(versions.items()))
    return DependencyFingerprint(
        hash=hash_parts("deps-v1", *[f"{k}=={v}" for k, v in versions.items()]),
        versions=versions,
    )


def clear_caches() -> None:
    """Forget cached distribution metadata (after installing or upgrading packages in-process)."""
    _distributions.cache_clear()
    _imports_of_file.cache_clear()
