"""Process-wide default stores, built from :mod:`isthmus.config` on first use."""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_cache: dict[str, Any] = {}


def metadata_store() -> Any:
    from isthmus.config import get_settings
    from isthmus.store import MetadataStore

    settings = get_settings()
    url = settings.store_url
    with _lock:
        store = _cache.get(("meta", url))  # type: ignore[call-overload]
        if store is None:
            store = MetadataStore(url, setting=settings.store_setting())
            _cache[("meta", url)] = store  # type: ignore[index]
        return store


def artifact_store() -> Any:
    from isthmus.artifacts import ArtifactStore
    from isthmus.config import get_settings

    settings = get_settings()
    key = ("art", settings.artifact_root, settings.verify)
    with _lock:
        store = _cache.get(key)  # type: ignore[call-overload]
        if store is None:
            store = ArtifactStore(
                settings.artifact_root, verify=settings.verify, local_cache=str(settings.home / "cache")
            )
            _cache[key] = store  # type: ignore[index]
        return store


def reset() -> None:
    from isthmus import lineage

    lineage.reset()
    with _lock:
        for value in _cache.values():
            dispose = getattr(value, "dispose", None)
            if dispose:
                dispose()
        _cache.clear()
