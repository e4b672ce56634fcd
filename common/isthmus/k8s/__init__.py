"""isthmus on Kubernetes: the same steps as pods, with the same recording, caching and lineage.

- :func:`pod_spec`: the one mapping from a step's ``Resources`` to a pod spec (the executor, the Airflow
  operator and the Flyte pod template all use it); :func:`job_manifest`/:func:`pod_manifest` around it;
- :class:`K8sJobOptions`: image, namespace, GPU resource and label, Secrets, record mode;
- :mod:`isthmus.k8s.states`: every Job/pod phase and reason as one state (never success when unknown);
- :class:`KubernetesJobExecutor`: cache lookup, then a ``batch/v1`` Job running ``python -m isthmus
  run-step``, then its manifest; the Job and its Secret are deleted.

The ``kubernetes`` client is imported only where the cluster is called. Importing the package registers
Kubernetes with :mod:`isthmus.lineage` (:mod:`isthmus.k8s.lineage`).
"""

from isthmus.k8s import lineage  # noqa: F401 - registers Kubernetes as a lineage backend
from isthmus.k8s.errors import K8sError, K8sStepFailed, K8sSubmitError, K8sUnavailable
from isthmus.k8s.executor import K8sJob, KubernetesJobExecutor
from isthmus.k8s.options import K8sJobOptions
from isthmus.k8s.spec import Entrypoint, SecretRef, job_manifest, pod_manifest, pod_spec, run_step_command
from isthmus.k8s.states import PodStatus, job_state

__all__ = [
    "Entrypoint",
    "K8sError",
    "K8sJob",
    "K8sJobOptions",
    "K8sStepFailed",
    "K8sSubmitError",
    "K8sUnavailable",
    "KubernetesJobExecutor",
    "PodStatus",
    "SecretRef",
    "job_manifest",
    "job_state",
    "pod_manifest",
    "pod_spec",
    "run_step_command",
]
