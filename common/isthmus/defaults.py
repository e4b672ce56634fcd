"""The process-wide default stores, built from :mod:`isthmus.config` on first use.

``metadata_store()`` and ``artifact_store()`` are what a runner, the CLI and both adapters use when no
store is passed; they are rebuilt after :func:`isthmus.configure` (this module subscribes to
:func:`isthmus.config.on_change`). :func:`isthmus.runner.default_runner` is the runner on them.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from isthmus import config
from isthmus.store import MetadataStore

if TYPE_CHECKING:
    from isthmus.artifacts import ArtifactStore

_lock = threading.Lock()
_cache: dict[tuple[Any, ...], Any] = {}


def metadata_store() -> MetadataStore:
    """The metadata store of the configured ``store_url``."""
    settings = config.get_settings()
    key = ("meta", settings.store_url)
    with _lock:
        store = _cache.get(key)
        if store is None:
            store = MetadataStore(settings.store_url, setting=settings.store_setting())
            _cache[key] = store
        return store


def artifact_store() -> ArtifactStore:
    """The artifact store of the configured ``artifact_root`` and ``verify`` mode."""
    from isthmus.artifacts.store import ArtifactStore  # with fsspec and the materializers: when first used

    settings = config.get_settings()
    key = ("art", settings.artifact_root, settings.verify)
    with _lock:
        store = _cache.get(key)
        if store is None:
            store = ArtifactStore(
                settings.artifact_root, verify=settings.verify, local_cache=str(settings.home / "cache")
            )
            _cache[key] = store
        return store


@config.on_change
def reset() -> None:
    """Dispose of the cached stores; the next call builds them from the current settings."""
    with _lock:
        for value in _cache.values():
            dispose = getattr(value, "dispose", None)
            if dispose:
                dispose()
        _cache.clear()
