"""Recorded parameters given back to a step or a pipeline (``isthmus rerun`` / ``reproduce``).

A record keeps parameters as JSON data with secrets replaced by ``***`` (whole values, or the password
inside a URL) and objects that are not data as a ``<module.Type>`` placeholder. Neither can be replayed:
such a parameter must be given again, with ``--param NAME=VALUE`` or the variable ``ISTHMUS_PARAM_<NAME>``
(which keeps a secret out of the shell's history); anything else is replayed as recorded.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from isthmus.errors import ReplayError
from isthmus.redaction import REDACTED

ENV_PREFIX = "ISTHMUS_PARAM_"
_PLACEHOLDER = re.compile(r"<[A-Za-z_][\w.]*>")


def parse_param_options(options: Iterable[str]) -> dict[str, Any]:
    """``["n=3", "name=abc", 'cfg={"a": 1}']`` -> values (JSON where the text is JSON, else the text)."""
    params: dict[str, Any] = {}
    for option in options:
        name, sep, text = option.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            shown = option if len(option) <= 40 else option[:40] + "…"
            raise ReplayError(f"--param {shown!r} must look like NAME=VALUE (a JSON value, or text)")
        try:
            params[name] = json.loads(text)
        except ValueError:
            params[name] = text
    return params


def _hidden(value: Any) -> str | None:
    """Why a recorded value cannot be replayed (``"***"`` or ``"placeholder"``), or None."""
    if isinstance(value, str):
        if REDACTED in value:
            return "secret"
        return "placeholder" if _PLACEHOLDER.fullmatch(value) else None
    if isinstance(value, Mapping):
        values: Iterable[Any] = value.values()
    elif isinstance(value, list):
        values = value
    else:
        return None
    reasons = {_hidden(v) for v in values} - {None}
    return "secret" if "secret" in reasons else next(iter(reasons), None)


def from_environment(names: Iterable[str], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The values of ``ISTHMUS_PARAM_<NAME>`` set for ``names`` (JSON where the text is JSON)."""
    environ = os.environ if environ is None else environ
    found: dict[str, Any] = {}
    for name in names:
        text = environ.get(ENV_PREFIX + name.upper())
        if text is not None:
            found[name] = parse_param_options([f"{name}={text}"])[name]
    return found


def replay_params(recorded: Mapping[str, Any] | None, given: Mapping[str, Any], *, what: str) -> dict[str, Any]:
    """``recorded`` with ``given`` (and ``ISTHMUS_PARAM_<NAME>`` variables) over it; a recorded ``***`` or
    placeholder nobody gave again is a :class:`ReplayError` naming it and how to pass it. ``what`` opens
    the message (``"run 3f2a9c1e"``)."""
    recorded = dict(recorded or {})
    hidden = {name: why for name, v in recorded.items() if name not in given and (why := _hidden(v)) is not None}
    from_env = from_environment(hidden)
    missing = [n for n in sorted(hidden) if n not in from_env]
    if missing:
        kinds = {hidden[n] for n in missing}
        shape = "as *** (a secret)" if kinds == {"secret"} else "as *** or as a type placeholder, not data"
        names = ", ".join(missing)
        first = missing[0]
        raise ReplayError(
            f"{what}: parameter(s) {names} were recorded {shape} and cannot be replayed; pass them with "
            f"--param {first}=VALUE (or set {ENV_PREFIX}{first.upper()})"
        )
    return {**recorded, **given, **from_env}
