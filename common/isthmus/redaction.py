"""Keep credentials out of metadata, logs, artifacts and lineage.

Three tools, used wherever a value leaves a step:

- by name: :func:`is_secret_name` (``password``, ``pass_phrase``, ``pwd``, ``api_key``, ``Authorization`` …)
  and :func:`is_secret_env`;
- by type: ``pydantic.SecretStr``/``SecretBytes`` (anything with ``get_secret_value()``), and dataclasses,
  pydantic models, attrs classes and named tuples whose secret-named fields hold text
  (:func:`find_secret`);
- by value: :func:`secret_values` collects every secret a run knows about (secret-named parameters at
  any depth, secret objects, header pairs such as ``("Authorization", "Bearer …")`` and the token cut out
  of them, URL passwords, secret-looking environment variables: :func:`secret_env_values`) and
  :func:`scrub` removes them from free text (error messages, tracebacks), with their quoted, escaped and
  base64 spellings; :func:`is_secret_string` tells whether one string holds a credential;
- by shape: :func:`looks_like_credential` (``ghp_…``, ``sk-proj-…``, ``AKIA…``, ``xoxb-…``, ``glpat-…``,
  JWTs, private keys, long random tokens) for values whose name says nothing.

Values are scanned whole, however large (linear in their size; arrays and data frames of numpy, pandas,
pyarrow, torch, scipy and polars are data and not scanned).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import io
import json
import math
import os
import re
import types
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
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
    "CREDS",
)
# Secret words written in parts (``pass_phrase``, ``PassWord``): matched with the separators removed.
_JOINED_WORDS = ("PASSWORD", "PASSPHRASE", "PASSWD")
# Short words that name a secret only on their own (``db_pass``, ``pw``, ``cred``), never inside another.
_WHOLE_WORDS = frozenset({"PASS", "PW", "CRED"})
# Environment variables whose names contain a secret word but that hold none: PWD is the working
# directory (scrubbing it would blank every path in a traceback), the others are session plumbing of
# desktops and ssh. Matched exactly as spelled: a parameter ``pwd`` is a password.
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
# A name with none of these letters in a row is no secret (most names: decided without splitting words).
_MAYBE_SECRET = re.compile("|".join([*_SECRET_WORDS, "PASS", "PW", "CRED"]))


def maybe_secret_name(text: str) -> bool:
    """False when no name in ``text`` (one name, or many joined by newlines) can be a secret name: a fast
    first test before :func:`is_secret_name`."""
    return _MAYBE_SECRET.search(text.upper()) is not None


_WORD_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")  # snake_case, kebab-case and camelCase words
_URL_RE = re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*://)([^\s'\"<>`\x00]+)")
_QUERY_RE = re.compile(r"([?&;])([^=&#;?]+)=([^&#;]*)")
# Tokens that are used as the user part of a URL with no password (https://<token>@github.com/...).
_TOKEN_PREFIXES = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-", "xox")


@functools.lru_cache(maxsize=4096)  # names repeat (parameters, fields, variables): decide each once
def is_secret_name(name: str) -> bool:
    """True when a variable, parameter, field or key name looks like it holds a credential: it contains
    a secret word (``KEY``, ``TOKEN``, ``PWD`` …), spells one in parts (``pass_phrase``) or is made of a
    short one (``db_pass``). Environment variables such as ``PWD`` are not (spelled exactly so)."""
    if name in _NOT_SECRET_NAMES or not maybe_secret_name(name):
        return False
    chars = list(name)
    words: list[str] = []
    for m in _WORD_RE.finditer(name):
        word = m.group().upper()
        if word in _NOT_SECRET_WORDS:
            chars[m.start() : m.end()] = "_" * (m.end() - m.start())
        else:
            words.append(word)
    upper = "".join(chars).upper()
    if any(word in upper for word in _SECRET_WORDS) or not _WHOLE_WORDS.isdisjoint(words):
        return True
    joined = "".join(words)
    return any(word in joined for word in _JOINED_WORDS)


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


def redact_location(url: str) -> str:
    """A store's URL (a setting) as it may be shown: :func:`redact_url`, and then its password wherever
    it still shows, however spelled (a space or a quote in it ends a URL in free text). A value with an
    ``@`` but no ``://`` (a slash missing) has no authority to parse: all before its last ``@`` but the
    scheme is hidden."""
    shown = redact_url(url)
    if "://" not in shown and "@" in shown:  # malformed (``scheme:/user:pw@host``): no authority to parse
        scheme, sep, _ = shown.partition(":")
        return (
            f"{scheme}{sep}{REDACTED}{shown[shown.rindex('@') :]}" if sep else f"{REDACTED}{shown[shown.rindex('@') :]}"
        )
    try:
        password = urllib.parse.urlsplit(url.strip()).password
    except ValueError:
        return shown
    for spelling in {password or "", urllib.parse.unquote(password or "")}:
        if spelling and spelling != REDACTED:
            shown = shown.replace(f":{spelling}@", f":{REDACTED}@")
    return shown


def is_secret_env(name: str, value: str) -> bool:
    """An environment variable that holds a credential: by its name, a URL with a password or token, or a
    value shaped like a credential (:func:`looks_like_credential`)."""
    # OPENLINEAGE__TRANSPORT (JSON) and its parts may hold an API key under any name.
    text = str(value)
    return (
        name.startswith("OPENLINEAGE__TRANSPORT")
        or is_secret_name(name)
        or redact_url(text) != text
        or looks_like_credential(text)
    )


# Credentials whose form says what they are: GitHub, GitLab, Slack, OpenAI/Anthropic, AWS access key ids,
# Google API keys, Hugging Face, npm and PyPI tokens, JWTs and PEM private keys.
_TOKEN_SHAPES = re.compile(
    r"(?<![A-Za-z0-9_\-])(?:"
    r"gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_\-]{20,}"
    r"|xox[abposre]-[A-Za-z0-9\-]{10,}|sk-[A-Za-z0-9]{32,}|sk-(?:proj|ant|svcacct|admin)-[A-Za-z0-9_\-]{20,}"
    r"|(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])|AIza[0-9A-Za-z_\-]{35}|hf_[A-Za-z0-9]{30,}|npm_[A-Za-z0-9]{36}"
    r"|pypi-[A-Za-z0-9_\-]{50,}|eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"
    r")"
)
_PRIVATE_KEY_RE = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.S
)
_RANDOM_TOKEN_RE = re.compile(r"[A-Za-z0-9_\-+/=.~]{32,}")


def _looks_random(text: str) -> bool:
    """A long token of letters of both cases and digits whose characters are about as varied as random
    ones (not a word, a path, a hex digest or a uuid)."""
    if not _RANDOM_TOKEN_RE.fullmatch(text) or text[0] in "/.~" or "//" in text:
        return False
    if not (any(c.isupper() for c in text) and any(c.islower() for c in text) and any(c.isdigit() for c in text)):
        return False
    n = len(text)
    entropy = -sum(c / n * math.log2(c / n) for c in Counter(text).values())
    return entropy >= 0.85 * math.log2(min(n, 62))


def looks_like_credential(text: str) -> bool:
    """A value shaped like a credential whatever its name: a known token form (``ghp_…``,
    ``github_pat_…``, ``glpat-…``, ``xoxb-…``, ``sk-…``, ``AKIA…``, ``AIza…``, ``hf_…``, a JWT, a PEM
    private key) or, as a whole, a long random token (32 characters or more, both letter cases and digits,
    about as varied as random text)."""
    if len(text) < 16:
        return False
    if _TOKEN_SHAPES.search(text) is not None or "PRIVATE KEY-----" in text:
        return True
    return _looks_random(text.strip())


_env_seen: dict[Any, Any] = {}
_env_secrets: frozenset[str] = frozenset()
_resolved: frozenset[str] = frozenset()  # values isthmus.secret() handed out in this process


def register_secret(value: str) -> None:
    """Scrub ``value`` (a credential resolved at run time, :func:`isthmus.secret`) wherever this process
    scrubs the environment's secrets."""
    global _resolved
    if isinstance(value, str) and len(value) >= 4:
        _resolved = _resolved | {value}


def resolved_secrets() -> frozenset[str]:
    return _resolved


def secret_env_values(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The secrets the environment holds (4 characters or more): the value of every variable that holds a
    credential (:func:`is_secret_env`), and the passwords of URLs in them. For this process's environment
    (``environ`` None) it is recomputed only when the environment changed."""
    global _env_seen, _env_secrets
    if environ is not None:
        return _env_secret_values(environ)
    raw = getattr(os.environ, "_data", None)  # CPython's undecoded store: comparing it is cheap
    current = raw if isinstance(raw, dict) else dict(os.environ)
    if current != _env_seen:
        _env_secrets = _env_secret_values(os.environ)
        _env_seen = dict(current)
    return _env_secrets | _resolved if _resolved else _env_secrets


def _env_secret_values(environ: Mapping[str, str]) -> frozenset[str]:
    found: set[str] = set()
    for name, value in environ.items():
        if len(value) < 4 or not is_secret_env(name, value):
            continue
        # The value of a credential-named variable, unless it points at a file (SSL_CERT_FILE, a
        # *_PASSWORD_FILE): the path is no secret, and hiding it would blank paths in every traceback.
        if (is_secret_name(name) or name.startswith("OPENLINEAGE__TRANSPORT")) and not _is_existing_path(value):
            found.add(value)
        elif _looks_random(value.strip()):
            found.add(value.strip())
        _add_shown(found, value)  # URL passwords, authorization values, tokens of a known form
    return frozenset(s for s in found if len(s) >= 4)


def _is_existing_path(value: str) -> bool:
    return value.startswith("/") and "\n" not in value and os.path.exists(value)


class SecretMatcher:
    """Tells whether strings hold a credential (see :func:`is_secret_string`), for many strings checked
    against one set of known secrets (one regular expression scans for all of them at once)."""

    def __init__(self, known: Iterable[str]) -> None:
        self._exact = frozenset(known)
        inside = sorted({form for s in self._exact if len(s) >= 8 for form in _spellings(s)}, key=len, reverse=True)
        self._inside = re.compile("|".join(map(re.escape, inside))) if inside else None

    def __call__(self, text: str) -> bool:
        if text in self._exact or (self._inside is not None and self._inside.search(text) is not None):
            return True
        if "://" in text and redact_url(text) != text:
            return True
        if _AUTH_VALUE_RE.match(text) is not None:  # the value of an Authorization header
            return True
        return len(text) >= 16 and _TOKEN_SHAPES.search(text) is not None


@functools.lru_cache(maxsize=16)
def secret_matcher(known: frozenset[str]) -> SecretMatcher:
    """The (memoized) :class:`SecretMatcher` for a set of known secrets."""
    return SecretMatcher(known)


def is_secret_string(text: str, known: Iterable[str] = ()) -> bool:
    """A string that holds a credential: one of the ``known`` secrets (or, for secrets of 8 characters or
    more, one inside it, also base64-encoded as in a ``Basic`` header), a URL with a password or token, an
    authorization value (``Bearer …``, ``Basic …``) or a token of a known form (``ghp_…``, a JWT …)."""
    return secret_matcher(frozenset(known))(text)


@functools.lru_cache(maxsize=1024)
def _spellings(secret: str) -> tuple[str, ...]:
    """``secret`` and the parts of its base64 encoding that do not depend on what precedes it."""
    return (secret, *_base64_cores(secret))


def _base64_cores(secret: str) -> list[str]:
    """For each alignment (0, 1 or 2 bytes before it), the base64 characters made only of ``secret``'s
    bytes: what ``base64(prefix + secret + suffix)`` always contains (``Basic`` headers of ``user:token``)."""
    data = secret.encode()
    cores = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data).decode()
        first = -(-offset // 3) * 4  # the first group made only of the secret's bytes
        last = ((offset + len(data)) // 3) * 4  # the end of the last such group
        if last - first >= 8:
            cores.append(encoded[first:last])
    return cores


_AUTH_SCHEMES = r"(Bearer|Basic|Token|Digest|Negotiate|ApiKey|Api-Key)"
_CREDENTIAL = r"([A-Za-z0-9._~+/=:\-]{6,})"
_AUTH_SCHEME_RE = re.compile(r"\b" + _AUTH_SCHEMES + r"(\s+)" + _CREDENTIAL, re.I)
_AUTH_VALUE_RE = re.compile(r"\s*" + _AUTH_SCHEMES + r"\s+" + _CREDENTIAL, re.I)  # a whole header value
_HEADER_LINE_RE = re.compile(
    r"\b((?:Proxy-)?Authorization|X-Api-Key|X-Auth-Token|Cookie|Set-Cookie)(\s*[:=]\s*)([^\r\n'\"]+)", re.I
)
_OPAQUE_MODULES = ("numpy", "pandas", "pyarrow", "torch", "scipy", "polars")
# ``password=…``, ``Pwd=…;``, ``AccountKey=…``, ``"token": "…"``: a credential assigned to a name in a
# connection string (libpq, ODBC, Azure), a config line or JSON text. Only names ending in these words
# count here (free text is full of ``max_tokens=`` and ``sort_key=``), and only values of 8 characters or
# more that do not name something (``pad_token = "<pad>"``, ``eos_token=tokenizer.eos_token``).
_ASSIGNMENT_RE = re.compile(
    r"(?<![\w.\-])([A-Za-z_][\w.\-]{0,63})([\"']?\s*[=:]\s*)(\"[^\"\r\n]*\"|'[^'\r\n]*'|[^\s;,&'\"()\[\]{}<>]+)"
)
_ASSIGNED_SECRET_ENDINGS = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "api-key",
    "accesskey",
    "access_key",
    "accountkey",
    "account_key",
    "sharedaccesskey",
    "signature",
    "privatekey",
    "private_key",
)


def _assigned_secret(m: re.Match[str]) -> str | None:
    """The credential an assignment match holds (unquoted), or None."""
    value = m.group(3)
    if value[:1] in "\"'":
        value = value[1:-1]
    if (
        len(value) < 8
        or value.startswith((REDACTED, "/", "~", "."))  # (``PWD=/home/…`` is a directory)
        or _NOT_A_CREDENTIAL.fullmatch(value)
        or not m.group(1).lower().endswith(_ASSIGNED_SECRET_ENDINGS)
    ):
        return None
    return value


# A value that names something (``tokenizer.eos_token``, ``<pad>``, ``None``) rather than holds a credential.
_NOT_A_CREDENTIAL = re.compile(r"[a-z_][a-z_.]*|<[^<>]*>|\[[^\[\]]*\]|None|True|False|null|true|false")


def _redact_assignment(m: re.Match[str]) -> str:
    if _assigned_secret(m) is None:
        return m.group(0)
    quote = m.group(3)[:1] if m.group(3)[:1] in "\"'" else ""
    return f"{m.group(1)}{m.group(2)}{quote}{REDACTED}{quote}"


def redact_text(text: str) -> str:
    """Hide credentials that free text shows by their form: URL passwords and tokens, the token of an
    ``Authorization: Bearer …`` header or a ``Bearer …`` value, a value assigned to a password-, token- or
    key-named name (``password=…``, ``Pwd=…;``, ``AccountKey=…``), tokens of a known form (``ghp_…``,
    ``sk-proj-…``, ``AKIA…``, JWTs …) and PEM private keys."""
    text = redact_url(text)
    if not text:
        return text
    text = _HEADER_LINE_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _AUTH_SCHEME_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    if "=" in text or ":" in text:
        text = _ASSIGNMENT_RE.sub(_redact_assignment, text)
    if len(text) >= 16:
        text = _TOKEN_SHAPES.sub(REDACTED, text)
        if "PRIVATE KEY-----" in text:
            text = _PRIVATE_KEY_RE.sub(REDACTED, text)
    return text


def is_secret_object(value: Any) -> bool:
    """A value that holds a secret by its type: ``pydantic.SecretStr``/``SecretBytes``/``Secret[...]``, or
    any object with a ``get_secret_value()`` method."""
    return callable(getattr(type(value), "get_secret_value", None))


def _reveal(value: Any) -> Any:
    try:
        return value.get_secret_value()
    except Exception:
        return None


def declared_fields(value: Any) -> list[tuple[str, Any]] | None:
    """(name, value) of the declared fields of a dataclass, pydantic model, attrs class or named tuple."""
    cls = type(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [(f.name, getattr(value, f.name, None)) for f in dataclasses.fields(value)]
    model_fields = getattr(cls, "model_fields", None) or getattr(cls, "__fields__", None)
    if isinstance(model_fields, Mapping) and (
        hasattr(value, "__pydantic_fields_set__") or hasattr(value, "__fields_set__")
    ):  # pydantic v2 and v1 models
        return [(name, getattr(value, name, None)) for name in model_fields]
    attrs = getattr(cls, "__attrs_attrs__", None)
    if attrs is not None:
        return [(a.name, getattr(value, a.name, None)) for a in attrs]
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return list(zip(value._fields, value, strict=False))
    return None


def _is_text(value: Any) -> bool:
    return isinstance(value, (str, bytes)) and len(value) > 0


def _header_pair(value: Any) -> bool:
    """``("Authorization", "Bearer …")``: a two-item list/tuple of a secret-looking name and a text value."""
    return (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and isinstance(value[0], str)
        and 0 < len(value[0]) <= 64
        and " " not in value[0].strip()
        and is_secret_name(value[0])
        and _is_text(value[1])
    )


# A path to a node, built only when a hit is reported: (parent, step), where a step is an int (a list
# index), a 1-tuple (a mapping key) or text (``.field``); the root is (None, its name).
_Link = tuple[Any, Any]
_SCALARS = frozenset({type(None), bool, int, float, complex})
_TEXT_TYPES = frozenset({str, bytes})
_SCALARS_AND_TEXT = _SCALARS | _TEXT_TYPES
_PLAIN_CONTAINERS = frozenset({dict, list, tuple})
_NOT_WALKED = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.CodeType)


def path_of(link: _Link | None) -> str:
    """The text of a path :func:`_walk` reports (``['cfg'].password``, ``[3]``)."""
    parts: list[str] = []
    while link is not None:
        link, step = link
        if isinstance(step, int):
            parts.append(f"[{step}]")
        elif isinstance(step, tuple):
            parts.append(f"[{step[0]!r}]")
        else:
            parts.append(step)
    return "".join(reversed(parts))


def _walk(value: Any, name: str = "", scoped: bool = False) -> Iterator[tuple[_Link, str, Any]]:
    """Every (path, how, value) in ``value`` that holds a secret: ``how`` is ``object`` (a secret type),
    ``field`` (a secret-named field of a declared type holding text), ``key`` (a secret-named mapping key
    holding text) or ``header`` (a header pair); string leaves come in batches, ``text`` (for by-value
    checks) or ``scoped`` (nested under a secret name), whose value is a list of (step, text): the path of
    one is ``(path, step)``, or ``path`` itself when ``step`` is None. Render paths with :func:`path_of`.

    The whole value is visited, however large (each container once: shared parts and cycles cost
    nothing more); plain objects by their attributes, whose names are not secret scopes (only what they
    hold counts); functions, classes and modules are code, not data, and are not entered."""
    root: _Link = (None, name)
    stack: list[tuple[Any, _Link, bool, str | None]] = [(value, root, scoped, None)]
    seen: dict[tuple[int, bool], Any] = {}  # containers visited (kept alive so their ids stay theirs)
    while stack:
        v, link, sc, how = stack.pop()
        if how is not None:
            yield link, how, v
            continue
        tp = type(v)
        if tp in _SCALARS:
            continue
        if tp not in _PLAIN_CONTAINERS:  # (plain dicts, lists and tuples are none of these)
            if tp is str or tp is bytes or isinstance(v, (str, bytes)):
                yield link, "scoped" if sc else "text", [(None, v)]
                continue
            if isinstance(v, _NOT_WALKED):
                continue
            if is_secret_object(v):
                yield link, "object", v
                continue
            if opaque_data(v):
                continue  # arrays and frames: data, not credentials (a string column is not scanned)
        marker = (id(v), sc)
        if marker in seen:
            continue
        seen[marker] = v
        items: Iterable[tuple[Any, Any]]
        if tp is dict or isinstance(v, Mapping):
            pairs = list(v.items())
            keys = tuple(k for k, _ in pairs)
            # (the keys of small mappings are decided once: records repeat them)
            named = _any_secret_key(keys) if len(keys) <= 64 else _any_secret_key.__wrapped__(keys)
            items = [((k,), x) for k, x in pairs if named or type(x) not in _SCALARS]
        elif tp is list or tp is tuple or (isinstance(v, (list, tuple)) and not hasattr(v, "_fields")):
            if not sc and _header_pair(v):
                yield (link, 1), "header", v[1]
                continue
            if all(type(x) is str for x in v):  # a list of strings: one batch, built in bulk
                if v:
                    yield link, "scoped" if sc else "text", list(enumerate(v))
                continue
            items, named = [(i, x) for i, x in enumerate(v) if type(x) not in _SCALARS], False
        elif isinstance(v, (set, frozenset)):
            items, named = enumerate(list(v)), False
        else:
            fields = declared_fields(v)
            if fields is not None:
                items, named = [(f".{n}", x) for n, x in fields], True
            else:
                state = getattr(v, "__dict__", None)
                if not isinstance(state, dict):
                    continue
                items, named = [(f".{a}", x) for a, x in list(state.items())], False  # names: no scope
        if not named:  # no name here makes a scope: texts in one batch, the rest visited in turn
            items = items if isinstance(items, list) else list(items)
            texts = [(step, x) for step, x in items if type(x) is str or type(x) is bytes]
            if texts:
                yield link, "scoped" if sc else "text", texts
            if len(texts) < len(items):
                stack.extend(
                    [(x, (link, step), sc, None) for step, x in reversed(items) if type(x) not in _SCALARS_AND_TEXT]
                )
            continue
        texts = []
        children: list[tuple[Any, _Link, bool, str | None]] = []
        for step, x in items:
            tx = type(x)
            if tx in _SCALARS:
                continue
            secret = named and _step_is_secret(step)
            if secret and not sc and (tx is str or tx is bytes) and x:
                children.append((x, (link, step), sc, "field" if isinstance(step, str) else "key"))
            elif (tx is str or tx is bytes) and not secret:
                texts.append((step, x))
            else:
                children.append((x, (link, step), sc or secret, None))
        if texts:  # string leaves of one container in one batch: checked together
            yield link, "scoped" if sc else "text", texts
        stack.extend(reversed(children))


@functools.lru_cache(maxsize=1024)  # records repeat their keys
def _any_secret_key(keys: tuple[Any, ...]) -> bool:
    """Whether any of the mapping ``keys`` is text that names a credential (one regular expression over
    all of them first)."""
    names = [k for k in keys if isinstance(k, str)]
    return bool(names) and maybe_secret_name("\n".join(names)) and any(is_secret_name(k) for k in names)


def _step_is_secret(step: Any) -> bool:
    """A mapping key (a 1-tuple) or a field (``.name``) that names a credential."""
    if isinstance(step, tuple):
        return isinstance(step[0], str) and is_secret_name(step[0])
    return is_secret_name(step[1:])


def _texts(batch: list[tuple[Any, Any]]) -> list[str]:
    return [t if type(t) is str else t.decode(errors="ignore") if isinstance(t, bytes) else str(t) for _, t in batch]


def _leaf(link: _Link, step: Any) -> _Link:
    return link if step is None else (link, step)


def reveal_secrets(value: Any) -> Any:
    """``value`` with every secret object replaced by ``{"<secret>": its value}`` and declared types
    (dataclasses, pydantic models, attrs classes) by ``{"<type>": name, **fields}``, so it can be hashed
    canonically. For cache keys only: the result holds the secrets in clear."""
    if is_secret_object(value):
        revealed = _reveal(value)
        return {"<secret>": revealed if isinstance(revealed, (str, bytes)) else reveal_secrets(revealed)}
    if isinstance(value, Mapping):
        return {k: reveal_secrets(v) for k, v in value.items()}
    fields = None if isinstance(value, (str, bytes)) else declared_fields(value)
    if fields is not None:
        cls = type(value)
        extra = getattr(value, "__pydantic_extra__", None)  # a model's extra fields are part of its value
        fields += sorted(extra.items()) if isinstance(extra, dict) else []
        return {"<type>": f"{cls.__module__}.{cls.__qualname__}", **{k: reveal_secrets(v) for k, v in fields}}
    if isinstance(value, (list, tuple)):
        return [reveal_secrets(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return {"<set>": sorted((reveal_secrets(v) for v in value), key=repr)}
    return value


class _Needles:
    """Known secrets looked for by value: a text that is one of them (4 characters or more) or holds one
    of 8 or more. One regular expression scans for all of them at once."""

    def __init__(self, known: frozenset[str]) -> None:
        self.exact = frozenset(k for k in known if len(k) >= 4)
        inside = sorted((k for k in self.exact if len(k) >= 8), key=len, reverse=True)
        self._inside = re.compile("|".join(map(re.escape, inside))) if inside else None

    def one(self, text: str) -> bool:
        return text in self.exact or (self._inside is not None and self._inside.search(text) is not None)

    def any(self, texts: list[str]) -> bool:
        """Whether any of ``texts`` is or holds a known secret (one set test and one search for all)."""
        if len(texts) == 1:
            return self.one(texts[0])
        if not self.exact.isdisjoint(texts):
            return True
        return self._inside is not None and self._inside.search("\x00".join(texts)) is not None

    def found_in(self, text: str) -> set[str]:
        return {n for n in self.exact if n == text or (len(n) >= 8 and n in text)}


@functools.lru_cache(maxsize=64)
def _needles(known: frozenset[str]) -> _Needles | None:
    """The (memoized) :class:`_Needles` of ``known``; None when there is nothing to look for."""
    needles = _Needles(known)
    return needles if needles.exact else None


def find_secret(value: Any, known: Iterable[str] = (), *, by_key: bool = False) -> tuple[str, str] | None:
    """Where ``value`` holds a secret, as ``(path, what)`` (``path`` like ``.password`` or ``[0]``), or None.

    Found: a secret type anywhere; a secret-named field of a dataclass, pydantic model, attrs class or
    named tuple that holds text; a header pair; a string that is, or contains, one of the ``known``
    secret values; with ``by_key``, a secret-named mapping key holding text (off for step outputs:
    ``{"tokens": "..."}`` is ordinary data there). The whole value is scanned, however large.
    """
    needles = _needles(known if isinstance(known, frozenset) else frozenset(known))
    for link, how, leaf in _walk(value):
        if how == "object":
            return path_of(link), f"a {type(leaf).__module__}.{type(leaf).__qualname__}"
        if how == "field":
            return path_of(link), "a secret-named field"
        if how == "header":
            return path_of(link), "an authorization header"
        if how == "key":
            if by_key:
                return path_of(link), "a secret-named key"
            leaf = [(None, leaf)]
        if needles is not None and needles.any(texts := _texts(leaf)):
            step = next(step for (step, _), text in zip(leaf, texts, strict=True) if needles.one(text))
            return path_of(_leaf(link, step)), "the value of a secret"
    return None


def known_secrets_in(value: Any, known: Iterable[str]) -> set[str]:
    """Which of the ``known`` secrets the text in ``value`` (at any depth) is, or holds (those of 8
    characters or more)."""
    needles = _needles(known if isinstance(known, frozenset) else frozenset(known))
    if needles is None or (type(value) is str and not needles.one(value)):
        return set()
    found: set[str] = set()
    for _link, how, leaf in _walk(value):
        if how == "object":
            continue
        texts = _texts(leaf) if how in ("text", "scoped") else _texts([(None, leaf)])
        if needles.any(texts):
            for text in texts:
                found |= needles.found_in(text)
    return found


def redact_params(params: Mapping[str, Any], secrets: Iterable[str] = ()) -> dict[str, Any]:
    """Copy of ``params`` (JSON data) with secret-named values at any depth and the value of header
    pairs replaced by ``***``, and credentials in strings (URL passwords, bearer tokens, tokens of a known
    form, any of ``secrets``) scrubbed."""
    scrubber = _scrubber(secrets if isinstance(secrets, frozenset) else frozenset(secrets))
    return {k: _redact_value(k, v, scrubber) for k, v in params.items()}


def _redact_value(name: str, value: Any, scrubber: _Scrubber | None) -> Any:
    if is_secret_name(str(name)):
        return REDACTED
    if isinstance(value, Mapping):  # (a key may be a URL with a password: keys are text too)
        return {_redact_key(k, scrubber): _redact_value(str(k), v, scrubber) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if _header_pair(value):
            return [value[0], REDACTED]
        return [_redact_value("", v, scrubber) for v in value]
    if isinstance(value, str):
        return _scrub_known(redact_text(value), scrubber)
    return value


def _redact_key(key: Any, scrubber: _Scrubber | None) -> Any:
    return _scrub_known(redact_text(key), scrubber) if isinstance(key, str) else key


def safe_params(params: Mapping[str, Any], secrets: Iterable[str] = ()) -> dict[str, Any]:
    """Parameters as they may be recorded: JSON data redacted like :func:`redact_params`; any other object
    as a typed placeholder ``<module.Type>`` (``***`` when it holds a secret) — never its ``repr()``,
    which may show a password."""
    known = frozenset(secrets)
    return redact_params({str(k): _jsonable(v, known) for k, v in params.items()}, known)


def _jsonable(value: Any, known: frozenset[str]) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else repr(value)
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return [_jsonable(v, known) for v in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _jsonable(v, known) for k, v in value.items()}
    to_dict = getattr(value, "to_dict", None)
    if type(value).__name__ == "ArtifactRef" and callable(to_dict):
        return to_dict()
    if find_secret(value, known) is not None:
        return REDACTED
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def _add_secret(found: set[str], value: Any) -> None:
    """``value`` (text) as a secret, with the token of a ``Bearer``/``Basic`` value and what a ``Basic``
    token decodes to."""
    if isinstance(value, bytes):
        value = value.decode(errors="ignore")
    if not isinstance(value, str) or len(value) < 4:
        return
    found.add(value)
    for m in _AUTH_SCHEME_RE.finditer(value):
        token = m.group(3)
        found.add(token)
        if m.group(1).lower() == "basic":
            try:
                decoded = base64.b64decode(token, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError, ValueError):
                continue
            found.add(decoded)
            found.add(decoded.partition(":")[2])


def _add_shown(found: set[str], value: Any) -> None:
    """The credentials any text shows by its form: URL passwords, authorization values, known token forms."""
    if isinstance(value, bytes):
        value = value.decode(errors="ignore")
    if not isinstance(value, str) or len(value) < 4:
        return
    if "://" in value:
        for m in _URL_RE.finditer(value):
            password = _url_password(m.group(0))
            if password:
                _add_secret(found, password)
                _add_secret(found, urllib.parse.unquote(password))
    for m in _AUTH_SCHEME_RE.finditer(value):
        _add_secret(found, m.group(0))
    if "=" in value or ":" in value:
        for m in _ASSIGNMENT_RE.finditer(value):
            assigned = _assigned_secret(m)
            if assigned is not None:
                _add_secret(found, assigned)
    if len(value) >= 16:
        for m in _TOKEN_SHAPES.finditer(value):
            found.add(m.group(0))


def shown_secrets(text: str | bytes) -> set[str]:
    """The credentials a text shows by its form: URL passwords, ``Bearer``/``Basic`` tokens (and what a
    ``Basic`` token decodes to), tokens of a known form (``ghp_…``, a JWT …)."""
    found: set[str] = set()
    _add_shown(found, text)
    return {f for f in found if len(f) >= 4}


def _collect(found: set[str], name: str, value: Any, *, whole: bool = False) -> None:
    """Add the secrets ``value`` (held under ``name``) holds to ``found``; with ``whole``, all its text."""
    if (whole or is_secret_name(name)) and _is_text(value):
        _add_secret(found, value)
        return
    for _link, how, leaf in _walk(value, name, scoped=whole or is_secret_name(name)):
        if how == "object":
            revealed = _reveal(leaf)
            if isinstance(revealed, (str, bytes)):
                _add_secret(found, revealed)
            elif revealed is not None:
                _collect(found, "", revealed, whole=True)
        elif how == "text":  # what the texts show by their form; none spans the separator
            _add_shown(found, "\x00".join(_texts(leaf)))
        elif how == "scoped":
            for text in _texts(leaf):
                _add_secret(found, text)
        else:
            _add_secret(found, leaf)


def secret_values(params: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> set[str]:
    """Literal secret strings to scrub from free text (errors, tracebacks): the values of secret-named
    parameters and fields at any depth, of secret objects (``SecretStr``), of header pairs (and the token
    in ``Bearer <token>``), URL passwords and tokens of a known form in any string argument, and
    secret-looking environment variables."""
    found: set[str] = set()
    for k, v in (params or {}).items():
        _collect(found, str(k), v)
    found.update(secret_env_values(environ))
    return {f for f in found if len(f) >= 4}


def secrets_in(value: Any) -> set[str]:
    """The secret strings of a value that is secret as a whole (a secret-named pipeline parameter, the
    task input it feeds): its text at any depth and what secret objects in it hold."""
    found: set[str] = set()
    _collect(found, "", value, whole=True)
    return {f for f in found if len(f) >= 4}


def _url_password(url: str) -> str | None:
    try:
        parts = urllib.parse.urlsplit(url)
        return parts.password
    except ValueError:
        return None


def _variants(secrets: Iterable[str]) -> list[str]:
    """Each secret with the spellings it takes in messages: repr()- (also twice, and of its UTF-8 bytes),
    ascii()- and JSON-escaped, URL-quoted (with and without ``/`` kept), and in base64."""
    out: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        out.add(secret)
        once = repr(secret)[1:-1]
        twice = once.replace("\\", "\\\\")  # a repr inside a message that is repr'd again (KeyError)
        for escaped in (once, twice):  # each with either quote escaped, as the enclosing repr picks
            out.update((escaped, escaped.replace("'", "\\'"), escaped.replace('"', '\\"')))
        out.add(repr(secret.encode("utf-8", "surrogatepass"))[2:-1])
        out.add(ascii(secret)[1:-1])
        out.add(json.dumps(secret)[1:-1])
        out.add(urllib.parse.quote(secret, safe=""))
        out.add(urllib.parse.quote(secret))
        out.add(urllib.parse.quote_plus(secret, safe=""))
        if len(secret) >= 6:
            out.update(_base64_cores(secret))
    return sorted((v for v in out if v), key=len, reverse=True)


def secret_bytes(secrets: Iterable[str]) -> tuple[bytes, ...]:
    """The byte strings by which a serialized value (a pickle, JSON, a ``.npy`` of strings) holds any of
    ``secrets`` of 8 characters or more (a shorter one, such as ``http``, is part of too many values; it
    is matched only as a whole value, elsewhere): each spelling :func:`_variants` knows, in UTF-8, and
    each secret in UTF-16 and UTF-32."""
    known = [s for s in secrets if isinstance(s, str) and len(s) >= 8]
    out = {v.encode("utf-8", "surrogatepass") for v in _variants(known)}
    for secret in known:
        for codec in ("utf-16-le", "utf-32-le"):
            out.add(secret.encode(codec, "surrogatepass"))
    return tuple(sorted(out, key=len, reverse=True))


def opaque_data(value: Any) -> bool:
    """Arrays and frames (numpy, pandas, Arrow …): data, not credentials; their bytes are not searched."""
    return type(value).__module__.split(".", 1)[0] in _OPAQUE_MODULES


def forbidden_bytes(value: Any, secrets: Iterable[str]) -> tuple[bytes, ...]:
    """What the stored form of ``value`` must not contain (``forbidden=`` of the artifact store's save):
    the spellings of ``secrets`` — none for arrays and frames (data, not credentials), for streams (the
    save drains them: they are stored, as their bytes cannot be read again) and for paths (a file or a
    tree: their materializer searches the contents)."""
    if not secrets or opaque_data(value) or isinstance(value, (io.IOBase, os.PathLike)) or _plain_data(value):
        return ()
    return secret_bytes(secrets)


_PLAIN_SCALARS = (str, bytes, int, float, bool, type(None))


def _plain_data(value: Any, depth: int = 0) -> bool:
    """Strings, numbers and lists, tuples and dicts of them: the search of the value itself sees every
    string in it (its stored form adds only the keys, which are names: ``{"MY_API_TOKEN": …}`` returned
    by a step that was handed the name is no secret)."""
    kind = type(value)
    if kind in _PLAIN_SCALARS:
        return True
    if depth > 100:
        return False
    if kind is list or kind is tuple:
        return all(_plain_data(v, depth + 1) for v in value)
    if kind is dict:
        return all(type(k) in _PLAIN_SCALARS and _plain_data(v, depth + 1) for k, v in value.items())
    return False


class _Scrubber:
    """Replaces every spelling of a set of secrets, longest first (so no part of a longer secret that
    overlaps a shorter one is left); one regular expression tells first whether there is any."""

    def __init__(self, secrets: frozenset[str]) -> None:
        self.spellings = _variants(secrets)
        self._any = re.compile("|".join(map(re.escape, self.spellings)))

    def __call__(self, text: str) -> str:
        if self._any.search(text) is None:
            return text
        for secret in self.spellings:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


@functools.lru_cache(maxsize=64)
def _scrubber(secrets: frozenset[str]) -> _Scrubber | None:
    """The (memoized) :class:`_Scrubber` of ``secrets``, or None when there is nothing to scrub."""
    return _Scrubber(secrets) if any(secrets) else None


def _scrub_known(text: str, scrubber: _Scrubber | None) -> str:
    return text if scrubber is None else scrubber(text)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret (longest first, also repr/JSON-escaped and URL-quoted),
    then URL passwords, bearer tokens and tokens of a known form, in ``text``."""
    known = secrets if isinstance(secrets, frozenset) else frozenset(secrets)
    return redact_text(_scrub_known(text, _scrubber(known)))
