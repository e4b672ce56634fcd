"""The graph a ``@pipeline`` body is traced into: step invocations (nodes) and the handles that stand for
their outputs while the body runs (they have no value yet)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

from isthmus.errors import PipelineDefinitionError
from isthmus.step import Step


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


@dataclass(frozen=True, eq=False)
class MappedOutput(OutputHandle):
    """Stands for the list of one output of a mapped step (``step.map(...)``), one item per map index.

    A step taking it receives a ``list`` of the loaded values, in map order; ``other.map(x=it)`` maps
    over it again (one run per item)."""

    def __iter__(self) -> Iterator[Any]:
        raise OutputHandleMisuse(
            f"{_where(self)}the results of mapped step {self.invocation!r} are only known when it runs; pass them "
            "to a step (it receives a list), or map over them with other_step.map(name=...)"
        )

    def __hash__(self) -> int:
        return hash((MappedOutput, self.invocation, self.output))


@dataclass(frozen=True)
class Param:
    """A reference to a pipeline parameter (used when a pipeline is compiled for an orchestrator)."""

    name: str


@dataclass
class Node:
    """One step invocation in a pipeline graph. ``arguments`` values are literals, Params or OutputHandles."""

    invocation: str
    step: Step[Any, Any]
    arguments: dict[str, Any] = field(repr=False)  # may hold secrets: never in a repr
    mapped: tuple[str, ...] = ()  # arguments mapped over (``step.map``): one step run per item

    @property
    def upstream(self) -> list[str]:
        return sorted({h.invocation for v in self.arguments.values() for h in handles_in(v)})

    @property
    def is_mapped(self) -> bool:
        return bool(self.mapped)


def handles_in(value: Any) -> list[OutputHandle]:
    """The output handles an argument value refers to: itself, or the items of a fan-in list."""
    if isinstance(value, OutputHandle):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, OutputHandle)]
    return []


@dataclass
class PipelineGraph:
    name: str
    nodes: dict[str, Node] = field(default_factory=dict)
    outputs: Any = None
    params: dict[str, Any] = field(default_factory=dict)

    def topological(self) -> list[Node]:
        return list(self.nodes.values())  # calls are recorded in dependency order
