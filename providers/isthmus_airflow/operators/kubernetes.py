"""``KubernetesStepOperator``: an isthmus step as a Kubernetes pod from Airflow, on the cncf provider's
``KubernetesPodOperator``.

The isthmus cache is asked first (a hit starts no pod). On a miss the pod comes from the one mapping,
:func:`isthmus.k8s.spec.pod_spec` (the same the ``KubernetesJobExecutor`` and Flyte's pod template use),
as the operator's ``full_pod_spec``; the Job's own Secret (manifest key, store URL, secret parameters) is
created through the operator's Kubernetes connection and deleted when the task ends. The pod manager of
``KubernetesPodOperator`` then starts the pod, streams its log into the task log, waits (deferrable by
default), and deletes it; on completion the pod's result manifest is read (ingested when the pod could not
reach the metadata store) and the outputs' ``ArtifactRef`` go to XCom, recorded like any other step run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.exceptions import TaskDeferred

from isthmus.context import RunContext
from isthmus.errors import StepDefinitionError
from isthmus.k8s import K8sJobOptions, K8sStepFailed, KubernetesJobExecutor
from isthmus.k8s.executor import K8sJob, api_dict, api_model
from isthmus.k8s.lineage import FACET_KEY, k8s_run_facet
from isthmus.k8s.options import CONTAINER_NAME
from isthmus.k8s.spec import labels_for, pod_manifest
from isthmus.k8s.states import PodStatus
from isthmus.records import StepRunRecord
from isthmus.step import Step, as_step, load_step
from isthmus_airflow.context import pipeline_run_row, run_context
from isthmus_airflow.hooks.isthmus import IsthmusHook
from isthmus_airflow.lineage import openlineage_handoff
from isthmus_airflow.operators.step import StepOperator, dag_param_secrets, mask_secret
from isthmus_airflow.taskflow import StepDecoratedOperator, step_task

_PENDING = object()  # no result collected yet


class _NoJobsApi:
    """The operator creates pods (through the pod manager), never Jobs."""

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"KubernetesStepOperator runs a pod, not a Job: {name} is not used")


class KubernetesStepOperator(StepOperator, KubernetesPodOperator):
    """Run ``step`` in a Kubernetes pod. Arguments as for :class:`StepOperator` (``op_args``/``op_kwargs``,
    upstream ``ArtifactRef`` XComs), the fields of :class:`~isthmus.k8s.K8sJobOptions` (``image``,
    ``namespace``, ``service_account``, ``gpu_resource``, ``gpu_label``, ``store_secret``, ``env_from``,
    ``env``, ``python``, ``record``, ``labels``, ``image_pull_policy``), and ``KubernetesPodOperator``'s
    own (``kubernetes_conn_id``, ``deferrable`` — True by default —, ``get_logs``, ``on_finish_action``,
    ...). The pod's resources, placement, image and command come from the step; operator arguments that
    would set them again (``cmds``, ``arguments``, ``container_resources``, ``full_pod_spec``, ...) are refused.
    """

    template_fields: Sequence[str] = (*StepOperator.template_fields, "kubernetes_conn_id")
    ui_color = "#dfe9f7"
    custom_operator_name = "KubernetesStepOperator"
    _OWNED = (
        "cmds",
        "arguments",
        "container_resources",
        "full_pod_spec",
        "pod_template_file",
        "pod_template_dict",
        "node_selector",
        "affinity",
        "tolerations",
        "env_vars",
        "secrets",
        "base_container_name",
        "active_deadline_seconds",
        "service_account_name",
        "do_xcom_push",
    )

    def __init__(
        self,
        *,
        step: Step[Any, Any] | Callable[..., Any] | str,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        resolved = load_step(step) if isinstance(step, str) else as_step(step)
        resolved.check_importable()  # the pod imports it by path: fail when the DAG is parsed
        given = sorted(k for k in self._OWNED if k in kwargs)
        if given:
            raise StepDefinitionError(
                f"step {resolved.name!r}: KubernetesStepOperator sets {', '.join(given)} from the step's Resources; "
                "set Resources(...) or the K8sJobOptions fields (image, namespace, env_from, ...) instead"
            )
        option_values = {k: kwargs.pop(k) for k in K8sJobOptions.names() if k in kwargs}
        try:
            options = K8sJobOptions(**option_values)
        except StepDefinitionError as exc:
            raise StepDefinitionError(f"step {resolved.name!r}: {exc}") from None
        super().__init__(
            step=resolved,
            deferrable=deferrable,
            namespace=options.namespace,
            base_container_name=CONTAINER_NAME,
            do_xcom_push=False,
            **kwargs,
        )
        self.k8s_options = options
        self._k8s_given = option_values  # the operator's own options: they win over the connection's
        self._k8s_job: K8sJob | None = None
        self._k8s_result: Any = _PENDING

    # -- the pod -----------------------------------------------------------------------------------
    def _apply_connection_defaults(self) -> None:
        """Fill the options the operator did not set from the isthmus connection's ``extra.k8s`` (read
        when the task runs, not when the DAG is parsed)."""
        defaults = IsthmusHook(self.isthmus_conn_id).k8s_defaults()
        if not defaults:
            return
        try:
            options = K8sJobOptions(**{**defaults, **self._k8s_given})
        except StepDefinitionError as exc:
            raise StepDefinitionError(
                f"step {self.step.name!r}: isthmus connection {self.isthmus_conn_id!r} extra.k8s: {exc}"
            ) from None
        self.k8s_options = options.replace(env={**options.env, **self.k8s_options.env})
        self.namespace = options.namespace

    def _executor(self, runner: Any, core_api: Any = None) -> KubernetesJobExecutor:
        return KubernetesJobExecutor(runner, options=self.k8s_options, batch_api=_NoJobsApi(), core_api=core_api)

    def prepare_pod(
        self, runner: Any, arguments: Mapping[str, Any], ctx: RunContext, secrets: frozenset[str] = frozenset()
    ) -> tuple[KubernetesJobExecutor, K8sJob | None, dict[str, Any] | None, Any]:
        """(executor, job, its Secret, cache hit): a hit means no pod; otherwise ``full_pod_spec`` is set
        to the step's pod from the one mapping."""
        ex = self._executor(runner)
        inputs, params = ex.split_arguments(self.step, arguments, secrets)
        hit = ex.lookup(self.step, inputs, params, ctx)
        if hit is not None:
            return ex, None, None, hit
        job, secret = self._build(ex, inputs, params, ctx)
        return ex, job, secret, None

    def _build(
        self, ex: KubernetesJobExecutor, inputs: dict[str, Any], params: dict[str, Any], ctx: RunContext
    ) -> tuple[K8sJob, dict[str, Any]]:
        job, secret = ex.build(self.step, inputs, params, ctx, ex.cache_key(self.step, inputs, params, ctx))
        spec = job.job["spec"]["template"]["spec"]
        pod = pod_manifest(job.name, spec, self.k8s_options, labels_for(self.step.name, self.k8s_options))
        self.full_pod_spec = api_model(pod, "V1Pod")
        self._k8s_job = job
        return job, secret

    def _job_again(self, runner: Any, context: Any) -> K8sJob:
        """The task's job as built before it deferred (names and paths derive from the task and its inputs;
        no cache lookup: the pod's own result would be one)."""
        ex = self._executor(runner)
        ctx = run_context(context, pipeline_name=self.pipeline_name)
        inputs, params = ex.split_arguments(self.step, self._arguments(context), dag_param_secrets(context))
        return self._build(ex, inputs, params, ctx)[0]

    def dry_run_pod(self, arguments: Mapping[str, Any], ctx: RunContext | None = None) -> dict[str, Any]:
        """The pod this task would start for ``arguments`` (as the API's JSON), built like at run time but
        with no cluster: cache lookup, the one mapping, then ``build_pod_request_obj(dry_run=True)``."""
        runner = IsthmusHook(self.isthmus_conn_id).get_conn()
        self._apply_connection_defaults()
        ctx = ctx or RunContext(orchestrator="airflow", invocation=self.task_id)
        _, job, _, hit = self.prepare_pod(runner, arguments, ctx)
        if job is None:
            raise StepDefinitionError(f"step {self.step.name!r}: a cache hit, no pod (step run {hit.step_run_id})")
        return api_dict(self.build_pod_request_obj(dry_run=True))

    # -- execution -------------------------------------------------------------------------------
    def execute(self, context: Any) -> Any:
        runner = IsthmusHook(self.isthmus_conn_id).get_conn()
        self._apply_connection_defaults()
        ctx = run_context(context, pipeline_name=self.pipeline_name)
        runner.metadata.ensure_pipeline_run(pipeline_run_row(ctx, context, IsthmusHook(self.isthmus_conn_id).project()))
        arguments = self._arguments(context)
        lineage_native, lineage_env = openlineage_handoff(context)
        ctx.native.update(lineage_native)
        if lineage_env:
            self.k8s_options = self.k8s_options.replace(env={**lineage_env, **self.k8s_options.env})
        secrets = dag_param_secrets(context)
        for value in secrets:
            mask_secret(value)
        ex, job, secret, hit = self.prepare_pod(runner, arguments, ctx, secrets)
        if hit is not None:
            self._isthmus_record = runner.metadata.get_step_run(hit.step_run_id)
            self.log.info(
                "isthmus cache hit for step %r: outputs from step run %s; no pod",
                self.step.name,
                hit.source_step_run_id,
            )
            return self._xcom_value(context, runner, hit.outputs)
        assert job is not None and secret is not None
        ex = self._executor(runner, core_api=self.client)
        ex.create_secret(job, secret)
        self.log.info("isthmus step %r: pod from Job spec %s in namespace %s", self.step.name, job.name, job.namespace)
        self._k8s_result = _PENDING
        try:
            KubernetesPodOperator.execute(self, context)  # defers when deferrable (trigger_reentry resumes)
        except TaskDeferred:
            raise  # the pod runs on; its Secret is deleted when the task resumes
        except K8sStepFailed:
            raise  # the pod had ended already and trigger_reentry collected it inline
        except Exception as exc:
            ex.delete_secret(job)
            status = PodStatus(job.name, "FAILED", type(exc).__name__, str(exc)[:500])
            return self._finish(context, runner, job, status)
        except BaseException:
            ex.delete_secret(job)
            raise
        if self._k8s_result is not _PENDING:  # the pod had ended already: trigger_reentry ran inline
            return self._k8s_result
        ex.delete_secret(job)
        return self._finish(context, runner, job, PodStatus(job.name, "SUCCEEDED"))

    def trigger_reentry(self, context: Any, event: dict[str, Any]) -> Any:
        """After the wait: the pod operator's own completion (its log, the pod's cleanup), the Job's
        Secret deleted, then the pod's manifest."""
        runner = IsthmusHook(self.isthmus_conn_id).get_conn()
        self._apply_connection_defaults()  # a resumed task is a new operator object: the same options again
        job = self._k8s_job or self._job_again(runner, context)
        ex = self._executor(runner, core_api=self.client)
        try:
            KubernetesPodOperator.trigger_reentry(self, context, event)
        except TaskDeferred:
            raise
        except Exception as exc:
            ex.delete_secret(job)
            status = PodStatus(job.name, "FAILED", type(exc).__name__, str(exc)[:500])
            self._k8s_result = self._finish(context, runner, job, status)
            return self._k8s_result
        ex.delete_secret(job)
        self._k8s_result = self._finish(context, runner, job, PodStatus(job.name, "SUCCEEDED"))
        return self._k8s_result

    def _finish(self, context: Any, runner: Any, job: K8sJob, status: PodStatus) -> Any:
        ex = self._executor(runner)
        try:
            result = ex.collect(job, status)
        except Exception as exc:
            step_run_id = getattr(exc, "step_run_id", None)
            if step_run_id:
                self._isthmus_record = runner.metadata.get_step_run(step_run_id)
            raise
        self._isthmus_record = runner.metadata.get_step_run(result.step_run_id)
        return self._xcom_value(context, runner, result.outputs)

    def on_kill(self) -> None:
        """Delete the pod (the pod operator's own on_kill) and the Job's Secret."""
        KubernetesPodOperator.on_kill(self)
        if self._k8s_job is not None:
            self._executor(None, core_api=self.client).delete_secret(self._k8s_job)

    # -- OpenLineage -----------------------------------------------------------------------------
    def _lineage(self, record: StepRunRecord | None) -> Any:
        lineage = super()._lineage(record)
        job = self._k8s_job
        if job is not None:
            pod = getattr(getattr(self, "pod", None), "metadata", None)
            lineage.run_facets[FACET_KEY] = k8s_run_facet(
                job=job.name, namespace=job.namespace, pod=getattr(pod, "name", None), resources=job.resources
            )
        return lineage


# -- TaskFlow: @task.isthmus(executor="kubernetes") / @task.isthmus_kubernetes ------------------------
class _KubernetesDecoratedOperator(StepDecoratedOperator, KubernetesStepOperator):  # type: ignore[misc]
    """A KubernetesStepOperator built by TaskFlow; call arguments are the step's arguments."""

    custom_operator_name = "@task.isthmus_kubernetes"
    template_fields = KubernetesStepOperator.template_fields
    template_fields_renderers = KubernetesStepOperator.template_fields_renderers


def kubernetes_task(
    python_callable: Step[Any, Any] | Callable[..., Any] | None = None,
    multiple_outputs: bool | None = None,
    **kwargs: Any,
) -> Any:
    """``@task.isthmus(executor="kubernetes", image=...)`` or ``task.isthmus_kubernetes(train)(features)``:
    a step as a Kubernetes pod in TaskFlow. Keyword arguments are :class:`KubernetesStepOperator`'s."""

    return step_task(_KubernetesDecoratedOperator, python_callable, multiple_outputs, kwargs)
