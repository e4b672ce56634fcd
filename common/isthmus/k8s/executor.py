"""Run a step as a Kubernetes ``batch/v1`` Job: cache lookup first (a hit creates nothing), then a Job
whose pod runs ``python -m isthmus run-step``, then its result manifest, then the Job and its Secret are
deleted.

All cluster calls go through the ``kubernetes`` client's own ``BatchV1Api``/``CoreV1Api`` (in-cluster
configuration, else the kubeconfig), so a real cluster needs no code change; tests hand in objects with the
same methods. The pod writes its manifest to the artifact store (``<root>/manifests/k8s/<job>.json``),
signed with a key only the submitter and the pod know (the Job's own Secret)::

    from isthmus.k8s import KubernetesJobExecutor
    result = KubernetesJobExecutor(image="registry.example/ml:1").run(train, {"features": ref})
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, cast

from isthmus.artifacts.paths import join_under
from isthmus.artifacts.refs import ArtifactRef
from isthmus.context import RunContext
from isthmus.errors import StepDefinitionError
from isthmus.k8s.errors import K8sStepFailed, K8sSubmitError, K8sUnavailable
from isthmus.k8s.options import STORE_URL_KEY, K8sJobOptions
from isthmus.k8s.spec import (
    Entrypoint,
    SecretRef,
    image_for,
    job_manifest,
    job_name_for,
    labels_for,
    pod_spec,
    run_step_command,
    secret_manifest,
)
from isthmus.k8s.states import FIXES, PodStatus, job_state
from isthmus.lineage.parent import PARENT_KEY, ROOT_KEY, RUN_ID_KEY, env_for
from isthmus.manifest import MANIFEST_KEY_ENV, ManifestError, is_authentic, job_manifest_key
from isthmus.records import RunStatus
from isthmus.redaction import is_secret_env
from isthmus.remote import ingest_manifest, read_manifest
from isthmus.runner import StepResult, StepRunner, default_runner
from isthmus.secret_params import SECRET_PARAMS_ENV, encode_secret_params
from isthmus.slurm.executor import SecretParam, SlurmExecutor
from isthmus.step import Step

log = logging.getLogger("isthmus.k8s")
POD_HOME = "/tmp/isthmus"  # the pod's own ISTHMUS_HOME (scratch; its records go to the store or the manifest)
JOB_NAME_KEY = "k8s_job"  # RunContext.native keys the pod's step run records
NAMESPACE_KEY = "k8s_namespace"
_PASS_ENV = (
    "ISTHMUS_LEASE_TTL",
    "ISTHMUS_ENV_ALLOWLIST",
    "ISTHMUS_LINEAGE",
    "OPENLINEAGE_URL",
    "OPENLINEAGE_API_KEY",
    "OPENLINEAGE_ENDPOINT",
    "OPENLINEAGE_NAMESPACE",
    "OPENLINEAGE_DISABLED",
)


@dataclass
class K8sJob:
    """A step's Job as built (and, once ``submitted``, as created). JSON-serializable; holds no secret
    value (the Job's Secret is rebuilt from the store's salt when it is submitted)."""

    name: str
    namespace: str
    step_path: str
    step_name: str
    manifest: str  # where the pod writes its result manifest
    record: str
    job: dict[str, Any]  # the batch/v1 Job manifest
    secret_name: str
    context: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    cache_key: str | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    submitted: bool = False

    @property
    def key_scope(self) -> str:
        """What the manifest key is derived for: this Job in its namespace."""
        return f"k8s/{self.namespace}/{self.name}"

    @property
    def container(self) -> dict[str, Any]:
        return self.job["spec"]["template"]["spec"]["containers"][0]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_apis() -> tuple[Any, Any]:
    """``(BatchV1Api(), CoreV1Api())`` from the in-cluster configuration, else the kubeconfig."""
    try:
        from kubernetes import client, config
    except ImportError:
        raise K8sUnavailable("the kubernetes client is not installed; pip install 'isthmus[k8s]'") from None
    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError, TypeError) as exc:
            raise K8sUnavailable(
                f"no Kubernetes configuration: not in a cluster, and no usable kubeconfig ({exc}); set KUBECONFIG "
                "or run where ~/.kube/config reaches the cluster"
            ) from None
    return client.BatchV1Api(), client.CoreV1Api()


def api_dict(obj: Any) -> dict[str, Any]:
    """A client model (``V1Job``, ``V1Pod``) as the API's JSON (camelCase); dicts pass through."""
    if obj is None or isinstance(obj, dict):
        return obj or {}
    from kubernetes.client import ApiClient

    data = ApiClient().sanitize_for_serialization(obj)
    return data if isinstance(data, dict) else {}


def api_model(data: Mapping[str, Any], kind: str) -> Any:
    """The API's JSON as the client's model ``kind`` (``"V1PodSpec"``, ``"V1Job"``): the inverse of
    :func:`api_dict`, by the deserializer the client applies to every response body. (Its public wrapper
    ``ApiClient.deserialize`` changed its arguments between client releases; the inner one did not.)"""
    from kubernetes.client import ApiClient

    inner = "_ApiClient__deserialize"  # the name-mangled private method, by name: typed or not, every release
    return getattr(ApiClient(), inner)(dict(data), kind)


def _status_code(exc: BaseException) -> int | None:
    return getattr(exc, "status", None)


class KubernetesJobExecutor:
    """Submit steps as Kubernetes Jobs and record them in ``runner``'s stores.

    Options are a :class:`~isthmus.k8s.options.K8sJobOptions` (``options=``) or its fields as keyword
    arguments (``image=``, ``namespace=``, ``store_secret=``, ``env_from=``, ``record=``, ...).
    ``batch_api``/``core_api``: ``kubernetes.client.BatchV1Api``/``CoreV1Api`` (default: from the cluster
    configuration, on first use).
    """

    orchestrator = "kubernetes"  # the run context's orchestrator when a pipeline run uses this executor

    # The arguments and the cache are the backend-independent part of the Slurm executor (its methods use
    # only ``self.runner``): one code path for how a job's arguments and cache key are computed.
    def split_arguments(
        self, step: Step[Any, Any], arguments: Mapping[str, Any], secrets: Iterable[str] = ()
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(inputs as ref dicts, JSON params); see :meth:`SlurmExecutor.split_arguments`."""
        return SlurmExecutor.split_arguments(cast(SlurmExecutor, self), step, arguments, secrets)

    def arguments_for_runner(self, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        return SlurmExecutor.arguments_for_runner(cast(SlurmExecutor, self), inputs, params)

    given_secrets = staticmethod(SlurmExecutor.given_secrets)

    def lookup(
        self, step: Step[Any, Any], inputs: dict[str, Any], params: dict[str, Any], ctx: RunContext
    ) -> StepResult | None:
        """A cache hit (recorded) or None: a hit means no Job at all."""
        return SlurmExecutor.lookup(cast(SlurmExecutor, self), step, inputs, params, ctx)

    def cache_key(
        self, step: Step[Any, Any], inputs: dict[str, Any], params: dict[str, Any], ctx: RunContext
    ) -> str | None:
        """The cache key the pod will compute (None when the step does not cache)."""
        return SlurmExecutor.cache_key(cast(SlurmExecutor, self), step, inputs, params, ctx)

    def __init__(
        self,
        runner: StepRunner | None = None,
        *,
        options: K8sJobOptions | None = None,
        batch_api: Any = None,
        core_api: Any = None,
        poll_interval: float = 2.0,
        **option_values: Any,
    ) -> None:
        unknown = sorted(set(option_values) - set(K8sJobOptions.names()))
        if unknown:
            raise TypeError(f"KubernetesJobExecutor() got unexpected keyword argument(s) {', '.join(unknown)}")
        base = options or K8sJobOptions()
        self.options = base.replace(**option_values) if option_values else base
        self.runner = runner or default_runner()
        self.record = self.options.record_mode
        self.poll_interval = poll_interval
        self._batch, self._core = batch_api, core_api

    @property
    def apis(self) -> tuple[Any, Any]:
        """``(BatchV1Api, CoreV1Api)``: those given, the others from the cluster configuration."""
        if self._batch is None or self._core is None:
            batch, core = load_apis()
            self._batch, self._core = self._batch or batch, self._core or core
        return self._batch, self._core

    # -- the Job -----------------------------------------------------------------------------------
    def manifest_key(self, job: K8sJob) -> bytes:
        """The key the pod signs its manifest with (derived from the metadata store's secret salt)."""
        return job_manifest_key(self.runner.metadata.secret_salt(), job.key_scope)

    def _environment(self, ctx: RunContext) -> tuple[dict[str, str], dict[str, str]]:
        """(plain variables, credentials for the Job's Secret)."""
        import os

        arts = self.runner.artifacts
        env = {"ISTHMUS_HOME": POD_HOME, "ISTHMUS_ARTIFACT_ROOT": arts.url, "ISTHMUS_VERIFY": arts.verify_mode}
        for name, value in os.environ.items():
            if value and (name in _PASS_ENV or name.startswith("OPENLINEAGE__")):
                env[name] = value
        env.update(env_for(ctx.native.get(PARENT_KEY), ctx.native.get(ROOT_KEY)))
        env.update(self.options.env)
        secret = {k: v for k, v in env.items() if is_secret_env(k, v)}
        return {k: v for k, v in env.items() if k not in secret}, secret

    def build(
        self,
        step: Step[Any, Any],
        inputs: dict[str, Any],
        params: dict[str, Any],
        ctx: RunContext,
        cache_key: str | None = None,
    ) -> tuple[K8sJob, dict[str, Any]]:
        """The Job and the manifest of its Secret (sent to the API server only) for one step run; no
        side effects."""
        step.check_importable()
        label = f"step {step.name!r}: "
        opts = self.options
        name = job_name_for(step.name, ctx, cache_key, salt=f"{opts.namespace}/{self.runner.artifacts.url}")
        native = {**ctx.native, JOB_NAME_KEY: name, NAMESPACE_KEY: opts.namespace}
        if not ctx.pipeline_run_id and RUN_ID_KEY not in native:
            native[RUN_ID_KEY] = str(uuid.uuid4())  # one OpenLineage run for the submitter's and the pod's events
        ctx = replace(ctx, native=native)
        image = image_for(step.resources, opts)
        if not image:
            raise StepDefinitionError(
                f"{label}no container image for its Kubernetes Job; set ISTHMUS_K8S_IMAGE, image=..., or "
                "Resources(extra={'image': ...}) to an image with the project and isthmus installed"
            )
        manifest = join_under(self.runner.artifacts.url, "manifests", "k8s", f"{name}.json")
        env, secret = self._environment(ctx)
        secret_name = f"{name}-env"
        refs: dict[str, SecretRef] = {}
        if self.record == "db":
            if opts.store_secret:
                refs[STORE_URL_KEY] = SecretRef(opts.store_secret, STORE_URL_KEY)
            else:
                secret[STORE_URL_KEY] = self.runner.metadata.url
        job = K8sJob(
            name=name,
            namespace=opts.namespace or "default",
            step_path=step.import_path,
            step_name=step.name,
            manifest=manifest,
            record=self.record,
            job={},
            secret_name=secret_name,
            context=json.loads(json.dumps(ctx.to_dict(), default=str)),
            inputs=dict(inputs),
            cache_key=cache_key,
            resources=step.resources.to_dict(),
        )
        secret[MANIFEST_KEY_ENV] = self.manifest_key(job).hex()
        hidden = {k: v.value for k, v in params.items() if isinstance(v, SecretParam)}
        if hidden:
            secret[SECRET_PARAMS_ENV] = encode_secret_params(step.name, hidden)
        refs.update({k: SecretRef(secret_name, k) for k in secret})
        command = run_step_command(
            step.import_path,
            inputs=inputs,
            params={k: v for k, v in params.items() if not isinstance(v, SecretParam)},
            context=ctx,
            record=self.record,
            manifest=manifest,
            python=opts.python,
        )
        entry = Entrypoint(image=image, command=command, env=env, secret_env=refs, env_from=opts.env_from)
        labels = labels_for(step.name, opts)
        job.job = job_manifest(name, pod_spec(step.resources, opts, entrypoint=entry, label=label), opts, labels)
        return job, secret_manifest(secret_name, secret, opts, labels)

    def create_secret(self, job: K8sJob, secret: Mapping[str, Any]) -> None:
        """Create the Job's own Secret (one left by an earlier try of the same task is reused)."""
        core = self.apis[1]
        try:
            core.create_namespaced_secret(job.namespace, dict(secret))
        except Exception as exc:
            if _status_code(exc) != 409:
                raise K8sSubmitError(
                    f"step {job.step_name!r}: creating Secret {job.secret_name}: {_reason(exc)}"
                ) from None

    def submit(self, job: K8sJob, secret: Mapping[str, Any]) -> K8sJob:
        """Create the Job's Secret, then the Job (an existing Job of the same name — the same task retried
        with the same inputs — is followed instead)."""
        self.create_secret(job, secret)
        batch = self.apis[0]
        try:
            batch.create_namespaced_job(job.namespace, job.job)
        except Exception as exc:
            if _status_code(exc) == 409:
                log.info("step %r: following Job %s created earlier for this task", job.step_name, job.name)
            else:
                self.delete_secret(job)
                raise K8sSubmitError(f"step {job.step_name!r}: creating Job {job.name}: {_reason(exc)}") from None
        log.info("step %r: created Job %s in namespace %s", job.step_name, job.name, job.namespace)
        job.submitted = True
        return job

    def status(self, job: K8sJob) -> PodStatus:
        """The Job's state now (see :mod:`isthmus.k8s.states`)."""
        batch, core = self.apis
        try:
            obj = api_dict(batch.read_namespaced_job_status(job.name, job.namespace))
        except Exception as exc:
            if _status_code(exc) == 404:
                return job_state(None, job_name=job.name)
            raise
        pods = core.list_namespaced_pod(job.namespace, label_selector=f"job-name={job.name}")
        return job_state(obj, [api_dict(p) for p in getattr(pods, "items", None) or []], job.name)

    def wait(
        self, job: K8sJob, *, timeout: float | None = None, on_change: Callable[[PodStatus], Any] | None = None
    ) -> PodStatus:
        """Watch until the Job ends (success, failure, or a pod state that cannot recover)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last: tuple[str, str | None] | None = None
        while True:
            status = self.status(job)
            if (status.state, status.reason) != last:
                last = (status.state, status.reason)
                log.info("Job %s: %s%s", job.name, status.state, f" ({status.reason})" if status.reason else "")
                if on_change is not None:
                    on_change(status)
            if status.terminal:
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"step {job.step_name!r}: Job {job.name} still {status.state} after {timeout:.0f}s")
            time.sleep(self.poll_interval)

    def pod_log(self, status: PodStatus, job: K8sJob, lines: int = 200) -> str:
        """The tail of the step's container log ("" when there is none)."""
        if not status.pod_name:
            return ""
        try:
            text = self.apis[1].read_namespaced_pod_log(
                status.pod_name, job.namespace, container=job.container["name"], tail_lines=lines
            )
        except Exception as exc:
            return f"(no log: {_reason(exc)})"
        return text if isinstance(text, str) else str(text)

    def read_result(self, job: K8sJob) -> dict[str, Any] | None:
        """The pod's result manifest, or None when it left none (or an unreadable one)."""
        try:
            data = read_manifest(job.manifest)
        except ManifestError:
            return None
        return data if isinstance(data, dict) else None

    def collect(self, job: K8sJob, status: PodStatus) -> StepResult:
        """The step's result from the manifest of a finished Job; raises :class:`K8sStepFailed`."""
        manifest = self.read_result(job)
        key = self.manifest_key(job)
        fail = {"step_name": job.step_name, "job_name": job.name}
        if manifest is not None and not is_authentic(manifest, key):
            raise K8sStepFailed(
                f"step {job.step_name!r}: Job {job.name}: the manifest {job.manifest} is not signed with this Job's key "
                "(written or altered by something else); its outputs were not used and nothing was recorded",
                state="FAILED",
                **fail,
            )
        if manifest is not None and manifest.get("records"):
            added = ingest_manifest(self.runner.metadata, manifest, artifacts=self.runner.artifacts, key=key)
            log.info("step %r: ingested %d record(s) from the manifest of Job %s", job.step_name, added, job.name)
        if status.success and manifest is not None and manifest.get("status") == RunStatus.COMPLETED:
            return StepResult(
                step_run_id=manifest.get("step_run_id") or "",
                step_name=job.step_name,
                invocation=(manifest.get("context") or {}).get("invocation") or job.step_name,
                status=RunStatus.COMPLETED,
                cache_hit=bool(manifest.get("cache_hit")),
                outputs={k: ArtifactRef.from_dict(v) for k, v in (manifest.get("outputs") or {}).items()},
                cache_key=manifest.get("cache_key"),
                source_step_run_id=manifest.get("source_step_run_id"),
                artifacts=self.runner.artifacts,
            )
        logs = self.pod_log(status, job)
        error, tb = (manifest or {}).get("error"), (manifest or {}).get("traceback")
        state = status.state
        if status.success and manifest is None:
            state, detail = "LOST", f"the Job completed but its pod wrote no manifest at {job.manifest}"
        elif status.success or error:
            state, detail = ("FAILED" if status.success else state), f"the step failed: {error}"
        else:
            detail = f"Kubernetes ended the Job {status.state}" + (f" ({status.reason})" if status.reason else "")
            if status.message:
                detail += f": {status.message}"
        message = f"step {job.step_name!r}: Job {job.name} {state}: {detail}"
        if tb:
            message += f"\n{tb.rstrip()}"
        elif logs.strip():
            message += "\n--- pod log (tail) ---\n" + "\n".join(logs.strip().splitlines()[-30:])
        if state in FIXES:
            message += f"\nfix: {FIXES[state]}"
        raise K8sStepFailed(
            message,
            state=state,
            reason=status.reason,
            error=error,
            traceback=tb,
            log=logs,
            step_run_id=(manifest or {}).get("step_run_id"),
            **fail,
        )

    def delete(self, job: K8sJob) -> None:
        """Delete the Job (its pods with it) and its Secret; what is already gone is fine. Never raises."""
        batch, _ = self.apis
        try:
            batch.delete_namespaced_job(job.name, job.namespace, propagation_policy="Background")
        except Exception as exc:
            if _status_code(exc) != 404:
                log.warning("could not delete Job %s: %s", job.name, _reason(exc))
        self.delete_secret(job)

    def delete_secret(self, job: K8sJob) -> None:
        """Delete the Job's own Secret (already gone is fine). Never raises."""
        try:
            self.apis[1].delete_namespaced_secret(job.secret_name, job.namespace)
        except Exception as exc:
            if _status_code(exc) != 404:
                log.warning("could not delete Secret %s: %s", job.secret_name, _reason(exc))

    # -- all in one ----------------------------------------------------------------------------------
    def run(
        self,
        step: Step[Any, Any],
        arguments: Mapping[str, Any],
        context: RunContext | None = None,
        *,
        timeout: float | None = None,
        secrets: Iterable[str] = (),
        on_submit: Callable[[K8sJob], Any] | None = None,
    ) -> StepResult:
        """Cache lookup; on a miss create the Job, watch it, collect its manifest, and delete the Job and
        its Secret. An interrupt or error while waiting deletes them too (cancels the step)."""
        ctx = context or RunContext(orchestrator=self.orchestrator)
        inputs, params = self.split_arguments(step, arguments, secrets)
        hit = self.lookup(step, inputs, params, ctx)
        if hit is not None:
            return hit
        key = self.cache_key(step, inputs, params, ctx)
        job, secret = self.build(step, inputs, params, ctx, key)
        self.submit(job, secret)
        if on_submit is not None:
            on_submit(job)
        try:
            status = self.wait(job, timeout=timeout)
            return self.collect(job, status)
        finally:
            self.delete(job)


def _reason(exc: BaseException) -> str:
    """What the API server said (``ApiException``: its status and the message of its body)."""
    status, body = getattr(exc, "status", None), getattr(exc, "body", None)
    message = None
    if isinstance(body, (str, bytes)):
        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError):
            message = None
    text = message or getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    return f"HTTP {status}: {text}" if status else str(text)


__all__ = ["K8sJob", "KubernetesJobExecutor", "api_dict", "api_model", "load_apis"]
