"""Source text fit to store and show: credentials written into it are replaced by ``***``.

Covers literals assigned to credential-like names (``API_KEY = "sk-..."``, ``password=1234`` in a call),
values of credential environment variables and URL passwords. The code fingerprint still hashes the
real source, so changing such a literal changes the key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from isthmus.redaction import REDACTED, is_secret_name, scrub, secret_values

# ``API_KEY = "..."``, ``token: str = '...'``, ``password=1234`` (a literal assigned to a credential name)
_SECRET_LITERAL = re.compile(
    r"""(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<annotation>\s*:\s*[^=\n]+?)?(?P<eq>\s*=\s*)(?P<value>[rbfuRBFU]{0,2}(?:'[^'\n]*'?|"[^"\n]*"?)|-?\d[\w.]*)"""
)


def _redact_literal(m: re.Match[str]) -> str:
    if not is_secret_name(m.group("name")):
        return m.group(0)
    return f"{m.group('name')}{m.group('annotation') or ''}{m.group('eq')}{REDACTED}"


def redact_source(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with literals assigned to credential names, values of credential environment variables
    (``secrets``, default: this process's) and URL passwords replaced by ``***``."""
    text = _SECRET_LITERAL.sub(_redact_literal, text)
    return scrub(text, secret_values() if secrets is None else secrets)
