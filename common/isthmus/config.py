"""Where isthmus keeps things: resolved from ``ISTHMUS_*`` environment variables or :func:`configure`.

Every setting is checked when it is read: a bad value raises :class:`~isthmus.errors.ConfigurationError`
whose one-line message names the variable, the value (credentials hidden) and the fix.

A leaf of the package: it imports no isthmus module but the leaves ``errors``, ``hashing`` and
``redaction``. Modules that cache what the settings build (stores, the lineage emitter) subscribe with
:func:`on_change`; :func:`configure` and :func:`reset` call them.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

from isthmus.errors import ConfigurationError
from isthmus.hashing import parts_digest
from isthmus.redaction import redact_location, redact_url, scrub

_VERIFY_MODES = ("hash", "size", "off")

# The PostgreSQL driver isthmus ships (the ``postgres`` extra).
_PG_HINT = "postgresql+psycopg://user:password@host:5432/isthmus (pip install 'isthmus[postgres]')"


def _shown(value: str) -> str:
    return repr(redact_location(value))


def _ambiguous_authority(text: str) -> bool:
    """A URL whose user or password holds an unencoded ``@``: where the host starts cannot be told (a
    driver would take a piece of the password for the host, and name it in its error)."""
    scheme, sep, rest = text.partition("://")
    if not sep or rest.startswith("/"):  # no authority (sqlite:////path may hold '@')
        return False
    return rest.split("?", 1)[0].count("@") > 1


def _reason(exc: BaseException, url: str) -> str:
    """The one-line text of ``exc`` with the URL's password hidden."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return scrub(
        " ".join(str(exc).split()) or type(exc).__name__, [p for p in (password, unquote(password or "")) if p]
    )


def check_store_url(url: str, setting: str = "ISTHMUS_STORE_URL") -> str:
    """``url`` if SQLAlchemy can use it as the metadata store, else a :class:`ConfigurationError`.

    Catches what fails later with a traceback: no scheme, ``postgres://`` (not a SQLAlchemy dialect),
    ``postgresql://`` without a driver (SQLAlchemy would load psycopg2, which isthmus does not install),
    unknown dialects and drivers that are not installed, a port that is not a number or an unclosed IPv6
    host, driver options in the query that the driver cannot read, and a user or password with an
    unencoded ``@`` (where the host starts cannot be told; the URL is then not shown at all).
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    text = url.strip()
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower() if sep else ""
    if scheme and _ambiguous_authority(text):
        raise ConfigurationError(
            f"{setting} ({scheme}://…): the user or password in the URL holds an unencoded '@', so where the "
            "host starts cannot be told; percent-encode the user and password (@ → %40, / → %2F, : → %3A, "
            "e.g. urllib.parse.quote(password, safe=''))"
        )
    if not scheme:
        raise ConfigurationError(
            f"{setting}={_shown(url)} is not a database URL; use sqlite:////path/to/isthmus.db or {_PG_HINT}"
        )
    psycopg = _shown("postgresql+psycopg://" + rest)
    if scheme == "postgres" or scheme.startswith("postgres+"):
        raise ConfigurationError(
            f"{setting}={_shown(url)}: SQLAlchemy has no 'postgres' dialect; use {psycopg} "
            "(the psycopg 3 driver, pip install 'isthmus[postgres]')"
        )
    try:
        parsed = make_url(text)
    except ArgumentError as exc:
        raise ConfigurationError(
            f"{setting}={_shown(url)} is not a valid database URL ({_reason(exc, text)}); use {_PG_HINT}"
        ) from None
    except (ValueError, TypeError) as exc:  # a port that is not a number, an unclosed [IPv6 address
        raise ConfigurationError(
            f"{setting}={_shown(url)} is not a valid database URL ({_reason(exc, text)}); the port must be a "
            f"number and an IPv6 host written in brackets, e.g. {_PG_HINT}"
        ) from None
    try:
        dialect_cls = parsed.get_dialect()
        dbapi = dialect_cls.import_dbapi()
    except NoSuchModuleError:
        raise ConfigurationError(
            f"{setting}={_shown(url)}: SQLAlchemy has no dialect {scheme!r}; use sqlite:///... or {_PG_HINT}"
        ) from None
    except ArgumentError as exc:
        raise ConfigurationError(
            f"{setting}={_shown(url)} is not a valid database URL ({exc}); use {_PG_HINT}"
        ) from None
    except ImportError as exc:
        if scheme.startswith("postgresql"):
            raise ConfigurationError(
                f"{setting}={_shown(url)}: its driver is not installed ({exc}); use {psycopg} "
                "(the psycopg 3 driver, pip install 'isthmus[postgres]')"
            ) from None
        raise ConfigurationError(
            f"{setting}={_shown(url)}: the database driver for {scheme!r} is not installed ({exc}); install it"
        ) from None
    try:
        dialect = dialect_cls(dbapi=dbapi)  # type: ignore[call-arg]  # every SQLAlchemy dialect takes it
    except Exception:  # a dialect built differently: its options are checked when it connects
        return text
    try:  # the query's driver options, as the engine will read them (?check_same_thread=, ?timeout= …)
        dialect.create_connect_args(parsed)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"{setting}={_shown(url)}: a driver option in the URL is not valid ({_reason(exc, text)}); fix or remove it"
        ) from None
    return text


def check_artifact_root(root: str, setting: str = "ISTHMUS_ARTIFACT_ROOT") -> str:
    """``root`` (a path or fsspec URL) unless it holds credentials — a password or token in the URL, a
    secret query parameter: the artifact root is recorded with every artifact, run and lineage event, so
    it may hold none. The credentials go where the filesystem reads them."""
    text = root.strip()
    shown = redact_url(text)
    if shown == text:
        return root
    shown = re.sub(r"^([A-Za-z][A-Za-z0-9+.\-]*://)[^/?#]*@", r"\1***@", shown)  # not even the user
    scheme = text.partition("://")[0].lower()
    if scheme in ("s3", "s3a"):
        where = "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, ~/.aws/credentials)"
    elif scheme in ("gs", "gcs"):
        where = "GOOGLE_APPLICATION_CREDENTIALS"
    elif scheme in ("abfs", "abfss", "az"):
        where = "AZURE_STORAGE_ACCOUNT_NAME / AZURE_STORAGE_ACCOUNT_KEY (or AZURE_STORAGE_CONNECTION_STRING)"
    else:
        where = "the filesystem's own configuration"
    raise ConfigurationError(
        f"{setting}={shown!r} holds credentials, and the artifact root is recorded with every run; remove "
        f"them from the URL and give them to the filesystem: {where}, or fsspec's FSSPEC_<PROTOCOL>_<OPTION> "
        f"variables (e.g. FSSPEC_{scheme.upper() or 'S3'}_KEY / FSSPEC_{scheme.upper() or 'S3'}_SECRET)"
    )


def check_lease_ttl(raw: object, setting: str = "ISTHMUS_LEASE_TTL") -> float:
    """The lease TTL in seconds: a finite number > 0."""
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(
            f"{setting}={raw!r} is not a positive number of seconds; set it to how long a crashed run's "
            f"claim on a step is honoured, e.g. {setting}=60"
        )
    return value


_SALT_MIN = 32
_SALT_HINT = "e.g. the output of `openssl rand -hex 32`"


def secret_salt_from(environ: Mapping[str, str]) -> bytes | None:
    """The salt for the secret parts of cache keys, when kept outside the metadata store:
    ``ISTHMUS_SECRET_SALT`` (the text itself) or ``ISTHMUS_SECRET_SALT_FILE`` (a file holding it). At least
    32 characters; never shown in a message. None: the store's own salt is used."""
    text = environ.get("ISTHMUS_SECRET_SALT")
    path = environ.get("ISTHMUS_SECRET_SALT_FILE")
    if text and path:
        raise ConfigurationError(
            "ISTHMUS_SECRET_SALT and ISTHMUS_SECRET_SALT_FILE are both set; keep one (every process that "
            "shares the store must read the same salt)"
        )
    setting = "ISTHMUS_SECRET_SALT"
    if path:
        setting = f"ISTHMUS_SECRET_SALT_FILE={path!r}"
        try:
            with open(os.path.expanduser(path), encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(
                f"{setting} cannot be read ({getattr(exc, 'strerror', None) or type(exc).__name__}); point it at "
                f"a readable file holding at least {_SALT_MIN} random characters, e.g. made with "
                "`openssl rand -hex 32 > salt`"
            ) from None
    if text is None or (not text.strip() and not path):
        return None
    salt = text.strip()
    if len(salt) < _SALT_MIN:
        raise ConfigurationError(
            f"{setting} holds {len(salt)} characters; a salt needs at least {_SALT_MIN} random characters, {_SALT_HINT}"
        )
    return parts_digest("isthmus-secret-salt", salt)


def check_verify(raw: str, setting: str = "ISTHMUS_VERIFY") -> str:
    mode = raw.strip().lower()
    if mode not in _VERIFY_MODES:
        raise ConfigurationError(
            f"{setting}={raw!r} is not one of {', '.join(_VERIFY_MODES)}; use 'hash' (default: artifacts are "
            "re-hashed before reuse), 'size' or 'off'"
        )
    return mode


@dataclass(frozen=True)
class Settings:
    """Resolved configuration of one process.

    ``home`` holds the embedded defaults: ``isthmus.db`` (SQLite metadata) and ``artifacts/``.
    ``secret_salt``: the salt of the secret parts of cache keys when it is kept outside the store
    (``ISTHMUS_SECRET_SALT`` / ``ISTHMUS_SECRET_SALT_FILE``); None uses the store's own.
    """

    home: Path
    store_url: str
    artifact_root: str
    verify: str = "hash"
    lease_ttl: float = 60.0
    env_allowlist: tuple[str, ...] = field(default_factory=tuple)
    secret_salt: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:  # values given to configure() are checked like variables
        object.__setattr__(self, "verify", check_verify(str(self.verify), "verify"))
        object.__setattr__(self, "lease_ttl", check_lease_ttl(self.lease_ttl, "lease_ttl"))
        check_artifact_root(str(self.artifact_root), "artifact_root")

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("ISTHMUS_HOME") or Path.home() / ".isthmus").expanduser()
        raw_url = os.environ.get("ISTHMUS_STORE_URL")
        store_url = check_store_url(raw_url) if raw_url else f"sqlite:///{home / 'isthmus.db'}"
        artifact_root = check_artifact_root(os.environ.get("ISTHMUS_ARTIFACT_ROOT") or str(home / "artifacts"))
        verify = check_verify(os.environ.get("ISTHMUS_VERIFY") or "hash")
        raw_ttl = os.environ.get("ISTHMUS_LEASE_TTL")
        lease_ttl = check_lease_ttl(raw_ttl) if raw_ttl not in (None, "") else 60.0
        allow = tuple(n.strip() for n in os.environ.get("ISTHMUS_ENV_ALLOWLIST", "").split(",") if n.strip())
        return cls(
            home=home,
            store_url=store_url,
            artifact_root=artifact_root,
            verify=verify,
            lease_ttl=lease_ttl,
            env_allowlist=allow,
            secret_salt=secret_salt_from(os.environ),
        )

    def store_setting(self) -> str:
        """The setting the store URL came from (named in error messages)."""
        if self.store_url == (os.environ.get("ISTHMUS_STORE_URL") or "").strip():
            return "ISTHMUS_STORE_URL"
        if self.store_url == f"sqlite:///{self.home / 'isthmus.db'}":
            return "ISTHMUS_HOME"
        return "store_url"


_settings: Settings | None = None
_subscribers: list[Callable[[], None]] = []
_subscribers_lock = threading.Lock()


def on_change(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback()`` after every :func:`configure` and :func:`reset` (in subscription order), so a
    module can drop what it built from the old settings. Returns ``callback`` (usable as a decorator);
    subscribing the same callback twice has no effect."""
    with _subscribers_lock:
        if callback not in _subscribers:
            _subscribers.append(callback)
    return callback


def _notify() -> None:
    with _subscribers_lock:
        callbacks = list(_subscribers)
    for callback in callbacks:
        callback()


def get_settings() -> Settings:
    """The process-wide settings (read from the environment on first use)."""
    global _settings
    if _settings is None:
        _settings = Settings.from_env()
    return _settings


def configure(**overrides: object) -> Settings:
    """Override settings for this process, e.g. ``configure(store_url=..., artifact_root=...)``.

    Clears cached stores so the next run uses the new locations.
    """
    global _settings
    base = Settings.from_env() if _settings is None else _settings
    if "home" in overrides and overrides["home"] is not None:
        home = Path(str(overrides["home"])).expanduser()
        overrides.setdefault("store_url", f"sqlite:///{home / 'isthmus.db'}")
        overrides.setdefault("artifact_root", str(home / "artifacts"))
        overrides["home"] = home
    if overrides.get("store_url") is not None:
        overrides["store_url"] = check_store_url(str(overrides["store_url"]), "store_url")
    _settings = replace(base, **overrides)  # type: ignore[arg-type]
    _notify()
    return _settings


def reset() -> None:
    """Forget overrides and cached stores; the next use re-reads the environment."""
    global _settings
    _settings = None
    _notify()
