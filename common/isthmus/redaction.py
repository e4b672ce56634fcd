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
  base64 spellings; :func:`is_secret_string` tells whether one string holds a credential.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import json
import os
import re
import urllib.parse
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
_URL_RE = re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*://)([^\s'\"<>`]+)")
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


def is_secret_env(name: str, value: str) -> bool:
    """An environment variable that holds a credential: by its name, or a URL with a password or token."""
    # OPENLINEAGE__TRANSPORT (JSON) and its parts may hold an API key under any name.
    return name.startswith("OPENLINEAGE__TRANSPORT") or is_secret_name(name) or redact_url(str(value)) != str(value)


_env_seen: dict[Any, Any] = {}
_env_secrets: frozenset[str] = frozenset()


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
    return _env_secrets


def _env_secret_values(environ: Mapping[str, str]) -> frozenset[str]:
    found: set[str] = set()
    for name, value in environ.items():
        if len(value) < 4 or not is_secret_env(name, value):
            continue
        if is_secret_name(name) or name.startswith("OPENLINEAGE__TRANSPORT"):
            found.add(value)
        for m in _URL_RE.finditer(value):
            password = _url_password(m.group(0))
            if password:
                found.update((password, urllib.parse.unquote(password)))
    return frozenset(s for s in found if len(s) >= 4)


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
        return _AUTH_VALUE_RE.match(text) is not None  # the value of an Authorization header


@functools.lru_cache(maxsize=16)
def secret_matcher(known: frozenset[str]) -> SecretMatcher:
    """The (memoized) :class:`SecretMatcher` for a set of known secrets."""
    return SecretMatcher(known)


def is_secret_string(text: str, known: Iterable[str] = ()) -> bool:
    """A string that holds a credential: one of the ``known`` secrets (or, for secrets of 8 characters or
    more, one inside it, also base64-encoded as in a ``Basic`` header), a URL with a password or token, or
    an authorization value (``Bearer …``, ``Basic …``)."""
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
_SCAN_BUDGET = 10_000  # nodes visited per value: a huge list is scanned in part, never for minutes
_OPAQUE_MODULES = ("numpy", "pandas", "pyarrow", "torch", "scipy", "polars")


def redact_text(text: str) -> str:
    """Hide credentials that free text shows by their form: URL passwords and tokens, the token of an
    ``Authorization: Bearer …`` header or a ``Bearer …`` value."""
    text = redact_url(text)
    if not text:
        return text
    text = _HEADER_LINE_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return _AUTH_SCHEME_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


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


def _walk(
    value: Any, path: str = "", budget: list[int] | None = None, scoped: bool = False
) -> Iterator[tuple[str, str, Any]]:
    """Every (path, how, value) in ``value`` that holds a secret: ``how`` is ``object`` (a secret type),
    ``field`` (a secret-named field of a declared type holding text), ``key`` (a secret-named mapping key
    holding text), ``header`` (a header pair), ``scoped`` (text nested deeper under a secret name) or
    ``text`` (any other string leaf, for by-value checks)."""
    budget = budget if budget is not None else [_SCAN_BUDGET]
    budget[0] -= 1
    if budget[0] < 0:
        return
    if isinstance(value, (str, bytes)):
        yield path, "scoped" if scoped else "text", value
        return
    if value is None or isinstance(value, (bool, int, float, complex)):
        return
    if is_secret_object(value):
        yield path, "object", value
        return
    if type(value).__module__.split(".", 1)[0] in _OPAQUE_MODULES:
        return  # arrays and frames: data, not credentials (a string column is not scanned)
    if isinstance(value, Mapping):
        for k, v in list(value.items()):
            sub = f"{path}[{k!r}]"
            secret_key = isinstance(k, str) and is_secret_name(k)
            if secret_key and _is_text(v) and not scoped:
                yield sub, "key", v
            else:
                yield from _walk(v, sub, budget, scoped or secret_key)
        return
    fields = declared_fields(value)
    if fields is not None:
        for name, v in fields:
            sub = f"{path}.{name}"
            if is_secret_name(name) and _is_text(v) and not scoped:
                yield sub, "field", v
            else:
                yield from _walk(v, sub, budget, scoped or is_secret_name(name))
        return
    if isinstance(value, (list, tuple, set, frozenset)):
        if not scoped and _header_pair(value):
            yield f"{path}[1]", "header", value[1]  # type: ignore[index]
            return
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]", budget, scoped)
        return
    if isinstance(getattr(value, "__dict__", None), dict) and not isinstance(value, type):
        for name, v in list(vars(value).items()):  # plain objects: secret types count, names only as scope
            if is_secret_object(v):
                yield f"{path}.{name}", "object", v
            elif isinstance(v, (Mapping, list, tuple)) or declared_fields(v) is not None:
                for hit in _walk(v, f"{path}.{name}", budget, scoped):
                    if hit[1] != "text":
                        yield hit


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
        return {"<type>": f"{cls.__module__}.{cls.__qualname__}", **{k: reveal_secrets(v) for k, v in fields}}
    if isinstance(value, (list, tuple)):
        return [reveal_secrets(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return {"<set>": sorted((reveal_secrets(v) for v in value), key=repr)}
    return value


def find_secret(value: Any, known: Iterable[str] = (), *, by_key: bool = False) -> tuple[str, str] | None:
    """Where ``value`` holds a secret, as ``(path, what)`` (``path`` like ``.password`` or ``[0]``), or None.

    Found: a secret type anywhere; a secret-named field of a dataclass, pydantic model, attrs class or
    named tuple that holds text; a header pair; a string that is, or contains, one of the ``known``
    secret values; with ``by_key``, a secret-named mapping key holding text (off for step outputs:
    ``{"tokens": "..."}`` is ordinary data there). At most 10,000 nodes are visited.
    """
    needles = [k for k in known if len(k) >= 4]
    for path, how, leaf in _walk(value):
        if how == "object":
            return path, f"a {type(leaf).__module__}.{type(leaf).__qualname__}"
        if how == "field":
            return path, "a secret-named field"
        if how == "header":
            return path, "an authorization header"
        if how == "key" and by_key:
            return path, "a secret-named key"
        if needles and isinstance(leaf, (str, bytes)):
            text = leaf.decode(errors="ignore") if isinstance(leaf, bytes) else leaf
            if any(n == text or (len(n) >= 8 and n in text) for n in needles):
                return path, "the value of a secret"
    return None


def redact_params(params: Mapping[str, Any], secrets: Iterable[str] = ()) -> dict[str, Any]:
    """Copy of ``params`` (JSON data) with secret-named values at any depth and the value of header
    pairs replaced by ``***``, and credentials in strings (URL passwords, bearer tokens, any of
    ``secrets``) scrubbed."""
    known = _variants(secrets)
    return {k: _redact_value(k, v, known) for k, v in params.items()}


def _redact_value(name: str, value: Any, known: list[str]) -> Any:
    if is_secret_name(str(name)):
        return REDACTED
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v, known) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if _header_pair(value):
            return [value[0], REDACTED]
        return [_redact_value("", v, known) for v in value]
    if isinstance(value, str):
        return _scrub_known(redact_text(value), known)
    return value


def safe_params(params: Mapping[str, Any], secrets: Iterable[str] = ()) -> dict[str, Any]:
    """Parameters as they may be recorded: JSON data redacted like :func:`redact_params`; any other object
    as a typed placeholder ``<module.Type>`` (``***`` when it holds a secret) — never its ``repr()``,
    which may show a password."""
    known = list(secrets)
    return redact_params({str(k): _jsonable(v, known) for k, v in params.items()}, known)


def _jsonable(value: Any, known: list[str]) -> Any:
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


def secret_values(params: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> set[str]:
    """Literal secret strings to scrub from free text (errors, tracebacks): the values of secret-named
    parameters and fields at any depth, of secret objects (``SecretStr``), of header pairs (and the token
    in ``Bearer <token>``), URL passwords in any string argument, and secret-looking environment
    variables."""
    found: set[str] = set()

    def add(value: Any) -> None:
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

    def text(value: Any) -> None:  # any string argument: the credentials its form shows
        if isinstance(value, bytes):
            value = value.decode(errors="ignore")
        if not isinstance(value, str):
            return
        if "://" in value:
            for m in _URL_RE.finditer(value):
                password = _url_password(m.group(0))
                if password:
                    add(password)
                    add(urllib.parse.unquote(password))
        for m in _AUTH_SCHEME_RE.finditer(value):
            add(m.group(0))

    def collect(name: str, value: Any) -> None:
        if is_secret_name(name) and _is_text(value):
            add(value)
            return
        for _path, how, leaf in _walk(value, name):
            if how == "object":
                add(_reveal(leaf))
            elif how == "text":
                text(leaf)
            else:
                add(leaf)

    for k, v in (params or {}).items():
        collect(str(k), v)
    found.update(secret_env_values(environ))
    found.discard("")
    return {f for f in found if len(f) >= 4}


def _url_password(url: str) -> str | None:
    try:
        parts = urllib.parse.urlsplit(url)
        return parts.password
    except ValueError:
        return None


def _variants(secrets: Iterable[str]) -> list[str]:
    """Each secret with the spellings it takes in messages: repr()- and JSON-escaped, URL-quoted."""
    out: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        out.add(secret)
        out.add(repr(secret)[1:-1])
        out.add(json.dumps(secret)[1:-1])
        out.add(urllib.parse.quote(secret, safe=""))
        out.add(urllib.parse.quote_plus(secret, safe=""))
        if len(secret) >= 8:
            out.update(_base64_cores(secret))
    return sorted((v for v in out if v), key=len, reverse=True)


def _scrub_known(text: str, known: list[str]) -> str:
    for secret in known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret (longest first, also repr/JSON-escaped and URL-quoted),
    then URL passwords and bearer tokens, in ``text``."""
    return redact_text(_scrub_known(text, _variants(secrets)))
