"""Running a traced pipeline graph locally: mapped steps expanded at run time, independent steps in parallel.

Every step run goes through the one :class:`~isthmus.runner.StepRunner`. A mapped node (``step.map``)
becomes one step run per item, invocation ``name[i]`` with ``map_index`` i in its context, exactly as
Airflow names the map indexes of a mapped task; its results stand for the list of their outputs, in map
order, whatever order they finished in. A list a step returned is split into one artifact per item
(:func:`split_items`), as the Airflow provider does, so each item's cache key is the same everywhere.

``max_workers=1`` runs the steps one after the other in the calling thread. More workers run every step
whose inputs are ready at once, in threads (see :func:`default_workers` for why threads).
"""

from __future__ import annotations

import contextvars
import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from isthmus.artifacts.refs import ArtifactRef
from isthmus.artifacts.store import ArtifactStore
from isthmus.context import RunContext
from isthmus.errors import PipelineDefinitionError, StepDefinitionError
from isthmus.graph import MappedOutput, Node, OutputHandle, PipelineGraph
from isthmus.runner import StepResult, StepRunner

ITEM_KEY = "isthmus_item"  # ref metadata of one item of a list output: {"index": i, "count": n, "of": ref dict}
SEQUENCE_TYPES = ("builtins:list", "builtins:tuple")


def default_workers() -> int:
    """Threads for a local run: the cores plus two (at least 4, at most 16).

    Steps spend most of a trivial run in the StepRunner's bookkeeping (SQLite, file checks) and much of
    a real one in code that releases the GIL (NumPy, pandas, I/O, subprocesses), which threads overlap;
    pure-Python CPU-bound steps do not speed up in threads, and processes would pay an interpreter start
    and a re-import of the project per worker (measured in ``bench/bench_fanout.py``)."""
    return max(4, min(16, (os.cpu_count() or 1) + 2))


def split_items(step_name: str, output: str, ref: ArtifactRef, artifacts: ArtifactStore) -> list[ArtifactRef]:
    """One artifact per item of the list/tuple artifact ``ref`` (``output`` of ``step_name``), tagged with its
    index and the whole list's ref. Raises :class:`StepDefinitionError` for anything but a list or tuple."""
    if ref.python_type not in SEQUENCE_TYPES:
        raise StepDefinitionError(
            f"step {step_name!r} returned a {ref.python_type.replace(':', '.')} as {output!r}, and map() maps only "
            "over a list or tuple: return a list from the step"
        )
    values = artifacts.load(ref)
    parent = ref.to_dict()
    items = []
    for index, value in enumerate(values):
        item = artifacts.save(value, step_name=step_name, output=f"{output}[{index}]")
        meta = {**item.metadata, ITEM_KEY: {"index": index, "count": len(values), "of": parent}}
        items.append(dataclasses.replace(item, metadata=meta))
    return items


Results = dict[str, "StepResult | list[StepResult]"]


@dataclass
class LocalRun:
    """One local run of ``graph`` (a :class:`~isthmus.pipeline.PipelineGraph`) under pipeline run ``run_id``."""

    graph: PipelineGraph
    runner: StepRunner
    context: RunContext
    run_id: str
    secrets: frozenset[str] = field(repr=False)
    forced: frozenset[str] = frozenset()
    max_workers: int = 1
    nodes: Results = field(default_factory=dict)  # by invocation: a StepResult, or a list for a mapped node
    steps: dict[str, StepResult] = field(default_factory=dict)  # by step-run invocation (``name[i]`` when mapped)

    # -- arguments ---------------------------------------------------------------------------------
    def value(self, v: Any) -> Any:
        """An argument as the runner takes it: refs for step outputs, lists of refs for fan-in."""
        if isinstance(v, MappedOutput):
            return [r.outputs[v.output] for r in self._mapped(v.invocation)]
        if isinstance(v, OutputHandle):
            result = self.nodes[v.invocation]
            assert isinstance(result, StepResult)
            return result.outputs[v.output]
        if isinstance(v, (list, tuple)) and v and all(isinstance(x, OutputHandle) for x in v):
            return [self.value(x) for x in v]
        return v

    def _mapped(self, invocation: str) -> list[StepResult]:
        results = self.nodes[invocation]
        assert isinstance(results, list)
        return results

    def items(self, node: Node, name: str) -> list[Any]:
        """The items a mapped argument stands for at run time."""
        v = node.arguments[name]
        if isinstance(v, OutputHandle) and not isinstance(v, MappedOutput):
            up = self.nodes[v.invocation]
            assert isinstance(up, StepResult)
            return list(split_items(up.step_name, v.output, up.outputs[v.output], self.runner.artifacts))
        value = self.value(v)
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
            raise PipelineDefinitionError(
                f"pipeline {self.graph.name!r}: step {node.step.name!r}: map({name}=...) got "
                f"{type(value).__name__}, not a list; pass a list or tuple"
            )
        return list(value)

    def calls(self, node: Node) -> list[tuple[int | None, dict[str, Any]]]:
        """(map index or None, arguments) of every step run ``node`` stands for."""
        fixed = {k: self.value(v) for k, v in node.arguments.items() if k not in node.mapped}
        if not node.mapped:
            return [(None, fixed)]
        lists = {name: self.items(node, name) for name in node.mapped}
        lengths = {n: len(v) for n, v in lists.items()}
        if len(set(lengths.values())) > 1:
            raise PipelineDefinitionError(
                f"pipeline {self.graph.name!r}: step {node.step.name!r}: map() lists must have the same length, "
                f"got {lengths}"
            )
        count = next(iter(lengths.values()))
        return [(i, {**fixed, **{n: v[i] for n, v in lists.items()}}) for i in range(count)]

    # -- running -----------------------------------------------------------------------------------
    def run_one(self, node: Node, index: int | None, arguments: dict[str, Any]) -> StepResult:
        invocation = node.invocation if index is None else f"{node.invocation}[{index}]"
        native = dict(self.context.native)
        if index is not None:
            native["map_index"] = index
        ctx = RunContext(
            orchestrator=self.context.orchestrator,
            pipeline_name=self.graph.name,
            pipeline_run_id=self.run_id,
            invocation=invocation,
            native=native,
        )
        # The pipeline's secrets follow their values into every step, whatever the step calls them.
        return self.runner.run(
            node.step, arguments, ctx, secrets=self.secrets, recompute=node.invocation in self.forced
        )

    def _done(self, node: Node, index: int | None, result: StepResult, slots: dict[str, list[Any]]) -> None:
        if index is None:
            self.nodes[node.invocation] = result
            self.steps[node.invocation] = result
            return
        self.steps[f"{node.invocation}[{index}]"] = result
        pending = slots[node.invocation]
        pending[index] = result
        if all(r is not None for r in pending):
            self.nodes[node.invocation] = list(pending)

    def run(self) -> None:
        """Run every node; raises the first step failure once the steps already running have finished."""
        if self.max_workers <= 1:
            slots: dict[str, list[Any]] = {}
            for node in self.graph.topological():
                calls = self.calls(node)
                if node.mapped:
                    slots[node.invocation] = [None] * len(calls)
                    self.nodes[node.invocation] = []
                for index, arguments in calls:
                    self._done(node, index, self.run_one(node, index, arguments), slots)
            return
        self._run_parallel()

    def _run_parallel(self) -> None:
        waiting = {node.invocation: node for node in self.graph.topological()}
        slots: dict[str, list[Any]] = {}
        running: dict[Future[StepResult], tuple[Node, int | None]] = {}
        error: BaseException | None = None
        pool = ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix=f"isthmus-{self.graph.name}")
        try:
            while True:
                if error is None:
                    for inv, node in list(waiting.items()):
                        if not all(u in self.nodes for u in node.upstream):
                            continue
                        del waiting[inv]
                        calls = self.calls(node)
                        if node.mapped:
                            slots[inv] = [None] * len(calls)
                            if not calls:
                                self.nodes[inv] = []
                        for index, arguments in calls:
                            task: Callable[..., StepResult] = contextvars.copy_context().run
                            running[pool.submit(task, self.run_one, node, index, arguments)] = (node, index)
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: _order(running[f])):
                    node, index = running.pop(future)
                    exc = future.exception()
                    if exc is not None:
                        error = error or exc
                        continue
                    self._done(node, index, future.result(), slots)
        except BaseException as exc:  # an interrupt or a bad map() list: start nothing new, let running steps end
            error = error or exc
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if error is not None:
            raise error
        if waiting:  # cannot happen with a traced graph (calls are recorded in dependency order)
            raise PipelineDefinitionError(
                f"pipeline {self.graph.name!r}: steps {sorted(waiting)} never became ready; their inputs are missing"
            )


def _order(item: tuple[Node, int | None]) -> tuple[str, int]:
    node, index = item
    return (node.invocation, -1 if index is None else index)
