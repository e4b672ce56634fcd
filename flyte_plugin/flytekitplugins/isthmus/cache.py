"""A flytekit ``CachePolicy`` whose cache version follows the isthmus fingerprints.

Flyte's cache key ignores code unless ``cache_version`` is bumped by hand (flyte#2899). With
``Cache(policies=[IsthmusCachePolicy()])`` the version is derived from the step's code fingerprint (the
normalized step function and the project-local helpers, classes and constants it reaches) and its
dependency fingerprint (the versions of the distributions its code imports), as the step's isthmus
``CachePolicy`` says — so changing a helper or upgrading a library invalidates Flyte's cache too::

    @task(task_config=Isthmus(), cache=Cache(policies=[IsthmusCachePolicy()]))
    def train(...): ...

Note that a Flyte cache hit skips the task entirely: isthmus then records nothing for it. The isthmus
cache (always on unless the step says ``cache=False``) records and shares hits across orchestrators.
"""

from __future__ import annotations

import hashlib
from typing import Any


class IsthmusCachePolicy:
    """``get_version(salt, params)``: sha256 of the step name, code and dependency fingerprints and salt."""

    def get_version(self, salt: str, params: Any) -> str:
        from isthmus.fingerprint.code import code_fingerprint
        from isthmus.fingerprint.deps import dependency_fingerprint
        from isthmus.step import Step, as_step

        func = params.func
        if not isinstance(func, Step) and isinstance(getattr(func, "step", None), Step):
            func = func.step  # an IsthmusTask
        step = as_step(func)
        policy = step.cache
        code = code_fingerprint(step)
        deps = dependency_fingerprint(policy.deps, code.modules).hash if policy.deps is not None else "-"
        parts = [
            "isthmus-flyte-cache-v1",
            salt or "",
            step.name,
            code.hash if policy.code else "-",
            deps,
            policy.version,
        ]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
