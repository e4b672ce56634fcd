"""``StepOperator``: run a portable isthmus step as an Airflow task, through the isthmus StepRunner."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from isthmus.artifacts.refs import ArtifactRef
from isthmus.errors import StepFailed
from isthmus.lineage.facets import datasets, run_facets
from isthmus.records import RunStatus, StepRunRecord
from isthmus.redaction import secret_values
from isthmus.step import Step, as_step, load_step
from isthmus_airflow.context import pipeline_run_row, run_context
from isthmus_airflow.hooks.isthmus import IsthmusHook
from isthmus_airflow.links.step_run import IsthmusStepRunLink
from isthmus_airflow.mapping import expanded_over, item_refs, joined, map_arguments, tag_mapped

PARAM_MARKER = "__isthmus_param__"
CACHE_PARAM = "isthmus_cache"  # DAG run param: False computes every step again (their results are cached)
RECOMPUTE_PARAM = "isthmus_recompute"  # DAG run param: names of the steps (or task ids) to compute again


def param_ref(name: str) -> dict[str, str]:
    """A placeholder resolved from the DAG run's ``params`` when the task runs (keeps native types)."""
    return {PARAM_MARKER: name}


class TemplatesAsWritten(BaseOperator):
    """An operator whose templated fields keep strings without template syntax as written."""

    def render_template(
        self, content: Any, context: Any, jinja_env: Any = None, seen_oids: set[int] | None = None
    ) -> Any:
        """Strings without template syntax reach the step byte-for-byte (Jinja would drop a trailing
        newline, and native rendering would turn ``"007"`` into ``7``); templates are rendered with
        ``keep_trailing_newline``. Nested values come back through here one by one."""
        if not isinstance(content, str):
            return super().render_template(content, context, jinja_env, seen_oids)
        env = jinja_env or self.get_template_env()
        if not content.endswith(tuple(self.template_ext)) and not is_template(content, env):
            return content
        if not env.keep_trailing_newline:
            env = env.overlay(keep_trailing_newline=True)
        return super().render_template(content, context, env, seen_oids)


class StepOperator(TemplatesAsWritten):
    """Run ``step`` with ``op_args``/``op_kwargs`` (templated); inputs may be upstream ``ArtifactRef`` XComs.

    Only ``ArtifactRef`` JSON travels through XCom: one output is returned as its ref, several as
    ``{output: ref}`` (also pushed under each output's name). Caching, recording and lineage are the
    StepRunner's; Airflow retries the task (each try is one attempt), and a retry of an attempt that
    already finished is a cache hit. ``Resources.partition`` becomes the task's ``queue`` and
    ``Resources.extra["pool"]`` its ``pool`` unless they are given.

    Mapped (``StepOperator.partial(..., map_names=("x", "y")).expand(map_values=xs.zip(ys))``): each map
    index gets its item (one name) or its zipped items in ``map_values``, the step's arguments ``map_names``.

    The DAG run params ``isthmus_cache`` (``False``: compute every step again) and ``isthmus_recompute``
    (step names or task ids to compute again) skip the cache lookup; the fresh results are cached.
    """

    template_fields: Sequence[str] = ("op_args", "op_kwargs", "isthmus_conn_id")
    template_fields_renderers = {"op_kwargs": "json", "op_args": "py"}
    ui_color = "#d9f0e3"
    custom_operator_name = "StepOperator"
    operator_extra_links = (IsthmusStepRunLink(),)  # its step-run page in the isthmus UI (/isthmus)

    def __init__(
        self,
        *,
        step: Step[Any, Any] | Callable[..., Any] | str,
        op_args: Sequence[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        isthmus_conn_id: str = IsthmusHook.default_conn_name,
        pipeline_name: str | None = None,
        map_names: Sequence[str] = (),
        map_values: Any = None,
        **kwargs: Any,
    ) -> None:
        resolved = load_step(step) if isinstance(step, str) else as_step(step)
        default_args = kwargs.get("default_args") or {}
        if "retries" not in kwargs and "retries" not in default_args:
            kwargs["retries"] = resolved.retries  # the step's portable retries, unless the DAG sets them
        resources = resolved.resources
        if resources.partition and "queue" not in kwargs and "queue" not in default_args:
            kwargs["queue"] = resources.partition
        if resources.extra.get("pool") and "pool" not in kwargs and "pool" not in default_args:
            kwargs["pool"] = resources.extra["pool"]
        if len(resolved.output_names) > 1:
            kwargs.setdefault("multiple_outputs", True)
        super().__init__(**kwargs)
        self.step = resolved
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})
        self.isthmus_conn_id = isthmus_conn_id
        self.pipeline_name = pipeline_name
        self.map_names = tuple(map_names)
        self.map_values = map_values
        self._isthmus_record: StepRunRecord | None = None

    # -- execution -------------------------------------------------------------------------------
    def _arguments(self, context: Any) -> dict[str, Any]:
        params = context.get("params") or {}

        def resolve(value: Any) -> Any:
            if isinstance(value, dict) and set(value) == {PARAM_MARKER}:
                name = value[PARAM_MARKER]
                if name not in params:
                    raise ValueError(
                        f"step {self.step.name!r}: DAG param {name!r} is not defined; add it to the DAG's params"
                    )
                return params[name]
            return value

        kwargs = {k: resolve(v) for k, v in self.op_kwargs.items()}
        if self.map_names:
            map_index = getattr(context.get("ti"), "map_index", -1)
            kwargs.update(map_arguments(self.step.name, self.map_names, self.map_values, map_index))
        bound = self.step.bind([resolve(v) for v in self.op_args], kwargs)
        arguments = {name: self._coerce(name, joined(value)) for name, value in bound.items()}
        _mask_secret_values(arguments)
        return arguments

    def _coerce(self, name: str, value: Any) -> Any:
        """A rendered template is a string: turn ``"100"`` into ``100`` when the step's parameter is
        annotated int/float/bool (so the value, and the cache key, match a local run)."""
        if not isinstance(value, str):
            return value
        annotation = self._annotations().get(name)
        if annotation not in (int, float, bool):
            return value
        from pydantic import TypeAdapter, ValidationError

        try:
            return TypeAdapter(annotation).validate_python(value.strip())
        except ValidationError:
            raise ValueError(
                f"step {self.step.name!r}: parameter {name!r} expects {annotation.__name__} but got {value!r}; "
                "fix the value, or render templates natively with DAG(render_template_as_native_obj=True)"
            ) from None

    def _annotations(self) -> dict[str, Any]:
        import typing

        try:
            return typing.get_type_hints(self.step.fn)
        except Exception:
            return {}

    def execute(self, context: Any) -> Any:
        recompute = self._recompute(context)
        runner = IsthmusHook(self.isthmus_conn_id).get_conn()
        ctx = run_context(context, pipeline_name=self.pipeline_name)
        runner.metadata.ensure_pipeline_run(pipeline_run_row(ctx, context, IsthmusHook(self.isthmus_conn_id).project()))
        arguments = self._arguments(context)
        # The DAG run's secret params (secret-named, SecretStr …) follow their values into the step, whatever
        # its parameter is called (a param_ref or a "{{ params.password }}" template).
        secrets = dag_param_secrets(context)
        for value in secrets:
            mask_secret(value)
        try:
            result = runner.run(self.step, arguments, ctx, retries=0, secrets=secrets, recompute=recompute)
        except StepFailed as exc:
            if exc.step_run_id:
                self._isthmus_record = runner.metadata.get_step_run(exc.step_run_id)
            if ctx.pipeline_run_id and ctx.attempt > (self.retries or 0):  # no Airflow retry left: the run failed
                runner.metadata.finish_pipeline_run(ctx.pipeline_run_id, RunStatus.FAILED, error=str(exc))
            arguments = secrets = None  # type: ignore[assignment]  # noqa: F841 - not shown by locals-printing formatters
            raise
        self._isthmus_record = runner.metadata.get_step_run(result.step_run_id)
        if result.cache_hit:
            self.log.info(
                "isthmus cache hit for step %r: outputs from step run %s (pipeline run %s)",
                self.step.name,
                result.source_step_run_id,
                self._source_pipeline_run(runner, result.source_step_run_id),
            )
        else:
            forced = " (recomputed: the cache was not looked up)" if recompute else ""
            self.log.info("isthmus step %r computed in %.0f ms%s", self.step.name, result.duration_ms, forced)
        return self._xcom_value(context, runner, result.outputs)

    def _recompute(self, context: Any) -> bool:
        """Whether the DAG run's ``isthmus_cache``/``isthmus_recompute`` params ask to compute this step again."""
        params = context.get("params") or {}
        cache = params.get(CACHE_PARAM, True)
        names = params.get(RECOMPUTE_PARAM) or []
        if not isinstance(cache, bool):
            raise AirflowFailException(
                f"step {self.step.name!r}: DAG run param {CACHE_PARAM}={cache!r} must be true or false"
            )
        if isinstance(names, str) or not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise AirflowFailException(
                f"step {self.step.name!r}: DAG run param {RECOMPUTE_PARAM}={names!r} must be a list of step names "
                'or task ids, e.g. ["train"]'
            )
        unknown = sorted(set(names) - self._step_names())
        if unknown:
            raise AirflowFailException(
                f"step {self.step.name!r}: DAG run param {RECOMPUTE_PARAM} names {unknown}, which this DAG does not "
                f"run; name its steps or task ids: {sorted(self._step_names())}"
            )
        return cache is False or self.task_id in names or self.step.name in names

    def _step_names(self) -> set[str]:
        """Task ids and step names of this DAG's isthmus tasks (mapped ones too)."""
        names = {self.task_id, self.step.name}
        for task in self.dag.tasks if self.has_dag() else ():
            if isinstance(task, StepOperator):
                step: Any = task.step
            elif _is_step_operator_class(getattr(task, "operator_class", None)):  # a mapped StepOperator
                step = getattr(task, "partial_kwargs", {}).get("step")
            else:
                continue
            try:
                names |= {task.task_id, (load_step(step) if isinstance(step, str) else as_step(step)).name}
            except Exception:  # a step this process cannot import is not one this run recomputes
                continue
        return names

    def _xcom_value(self, context: Any, runner: Any, outputs: dict[str, ArtifactRef]) -> Any:
        """What the task pushes: the output's ref (``{output: ref}`` for several); one ref per item
        when a mapped task expands over this one; refs of a mapped task carry their map index."""
        for name, ref in outputs.items():
            self.log.info("output %s: %s (%s, %d bytes)", name, ref.content_hash, ref.python_type, ref.size)
        if expanded_over(self, context):
            items = item_refs(self.step.name, outputs, runner.artifacts)
            self.log.info("a mapped task expands over this output: pushed one ref per item (%d)", len(items))
            return items
        refs = {name: ref.to_dict() for name, ref in outputs.items()}
        map_index = getattr(context.get("ti"), "map_index", -1)
        if map_index is not None and map_index >= 0:
            refs = {name: tag_mapped(ref, self.task_id, map_index) for name, ref in refs.items()}
        if len(refs) == 1:
            return next(iter(refs.values()))
        return refs

    @staticmethod
    def _source_pipeline_run(runner: Any, step_run_id: str | None) -> str | None:
        if not step_run_id:
            return None
        try:
            return runner.metadata.get_step_run(step_run_id).get("pipeline_run_id")
        except Exception:
            return None

    # -- OpenLineage (apache-airflow-providers-openlineage calls these) --------------------------
    def _lineage(self, record: StepRunRecord | None) -> Any:
        from airflow.providers.openlineage.extractors import OperatorLineage

        if not record:
            return OperatorLineage()
        return OperatorLineage(
            inputs=datasets(record.get("inputs") or {}, output=False),
            outputs=datasets(record.get("outputs") or {}, output=True),
            run_facets=run_facets(record),
        )

    def get_openlineage_facets_on_start(self) -> Any:
        from airflow.providers.openlineage.extractors import OperatorLineage

        return OperatorLineage()

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        return self._lineage(self._isthmus_record)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        return self._lineage(self._isthmus_record)


def _is_step_operator_class(cls: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, StepOperator)


def _mask_secret_values(arguments: Mapping[str, Any]) -> None:
    """Airflow's secrets masker hides every secret the step's arguments hold in everything this task logs,
    as it does for connection passwords: values of secret-named parameters and fields at any depth,
    ``SecretStr`` values, header pairs and bearer tokens, URL passwords (see
    :func:`isthmus.redaction.secret_values`)."""
    for value in secret_values(arguments, {}):
        mask_secret(value)


def dag_param_secrets(context: Any) -> frozenset[str]:
    """The secrets the DAG run's ``params`` hold (secret-named params, secret objects, URL passwords …),
    to be known as secrets wherever their values are passed."""
    try:
        params = {str(k): v for k, v in dict(context.get("params") or {}).items()}
    except Exception:  # params Airflow cannot resolve are not passed to the step either
        return frozenset()
    return frozenset(secret_values(params, {}))


def mask_secret(value: str) -> None:
    """Register ``value`` with Airflow's secrets masker (task logs show ``***``)."""
    from airflow.sdk.log import mask_secret as airflow_mask_secret

    airflow_mask_secret(value)


def is_template(text: str, env: Any) -> bool:
    """Whether ``text`` holds Jinja syntax of ``env`` (a variable, block or comment start)."""
    marks = (env.variable_start_string, env.block_start_string, env.comment_start_string)
    return any(mark in text for mark in marks)


def output_ref(value: Any) -> ArtifactRef | None:
    """The ArtifactRef in an XCom value pushed by a StepOperator (None if it is not one)."""
    return ArtifactRef.coerce(value)
