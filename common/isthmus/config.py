"""Where isthmus keeps things: resolved from ``ISTHMUS_*`` environment variables or :func:`configure`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

_VERIFY_MODES = ("hash", "size", "off")


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number; set it to seconds, e.g. {name}=60") from None


@dataclass(frozen=True)
class Settings:
    """Resolved configuration of one process.

    ``home`` holds the embedded defaults: ``isthmus.db`` (SQLite metadata) and ``artifacts/``.
    """

    home: Path
    store_url: str
    artifact_root: str
    verify: str = "hash"
    lease_ttl: float = 60.0
    env_allowlist: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("ISTHMUS_HOME") or Path.home() / ".isthmus").expanduser()
        store_url = os.environ.get("ISTHMUS_STORE_URL") or f"sqlite:///{home / 'isthmus.db'}"
        artifact_root = os.environ.get("ISTHMUS_ARTIFACT_ROOT") or str(home / "artifacts")
        verify = os.environ.get("ISTHMUS_VERIFY", "hash").strip().lower()
        if verify not in _VERIFY_MODES:
            raise ValueError(
                f"ISTHMUS_VERIFY={verify!r} is not one of {_VERIFY_MODES}; use 'hash' (default), 'size' or 'off'"
            )
        allow = tuple(n.strip() for n in os.environ.get("ISTHMUS_ENV_ALLOWLIST", "").split(",") if n.strip())
        return cls(
            home=home,
            store_url=store_url,
            artifact_root=artifact_root,
            verify=verify,
            lease_ttl=_env_float("ISTHMUS_LEASE_TTL", 60.0),
            env_allowlist=allow,
        )


_settings: Settings | None = None


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
    _settings = replace(base, **overrides)  # type: ignore[arg-type]
    from isthmus import _defaults

    _defaults.reset()
    return _settings


def reset() -> None:
    """Forget overrides and cached stores; the next use re-reads the environment."""
    global _settings
    _settings = None
    from isthmus import _defaults

    _defaults.reset()
