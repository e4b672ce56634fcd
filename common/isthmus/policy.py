"""Cache policies: what goes into a step's cache key and how long an entry lives."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from isthmus.errors import StepDefinitionError
from isthmus.units import parse_duration

DepsMode = Literal["imports", "all"] | tuple[str, ...] | None
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class CachePolicy:
    """How a step is cached.

    - ``code``: include the code fingerprint (step + project-local helpers it reaches).
    - ``deps``: ``"imports"`` (versions of distributions the step's code imports), ``"all"`` (every
      installed distribution), a list of distribution names, or ``None`` (ignore versions).
    - ``ignore_inputs``: parameter names left out of the key.
    - ``expires_after``: ``"7d"``, ``"12h"`` or seconds; older results are recomputed.
    - ``version``: a salt (a string or an integer); change it to invalidate by hand.
    - ``files``: paths or globs (``"data/*.csv"``, ``"conf/**/*.yaml"``) the step reads; their contents
      enter the key (a directory: its listing and contents; a missing file counts as missing). Relative
      paths start at the working directory of the run, as ``open()`` in the step does.
    - ``env``: names of environment variables the step reads; their values enter the key through a keyed
      hash (never stored), an unset variable differs from an empty one.
    """

    enabled: bool = True
    code: bool = True
    deps: Any = "imports"
    ignore_inputs: tuple[str, ...] = ()
    expires_after: float | None = None
    version: str = ""
    files: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __init__(
        self,
        code: bool = True,
        deps: str | Sequence[str] | None = "imports",
        ignore_inputs: Sequence[str] = (),
        expires_after: str | float | None = None,
        version: str | int = "",
        files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] = (),
        env: str | Sequence[str] = (),
        *,
        enabled: bool = True,
    ) -> None:
        if isinstance(deps, str):
            if deps not in ("imports", "all"):
                raise StepDefinitionError(
                    f"CachePolicy(deps={deps!r}) is not valid; use 'imports', 'all', a list of distribution names, or None"
                )
            norm_deps: Any = deps
        elif deps is None:
            norm_deps = None
        else:
            try:
                names: tuple[Any, ...] = tuple(deps)  # unchecked input: checked below
            except TypeError:
                names = (deps,)
            if not all(isinstance(n, str) and n for n in names):
                raise StepDefinitionError(
                    f"CachePolicy(deps={deps!r}) is not valid; use 'imports', 'all', a list of distribution "
                    "names as strings (e.g. ['numpy', 'pandas']), or None"
                )
            norm_deps = tuple(sorted(set(names)))
        if ignore_inputs is None:
            ignore_inputs = ()
        elif isinstance(ignore_inputs, str):
            ignore_inputs = (ignore_inputs,)
        try:
            ignored: tuple[Any, ...] = tuple(ignore_inputs)  # unchecked input: checked below
        except TypeError:
            ignored = (ignore_inputs,)
        if not all(isinstance(n, str) and n.isidentifier() for n in ignored):
            raise StepDefinitionError(
                f"CachePolicy(ignore_inputs={ignore_inputs!r}) must list parameter names as strings, "
                "e.g. ignore_inputs=['verbose']"
            )
        try:
            exp = None if expires_after is None else parse_duration(expires_after)
        except ValueError as exc:
            raise StepDefinitionError(
                f"CachePolicy(expires_after={expires_after!r}) is not valid ({exc}); "
                "write e.g. expires_after='7d', '12h' or a number of seconds"
            ) from None
        object.__setattr__(self, "enabled", bool(enabled))
        object.__setattr__(self, "code", bool(code))
        object.__setattr__(self, "deps", norm_deps)
        object.__setattr__(self, "ignore_inputs", tuple(sorted(set(ignored))))
        object.__setattr__(self, "expires_after", exp)
        if version is None:
            version = ""
        if isinstance(version, bool) or not isinstance(version, (str, int)):
            raise StepDefinitionError(
                f"CachePolicy(version={version!r}) must be a string or an integer, e.g. version='2'"
            )
        object.__setattr__(self, "version", str(version))
        object.__setattr__(self, "files", _files(files))
        object.__setattr__(self, "env", _env_names(env))
        object.__setattr__(self, "extra", {})

    @classmethod
    def disabled(cls) -> CachePolicy:
        return cls(enabled=False)

    @classmethod
    def coerce(cls, value: CachePolicy | bool | None) -> CachePolicy:
        if value is None or value is True:
            return cls()
        if value is False:
            return cls.disabled()
        if isinstance(value, CachePolicy):
            return value
        raise StepDefinitionError(f"cache={value!r} must be True, False or CachePolicy(...)")

    def to_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "code": self.code,
            "deps": list(self.deps) if isinstance(self.deps, tuple) else self.deps,
            "ignore_inputs": list(self.ignore_inputs),
            "expires_after": self.expires_after,
            "version": self.version,
            **({"files": list(self.files)} if self.files else {}),
            **({"env": list(self.env)} if self.env else {}),
        }


def _files(files: Any) -> tuple[str, ...]:
    if files is None:
        return ()
    items = [files] if isinstance(files, (str, os.PathLike)) else files
    try:
        paths = [os.fspath(p) for p in items]
    except TypeError:
        raise StepDefinitionError(
            f"CachePolicy(files={files!r}) must list paths or globs as strings, e.g. files=['config.yaml', 'data/*.csv']"
        ) from None
    for p in paths:
        if not isinstance(p, str) or not p.strip() or "\x00" in p:
            raise StepDefinitionError(
                f"CachePolicy(files=...) has an invalid path {p!r}; give a non-empty path or glob, e.g. 'data/*.csv'"
            )
    return tuple(dict.fromkeys(paths))


def _env_names(env: Any) -> tuple[str, ...]:
    if env is None:
        return ()
    names = [env] if isinstance(env, str) else env
    try:
        names = list(names)
    except TypeError:
        names = [names]
    bad = [n for n in names if not isinstance(n, str) or not _ENV_NAME.match(n)]
    if bad:
        raise StepDefinitionError(
            f"CachePolicy(env={env!r}) has invalid environment variable names {bad}; "
            "list names such as env=['MODEL_VARIANT', 'API_BASE_URL']"
        )
    return tuple(sorted(set(names)))
