"""``IsthmusTask``: a Flyte ``python-task`` whose body is an isthmus step run through the StepRunner.

The task's typed interface comes from the step's signature (see :mod:`.transformer` for how values
travel). Executing the task hands the arguments to :meth:`isthmus.runner.StepRunner.run` — the same path a
local or Airflow run takes — so caching, recording, retries and lineage are the core's, and a result
computed under another orchestrator is a cache hit here.
"""

from __future__ import annotations

import inspect
import json
import logging
import typing
from contextvars import ContextVar
from typing import Any

from flytekit.core.base_task import TaskMetadata
from flytekit.core.context_manager import FlyteContext
from flytekit.core.docstring import Docstring
from flytekit.core.interface import Interface, transform_interface_to_typed_interface
from flytekit.core.python_function_task import PythonFunctionTask, PythonInstanceTask
from flytekit.core.task import TaskPlugins
from flytekit.core.type_engine import TypeEngine
from flytekit.models.literals import LiteralMap

from flytekitplugins.isthmus import deck
from flytekitplugins.isthmus.cache import IsthmusCachePolicy
from flytekitplugins.isthmus.config import Isthmus
from flytekitplugins.isthmus.context import (
    ensure_pipeline_run,
    finish_pipeline_run,
    flyte_run,
    reopen_run,
    settle_run,
)
from flytekitplugins.isthmus.deck import redact_inputs
from flytekitplugins.isthmus.mapping import (
    CACHE_INPUT,
    MAP_INDEX_INPUT,
    OUTPUTS,
    REF_LIST,
    RESERVED_INPUTS,
    load_parameter,
    map_index,
)
from flytekitplugins.isthmus.resolver import isthmus_task_resolver
from flytekitplugins.isthmus.resources import task_settings, timeout_for
from flytekitplugins.isthmus.transformer import (
    REF_METADATA_KEY,
    ensure_registered,
    flyte_type_for,
    is_small_type,
    ref_from_literal,
)
from isthmus.artifacts.refs import ArtifactRef
from isthmus.errors import StepDefinitionError
from isthmus.pinned import ArtifactAlias, ArtifactVersion
from isthmus.records import RunStatus
from isthmus.redaction import scrub, secret_values, secrets_in
from isthmus.runner import default_runner
from isthmus.step import as_step
from isthmus.step_summary import log_step_summary, summary_logger

if typing.TYPE_CHECKING:
    from isthmus.step import Step

PIN_TYPES = frozenset(f"{t.__module__}:{t.__qualname__}" for t in (ArtifactAlias, ArtifactVersion))

log = logging.getLogger("flytekitplugins.isthmus")
SUMMARY_LOGGER = "flytekitplugins.isthmus.summary"  # one INFO line per task: silence it with setLevel(WARNING)

# Set while flytekit's dispatch_execute runs this task: execute() then hands the artifact refs along with
# the values. Callers of execute() alone (e.g. a local map task) get plain values.
DISPATCHING: ContextVar[bool] = ContextVar("isthmus_dispatching", default=False)

_RESOURCE_KWARGS = ("requests", "limits", "resources", "accelerator", "pod_template", "pod_template_name")


class StepOutputs:
    """What :meth:`IsthmusTask.execute` returns: the Flyte-facing values plus the artifact refs behind them."""

    __slots__ = ("native", "refs")

    def __init__(self, native: Any, refs: dict[str, Any]) -> None:
        self.native = native
        self.refs = refs


class _RefAwareIO:
    """Inputs carrying an artifact ref in their literal metadata reach the runner as that ref; outputs
    get the ref of the artifact that holds them attached."""

    def dispatch_execute(self, ctx: FlyteContext, input_literal_map: LiteralMap) -> Any:
        token = DISPATCHING.set(True)
        try:
            return super().dispatch_execute(ctx, input_literal_map)  # type: ignore[misc]
        finally:
            DISPATCHING.reset(token)

    def _literal_map_to_python_input(self, literal_map: LiteralMap, ctx: FlyteContext) -> dict[str, Any]:
        types = self.python_interface.inputs  # type: ignore[attr-defined]
        out: dict[str, Any] = {}
        for name, lv in literal_map.literals.items():
            ref = ref_from_literal(lv)
            out[name] = ref if ref is not None else TypeEngine.to_python_value(ctx, lv, types[name])
        return out

    async def _output_to_literal_map(self, native_outputs: Any, ctx: FlyteContext) -> Any:
        refs: dict[str, Any] = {}
        if isinstance(native_outputs, StepOutputs):
            refs, native_outputs = native_outputs.refs, native_outputs.native
        literals, as_map = await super()._output_to_literal_map(native_outputs, ctx)  # type: ignore[misc]
        for name, lv in literals.literals.items():
            ref = refs.get(name)
            if ref is not None:
                lv.set_metadata({**(lv.metadata or {}), REF_METADATA_KEY: ref.to_json()})
        return literals, as_map


def _type_hints(fn: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolved forward references: use what can be read
        return {k: v for k, v in getattr(fn, "__annotations__", {}).items() if not isinstance(v, str)}


def step_interface(
    step: Step[Any, Any],
    ref_inputs: typing.Collection[str] = (),
    ref_outputs: typing.Collection[str] = (),
    config: Isthmus | None = None,
) -> Interface:
    """The Flyte interface of a step: small values as themselves, everything else as ArtifactRef.

    ``ref_inputs``/``ref_outputs`` name inputs and outputs that travel as ArtifactRef even though their
    type is small (set by ``to_flyte_workflow`` where two connected steps disagree on a type, so the edge
    still type-checks in Flyte's compiler). ``config`` adds what mapping needs: ``list[ArtifactRef]``
    inputs (fan-in), the map index and cache inputs, and the one output of a mapped step with several.
    """
    config = config or Isthmus(ref_inputs=tuple(ref_inputs), ref_outputs=tuple(ref_outputs))
    ref_inputs, ref_outputs = config.ref_inputs, config.ref_outputs
    hints = _type_hints(step.fn)
    inputs: dict[str, Any] = {}
    for name, param in step.signature.parameters.items():
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise StepDefinitionError(
                f"step {step.name!r}: *args/**kwargs parameters cannot become Flyte task inputs; name each parameter"
            )
        if name in RESERVED_INPUTS and (config.mapped or config.cache_input):
            raise StepDefinitionError(
                f"step {step.name!r}: parameter {name!r} is reserved for the Flyte workflow isthmus builds; rename it"
            )
        if name in config.ref_list_inputs:
            inputs[name] = REF_LIST
            continue
        annotation = hints.get(name, inspect.Parameter.empty)
        tp = flyte_type_for(annotation if name not in ref_inputs else object, param.default)
        if param.default is inspect.Parameter.empty or (name in ref_inputs and param.default is not None):
            inputs[name] = tp
        else:
            inputs[name] = (tp, param.default)
    names = step.output_names
    ret = hints.get("return", inspect.Parameter.empty)
    if len(names) == 1:
        out_types = [ret]
    elif isinstance(ret, type) and issubclass(ret, tuple) and hasattr(ret, "_fields"):
        field_hints = _type_hints(ret)
        out_types = [field_hints.get(f, inspect.Parameter.empty) for f in ret._fields]
    elif typing.get_origin(ret) is tuple and len(typing.get_args(ret)) == len(names):
        out_types = list(typing.get_args(ret))
    else:
        out_types = [inspect.Parameter.empty] * len(names)
    outputs = {n: flyte_type_for(t if n not in ref_outputs else object) for n, t in zip(names, out_types, strict=True)}
    if config.mapped:
        inputs[MAP_INDEX_INPUT] = int
        if len(names) > 1:  # a map task has one output: the item's refs, in output order
            outputs, names = {OUTPUTS: REF_LIST}, (OUTPUTS,)
    if config.cache_input:
        inputs[CACHE_INPUT] = (bool, True)
    tuple_name = None
    if len(names) > 1:
        nt = step.output_namedtuple
        tuple_name = nt.__name__ if nt is not None else f"{step.name}_outputs"
    return Interface(inputs, outputs, output_tuple_name=tuple_name, docstring=Docstring(callable_=step.fn))


def _shim_for(step: Step[Any, Any]) -> Any:
    """A stand-in function for flytekit's constructor (the real interface is set right after)."""

    def isthmus_step() -> None:
        return None

    isthmus_step.__module__ = step.module
    isthmus_step.__name__ = step.fn.__name__
    isthmus_step.__qualname__ = step.fn.__qualname__
    isthmus_step.__doc__ = step.fn.__doc__
    return isthmus_step


class IsthmusTask(_RefAwareIO, PythonFunctionTask[Isthmus]):
    """A Flyte task that runs an isthmus step. Task type stays ``python-task``: any Flyte backend runs it.

    Built by ``isthmus_task(step)``, ``Pipeline.to_flyte_workflow()`` or ``@task(task_config=Isthmus())``.
    """

    def __init__(
        self,
        task_config: Isthmus | None,
        task_function: Any,
        task_type: str = "python-task",
        *,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        ensure_registered()

        config = task_config if task_config is not None else Isthmus()
        step = as_step(task_function.step if isinstance(task_function, IsthmusTask) else task_function)
        interface = step_interface(step, config=config)
        if kwargs.get("task_resolver") is None:
            kwargs["task_resolver"] = isthmus_task_resolver
        given = {k: kwargs.get(k) for k in _RESOURCE_KWARGS}
        kwargs.update(task_settings(step.resources, config.tolerations, given))
        metadata = kwargs.get("metadata") or TaskMetadata()
        if not metadata.timeout:
            metadata.timeout = timeout_for(step.resources)
        kwargs["metadata"] = metadata
        kwargs.pop("pickle_untyped", None)
        super().__init__(config, _shim_for(step), task_type=task_type, **kwargs)
        # The real interface: from the step's signature, with the step's output names.
        self._native_interface = interface
        self._python_interface = interface
        self._interface = transform_interface_to_typed_interface(interface, allow_partial_artifact_id_binding=True)
        self._task_function = step.fn
        self._step = step
        self._name = name or f"{step.module}.{step.fn.__qualname__}"
        self._small_outputs = {n for n, t in interface.outputs.items() if is_small_type(t)}

    @property
    def name(self) -> str:
        return self._name

    @property
    def step(self) -> Step[Any, Any]:
        return self._step

    def resolver_args(self) -> list[str]:
        """What :class:`~flytekitplugins.isthmus.resolver.IsthmusTaskResolver` needs to rebuild this task."""
        self._step.check_importable()
        options: dict[str, Any] = {"name": self.name, **self.task_config.to_options()}
        if self.enable_deck:
            options["enable_deck"] = True
        return ["step", self._step.import_path, "options", json.dumps(options, sort_keys=True, separators=(",", ":"))]

    def execute(self, **kwargs: Any) -> Any:
        step = self._step
        config = self.task_config
        invocation = config.invocation or step.name
        recompute = config.cache_input and kwargs.pop(CACHE_INPUT, True) is False
        index = map_index(step.name, kwargs.pop(MAP_INDEX_INPUT, None)) if config.mapped else None
        if index is not None:
            invocation = f"{invocation}[{index}]"
        runner = default_runner()
        run = flyte_run(self.name, config.pipeline, invocation)
        if index is not None:
            run.context.native["map_index"] = index
        ensure_pipeline_run(runner, run, step.fn)
        # a run no finish node closes (any workflow but to_flyte_workflow's): settled by its tasks
        settles = None if config.cache_input else run.pipeline_run_id
        if settles:
            reopen_run(runner, settles)
        for name in config.param_inputs:  # a plain value stored once: keyed as the parameter it is
            ref = ArtifactRef.coerce(kwargs.get(name))
            if ref is not None:
                kwargs[name] = load_parameter(ref, runner.artifacts)
        for name, value in kwargs.items():  # a pin (a workflow input's default) travels stored: resolved now
            ref = ArtifactRef.coerce(value)
            if ref is not None and ref.python_type in PIN_TYPES:
                kwargs[name] = runner.artifacts.load(ref)
        positional = [
            kwargs.pop(n) for n, p in step.signature.parameters.items() if p.kind is inspect.Parameter.POSITIONAL_ONLY
        ]
        arguments = step.bind(positional, kwargs)
        secrets = self._given_secrets(arguments)
        try:
            result = runner.run(step, arguments, run.context, secrets=secrets, recompute=recompute)
        except BaseException as exc:
            if settles:
                settle_run(runner, settles)
            elif run.local and run.pipeline_run_id and isinstance(exc, Exception):
                # a local pipeline workflow stops at the first failure
                error = scrub(f"{type(exc).__name__}: {exc}", secret_values(arguments) | secrets)
                finish_pipeline_run(runner, run.pipeline_run_id, RunStatus.FAILED, error=error)
            ended = "failed" if isinstance(exc, Exception) else "aborted"
            summary_logger(SUMMARY_LOGGER).info("isthmus %s: %s; run %s", invocation, ended, run.pipeline_run_id or "-")
            # not shown by traceback formatters that print locals
            arguments = kwargs = positional = secrets = None  # type: ignore[assignment]  # noqa: F841
            raise
        if settles:
            settle_run(runner, settles)
        log_step_summary(SUMMARY_LOGGER, runner.metadata, result, run.pipeline_run_id)
        if self.enable_deck:
            self._render_deck(runner, invocation, result, run.context.to_dict())
        if OUTPUTS in self.python_interface.outputs:
            refs = [result.outputs[name] for name in step.output_names]
            return StepOutputs(refs, {}) if DISPATCHING.get() else refs
        values = []
        for name in step.output_names:
            ref = result.outputs[name]
            values.append(runner.artifacts.load(ref) if name in self._small_outputs else ref)
        native = values[0] if len(values) == 1 else tuple(values)
        return StepOutputs(native, dict(result.outputs)) if DISPATCHING.get() else native

    def _given_secrets(self, arguments: dict[str, Any]) -> frozenset[str]:
        """The secrets held by the inputs a secret-named workflow input feeds (``Isthmus.secret_inputs``)."""
        names = self.task_config.secret_inputs
        return frozenset(s for n in names if n in arguments for s in secrets_in(arguments[n]))

    def _write_decks(self, native_inputs: Any, native_outputs_as_map: Any, ctx: Any, new_user_params: Any) -> Any:
        """flytekit's own decks, with secret inputs shown as ``***`` in its Input deck."""
        inputs = dict(native_inputs or {})
        shown = redact_inputs(inputs, secret=self.task_config.secret_inputs)
        return super()._write_decks(shown, native_outputs_as_map, ctx, new_user_params)

    def _render_deck(self, runner: Any, invocation: str, result: Any, run_context: dict[str, Any]) -> None:
        try:
            deck.publish(deck.build(runner, self._step, invocation, result, run_context))
        except Exception as exc:  # the deck never fails a step
            log.warning("isthmus deck for step %r failed: %s: %s", self._step.name, type(exc).__name__, exc)


class IsthmusControlTask(_RefAwareIO, PythonInstanceTask[Isthmus]):
    """Bookkeeping tasks of a pipeline workflow (finish the pipeline run; record its failure)."""

    def __init__(self, name: str, role: str, interface: Interface, run_fn: Any, resolver_args: Any) -> None:
        ensure_registered()

        super().__init__(
            name=name,
            task_config=Isthmus(),
            task_resolver=isthmus_task_resolver,
            interface=interface,
        )
        self._role = role
        self._run_fn = run_fn
        self._resolver_args = resolver_args

    @property
    def role(self) -> str:
        return self._role

    def resolver_args(self) -> list[str]:
        return list(self._resolver_args())

    def execute(self, **kwargs: Any) -> Any:
        return self._run_fn(self, **kwargs)


def isthmus_task(
    step: Any,
    *,
    name: str | None = None,
    task_config: Isthmus | None = None,
    cache: Any = False,
    retries: int = 0,
    interruptible: bool | None = None,
    timeout: Any = None,
    enable_deck: bool | None = None,
    slurm: Any = None,
    **kwargs: Any,
) -> IsthmusTask:
    """A Flyte task running ``step`` (a ``@step`` or a plain function) through the isthmus StepRunner.

    - The typed interface comes from the step's signature; outputs keep the step's output names.
    - ``cache``: isthmus always caches through its own store (hits recorded and shared with Airflow and
      local runs). ``cache=True`` (or a ``flytekit.Cache``) also turns Flyte's cache on, versioned by
      :class:`~flytekitplugins.isthmus.cache.IsthmusCachePolicy` (code and dependency fingerprints); a
      Flyte cache hit skips the task, so isthmus records nothing for it.
    - ``retries``: Flyte-level retries (pod failures); the step's own ``retries`` run inside the task.
    - Resources, GPU type, node selector and time limit come from the step (``Resources``); explicit
      ``requests``/``limits``/``accelerator``/``pod_template``/``timeout`` arguments win.
    - ``slurm=SlurmJob(partition="gpu", ...)``: run the step as a Slurm job instead, through the
      ``isthmus_slurm`` connector (:mod:`flytekitplugins.isthmus.slurm`); same interface, cache and records.
    - Any other keyword goes to flytekit (``container_image``, ``environment``, ``secret_requests`` …).
    """
    from flytekit.core.cache import Cache, VersionParameters

    s = as_step(step.step if isinstance(step, IsthmusTask) else step)
    meta: dict[str, Any] = {"retries": retries, "interruptible": interruptible, "timeout": timeout}
    if cache is True:
        cache = Cache(policies=[IsthmusCachePolicy()])
    if isinstance(cache, Cache):
        meta["cache"] = True
        meta["cache_serialize"] = cache.serialize
        meta["cache_ignore_input_vars"] = tuple(cache.get_ignored_inputs())
        meta["cache_version"] = cache.get_version(
            VersionParameters(
                func=s,
                container_image=kwargs.get("container_image"),
                pod_template=kwargs.get("pod_template"),
                pod_template_name=kwargs.get("pod_template_name"),
            )
        )
    elif cache:
        raise TypeError(f"cache={cache!r} must be True, False or flytekit.Cache(...)")
    if slurm is not None:
        # a cycle: IsthmusSlurmTask subclasses IsthmusTask
        from flytekitplugins.isthmus.slurm import IsthmusSlurmTask, SlurmJob

        if not isinstance(slurm, SlurmJob):
            raise TypeError(f"slurm={slurm!r} must be a flytekitplugins.isthmus.SlurmJob(...)")
        if enable_deck:
            raise TypeError("enable_deck is not available with slurm=: the step runs in a Slurm job, not in this task")
        return IsthmusSlurmTask(task_config, s, name=name, metadata=TaskMetadata(**meta), slurm=slurm, **kwargs)
    if enable_deck and "deck_fields" not in kwargs:
        # flytekit's "Dependencies" deck shells out to pip; the isthmus deck has the dependency fingerprint.
        from flytekit.deck import DeckField

        kwargs["deck_fields"] = (DeckField.SOURCE_CODE, DeckField.TIMELINE, DeckField.INPUT, DeckField.OUTPUT)
    return IsthmusTask(
        task_config,
        s,
        name=name,
        metadata=TaskMetadata(**meta),
        enable_deck=enable_deck,
        **kwargs,
    )


TaskPlugins.register_pythontask_plugin(Isthmus, IsthmusTask)
