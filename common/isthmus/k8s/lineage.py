"""Kubernetes in isthmus's lineage: the ``isthmus_k8s`` run facet (which Job and pod ran a step, in which
namespace, with what resources) and the registration of Kubernetes as a lineage backend.

The pod's step run records its Job in its run context (``native.k8s_job``/``k8s_namespace``); every process
that emits events about it names it alike: ``k8sJobId`` in ``isthmus_resources`` and the facet below.
``openlineage-python`` is imported only when the facet object is built (the ``lineage`` extra).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from isthmus import lineage

FACET_KEY = "isthmus_k8s"
K8S_FACET_SCHEMA = "https://isthmus.dev/spec/facets/1-0-0/IsthmusK8sRunFacet.json"


def k8s_facet_dict(
    *, job: str | None, namespace: str | None, pod: str | None = None, resources: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The facet's fields."""
    return {"job": job, "namespace": namespace, "pod": pod, "resources": dict(resources or {})}


@functools.cache
def _facet_class() -> type:
    import attr
    from openlineage.client.facet_v2 import RunFacet

    @attr.define
    class IsthmusK8sRunFacet(RunFacet):
        """The Kubernetes Job/pod of an isthmus step run."""

        job: str | None = attr.field(default=None)
        namespace: str | None = attr.field(default=None)
        pod: str | None = attr.field(default=None)
        resources: dict[str, Any] = attr.field(factory=dict)

        @staticmethod
        def _get_schema() -> str:
            return K8S_FACET_SCHEMA

    return IsthmusK8sRunFacet


def k8s_run_facet(**fields: Any) -> Any:
    """``IsthmusK8sRunFacet`` (for ``run_facets["isthmus_k8s"]``)."""
    return _facet_class()(**k8s_facet_dict(**fields))


def k8s_job_id(step_run: Mapping[str, Any]) -> str | None:
    """``<namespace>/<job>`` of the Job that ran a step run, or None for a run that was no Kubernetes Job."""
    native = (step_run.get("context") or {}).get("native") or {}
    job = native.get("k8s_job")
    return f"{native.get('k8s_namespace') or 'default'}/{job}" if job else None


def k8s_run_facets(step_run: Mapping[str, Any]) -> dict[str, Any]:
    native = (step_run.get("context") or {}).get("native") or {}
    if not native.get("k8s_job"):
        return {}
    return {
        FACET_KEY: k8s_run_facet(
            job=native.get("k8s_job"),
            namespace=native.get("k8s_namespace"),
            pod=native.get("k8s_pod"),
            resources=step_run.get("resources") or {},
        )
    }


lineage.register_backend("k8s", job_id=k8s_job_id, facets=k8s_run_facets)
