"""Keep credentials out of metadata, logs and lineage."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "***"
_SECRET_WORDS = (
    "KEY",
    "SECRET",
    "TOKEN",
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "PWD",
    "CREDENTIAL",
    "AUTH",
    "PRIVATE",
    "COOKIE",
    "SESSION",
    "SIGNATURE",
    "CERT",
    "DSN",
    "CONN",
)
_URL_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*://)([^/@:\s]*):([^/@\s]+)@")


def is_secret_name(name: str) -> bool:
    """True when a variable or parameter name looks like it holds a credential."""
    upper = name.upper()
    return any(word in upper for word in _SECRET_WORDS)


def redact_url(text: str) -> str:
    """Hide the password in ``scheme://user:password@host`` URLs."""
    return _URL_USERINFO.sub(lambda m: f"{m.group(1)}{m.group(2)}:{REDACTED}@", text)


def redact_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Copy of ``params`` with secret-named values (at any depth) replaced by ``***``."""
    return {k: _redact_value(k, v) for k, v in params.items()}


def _redact_value(name: str, value: Any) -> Any:
    if is_secret_name(str(name)):
        return REDACTED
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value("", v) for v in value]
    if isinstance(value, str):
        return redact_url(value)
    return value


def secret_values(params: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> set[str]:
    """Literal secret strings to scrub from free text (errors, tracebacks)."""
    found: set[str] = set()

    def collect(name: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                collect(str(k), v)
        elif is_secret_name(name) and isinstance(value, (str, bytes)) and len(value) >= 4:
            found.add(value.decode(errors="ignore") if isinstance(value, bytes) else value)

    for k, v in (params or {}).items():
        collect(k, v)
    for k, v in (os.environ if environ is None else environ).items():
        collect(k, v)
    return found


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret (longest first) and URL passwords in ``text``."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, REDACTED)
    return redact_url(text)
