"""``@pipeline``: a function of step calls, traced into a graph and run locally or by an adapter."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from isthmus.artifacts.refs import ArtifactRef
from isthmus.context import RunContext
from isthmus.errors import PipelineDefinitionError, StepDefinitionError
from isthmus.graph import (
    MappedOutput,
    Node,
    OutputHandle,
    OutputHandleMisuse,
    Param,
    PipelineGraph,
    handles_in,
)
from isthmus.local_run import POOLS, LocalRun, default_workers, step_executor
from isthmus.pinned import resolve_pipeline_params
from isthmus.pipeline_runs import complete_pipeline_run, fail_pipeline_run, importable_path, start_pipeline_run
from isthmus.records import RunStatus
from isthmus.redaction import secret_values
from isthmus.runner import StepResult, StepRunner, default_runner
from isthmus.step import CURRENT_TRACER, Step

log = logging.getLogger("isthmus")

__all__ = [
    "MappedOutput",
    "Node",
    "OutputHandle",
    "OutputHandleMisuse",
    "Param",
    "Pipeline",
    "PipelineGraph",
    "PipelineRun",
    "handles_in",
    "pipeline",
]

# The pipelines whose bodies are being traced, outermost first (to refuse a pipeline that calls itself).
_BUILDING: ContextVar[tuple[Pipeline, ...]] = ContextVar("isthmus_pipelines_building", default=())


class _Tracer:
    def __init__(self, graph: PipelineGraph) -> None:
        self.graph = graph
        self._suffix: dict[str, int] = {}  # per step name: the suffix its next invocation tries first

    def _name(self, step: Step[Any, Any]) -> str:
        """The step's name, else the first of ``name_2``, ``name_3`` … not taken. Nodes are only added, so
        the search resumes where the last one ended (a long chain of one step traces in linear time)."""
        name = step.name
        if name not in self.graph.nodes:
            return name
        n = self._suffix.get(name, 2)
        while f"{name}_{n}" in self.graph.nodes:
            n += 1
        self._suffix[name] = n
        return f"{name}_{n}"

    def _label(self, step: Step[Any, Any], arg_name: str) -> str:
        return f"pipeline {self.graph.name!r}: step {step.name!r}: argument {arg_name!r}"

    def _check_argument(self, step: Step[Any, Any], arg_name: str, value: Any) -> None:
        """A value, a step output, a mapped step's results, or a fan-in list (only step outputs)."""
        if isinstance(value, dict) and _contains_handle(value):
            raise PipelineDefinitionError(
                f"{self._label(step, arg_name)} nests step outputs inside a dict; pass each output as its own "
                "argument, or a list of outputs (the step receives a list)"
            )
        if isinstance(value, (list, tuple)) and _contains_handle(value):
            if any(isinstance(v, MappedOutput) for v in value):
                raise PipelineDefinitionError(
                    f"{self._label(step, arg_name)} puts the results of a mapped step inside a list; pass them "
                    "as the argument itself (the step receives them as a list)"
                )
            if not all(isinstance(v, OutputHandle) for v in value):
                raise PipelineDefinitionError(
                    f"{self._label(step, arg_name)} mixes step outputs with other values in one "
                    f"{type(value).__name__}; a fan-in list holds step outputs only: make the other values a "
                    "step's outputs, or pass them as another argument"
                )

    def add(self, step: Step[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        arguments = step.bind(args, kwargs)
        for arg_name, value in arguments.items():
            self._check_argument(step, arg_name, value)
        name = self._name(step)
        self.graph.nodes[name] = Node(name, step, arguments)
        return self._handles(step, name, OutputHandle)

    def add_mapped(self, step: Step[Any, Any], fixed: dict[str, Any], mapped: dict[str, Any]) -> Any:
        """``step.partial(**fixed).map(**mapped)``: one node, expanded to one step run per item at run time."""
        arguments = step.bind((), {**fixed, **mapped})
        for arg_name, value in arguments.items():
            self._check_argument(step, arg_name, value)
        literal_lengths: dict[str, int] = {}
        for arg_name, value in mapped.items():
            if isinstance(value, (OutputHandle, Param)):
                continue
            if isinstance(value, (list, tuple)):
                literal_lengths[arg_name] = len(value)
                continue
            raise PipelineDefinitionError(
                f"{self._label(step, arg_name)}: map() maps over a list: a step output that is a list, the "
                f"results of another mapped step, a list or tuple of values or outputs, or a pipeline parameter; "
                f"got {type(value).__name__}"
            )
        if len(set(literal_lengths.values())) > 1:
            raise PipelineDefinitionError(
                f"pipeline {self.graph.name!r}: step {step.name!r}: map() lists must have the same length, got "
                f"{literal_lengths}"
            )
        name = self._name(step)
        self.graph.nodes[name] = Node(name, step, arguments, mapped=tuple(mapped))
        return self._handles(step, name, MappedOutput)

    def _handles(self, step: Step[Any, Any], name: str, kind: type[OutputHandle]) -> Any:
        handles = tuple(kind(name, out, self.graph.name) for out in step.output_names)
        if len(handles) == 1:
            return handles[0]
        nt = step.output_namedtuple
        return nt(*handles) if nt is not None else handles


def _contains_handle(value: Any) -> bool:
    if isinstance(value, OutputHandle):
        return True
    if isinstance(value, dict):
        return any(_contains_handle(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_contains_handle(v) for v in value)
    return False


def _outputs_to_json(outputs: Any, refs: Callable[[OutputHandle], Any]) -> Any:
    if isinstance(outputs, MappedOutput):
        return [r.to_dict() for r in refs(outputs)]
    if isinstance(outputs, OutputHandle):
        return refs(outputs).to_dict()
    if isinstance(outputs, dict):
        return {k: _outputs_to_json(v, refs) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return [_outputs_to_json(v, refs) for v in outputs]
    return outputs


@dataclass
class PipelineRun:
    """The result of :meth:`Pipeline.run`: ``id``, ``status``, ``steps`` by invocation name, ``outputs``."""

    id: str
    name: str
    status: RunStatus
    steps: dict[str, StepResult]
    output_refs: Any
    runner: StepRunner = field(repr=False)

    @functools.cached_property
    def outputs(self) -> Any:
        """The pipeline's return value with every artifact loaded."""

        def load(value: Any) -> Any:
            ref = ArtifactRef.coerce(value)
            if ref is not None:
                return self.runner.artifacts.load(ref)
            if isinstance(value, dict):
                return {k: load(v) for k, v in value.items()}
            if isinstance(value, list):
                return [load(v) for v in value]
            return value

        return load(self.output_refs)

    @property
    def cache_hits(self) -> int:
        return sum(1 for s in self.steps.values() if s.cache_hit)


class Pipeline:
    """A traced pipeline. ``run(**params)`` executes it locally through the StepRunner."""

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.signature = inspect.signature(fn)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Outside a build, the plain function. Inside another pipeline's body: its steps join that graph
        (a pipeline may call other pipelines, never itself)."""
        building = _BUILDING.get()
        if self in building:
            chain = " -> ".join(p.name for p in (*building, self))
            raise PipelineDefinitionError(
                f"pipeline {self.name!r} calls itself ({chain}); a pipeline body runs once to wire its steps "
                "and cannot recurse: unroll the repetition with a loop over pipeline parameters, or move the "
                "recursion into a step"
            )
        if CURRENT_TRACER.get() is None:
            return self.fn(*args, **kwargs)
        token = _BUILDING.set((*building, self))
        try:
            return self.fn(*args, **kwargs)
        finally:
            _BUILDING.reset(token)

    def bind_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        try:
            bound = self.signature.bind(**params)
        except TypeError as exc:
            raise StepDefinitionError(f"pipeline {self.name!r}: {exc}; its parameters are {self.signature}") from None
        bound.apply_defaults()
        return dict(bound.arguments)

    def compile(self, **params: Any) -> PipelineGraph:
        """Trace the pipeline body with ``params`` (values or :class:`Param` placeholders) into a graph."""
        bound = self.bind_params(params)
        graph = PipelineGraph(name=self.name, params=bound)
        token = CURRENT_TRACER.set(_Tracer(graph))
        building = _BUILDING.set((*_BUILDING.get(), self))
        try:
            graph.outputs = self.fn(**bound)
        except RecursionError:
            raise PipelineDefinitionError(
                f"pipeline {self.name!r} recursed too deeply while being built; a pipeline body runs once to wire "
                "its steps: unroll the repetition with a loop, or move the recursion into a step"
            ) from None
        finally:
            _BUILDING.reset(building)
            CURRENT_TRACER.reset(token)
        if not graph.nodes:
            raise PipelineDefinitionError(f"pipeline {self.name!r} calls no steps; call @step functions in its body")
        return graph

    def run(
        self,
        *,
        runner: StepRunner | None = None,
        context: RunContext | None = None,
        cache: bool = True,
        recompute: Iterable[str] = (),
        max_workers: int | None = None,
        pool: str = "threads",
        executor: Any = "local",
        **params: Any,
    ) -> PipelineRun:
        """Run locally: every step cached and recorded; raises :class:`StepFailed` if a step fails.

        ``cache=False`` computes every step again; ``recompute=["train"]`` the steps named (by invocation
        or step name). Their fresh results are cached: later runs hit them. Steps whose inputs are ready
        run at once in up to ``max_workers`` threads (default :func:`~isthmus.local_run.default_workers`;
        ``1``: one after the other), or worker processes with ``pool="processes"`` (for pure-Python
        CPU-bound steps; the steps must be importable); the results and records are the same either way.
        ``executor="kubernetes"`` runs each step as a Kubernetes Job (:mod:`isthmus.k8s`; an executor object
        is accepted too); the cache is asked first here, so a hit starts no pod.
        """
        workers = self._workers(max_workers)
        if pool not in POOLS:
            raise PipelineDefinitionError(
                f"pipeline {self.name!r}: run(pool={pool!r}) must be one of {', '.join(map(repr, POOLS))}"
            )
        runner = runner or default_runner()
        remote = step_executor(executor, runner, self.name)
        if remote is not None and (recompute or not cache):
            raise PipelineDefinitionError(
                f"pipeline {self.name!r}: run(executor={executor!r}) cannot force a recompute yet; run without "
                "cache=False/recompute=, or invalidate the step's cache entries first (isthmus invalidate)"
            )
        params = resolve_pipeline_params(params, runner, pipeline=self.name)  # pins: resolved once, now
        graph = self.compile(**params)
        forced = self._recomputed(graph, cache, recompute)
        ctx = context or RunContext(
            orchestrator="local" if remote is None else getattr(remote, "orchestrator", "remote")
        )
        secrets = frozenset(secret_values(graph.params))
        path = importable_path(self.fn)
        record = start_pipeline_run(runner, self.name, ctx, graph.params, self.fn, secrets, pipeline_path=path)
        run_id = record["id"]
        local = LocalRun(graph, runner, ctx, run_id, secrets, forced, workers, pool, executor=remote)
        try:
            local.run()
        except BaseException as exc:
            fail_pipeline_run(runner, record, exc, secrets)
            # Traceback formatters that print locals would show the parameters this frame holds.
            params = graph = secrets = local = None  # type: ignore[assignment]  # noqa: F841
            raise
        out_json = _outputs_to_json(graph.outputs, local.value)
        complete_pipeline_run(runner, record, out_json)
        return PipelineRun(
            id=run_id,
            name=self.name,
            status=RunStatus.COMPLETED,
            steps=local.steps,
            output_refs=out_json,
            runner=runner,
        )

    def _workers(self, max_workers: int | None) -> int:
        if max_workers is None:
            return default_workers()
        if not isinstance(max_workers, int) or isinstance(max_workers, bool) or max_workers < 1:
            raise PipelineDefinitionError(
                f"pipeline {self.name!r}: run(max_workers={max_workers!r}) must be a whole number >= 1 "
                "(1 runs the steps one after the other)"
            )
        return max_workers

    def _recomputed(self, graph: PipelineGraph, cache: bool, recompute: Iterable[str]) -> frozenset[str]:
        """The invocations to compute without a cache lookup (``cache=False``: all of them)."""
        if not isinstance(cache, bool):
            raise PipelineDefinitionError(f"pipeline {self.name!r}: run(cache={cache!r}) must be True or False")
        given: Any = recompute
        try:
            names: list[Any] = [given] if isinstance(given, str) else list(given)
        except TypeError:  # not a list of names: reported below as an unknown name
            names = [given]
        valid = sorted(set(graph.nodes) | {n.step.name for n in graph.nodes.values()})
        unknown = [n for n in names if n not in valid]
        if unknown:
            raise PipelineDefinitionError(
                f"pipeline {self.name!r}: recompute={names!r} names {unknown!r}, which it does not run; "
                f"name its steps or invocations: {valid}"
            )
        if not cache:
            return frozenset(graph.nodes)
        return frozenset(i for i, n in graph.nodes.items() if i in names or n.step.name in names)

    def to_airflow_dag(self, dag_id: str | None = None, **dag_kwargs: Any) -> Any:
        """This pipeline as an Airflow DAG (needs the ``airflow`` extra)."""
        return _adapter("airflow")(self, dag_id=dag_id, **dag_kwargs)

    def to_flyte_workflow(self, **kwargs: Any) -> Any:
        """This pipeline as a Flyte workflow (needs the ``flyte`` extra)."""
        return _adapter("flyte")(self, **kwargs)

    def __repr__(self) -> str:
        return f"<Pipeline {self.name}>"


def _adapter(name: str) -> Callable[..., Any]:
    """The converter an orchestrator adapter registers under the ``isthmus.adapters`` entry point group.

    Found by entry point, so the core never imports an orchestrator.
    """
    from importlib.metadata import entry_points

    for ep in entry_points(group="isthmus.adapters"):
        if ep.name == name:
            try:
                return ep.load()
            except ImportError as exc:
                raise StepDefinitionError(
                    f"the {name} adapter cannot be imported ({exc}); install it with: pip install 'isthmus[{name}]'"
                ) from exc
    raise StepDefinitionError(f"no isthmus adapter named {name!r} is installed; install 'isthmus[{name}]'")


def pipeline(fn: Callable[..., Any] | None = None, /, *, name: str | None = None) -> Any:
    """Declare a pipeline: ``@pipeline`` or ``@pipeline(name=...)``."""
    if fn is not None:
        return Pipeline(fn, name=name)
    return lambda f: Pipeline(f, name=name)
