"""The cache key, and the lease that makes concurrent identical steps compute once."""

from __future__ import annotations

import functools
import os
import threading
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from isthmus.artifacts.refs import ArtifactRef
from isthmus.fingerprint.arguments import Visitor, walk
from isthmus.fingerprint.files import pattern_parts
from isthmus.hashing import PROCESS_KEY, hash_parts, hash_value, keyed_hash, value_digest
from isthmus.policy import CachePolicy
from isthmus.redaction import is_secret_name, secret_env_values, secret_matcher

CACHE_KEY_VERSION = "isthmus-cache-v3"
_secret_name = functools.lru_cache(maxsize=4096)(is_secret_name)  # parameter names repeat on every call


def step_fields(step: Any) -> dict[str, Any]:
    """What a :class:`~isthmus.step.Step` gives :func:`key_material` and :func:`cache_key`."""
    return {
        "step_name": step.name,
        "policy": step.cache,
        "output_materializers": {k: str(getattr(v, "key", v)) for k, v in step.materializers.items()},
        "output_names": step.output_names,
    }


def key_material(
    *,
    step_name: str,
    policy: CachePolicy,
    code_hash: str,
    deps_hash: str,
    output_materializers: Mapping[str, str] | None = None,
    output_names: Sequence[str] = (),
    declared: str = "",
) -> list[str]:
    """The parts of a cache key that come from the step alone, not from a call's values: its name, output
    names and materializers, its code and dependency fingerprints as its policy says, what it declares it
    reads (:func:`declared_inputs`) and its version. Flyte's cache version is made of the same parts."""
    return [
        step_name,
        "outputs=" + ",".join(output_names),
        code_hash if policy.code else "-",
        deps_hash if policy.deps is not None else "-",
        "|".join(f"{k}={v}" for k, v in sorted((output_materializers or {}).items())),
        declared,
        policy.version,
    ]


def cache_key(
    *,
    step_name: str,
    policy: CachePolicy,
    code_hash: str,
    deps_hash: str,
    params: Mapping[str, Any],
    inputs: Mapping[str, ArtifactRef],
    output_materializers: Mapping[str, str] | None = None,
    output_names: Sequence[str] = (),
    declared: str = "",
    salt: bytes | None = None,
    secret_params: Collection[str] = (),
) -> str:
    """hash(step identity, output names, code fp, dependency fp, canonical params, input content hashes,
    materializer versions, declared files/env, version salt) — each part included as the policy says.

    Secret parameters (credential-like names at any depth, URLs with a password, values of credential
    environment variables) enter through a hash keyed with ``salt`` (the store's), so the key reveals
    nothing about them, and so do the parameters named in ``secret_params`` (found secret by value);
    ``declared`` comes from :func:`declared_inputs`.
    """
    ignored = set(policy.ignore_inputs)
    key = salt or PROCESS_KEY
    visitor = _KeyedSecrets(key, secret_matcher(secret_env_values()))
    kept = {
        k: visitor.keyed(v) if k in secret_params or _secret_name(k) else visitor.protect(v)
        for k, v in params.items()
        if k not in ignored
    }
    input_parts = sorted(
        f"{name}={ref.content_hash}|{ref.materializer}" for name, ref in inputs.items() if name not in ignored
    )
    material = key_material(
        step_name=step_name,
        policy=policy,
        code_hash=code_hash,
        deps_hash=deps_hash,
        output_materializers=output_materializers,
        output_names=output_names,
        declared=declared,
    )
    return hash_parts(CACHE_KEY_VERSION, *material, hash_value(kept), *input_parts)


class _KeyedSecrets(Visitor):
    """Plain parameter data with every secret part replaced by its keyed hash."""

    def __init__(self, key: bytes, is_secret_text: Callable[[str], bool]) -> None:
        self._key = key
        self._is_secret_text = is_secret_text

    def keyed(self, value: Any) -> str:
        return keyed_hash(self._key, "param", value_digest(value))

    def before(self, value: Any, name: str) -> Any:
        if name and _secret_name(name):
            return self.keyed(value)
        return super().before(value, name)

    def leaf(self, value: Any, name: str) -> Any:
        return self.keyed(value) if isinstance(value, str) and self._is_secret_text(value) else value

    def members(self, value: Any, items: list[Any]) -> Any:
        return type(value)(items)

    def protect(self, value: Any) -> Any:
        """``value`` with its secret parts keyed."""
        tp = type(value)
        if tp is str:
            return self.keyed(value) if self._is_secret_text(value) else value
        return value if tp in (int, float, bool, type(None)) else walk(value, self)


def protect_secrets(value: Any, key: bytes, env_secrets: frozenset[str], secret: bool = False) -> Any:
    """``value`` with every secret part replaced by its keyed hash (see :func:`cache_key`)."""
    visitor = _KeyedSecrets(key, secret_matcher(env_secrets))
    return visitor.keyed(value) if secret else visitor.protect(value)


def declared_inputs(policy: CachePolicy, salt: bytes | None = None) -> str:
    """The part of the key for what the step declares it reads: ``CachePolicy(files=..., env=...)``.

    Files count by content (read now); environment variables by a hash of their value keyed with the
    store's ``salt`` (never stored), an unset variable differently from an empty one.
    """
    return declared_inputs_and_record(policy, salt)[0]


_RECORD_DIGEST = 16  # hex characters kept of a recorded keyed digest: enough to tell two values apart


def declared_inputs_and_record(policy: CachePolicy, salt: bytes | None = None) -> tuple[str, dict[str, Any]]:
    """:func:`declared_inputs` and what a step run records of the key's policy parts, so ``isthmus why``
    can name what changed: the version salt, the code/deps/ignore_inputs settings, and one short digest
    per declared file pattern and environment variable — keyed with the store's ``salt``, so the
    record tells two values apart without revealing either (``unset`` for a missing variable)."""
    key = salt or PROCESS_KEY
    record: dict[str, Any] = {
        "version": policy.version,
        "code": policy.code,
        "deps": policy.deps if isinstance(policy.deps, str) or policy.deps is None else list(policy.deps),
        "ignore_inputs": list(policy.ignore_inputs),
    }
    if not policy.files and not policy.env:
        return "", record
    matched = {pattern: pattern_parts(pattern) for pattern in policy.files}  # read once, used twice
    # the same digest as declared_files_digest(policy.files)
    parts = [hash_parts("files", *(part for pattern in policy.files for part in matched[pattern]))] if matched else []
    files = {
        pattern: keyed_hash(key, "declared file", pattern, *found).split(":", 1)[1][:_RECORD_DIGEST]
        for pattern, found in matched.items()
    }
    env: dict[str, str] = {}
    for name in policy.env:
        value = os.environ.get(name)
        parts.append(f"{name}:unset" if value is None else f"{name}={keyed_hash(key, 'env', name, value)}")
        env[name] = (
            "unset" if value is None else keyed_hash(key, "declared env", name, value).split(":", 1)[1][:_RECORD_DIGEST]
        )
    record["files"], record["env"] = files, env
    return hash_parts("declared", *parts), record


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
