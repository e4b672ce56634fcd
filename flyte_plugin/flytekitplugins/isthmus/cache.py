"""A flytekit ``CachePolicy`` whose cache version follows the isthmus cache key.

Flyte's cache key ignores code unless ``cache_version`` is bumped by hand (flyte#2899). With
``Cache(policies=[IsthmusCachePolicy()])`` the version is made of the same step-level parts as the
isthmus cache key (``isthmus.cache.key_material``): the step's name, output names and materializers,
its code fingerprint (the normalized step function and the project-local helpers, classes and constants
it reaches; constants holding a credential keyed with the same salt as the runner's, so every process
sharing a store agrees), its dependency fingerprint, what it declares it reads
(``CachePolicy(files=..., env=...)``, read when the version is computed) and its version — so changing
a helper, a declared file or upgrading a library invalidates Flyte's cache too::

    @task(task_config=Isthmus(), cache=Cache(policies=[IsthmusCachePolicy()]))
    def train(...): ...

Flyte adds the task's inputs to the key itself. Note that a Flyte cache hit skips the task entirely:
isthmus then records nothing for it. The isthmus cache (always on unless the step says ``cache=False``)
records and shares hits across orchestrators.
"""

from __future__ import annotations

from typing import Any

from isthmus import defaults
from isthmus.cache import declared_inputs, key_material, step_fields
from isthmus.config import get_settings
from isthmus.fingerprint.code import code_fingerprint
from isthmus.fingerprint.deps import dependency_fingerprint
from isthmus.hashing import hash_parts
from isthmus.step import Step, as_step


class IsthmusCachePolicy:
    """``get_version(salt, params)``: a hash of the step's key material (see the module docstring) and
    Flyte's ``salt``."""

    def get_version(self, salt: str, params: Any) -> str:
        func = params.func
        if not isinstance(func, Step) and isinstance(getattr(func, "step", None), Step):
            func = func.step  # an IsthmusTask
        step = as_step(func)
        policy = step.cache

        def secret_salt() -> bytes:  # the runner's: configured outside the store, else the store's
            return get_settings().secret_salt or defaults.metadata_store().secret_salt()

        code = code_fingerprint(step)
        if code.secret_digests:
            code = code.keyed(secret_salt())
        deps = dependency_fingerprint(policy.deps, code.modules)
        material = key_material(
            **step_fields(step),
            code_hash=code.hash,
            deps_hash=deps.hash,
            declared=declared_inputs(policy, secret_salt() if policy.env else None),
        )
        return hash_parts("isthmus-flyte-cache-v2", salt or "", *material).split(":", 1)[1]
