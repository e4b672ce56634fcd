"""The cache key, and the lease that makes concurrent identical steps compute once."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from typing import Any

from isthmus.artifacts.refs import ArtifactRef
from isthmus.hashing import hash_parts, hash_value
from isthmus.policy import CachePolicy

CACHE_KEY_VERSION = "isthmus-cache-v2"


def cache_key(
    *,
    step_name: str,
    policy: CachePolicy,
    code_hash: str,
    deps_hash: str,
    params: Mapping[str, Any],
    inputs: Mapping[str, ArtifactRef],
    output_materializers: Mapping[str, str] | None = None,
) -> str:
    """hash(step identity, code fp, dependency fp, canonical params, input content hashes,
    materializer versions, version salt) — each part included as the policy says."""
    ignored = set(policy.ignore_inputs)
    param_hash = hash_value({k: v for k, v in params.items() if k not in ignored})
    input_parts = sorted(
        f"{name}={ref.content_hash}|{ref.materializer}" for name, ref in inputs.items() if name not in ignored
    )
    return hash_parts(
        CACHE_KEY_VERSION,
        step_name,
        code_hash if policy.code else "-",
        deps_hash if policy.deps is not None else "-",
        param_hash,
        *input_parts,
        "|".join(f"{k}={v}" for k, v in sorted((output_materializers or {}).items())),
        policy.version,
    )


class LeaseKeeper:
    """One daemon thread per process that renews every lease this process holds."""

    def __init__(self) -> None:
        self._held: dict[tuple[int, str, str], tuple[Any, float]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, store: Any, key: str, holder: str, ttl: float) -> None:
        with self._lock:
            self._held[(id(store), key, holder)] = (weakref.proxy(store), ttl)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="isthmus-lease-keeper", daemon=True)
                self._thread.start()

    def drop(self, store: Any, key: str, holder: str) -> None:
        with self._lock:
            self._held.pop((id(store), key, holder), None)

    def _loop(self) -> None:
        while True:
            with self._lock:
                items = list(self._held.items())
            interval = min((ttl for _, (_, ttl) in items), default=30.0) / 3
            self._wake.wait(max(interval, 0.2))
            for (_, key, holder), (store, ttl) in items:
                with self._lock:
                    if (id(store), key, holder) not in self._held and all(k[1:] != (key, holder) for k in self._held):
                        continue
                try:
                    store.renew_lease(key, holder, ttl)
                except Exception:  # the store may be gone; the lease then simply expires
                    continue


lease_keeper = LeaseKeeper()
