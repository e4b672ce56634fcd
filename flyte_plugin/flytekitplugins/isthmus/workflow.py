"""``Pipeline.to_flyte_workflow()``: a whole ``@pipeline`` as a Flyte workflow.

The pipeline body is traced once with its parameters as placeholders; every step invocation becomes one
:class:`~flytekitplugins.isthmus.task.IsthmusTask` node (named ``<workflow>.<invocation>``) wired to its
upstream outputs, pipeline parameters become workflow inputs (with their defaults), and the pipeline's
return value becomes the workflow's outputs.

Two bookkeeping tasks keep the isthmus pipeline run complete when tasks run in separate pods: a last
node that records the pipeline's parameters and outputs and marks the run COMPLETED, and the workflow's
``on_failure`` handler, which marks it FAILED (locally the failing task does that itself).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from flytekit.core.interface import Interface
from flytekit.core.workflow import (
    PythonFunctionWorkflow,
    WorkflowFailurePolicy,
    WorkflowMetadata,
    WorkflowMetadataDefaults,
)
from flytekit.types.error import FlyteError

from flytekitplugins.isthmus import mapping
from flytekitplugins.isthmus.config import Isthmus
from flytekitplugins.isthmus.context import ensure_pipeline_run, finish_pipeline_run, flyte_run
from flytekitplugins.isthmus.mapping import CACHE_INPUT, MAP_INDEX_INPUT, REF_LIST, MappedNode
from flytekitplugins.isthmus.task import IsthmusControlTask, IsthmusTask, isthmus_task, step_interface
from flytekitplugins.isthmus.transformer import ensure_registered, flyte_type_for
from isthmus.artifacts.refs import ArtifactRef
from isthmus.errors import NotImportableError, StepDefinitionError
from isthmus.pipeline import MappedOutput, Node, OutputHandle, Param, handles_in
from isthmus.records import RunStatus
from isthmus.redaction import is_secret_name, scrub, secret_values
from isthmus.runner import default_runner

FINISH, FAILURE, ITEMS, GATHER = "finish", "failure", "items", "gather"


@dataclass
class _Plan:
    """A traced pipeline, laid out for Flyte."""

    pipeline: Any
    name: str
    graph: Any
    params: dict[str, tuple[Any, Any]]  # name -> (flyte python type, default or inspect.Parameter.empty)
    handles: list[Any]  # the pipeline's output handles, flattened in order
    shape: str  # "none" | "single" | "tuple" | "fields"
    fields: list[str] = field(default_factory=list)
    sinks: list[Any] = field(default_factory=list)  # one output of each node nothing else consumes
    mapped: dict[str, MappedNode] = field(default_factory=dict)  # mapped nodes by invocation


def _plan(pipeline: Any, name: str | None) -> _Plan:
    graph = pipeline.compile(**{p: Param(p) for p in pipeline.signature.parameters})
    try:
        hints = typing.get_type_hints(pipeline.fn)
    except Exception:
        hints = {}
    params: dict[str, tuple[Any, Any]] = {}
    for pname, param in pipeline.signature.parameters.items():
        annotation = hints.get(pname, inspect.Parameter.empty)
        if annotation is inspect.Parameter.empty and param.default in (inspect.Parameter.empty, None):
            raise StepDefinitionError(
                f"pipeline {pipeline.name!r}: parameter {pname!r} needs a type annotation (or a default value) "
                "to become a Flyte workflow input"
            )
        params[pname] = (flyte_type_for(annotation, param.default), param.default)
    if CACHE_INPUT in params:
        raise StepDefinitionError(
            f"pipeline {pipeline.name!r}: parameter {CACHE_INPUT!r} is the Flyte workflow's own cache switch; rename it"
        )

    out = graph.outputs
    fields: list[str] = []
    if out is None:
        shape, handles = "none", []
    elif isinstance(out, OutputHandle):
        shape, handles = "single", [out]
    elif isinstance(out, tuple) and hasattr(out, "_fields"):
        shape, handles, fields = "fields", list(out), list(out._fields)
    elif isinstance(out, (tuple, list)):
        shape, handles = "tuple", list(out)
    elif isinstance(out, dict):
        shape, handles, fields = "fields", list(out.values()), [str(k) for k in out]
        bad = [k for k in fields if not k.isidentifier()]
        if bad:
            raise StepDefinitionError(
                f"pipeline {pipeline.name!r} returns a dict with keys {bad} that cannot name Flyte outputs; "
                "use identifiers as keys"
            )
    else:
        shape, handles = "single", [out]
    if any(not isinstance(h, OutputHandle) for h in handles):
        raise StepDefinitionError(
            f"pipeline {pipeline.name!r} returns {out!r}; a pipeline run as a Flyte workflow can return step "
            "outputs only (a single output, a tuple or a dict of them, or None)"
        )
    consumed = {h.invocation for node in graph.nodes.values() for v in node.arguments.values() for h in handles_in(v)}
    covered = {h.invocation for h in handles}
    sinks = [
        (MappedOutput if node.mapped else OutputHandle)(inv, node.step.output_names[0])
        for inv, node in graph.nodes.items()
        if inv not in consumed and inv not in covered
    ]
    wf_name = name or f"{pipeline.fn.__module__}.{pipeline.name}"
    laid = {inv: mapping.lay_out(pipeline.name, node) for inv, node in graph.nodes.items() if node.mapped}
    return _Plan(pipeline, wf_name, graph, params, handles, shape, fields, sinks, laid)


def _literal_key(lt: Any) -> bytes:
    """A literal type without metadata, structure and annotation (what Flyte's compiler compares)."""
    idl = lt.to_flyte_idl()
    for name in ("metadata", "structure", "annotation"):
        idl.ClearField(name)
    return idl.SerializeToString(deterministic=True)


def _castable(upstream: Any, downstream: Any) -> bool:
    """Whether Flyte's compiler accepts an ``upstream`` output bound to a ``downstream`` input."""
    from flytekit.core.type_engine import TypeEngine

    up, down = TypeEngine.to_literal_type(upstream), TypeEngine.to_literal_type(downstream)
    key = _literal_key(up)
    if key == _literal_key(down):
        return True
    return down.union_type is not None and any(_literal_key(v) == key for v in down.union_type.variants)


def _literal_refs(node: Node, config: Isthmus) -> tuple[str, ...]:
    """Values written in the pipeline body that reach an input typed as ArtifactRef (an unannotated
    parameter): Flyte stores them as artifacts, and the task loads them back as the plain parameters a
    local run keys them as."""
    inputs = step_interface(node.step, config=config).inputs
    ref_type = flyte_type_for(object)
    return tuple(
        sorted(
            arg
            for arg, value in node.arguments.items()
            if not isinstance(value, (Param, OutputHandle)) and not _fan_in(value) and inputs.get(arg) is ref_type
        )
    )


def _fan_in(value: Any) -> bool:
    """An argument that arrives as a list of refs: a mapped step's results, or a list of step outputs."""
    return isinstance(value, MappedOutput) or (bool(handles_in(value)) and isinstance(value, (list, tuple)))


def _wire_types(plan: _Plan) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Per invocation, the inputs and outputs that must travel as ArtifactRef so that every edge of the
    pipeline type-checks in Flyte (e.g. an unannotated output feeding an ``int`` parameter, or an ``int``
    output feeding a ``float`` one). Locally the runner gets the same ref either way.

    A mapped step's inputs come from its items task (refs) and its outputs are refs; an output in a list
    of outputs (fan-in) is a ref, as the ``list[ArtifactRef]`` input it joins."""
    natural = {inv: step_interface(node.step) for inv, node in plan.graph.nodes.items()}
    ref_in: dict[str, set[str]] = {inv: set() for inv in natural}
    ref_out: dict[str, set[str]] = {inv: set() for inv in natural}
    edges = []
    for inv, node in plan.graph.nodes.items():
        if node.mapped:
            ref_in[inv].update(a for a in node.arguments if a not in plan.mapped[inv].secret)
            ref_out[inv].update(node.step.output_names)
            continue
        for arg, value in node.arguments.items():
            if isinstance(value, MappedOutput):
                continue
            if isinstance(value, OutputHandle):
                edges.append((value.invocation, value.output, inv, arg))
            elif _fan_in(value):
                for h in handles_in(value):
                    ref_out[h.invocation].add(h.output)
    changed = True
    while changed:
        changed = False
        for up_inv, out, inv, arg in edges:
            up = object if out in ref_out[up_inv] else natural[up_inv].outputs[out]
            down = natural[inv].inputs[arg] if arg not in ref_in[inv] else object
            if up is object and down is object:
                continue
            up_t = flyte_type_for(up) if up is object else up
            down_t = flyte_type_for(down) if down is object else down
            if not _castable(up_t, down_t):
                changed |= out not in ref_out[up_inv] or arg not in ref_in[inv]
                ref_out[up_inv].add(out)
                ref_in[inv].add(arg)
    return {inv: (tuple(sorted(ref_in[inv])), tuple(sorted(ref_out[inv]))) for inv in natural}


def _secret_inputs(node: Any) -> tuple[str, ...]:
    """The inputs of a step node fed by a secret-named workflow input (``password``, ``api_token`` …):
    secrets whatever the step calls them."""
    return tuple(
        sorted(arg for arg, value in node.arguments.items() if isinstance(value, Param) and is_secret_name(value.name))
    )


def _check_parameter_edges(plan: _Plan, tasks: dict[str, IsthmusTask]) -> None:
    """A pipeline parameter must have a type its steps' inputs accept (Flyte's compiler compares them)."""
    for inv, node in plan.graph.nodes.items():
        for arg, value in node.arguments.items():
            if not isinstance(value, Param) or (node.mapped and arg not in plan.mapped[inv].secret):
                continue  # a mapped step's other parameters reach it through its items task
            param_type = plan.params[value.name][0]
            input_type = tasks[inv].python_interface.inputs[arg]
            if not _castable(param_type, input_type):
                raise StepDefinitionError(
                    f"pipeline {plan.pipeline.name!r}: parameter {value.name!r} ({_type_name(param_type)}) is passed "
                    f"to step {node.step.name!r} as {arg!r}, which takes {_type_name(input_type)}; a Flyte workflow "
                    "needs them to match: annotate both with the same type"
                )


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp)


def _pipeline_path(pipeline: Any) -> str:
    module, qual = pipeline.fn.__module__, pipeline.fn.__qualname__
    if module == "__main__" or "<locals>" in qual:
        raise NotImportableError(
            f"pipeline {pipeline.name!r} is defined in {module}:{qual}, which a Flyte container cannot import; "
            "define it at module level in an importable module"
        )
    return f"{module}:{qual}"


def _control_args(plan: _Plan, role: str, invocation: str | None = None) -> Callable[[], list[str]]:
    """The loader args of a bookkeeping task, computed when it is serialized (a pipeline in ``__main__``
    runs locally, and fails clearly only when it would have to be imported in a container)."""

    def args() -> list[str]:
        given = {"name": plan.name} if invocation is None else {"name": plan.name, "invocation": invocation}
        options = json.dumps(given, sort_keys=True, separators=(",", ":"))
        return ["pipeline", _pipeline_path(plan.pipeline), "role", role, "options", options]

    return args


def _output_type(plan: _Plan, tasks: dict[str, IsthmusTask], h: OutputHandle) -> Any:
    """The Flyte type of a step output in the workflow (a mapped step's: a list of refs)."""
    if h.invocation in plan.mapped:
        return REF_LIST
    return tasks[h.invocation].python_interface.outputs[h.output]


def _finish_task(plan: _Plan, tasks: dict[str, IsthmusTask]) -> IsthmusControlTask:
    inputs: dict[str, Any] = {p: t for p, (t, _) in plan.params.items()}
    for i, h in enumerate(plan.handles):
        inputs[f"out_{i}"] = _output_type(plan, tasks, h)
    for i, h in enumerate(plan.sinks):
        inputs[f"done_{i}"] = _output_type(plan, tasks, h)

    def finish(task: IsthmusControlTask, **kwargs: Any) -> None:
        run = flyte_run(task.name, plan.pipeline.name, None)
        if run.pipeline_run_id is None:  # called on its own, outside a workflow
            return None
        runner = default_runner()
        ensure_pipeline_run(runner, run, plan.pipeline.fn)

        def as_json(value: Any) -> Any:
            ref = ArtifactRef.coerce(value)
            if ref is not None:
                return ref.to_dict()
            if isinstance(value, list) and value and all(isinstance(v, ArtifactRef) for v in value):
                return [v.to_dict() for v in value]  # a mapped step's results, as a local run records them
            return json.loads(json.dumps(value, default=str))

        values = [as_json(kwargs[f"out_{i}"]) for i in range(len(plan.handles))]
        if plan.shape == "none":
            outputs: Any = None
        elif plan.shape == "single":
            outputs = values[0]
        elif plan.shape == "tuple":
            outputs = values
        else:
            outputs = dict(zip(plan.fields, values, strict=True))
        params = {p: kwargs[p] for p in plan.params}
        finish_pipeline_run(runner, run.pipeline_run_id, RunStatus.COMPLETED, outputs=outputs, params=params)
        return None

    return IsthmusControlTask(
        name=f"{plan.name}.finish_pipeline_run",
        role=FINISH,
        interface=Interface(inputs, {}),
        run_fn=finish,
        resolver_args=_control_args(plan, FINISH),
    )


def _failure_task(plan: _Plan) -> IsthmusControlTask:
    inputs: dict[str, Any] = {p: t for p, (t, _) in plan.params.items()}
    inputs[CACHE_INPUT] = bool  # a workflow input: the failure handler must take it
    inputs["err"] = typing.Optional[FlyteError]  # noqa: UP045 - flytekit matches this exact form

    def record_failure(task: IsthmusControlTask, **kwargs: Any) -> None:
        err = kwargs.pop("err", None)
        kwargs.pop(CACHE_INPUT, None)
        run = flyte_run(task.name, plan.pipeline.name, None)
        if run.local or run.pipeline_run_id is None:
            return None  # locally the failing task has already recorded the failure
        runner = default_runner()
        ensure_pipeline_run(runner, run, plan.pipeline.fn)
        params = {p: kwargs.get(p) for p in plan.params}
        if err is not None:
            message = f"node {err.failed_node_id} failed: {err.message}"
        else:
            message = "the Flyte workflow failed"
        error = scrub(message, secret_values(params))
        finish_pipeline_run(runner, run.pipeline_run_id, RunStatus.FAILED, error=error, params=params)
        return None

    return IsthmusControlTask(
        name=f"{plan.name}.fail_pipeline_run",
        role=FAILURE,
        interface=Interface(inputs, {}),
        run_fn=record_failure,
        resolver_args=_control_args(plan, FAILURE),
    )


def _items_task(plan: _Plan, laid: MappedNode, tasks: dict[str, IsthmusTask]) -> IsthmusControlTask:
    """The task that lays out a mapped node's items and stores its fixed values (see :mod:`.mapping`)."""

    def source_type(source: OutputHandle | Param) -> Any:
        if isinstance(source, Param):
            return plan.params[source.name][0]
        return _output_type(plan, tasks, source)

    def make_items(task: IsthmusControlTask, **kwargs: Any) -> tuple[Any, ...]:
        return mapping.make_items(plan.pipeline.name, plan.graph, laid, kwargs)

    return IsthmusControlTask(
        name=f"{plan.name}.{laid.invocation}.items",
        role=ITEMS,
        interface=mapping.items_interface(laid, source_type),
        run_fn=make_items,
        resolver_args=_control_args(plan, ITEMS, laid.invocation),
    )


def _gather_task(plan: _Plan, laid: MappedNode) -> IsthmusControlTask:
    """One list of refs per output of a mapped step with several outputs."""

    def gather(task: IsthmusControlTask, **kwargs: Any) -> tuple[Any, ...]:
        return mapping.gather(laid, kwargs[mapping.OUTPUTS])

    return IsthmusControlTask(
        name=f"{plan.name}.{laid.invocation}.gather",
        role=GATHER,
        interface=mapping.gather_interface(laid),
        run_fn=gather,
        resolver_args=_control_args(plan, GATHER, laid.invocation),
    )


def _return_annotation(plan: _Plan, tasks: dict[str, IsthmusTask]) -> Any:
    types = [_output_type(plan, tasks, h) for h in plan.handles]
    if plan.shape == "none":
        return None
    if plan.shape == "single":
        return types[0]
    if plan.shape == "tuple":
        return typing.Tuple[tuple(types)]  # noqa: UP006
    return NamedTuple(f"{plan.pipeline.name}_outputs", list(zip(plan.fields, types, strict=True)))


@dataclass
class _Entities:
    """The Flyte entities of a pipeline workflow besides its step tasks."""

    finish: IsthmusControlTask
    map_tasks: dict[str, Any]  # mapped invocation -> ArrayNodeMapTask
    items: dict[str, IsthmusControlTask]
    gathers: dict[str, IsthmusControlTask]


def _body(plan: _Plan, tasks: dict[str, IsthmusTask], entities: _Entities) -> Callable[..., Any]:
    finish = entities.finish

    def pipeline_workflow(**kwargs: Any) -> Any:
        produced: dict[str, dict[str, Any]] = {}
        cache = kwargs[CACHE_INPUT]

        def value(v: Any) -> Any:
            if isinstance(v, Param):
                return kwargs[v.name]
            if isinstance(v, OutputHandle):
                return produced[v.invocation][v.output]
            if _fan_in(v):
                return [value(h) for h in v]
            return v

        for inv, node in plan.graph.nodes.items():
            names = node.step.output_names
            laid = plan.mapped.get(inv)
            if laid is None:
                result = tasks[inv](**{k: value(v) for k, v in node.arguments.items()}, **{CACHE_INPUT: cache})
                produced[inv] = {names[0]: result} if len(names) == 1 else dict(zip(names, result, strict=True))
                continue
            items = entities.items[inv](**{k: value(v) for k, v in laid.inputs.items()})
            given = {arg: getattr(items, arg) for arg in laid.stored}
            given.update({arg: kwargs[p.name] for arg, p in laid.secret.items()})
            given[MAP_INDEX_INPUT] = getattr(items, MAP_INDEX_INPUT)
            result = entities.map_tasks[inv](**given, **{CACHE_INPUT: cache})
            if laid.several_outputs:
                lists = entities.gathers[inv](**{mapping.OUTPUTS: result})
                produced[inv] = {n: getattr(lists, n) for n in names}
            else:
                produced[inv] = {names[0]: result}
        done = {p: kwargs[p] for p in plan.params}
        done.update({f"out_{i}": value(h) for i, h in enumerate(plan.handles)})
        done.update({f"done_{i}": value(h) for i, h in enumerate(plan.sinks)})
        finish(**done)
        outs = [value(h) for h in plan.handles]
        if plan.shape == "none":
            return None
        if plan.shape == "single":
            return outs[0]
        return tuple(outs)

    parameters = [
        inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY, annotation=t, default=d)
        for p, (t, d) in plan.params.items()
    ]
    parameters.append(inspect.Parameter(CACHE_INPUT, inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=True))
    ret = _return_annotation(plan, tasks)
    pipeline_workflow.__signature__ = inspect.Signature(parameters, return_annotation=ret)  # type: ignore[attr-defined]
    pipeline_workflow.__annotations__ = (
        {p: t for p, (t, _) in plan.params.items()} | {CACHE_INPUT: bool} | {"return": ret}
    )
    pipeline_workflow.__module__ = plan.pipeline.fn.__module__
    pipeline_workflow.__name__ = plan.pipeline.name
    pipeline_workflow.__qualname__ = plan.pipeline.name
    pipeline_workflow.__doc__ = plan.pipeline.fn.__doc__
    return pipeline_workflow


def pipeline_to_workflow(
    pipeline: Any,
    *,
    name: str | None = None,
    enable_deck: bool | None = None,
    cache: Any = False,
    failure_policy: WorkflowFailurePolicy | None = None,
    interruptible: bool = False,
    **task_kwargs: Any,
) -> PythonFunctionWorkflow:
    """``pipeline`` as a Flyte workflow (``Pipeline.to_flyte_workflow(**kwargs)`` calls this).

    - ``name``: the workflow name (default ``<pipeline module>.<pipeline name>``).
    - ``enable_deck``, ``cache`` and any other keyword (``container_image``, ``environment``,
      ``retries`` …) apply to every step task, see :func:`~flytekitplugins.isthmus.isthmus_task`.

    The workflow takes the pipeline's parameters and ``isthmus_cache: bool = True``: ``False`` computes
    every step again (``Pipeline.run(cache=False)``); the fresh results are cached for later runs.
    A mapped step (``step.partial(...).map(...)``) becomes a Flyte map task (ArrayNode), one isthmus
    step run per item (see :mod:`flytekitplugins.isthmus.mapping`).

    The workflow carries ``isthmus_tasks`` (invocation -> task), ``isthmus_map_tasks`` (mapped
    invocation -> map task), ``isthmus_finish_task``, ``isthmus_failure_task`` and ``isthmus_pipeline``.
    """
    ensure_registered()
    plan = _plan(pipeline, name)
    wiring = _wire_types(plan)
    tasks: dict[str, IsthmusTask] = {}
    for inv, node in plan.graph.nodes.items():
        ref_inputs, ref_outputs = wiring[inv]
        laid = plan.mapped.get(inv)
        if laid is not None:
            lists: tuple[str, ...] = tuple(laid.lists)
        else:
            lists = tuple(a for a, v in node.arguments.items() if _fan_in(v))
        config = Isthmus(
            pipeline=pipeline.name,
            invocation=inv,
            ref_inputs=tuple(a for a in ref_inputs if a not in lists),
            ref_outputs=ref_outputs,
            secret_inputs=_secret_inputs(node),
            ref_list_inputs=lists,
            param_inputs=tuple(laid.params) if laid is not None else (),
            mapped=laid is not None,
            cache_input=True,
        )
        if laid is None:
            config = dataclasses.replace(config, param_inputs=_literal_refs(node, config))
        tasks[inv] = isthmus_task(
            node.step,
            name=f"{plan.name}.{inv}",
            task_config=config,
            enable_deck=enable_deck,
            cache=cache,
            **task_kwargs,
        )
    _check_parameter_edges(plan, tasks)
    entities = _Entities(
        finish=_finish_task(plan, tasks),
        map_tasks={
            inv: mapping.map_task_for(tasks[inv], tasks[inv].name, laid.node.mapped)
            for inv, laid in plan.mapped.items()
        },
        items={inv: _items_task(plan, laid, tasks) for inv, laid in plan.mapped.items()},
        gathers={inv: _gather_task(plan, laid) for inv, laid in plan.mapped.items() if laid.several_outputs},
    )
    failure = _failure_task(plan)
    from flytekit.core.docstring import Docstring

    body = _body(plan, tasks, entities)
    wf = PythonFunctionWorkflow(
        body,
        metadata=WorkflowMetadata(on_failure=failure_policy or WorkflowFailurePolicy.FAIL_IMMEDIATELY),
        default_metadata=WorkflowMetadataDefaults(interruptible=interruptible),
        docstring=Docstring(callable_=pipeline.fn),
        on_failure=failure,
    )
    wf._name = plan.name
    wf.isthmus_tasks = tasks
    wf.isthmus_map_tasks = entities.map_tasks
    wf.isthmus_items_tasks = entities.items
    wf.isthmus_gather_tasks = entities.gathers
    wf.isthmus_finish_task = entities.finish
    wf.isthmus_failure_task = failure
    wf.isthmus_pipeline = pipeline
    return wf


def control_task(pipeline: Any, role: str, options: dict[str, Any]) -> IsthmusControlTask:
    """Rebuild a pipeline workflow's bookkeeping task (used by the resolver inside a container)."""
    wf = pipeline_to_workflow(pipeline, name=options.get("name"))
    if role == FINISH:
        return wf.isthmus_finish_task
    if role == FAILURE:
        return wf.isthmus_failure_task
    if role == ITEMS:
        return wf.isthmus_items_tasks[options.get("invocation")]
    if role == GATHER:
        return wf.isthmus_gather_tasks[options.get("invocation")]
    raise ValueError(f"isthmus resolver: unknown pipeline task role {role!r}")
