"""``@pipeline``: a function of step calls, traced into a graph and run locally or by an adapter."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, NoReturn

from isthmus.artifacts.refs import ArtifactRef
from isthmus.context import RunContext
from isthmus.errors import PipelineDefinitionError, StepDefinitionError
from isthmus.pinned import resolve_pipeline_params
from isthmus.pipeline_runs import complete_pipeline_run, fail_pipeline_run, start_pipeline_run
from isthmus.records import RunStatus
from isthmus.redaction import secret_values
from isthmus.runner import StepResult, StepRunner, default_runner
from isthmus.step import CURRENT_TRACER, Step

log = logging.getLogger("isthmus")

# The pipelines whose bodies are being traced, outermost first (to refuse a pipeline that calls itself).
_BUILDING: ContextVar[tuple[Pipeline, ...]] = ContextVar("isthmus_pipelines_building", default=())


class OutputHandleMisuse(PipelineDefinitionError, TypeError, AttributeError):
    """A pipeline body used a step output's value (``len(h)``, ``h + 1``, ``str(h)``, ``h.attr`` …).
    Also a TypeError and an AttributeError, so code that probes values (``hasattr``) keeps working."""


@dataclass(frozen=True, eq=False)
class OutputHandle:
    """Stands for a step's output while a pipeline is traced; pass it to other steps.

    It has no value yet: anything else done with it — arithmetic, ``len()``, ``str()``, indexing,
    attributes, comparisons with data — raises :class:`OutputHandleMisuse` naming the pipeline, the call
    and the fix. (It is deliberately not callable: code that probes with ``callable()`` sees data.)
    """

    invocation: str
    output: str
    pipeline: str = field(default="", compare=False)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, OutputHandle):
            return (self.invocation, self.output) == (other.invocation, other.output)
        if isinstance(other, (int, float, complex, str, bytes)):
            _misuse(self, f"{self._label()} == {type(other).__name__}")
        return NotImplemented

    def __hash__(self) -> int:
        return hash((OutputHandle, self.invocation, self.output))

    def _label(self) -> str:
        return f"{self.invocation}.{self.output}"

    def __bool__(self) -> bool:
        raise OutputHandleMisuse(
            f"{_where(self)}output {self.output!r} of step {self.invocation!r} has no value while the pipeline is "
            "being built; branch on pipeline parameters, or move the logic into a step"
        )

    def __iter__(self) -> Iterator[Any]:
        raise OutputHandleMisuse(
            f"{_where(self)}output {self.invocation}.{self.output} is a single artifact; declare several outputs "
            "with a tuple[...] or NamedTuple return annotation (or @step(outputs=[...])) to unpack it"
        )

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):  # protocols probed by copy, pickle, numpy …
            raise AttributeError(name)
        _misuse(self, f"{self._label()}.{name}")

    def __str__(self) -> str:
        _misuse(self, f"str({self._label()})")

    def __format__(self, spec: str) -> str:
        _misuse(self, f"format({self._label()}) (an f-string)")

    def __len__(self) -> int:
        _misuse(self, f"len({self._label()})")

    def __getitem__(self, key: Any) -> Any:
        _misuse(self, f"{self._label()}[{key!r}]")

    def __contains__(self, item: Any) -> bool:
        _misuse(self, f"... in {self._label()}")


def _where(handle: OutputHandle) -> str:
    return f"pipeline {handle.pipeline!r}: " if handle.pipeline else ""


def _misuse(handle: OutputHandle, call: str) -> NoReturn:
    raise OutputHandleMisuse(
        f"{_where(handle)}{call} uses the output of step {handle.invocation!r}, which has no value while the "
        "pipeline is being built (its body only wires steps together); do this inside a step: decorate the "
        "function that does it with @step, or move the code into the step that receives the output"
    )


def _operator(symbol: str, reflected: bool = False) -> Callable[..., Any]:
    def method(self: OutputHandle, other: Any = None) -> Any:
        other_name = other._label() if isinstance(other, OutputHandle) else type(other).__name__
        call = f"{other_name} {symbol} {self._label()}" if reflected else f"{self._label()} {symbol} {other_name}"
        _misuse(self, call)

    return method


def _builtin(fn: str) -> Callable[..., Any]:
    def method(self: OutputHandle, *args: Any) -> Any:
        _misuse(self, f"{fn}({self._label()})")

    return method


for _name, _symbol in {
    "add": "+", "sub": "-", "mul": "*", "matmul": "@", "truediv": "/", "floordiv": "//", "mod": "%",
    "pow": "**", "lshift": "<<", "rshift": ">>", "and": "&", "xor": "^", "or": "|",
}.items():  # fmt: skip
    setattr(OutputHandle, f"__{_name}__", _operator(_symbol))
    setattr(OutputHandle, f"__r{_name}__", _operator(_symbol, reflected=True))
for _name, _symbol in {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}.items():
    setattr(OutputHandle, f"__{_name}__", _operator(_symbol))
for _name, _fn in {
    "neg": "-", "pos": "+", "abs": "abs", "invert": "~", "int": "int", "float": "float", "complex": "complex",
    "index": "operator.index", "round": "round", "trunc": "math.trunc", "floor": "math.floor",
    "ceil": "math.ceil", "reversed": "reversed",
}.items():  # fmt: skip
    setattr(OutputHandle, f"__{_name}__", _builtin(_fn))


@dataclass(frozen=True)
class Param:
    """A reference to a pipeline parameter (used when a pipeline is compiled for an orchestrator)."""

    name: str


@dataclass
class Node:
    """One step invocation in a pipeline graph. ``arguments`` values are literals, Params or OutputHandles."""

    invocation: str
    step: Step[Any, Any]
    arguments: dict[str, Any]

    @property
    def upstream(self) -> list[str]:
        return sorted({v.invocation for v in self.arguments.values() if isinstance(v, OutputHandle)})


@dataclass
class PipelineGraph:
    name: str
    nodes: dict[str, Node] = field(default_factory=dict)
    outputs: Any = None
    params: dict[str, Any] = field(default_factory=dict)

    def topological(self) -> list[Node]:
        return list(self.nodes.values())  # calls are recorded in dependency order


class _Tracer:
    def __init__(self, graph: PipelineGraph) -> None:
        self.graph = graph

    def add(self, step: Step[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        arguments = step.bind(args, kwargs)
        name = step.name
        n = 2
        while name in self.graph.nodes:
            name = f"{step.name}_{n}"
            n += 1
        for arg_name, value in arguments.items():
            if isinstance(value, (list, tuple, dict)) and _contains_handle(value):
                raise PipelineDefinitionError(
                    f"pipeline {self.graph.name!r}: step {step.name!r}: argument {arg_name!r} nests step outputs inside a "
                    f"{type(value).__name__}; pass each output as its own argument"
                )
        self.graph.nodes[name] = Node(name, step, arguments)
        handles = tuple(OutputHandle(name, out, self.graph.name) for out in step.output_names)
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


def _outputs_to_json(outputs: Any, refs: Callable[[OutputHandle], ArtifactRef]) -> Any:
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
        **params: Any,
    ) -> PipelineRun:
        """Run locally: every step cached and recorded; raises :class:`StepFailed` if a step fails.

        ``cache=False`` computes every step again; ``recompute=["train"]`` the steps named (by invocation
        or step name). Their fresh results are cached: later runs hit them.
        """
        runner = runner or default_runner()
        params = resolve_pipeline_params(params, runner, pipeline=self.name)  # pins: resolved once, now
        graph = self.compile(**params)
        forced = self._recomputed(graph, cache, recompute)
        ctx = context or RunContext(orchestrator="local")
        secrets = frozenset(secret_values(graph.params))
        record = start_pipeline_run(runner, self.name, ctx, graph.params, self.fn, secrets)
        run_id = record["id"]
        results: dict[str, StepResult] = {}
        try:
            for node in graph.topological():
                arguments = {
                    k: (results[v.invocation].outputs[v.output] if isinstance(v, OutputHandle) else v)
                    for k, v in node.arguments.items()
                }
                step_ctx = RunContext(
                    orchestrator=ctx.orchestrator,
                    pipeline_name=self.name,
                    pipeline_run_id=run_id,
                    invocation=node.invocation,
                    native=dict(ctx.native),
                )
                # The pipeline's secrets follow their values into every step, whatever the step calls them.
                results[node.invocation] = runner.run(
                    node.step, arguments, step_ctx, secrets=secrets, recompute=node.invocation in forced
                )
        except BaseException as exc:
            fail_pipeline_run(runner, record, exc, secrets)
            # Traceback formatters that print locals would show the parameters this frame holds.
            params = graph = secrets = arguments = node = None  # type: ignore[assignment]  # noqa: F841
            raise
        out_json = _outputs_to_json(graph.outputs, lambda h: results[h.invocation].outputs[h.output])
        complete_pipeline_run(runner, record, out_json)
        return PipelineRun(
            id=run_id, name=self.name, status=RunStatus.COMPLETED, steps=results, output_refs=out_json, runner=runner
        )

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
