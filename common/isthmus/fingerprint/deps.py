"""Dependency fingerprint: versions of the installed distributions a step's code imports."""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from isthmus.config import get_settings
from isthmus.fingerprint.syntax import parse
from isthmus.hashing import hash_parts

if TYPE_CHECKING:
    import importlib.metadata as md

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
    import importlib.metadata as md  # only when the kept scan is missing or stale

    versions: dict[str, str] = {}
    for dist in md.distributions():
        name, version = _name_version(dist)
        if name and version:
            versions.setdefault(_norm(name), version)
    top = {k: sorted({_norm(d) for d in v}) for k, v in md.packages_distributions().items()}
    return {"versions": dict(sorted(versions.items())), "top_level": top}


_DIST_SUFFIXES = (".dist-info", ".egg-info")


def _entry_signature(entry: str) -> str:
    """What of one ``sys.path`` entry decides the installed distributions: its modification time where it
    holds distributions (``*.dist-info``, ``*.egg-info``: installing or removing one changes it), else only
    that it holds none — a script's or the working directory changes whenever a file is written there, and
    keying on that would scan the environment again in every new directory."""
    path = entry or "."
    try:
        st = os.stat(path)
    except OSError:
        return f"{entry}:-"
    if os.path.isdir(path) and os.path.basename(os.path.normpath(path)) not in ("site-packages", "dist-packages"):
        try:
            with os.scandir(path) as it:
                if not any(e.name.endswith(_DIST_SUFFIXES) for e in it):
                    return f"{entry}:none"
        except OSError:
            return f"{entry}:-"
    return f"{entry}:{st.st_mtime_ns}"


def _path_signature() -> str:
    parts = [_entry_signature(entry) for entry in sys.path]
    return hash_parts("dists-v2", sys.version, *parts).split(":", 1)[1][:24]


def _cache_dirs() -> list[Path]:
    """Where the scan is kept: the user's cache directory (``$XDG_CACHE_HOME/isthmus``, else
    ``~/.cache/isthmus``) — it describes the Python environment, not a store, so every ``ISTHMUS_HOME``
    shares it — then ``$ISTHMUS_HOME/cache`` (used when the first cannot be written)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return [Path(base) / "isthmus", get_settings().home / "cache"]


def _valid(data: Any) -> bool:
    """A scan as :func:`_scan` writes it (a damaged or foreign file is scanned again, never trusted)."""
    if not isinstance(data, dict) or not isinstance(data.get("versions"), dict):
        return False
    top = data.get("top_level")
    return (
        isinstance(top, dict)
        and all(isinstance(v, str) for v in data["versions"].values())
        and all(isinstance(v, list) and all(isinstance(d, str) for d in v) for v in top.values())
    )


@functools.cache
def _distributions() -> dict[str, Any]:
    """Installed distributions, cached on disk per ``sys.path`` state (an install changes folder mtimes)."""
    name = f"dists-{_path_signature()}.json"
    dirs = _cache_dirs()
    for folder in dirs:
        try:
            data = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if _valid(data):
            return data
    data = _scan()
    for folder in dirs:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f"{name}.{os.getpid()}.part"
            tmp.write_text(json.dumps(data))
            os.replace(tmp, folder / name)
            break
        except OSError:
            continue
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
            tree = parse(fh.read(), filename=path)
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
