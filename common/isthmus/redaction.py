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
    "JWT",
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
# Whole names that contain a secret word but hold none: PWD is the working directory (scrubbing it
# would blank every path in a traceback), the others are session plumbing of desktops and ssh.
_NOT_SECRET_NAMES = frozenset(
    {
        "PWD",
        "OLDPWD",
        "SSH_AUTH_SOCK",
        "XDG_SESSION_ID",
        "XDG_SESSION_TYPE",
        "XDG_SESSION_CLASS",
        "XDG_SESSION_DESKTOP",
        "DBUS_SESSION_BUS_ADDRESS",
        "SESSION_MANAGER",
    }
)
# Ordinary words that merely contain a secret word (``tokenizer`` is a model object, not a token).
_NOT_SECRET_WORDS = frozenset(
    {
        "AUTHOR",
        "AUTHORS",
        "KEYBOARD",
        "KEYWORD",
        "KEYWORDS",
        "MONKEY",
        "TOKENIZER",
        "TOKENIZERS",
        "TOKENIZED",
        "CERTAIN",
        "CERTAINTY",
        "UNCERTAIN",
        "UNCERTAINTY",
        "CONNECTED",
        "CONNECTIVITY",
    }
)
_WORD_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")  # snake_case, kebab-case and camelCase words
_URL_RE = re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*://)([^\s'\"<>`]+)")
_QUERY_RE = re.compile(r"([?&;])([^=&#;?]+)=([^&#;]*)")
# Tokens that are used as the user part of a URL with no password (https://<token>@github.com/...).
_TOKEN_PREFIXES = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-", "xox")


def is_secret_name(name: str) -> bool:
    """True when a variable or parameter name looks like it holds a credential."""
    if name.upper() in _NOT_SECRET_NAMES:
        return False
    chars = list(name)
    for m in _WORD_RE.finditer(name):
        if m.group().upper() in _NOT_SECRET_WORDS:
            chars[m.start() : m.end()] = "_" * (m.end() - m.start())
    upper = "".join(chars).upper()
    return any(word in upper for word in _SECRET_WORDS)


def _token_like(user: str) -> bool:
    return len(user) >= 20 or user.lower().startswith(_TOKEN_PREFIXES)


def _redact_match(m: re.Match[str]) -> str:
    scheme, rest = m.group(1), m.group(2)
    end = min((i for i in (rest.find(c) for c in "/?#") if i != -1), default=len(rest))
    authority = rest[:end]
    at = authority.rfind("@")  # userinfo ends at the last '@' of the authority (passwords hold '@')
    if at != -1:
        user, colon, _ = authority[:at].partition(":")
        if colon:
            # 'user:p@ss/w@host': a password can hold both '@' and '/'; when in doubt, hide more.
            last = rest.rfind("@")
            rest = f"{user}:{REDACTED}{rest[last:]}"
        else:
            rest = (REDACTED if _token_like(user) else user) + authority[at:] + rest[end:]
    else:
        # 'user:pa/ss@host': an unencoded '/', '?' or '#' in the password ends the authority early.
        colon = authority.find(":")
        at = rest.rfind("@")
        if colon != -1 and at >= end and not authority[colon + 1 :].isdigit():
            rest = f"{authority[:colon]}:{REDACTED}{rest[at:]}"
    return scheme + _QUERY_RE.sub(_redact_query, rest)


def _redact_query(m: re.Match[str]) -> str:
    name = m.group(2)
    if is_secret_name(name) or name.lower() == "sig":  # 'sig': Azure SAS signatures
        return f"{m.group(1)}{name}={REDACTED}"
    return m.group(0)


def redact_url(text: str) -> str:
    """Hide credentials in URLs: the password of ``scheme://user:password@host``, a token used as the
    user (``https://ghp_...@github.com``) and secret-named query parameters (``?token=``, signatures)."""
    if "://" not in text:
        return text
    return _URL_RE.sub(_redact_match, text)


def is_secret_env(name: str, value: str) -> bool:
    """An environment variable that holds a credential: by its name, or a URL with a password or token."""
    # OPENLINEAGE__TRANSPORT (JSON) and its parts may hold an API key under any name.
    return name.startswith("OPENLINEAGE__TRANSPORT") or is_secret_name(name) or redact_url(str(value)) != str(value)


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
