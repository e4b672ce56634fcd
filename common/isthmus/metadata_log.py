"""``log_metadata``: a step records numbers and short facts about its run while it runs.

``log_metadata({"accuracy": 0.93, "rows": 1200})`` attaches them to the step run in progress;
``log_metadata({...}, output="model")`` to one of its outputs (kept in that output ref's metadata, under
``"logged"``). The StepRunner opens a :class:`MetadataLog` around each call of a step function; outside
one, ``log_metadata`` raises. Values are small JSON data; a value holding a secret the run knows (or a
secret type, or text under a secret-named key) is refused, as a secret output is, and a credential a text
shows by its form (a URL's password, a ``Bearer`` token, a ``ghp_…`` token) is recorded as ``***``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from isthmus.artifacts.refs import metadata_problem
from isthmus.errors import SecretValueError, StepDefinitionError
from isthmus.redaction import find_secret, redact_text, resolved_secrets


class MetadataLogError(StepDefinitionError):
    """``log_metadata`` called outside a running step, or with metadata that cannot be recorded."""


@dataclass
class MetadataLog:
    """What one call of a step function logged: for the step run, and per output."""

    step: str
    outputs: tuple[str, ...]
    secrets: frozenset[str] = field(default=frozenset(), repr=False)
    run: dict[str, Any] = field(default_factory=dict)
    per_output: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, metadata: Mapping[str, Any], output: str | None) -> None:
        label = f"step {self.step!r}: log_metadata"
        if output is not None and output not in self.outputs:
            raise MetadataLogError(
                f"{label}(output={output!r}): the step has no such output; its outputs are {list(self.outputs)}"
            )
        if not isinstance(metadata, Mapping):
            raise MetadataLogError(f"{label}() takes a dict of name -> value, got {type(metadata).__name__}")
        plain: dict[str, Any] = {}
        for key, value in metadata.items():
            if not isinstance(key, str) or not key:
                raise MetadataLogError(f"{label}(): key {key!r} must be a non-empty string")
            plain[key] = _plain(value, f"{label}(): {key!r}")
        found = find_secret(plain, self.secrets | resolved_secrets(), by_key=True)
        if found is not None:
            where, what = found
            raise SecretValueError(
                f"{label}(): metadata holds a secret ({what} at {where or 'the value'}); isthmus never records "
                "secrets: log a description of the value instead"
            )
        plain = _shown(plain)
        target = self.run if output is None else self.per_output.setdefault(output, {})
        merged = {**target, **plain}
        problem = metadata_problem(merged)
        if problem:
            raise MetadataLogError(f"{label}(): the metadata {problem}; log numbers and short facts, not data")
        target.clear()
        target.update(merged)


def _shown(value: Any) -> Any:
    """``value`` with the credentials its texts show by their form (a URL's password, a ``Bearer`` token, a
    token of a known form) replaced by ``***``, as the lineage facet of the metadata shows them."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {redact_text(k): _shown(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shown(v) for v in value]
    return value


_CURRENT: ContextVar[MetadataLog | None] = ContextVar("isthmus_metadata_log", default=None)


@contextmanager
def collecting(step: str, outputs: tuple[str, ...], secrets: frozenset[str]) -> Iterator[MetadataLog]:
    """Open a :class:`MetadataLog` for one call of ``step``'s function (used by the StepRunner)."""
    log = MetadataLog(step, outputs, secrets)
    token = _CURRENT.set(log)
    try:
        yield log
    finally:
        _CURRENT.reset(token)


def log_metadata(metadata: Mapping[str, Any], *, output: str | None = None) -> None:
    """Attach ``metadata`` (name -> JSON value) to the step run in progress, or to its output ``output``.
    Later calls add keys and overwrite keys logged before."""
    log = _CURRENT.get()
    if log is None:
        raise MetadataLogError(
            "isthmus.log_metadata() was called outside a running step; call it inside a @step function while "
            "it runs (step.run(...), a pipeline run or an orchestrator task), not at import time or in a test"
        )
    log.add(metadata, output)


def _plain(value: Any, label: str, depth: int = 0) -> Any:
    """``value`` as JSON data (numpy scalars as numbers; NaN and infinities as their text)."""
    if depth > 8:
        raise MetadataLogError(f"{label} nests too deeply; log numbers and short facts")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else repr(float(value))
    if type(value).__module__ == "numpy" and callable(getattr(value, "item", None)) and not getattr(value, "ndim", 0):
        return _plain(value.item(), label, depth)
    if isinstance(value, (list, tuple)):
        return [_plain(v, label, depth + 1) for v in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, label, depth + 1) for k, v in value.items()}
    raise MetadataLogError(
        f"{label} is a {type(value).__module__}.{type(value).__qualname__}; metadata values are numbers, text, "
        "booleans, or lists and dicts of them"
    )
