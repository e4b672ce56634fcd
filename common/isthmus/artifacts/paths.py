"""Paths built from untrusted text (ids from a run context, step names) that must stay under their root.

A component is refused, with a one-line error naming what it is, when it could leave the directory it is
joined to or mean something else to a filesystem: empty, ``.``/``..``, a path separator, NUL or another
control character, or more than 200 characters.
"""

from __future__ import annotations

import os
import re
from typing import Any

from isthmus.artifacts.errors import UnsafePath

_MAX_COMPONENT = 200
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f/\\]")


def safe_component(value: Any, what: str) -> str:
    """``str(value)`` if it can be one path component under a root; raises UnsafePath otherwise."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    else:
        raise UnsafePath(f"{what} must be a string or an integer, got {type(value).__name__} {value!r:.80}")
    if not text or text in (".", "..") or len(text) > _MAX_COMPONENT or _BAD_CHARS.search(text):
        raise UnsafePath(
            f"{what} {text!r:.100} cannot be part of a file name (no '/', '\\\\', '..', NUL or control characters, "
            f"at most {_MAX_COMPONENT} characters); use a plain id"
        )
    return text


def join_under(root: str, *components: str, what: str = "path component") -> str:
    """``root/c1/c2...``, each component checked by :func:`safe_component`; ``root`` is a local path or an
    fsspec URL. For local roots the result is also checked to be inside ``root`` after normalisation."""
    parts = [safe_component(c, what) for c in components]
    if "://" in root:
        return "/".join([root.rstrip("/"), *parts])
    base = os.path.abspath(root)
    joined = os.path.abspath(os.path.join(base, *parts))
    if os.path.commonpath([base, joined]) != base or joined == base:
        raise UnsafePath(f"{what}s {parts!r:.200} would leave the directory {base!r}")
    return joined
