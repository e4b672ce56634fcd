"""Running a traced pipeline graph locally: mapped steps expanded at run time, independent steps in parallel.

Every step run goes through the one :class:`~isthmus.runner.StepRunner`. A mapped node (``step.map``)
becomes one step run per item, invocation ``name[i]`` with ``map_index`` i in its context, exactly as
Airflow names the map indexes of a mapped task; its results stand for the list of their outputs, in map
order, whatever order they finished in. A list a step returned is split into one artifact per item
(:func:`split_items`), as the Airflow provider does, so each item's cache key is the same everywhere.

``max_workers=1`` (or a run started while a module is being imported) runs the steps one after the other
in the calling thread. More workers run every step whose inputs are ready at once, in threads
(``pool="threads"``, the default: see :func:`default_workers` for why; a step that is the only one that
can run runs in the calling thread, as with one worker) or in worker processes (``pool="processes"``:
for pure-Python CPU-bound steps; each worker is a fresh interpreter that imports the steps by path and
records into the same stores).
"""

from __future__ import annotations

import contextvars
import dataclasses
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from isthmus import config, lineage
from isthmus.artifacts.refs import ArtifactRef
from isthmus.artifacts.store import ArtifactStore
from isthmus.config import Settings
from isthmus.context import RunContext
from isthmus.errors import NotImportableError, PipelineDefinitionError, StepDefinitionError, StepFailed
from isthmus.graph import MappedOutput, Node, OutputHandle, PipelineGraph
from isthmus.runner import StepResult, StepRunner
from isthmus.step import Step, load_step
from isthmus.store.metadata import MetadataStore

ITEM_KEY = "isthmus_item"  # ref metadata of one item of a list output: {"index": i, "count": n, "of": ref dict}
SEQUENCE_TYPES = ("builtins:list", "builtins:tuple")
POOLS = ("threads", "processes")
# Where else a pipeline's steps can run (``run(executor=name)``): name -> "module:factory(runner)", imported on use.
STEP_EXECUTORS = {
    "kubernetes": "isthmus.k8s.executor:KubernetesJobExecutor",
    "k8s": "isthmus.k8s.executor:KubernetesJobExecutor",
}


def step_executor(name: Any, runner: StepRunner, pipeline: str) -> Any:
    """``None`` for ``"local"``; the executor registered as ``name`` (built on ``runner``); or ``name`` itself
    when it is an executor object (anything with ``run(step, arguments, context, secrets=)``)."""
    if name in (None, "local"):
        return None
    if not isinstance(name, str):
        if not callable(getattr(name, "run", None)):
            raise PipelineDefinitionError(f"pipeline {pipeline!r}: run(executor={name!r}) has no run() method")
        return name
    if name not in STEP_EXECUTORS:
        known = ", ".join(repr(k) for k in ("local", *STEP_EXECUTORS))
        raise PipelineDefinitionError(f"pipeline {pipeline!r}: run(executor={name!r}) must be one of {known}")
    import importlib

    module, _, attr = STEP_EXECUTORS[name].partition(":")
    return getattr(importlib.import_module(module), attr)(runner)


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

    graph: PipelineGraph = field(repr=False)  # its nodes hold the arguments, which may be secrets
    runner: StepRunner = field(repr=False)
    context: RunContext
    run_id: str
    secrets: frozenset[str] = field(repr=False)
    forced: frozenset[str] = frozenset()
    max_workers: int = 1
    pool: str = "threads"
    executor: Any = (
        None  # runs each step elsewhere (``.run(step, arguments, ctx, secrets=)``), e.g. as a Kubernetes Job
    )
    nodes: Results = field(default_factory=dict, repr=False)  # by invocation: a StepResult, or a list if mapped
    steps: dict[str, StepResult] = field(
        default_factory=dict, repr=False
    )  # by step-run invocation (``name[i]`` when mapped)

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
        ctx = self._context(node, index)
        # The pipeline's secrets follow their values into every step, whatever the step calls them.
        try:
            if self.executor is not None:
                return self.executor.run(node.step, arguments, ctx, secrets=self.secrets)
            return self.runner.run(
                node.step, arguments, ctx, secrets=self.secrets, recompute=node.invocation in self.forced
            )
        except BaseException:
            arguments = None  # type: ignore[assignment]  # noqa: F841 - not shown by locals-printing formatters
            raise

    def _context(self, node: Node, index: int | None) -> RunContext:
        native = dict(self.context.native)
        if index is not None:
            native["map_index"] = index
        return RunContext(
            orchestrator=self.context.orchestrator,
            pipeline_name=self.graph.name,
            pipeline_run_id=self.run_id,
            invocation=node.invocation if index is None else f"{node.invocation}[{index}]",
            native=native,
        )

    def _submit(self, pool: Executor, node: Node, index: int | None, arguments: dict[str, Any]) -> Future[Any]:
        if self.pool == "processes":
            ctx = self._context(node, index)
            recompute = node.invocation in self.forced
            return pool.submit(_run_in_worker, node.step.import_path, arguments, ctx, self.secrets, recompute)
        task: Callable[..., StepResult] = contextvars.copy_context().run
        return pool.submit(task, self.run_one, node, index, arguments)

    def _executor(self) -> Executor:
        name = self.graph.name
        if self.pool == "threads":
            return ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix=f"isthmus-{name}")
        self._check_processes()
        meta, arts = self.runner.metadata, self.runner.artifacts
        return ProcessPoolExecutor(
            max_workers=self.max_workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self.runner.settings, meta.url, arts.url),
        )

    def _check_processes(self) -> None:
        """Every step must be importable by path as the same object, and the stores reachable by URL."""
        label = f"pipeline {self.graph.name!r}: run(pool='processes')"
        for node in self.graph.nodes.values():
            reason = node.step.importable_reason()
            if reason is None:
                try:
                    same = load_step(node.step.import_path) is node.step
                except NotImportableError as exc:
                    reason = str(exc)
                else:
                    reason = (
                        None
                        if same
                        else (
                            f"{node.step.import_path} is the plain function, not the step object: decorate it "
                            "with @step where it is defined"
                        )
                    )
            if reason:
                raise PipelineDefinitionError(
                    f"{label}: step {node.step.name!r} cannot run in a worker process: {reason}; or use pool='threads'"
                )
        if self.runner.metadata.url.startswith("sqlite://") and _in_memory(self.runner.metadata.url):
            raise PipelineDefinitionError(
                f"{label}: the metadata store {self.runner.metadata.url!r} lives in this process; use a file or "
                "server store, or pool='threads'"
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
        if self.max_workers <= 1 or _importing():
            slots: dict[str, list[Any]] = {}
            for node in self.graph.topological():
                calls = self.calls(node)
                if node.mapped:
                    slots[node.invocation] = [None] * len(calls)
                    self.nodes[node.invocation] = []
                try:
                    for index, arguments in calls:
                        self._done(node, index, self.run_one(node, index, arguments), slots)
                except BaseException:
                    calls = arguments = None  # type: ignore[assignment]  # noqa: F841 - see run_one
                    raise
            return
        self._run_parallel()

    def _run_parallel(self) -> None:
        order = self.graph.topological()
        position = {node.invocation: i for i, node in enumerate(order)}
        waiting = {node.invocation: node for node in order}
        missing: dict[str, int] = {}  # upstream invocations whose results are not in yet
        dependents: dict[str, list[str]] = {}
        for node in order:
            upstream = node.upstream
            missing[node.invocation] = sum(u not in self.nodes for u in upstream)
            for u in upstream:
                dependents.setdefault(u, []).append(node.invocation)
        ready = [node.invocation for node in order if not missing[node.invocation]]
        landed: set[str] = set()
        slots: dict[str, list[Any]] = {}
        running: dict[Future[Any], tuple[Node, int | None]] = {}
        error: BaseException | None = None

        def settle(inv: str) -> None:
            """Count ``inv``'s result in for the steps that wait on it, once it is complete."""
            if inv in self.nodes and inv not in landed:
                landed.add(inv)
                for dependent in dependents.get(inv, ()):
                    missing[dependent] -= 1
                    if not missing[dependent]:
                        ready.append(dependent)

        # A step may run in this thread when it is the only one that can (below): not with an executor
        # (the step runs elsewhere anyway), nor under a running event loop (Jupyter's), where a step's
        # own asyncio.run() works only in a pool thread.
        inline = self.pool == "threads" and self.executor is None and not _event_loop_running()
        pool = self._executor()
        try:
            while True:
                if error is None and ready:
                    startable: list[tuple[Node, int | None, dict[str, Any]]] = []
                    while ready:  # an empty map is complete at once: the steps after it are ready too
                        now, ready[:] = sorted(ready, key=position.__getitem__), []
                        for inv in now:
                            node = waiting.pop(inv)
                            calls = self.calls(node)
                            if node.mapped:
                                slots[inv] = [None] * len(calls)
                                if not calls:
                                    self.nodes[inv] = []
                                    settle(inv)
                            startable.extend((node, index, arguments) for index, arguments in calls)
                    if len(startable) == 1 and not running and inline:
                        # The only step that can run now (a chain): here, not in a pool thread, whose
                        # hand-offs cost more than a cached step. Nothing else could start meanwhile.
                        node, index, arguments = startable.pop()
                        try:
                            alone = contextvars.copy_context().run(self.run_one, node, index, arguments)
                        except BaseException as failure:  # noqa: BLE001 - raised below, as from a pool thread
                            error = failure
                        else:
                            self._done(node, index, dataclasses.replace(alone, artifacts=self.runner.artifacts), slots)
                            settle(node.invocation)
                        arguments = None  # type: ignore[assignment]  # noqa: F841 - see run_one
                        continue
                    for node, index, arguments in startable:
                        running[self._submit(pool, node, index, arguments)] = (node, index)
                    startable = arguments = None  # type: ignore[assignment]  # noqa: F841 - see run_one
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: _order(running[f])):
                    node, index = running.pop(future)
                    exc = future.exception()
                    result = future.result() if exc is None else None
                    if isinstance(result, StepFailed):  # from a worker process
                        exc = result
                    if exc is not None:
                        error = error or exc
                        continue
                    assert isinstance(result, StepResult)
                    self._done(node, index, dataclasses.replace(result, artifacts=self.runner.artifacts), slots)
                    settle(node.invocation)
        except BaseException as exc:  # an interrupt or a bad map() list: start nothing new, let running steps end
            error = error or exc
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if error is not None:
            calls = arguments = None  # type: ignore[assignment]  # noqa: F841 - see run_one
            raise error
        if waiting:  # cannot happen with a traced graph (calls are recorded in dependency order)
            raise PipelineDefinitionError(
                f"pipeline {self.graph.name!r}: steps {sorted(waiting)} never became ready; their inputs are missing"
            )


def _order(item: tuple[Node, int | None]) -> tuple[str, int]:
    node, index = item
    return (node.invocation, -1 if index is None else index)


def _event_loop_running() -> bool:
    """Whether this thread runs an asyncio event loop (none can, if asyncio was never imported)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _importing() -> bool:
    """Whether a module is being imported (a pipeline run at import time): worker threads and processes
    would wait on that module's import lock, which is held until this run returns, so the run stays in
    the calling thread, one step after the other."""
    return any(getattr(getattr(m, "__spec__", None), "_initializing", False) for m in list(sys.modules.values()))


def _in_memory(url: str) -> bool:
    database = url.split("://", 1)[1].lstrip("/")
    return database in ("", ":memory:") or "mode=memory" in url


_worker_runner: StepRunner | None = None


def _start_worker(settings: Settings, store_url: str, artifact_url: str) -> None:
    """A worker process of ``pool="processes"``: the parent's settings and stores."""
    global _worker_runner
    config.configure(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)})
    artifacts = ArtifactStore(artifact_url, verify=settings.verify, local_cache=str(settings.home / "cache"))
    _worker_runner = StepRunner(MetadataStore(store_url), artifacts, settings)


def _run_in_worker(
    step_path: str, arguments: dict[str, Any], ctx: RunContext, secrets: frozenset[str], recompute: bool
) -> StepResult | StepFailed:
    """One step run in a worker process; its lineage events are sent before the result goes back (a pool
    worker ends without running exit handlers). A step failure is returned, not raised."""
    assert _worker_runner is not None
    step: Step[Any, Any] = load_step(step_path)
    try:
        result = _worker_runner.run(step, arguments, ctx, secrets=secrets, recompute=recompute)
    except StepFailed as failed:  # returned, so that it arrives with its scrubbed cause (raising replaces it)
        return failed
    finally:
        flush = getattr(lineage.get_lineage_hook(), "flush", None)
        if flush is not None:
            flush()
    return dataclasses.replace(result, artifacts=None)
