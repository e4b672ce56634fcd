"""Where installed code lives (the standard library and every site-packages), and so which files are
the user's project: everything else."""

from __future__ import annotations

import functools
import os
import site
import sysconfig


@functools.cache
def installed_roots() -> tuple[str, ...]:
    """The real paths of the standard library and of every site-packages directory."""
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
def is_project_file(path: str) -> bool:
    """True for a file or package directory of the user's project (outside site-packages and stdlib)."""
    real = os.path.realpath(path)
    parts = real.split(os.sep)
    if "site-packages" in parts or "dist-packages" in parts:
        return False
    return not any(real == root or real.startswith(root + os.sep) for root in installed_roots())
