"""``isthmus rerun``: run a recorded pipeline run again, locally, with its recorded parameters and the
code as it is now.

Whatever orchestrator recorded the run (local, Airflow, Flyte), the pipeline object is found from the
record: the ``pipeline_path`` (``module:attr``) a local run keeps in its context, else a pipeline of that
name in the modules of the run's steps (``step_path``), else ``--pipeline module:attr``. ``from_step``
recomputes that step and everything downstream of it in the traced graph, reusing cached results
upstream (Metaflow's ``resume``, through the cache: an upstream step whose code changed computes too);
``only`` recomputes that one step. A mapped step is recomputed with all its items.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from isthmus.context import RunContext
from isthmus.errors import ReplayError
from isthmus.graph import PipelineGraph
from isthmus.pipeline import Pipeline
from isthmus.pipeline_runs import PIPELINE_PATH_KEY, importable_path
from isthmus.recorded_params import replay_params
from isthmus.records import PipelineRunRecord
from isthmus.runner import StepRunner
from isthmus.store.metadata import MetadataStore

RERUN_OF_KEY = "rerun_of"  # the new run's context: the id of the run it replays
RUN_SWITCHES = ("isthmus_cache", "isthmus_recompute")
"""The DAG run params ``to_airflow_dag`` adds next to the pipeline's own: an Airflow run records them among
its params; a rerun does not replay them (unless the pipeline itself takes a parameter of that name)."""


@dataclass
class RerunResult:
    """A finished rerun: the new run, the steps it was asked to recompute, and what actually computed."""

    rerun_of: str
    run_id: str
    pipeline: str
    pipeline_path: str
    status: str
    forced: list[str]
    """Invocations recomputed on request (``from_step`` and downstream, or ``only``)."""
    computed: list[str]
    """Step runs (``name[i]`` for mapped items) that computed: the forced ones and cache misses."""
    hits: list[str]
    params: dict[str, Any] = field(repr=False)  # may hold secrets given with --param: never in a repr

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["params"]
        return data


def load_pipeline(path: str) -> Pipeline:
    """The :class:`Pipeline` at ``module:attr``; :class:`ReplayError` naming the path and the fix."""
    module_name, sep, qualname = str(path).partition(":")
    fix = "pass --pipeline module:attr naming the @pipeline object"
    if not sep or not module_name or not qualname:
        raise ReplayError(f"pipeline path {path!r} must look like 'package.module:attr'; {fix}")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except ImportError as exc:
        raise ReplayError(f"cannot import module {module_name!r} of pipeline {path!r} ({exc}); {fix}") from None
    except AttributeError:
        raise ReplayError(f"module {module_name!r} has no attribute {qualname!r} (pipeline {path!r}); {fix}") from None
    if not isinstance(obj, Pipeline):
        raise ReplayError(f"{path!r} is a {type(obj).__name__}, not a @pipeline; {fix}")
    return obj


def _discovered(metadata: MetadataStore, run: PipelineRunRecord) -> str | None:
    """``module:attr`` of the only pipeline named like ``run`` in the modules of its steps, or None."""
    modules = dict.fromkeys(
        str(sr["step_path"]).partition(":")[0] for sr in metadata.step_runs_of(run["id"]) if sr.get("step_path")
    )
    found: dict[int, str] = {}  # one path per pipeline object, wherever it is imported
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except Exception:  # a module that no longer imports: not where the pipeline is
            continue
        for attr, value in vars(module).items():
            if isinstance(value, Pipeline) and value.name == run["pipeline"]:
                found.setdefault(id(value), importable_path(value.fn) or f"{module_name}:{attr}")
    return next(iter(found.values())) if len(found) == 1 else None


def find_pipeline(metadata: MetadataStore, run: PipelineRunRecord, given: str | None = None) -> tuple[Pipeline, str]:
    """The pipeline of ``run`` and its path: ``given``, the path the run recorded, or found by name in
    the modules of its steps."""
    path = given or (run.get("context") or {}).get(PIPELINE_PATH_KEY) or _discovered(metadata, run)
    if not path or not isinstance(path, str):
        raise ReplayError(
            f"run {run['id'][:8]} ({run['orchestrator']}) does not record where pipeline {run['pipeline']!r} is "
            "defined, and no module of its steps defines it; pass --pipeline module:attr"
        )
    return load_pipeline(path), path


def _invocations(graph: PipelineGraph, name: str, option: str) -> list[str]:
    """The graph nodes ``name`` (an invocation or a step name) stands for."""
    if name in graph.nodes:
        return [name]
    nodes = [i for i, n in graph.nodes.items() if n.step.name == name]
    if nodes:
        return nodes
    base = name.partition("[")[0]
    if base != name and base in graph.nodes:
        raise ReplayError(
            f"{option} {name!r}: the items of mapped step {base!r} are recomputed together; pass {option} {base}"
        )
    valid = ", ".join(graph.nodes)
    raise ReplayError(f"{option} {name!r} is not a step of pipeline {graph.name!r}; its steps: {valid}")


def downstream(graph: PipelineGraph, starts: Iterable[str]) -> list[str]:
    """``starts`` and every invocation that depends on one of them, in graph order."""
    reached = set(starts)
    for invocation, node in graph.nodes.items():  # recorded in dependency order
        if any(up in reached for up in node.upstream):
            reached.add(invocation)
    return [i for i in graph.nodes if i in reached]


def forced_invocations(graph: PipelineGraph, from_step: str | None, only: str | None) -> list[str]:
    """What ``from_step`` / ``only`` recompute in ``graph`` (nothing when neither is given)."""
    if from_step is not None and only is not None:
        raise ReplayError("give --from STEP or --only STEP, not both")
    if only is not None:
        return _invocations(graph, only, "--only")
    if from_step is not None:
        return downstream(graph, _invocations(graph, from_step, "--from"))
    return []


def rerun(
    runner: StepRunner,
    run: PipelineRunRecord,
    *,
    from_step: str | None = None,
    only: str | None = None,
    pipeline: str | None = None,
    params: Mapping[str, Any] | None = None,
    max_workers: int | None = None,
) -> RerunResult:
    """Run ``run`` again locally with its recorded parameters (``params`` over them) and the current code.

    Raises :class:`ReplayError` before anything runs when the pipeline cannot be found, a recorded
    secret is not given again, or a step name is unknown; :class:`~isthmus.errors.StepFailed` when a step
    fails (the new run is recorded FAILED)."""
    pipe, path = find_pipeline(runner.metadata, run, pipeline)
    takes = pipe.signature.parameters
    recorded = {k: v for k, v in (run.get("params") or {}).items() if k not in RUN_SWITCHES or k in takes}
    values = replay_params(recorded, params or {}, what=f"run {run['id'][:8]}")
    known = set(pipe.signature.parameters)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ReplayError(
            f"run {run['id'][:8]}: pipeline {pipe.name!r} ({path}) takes no parameter(s) {', '.join(unknown)}; "
            f"its parameters are {', '.join(known) or 'none'}"
        )
    # A run that recorded no parameters (an orchestrator run that failed before it could say) is never
    # replayed with defaults it may not have had; a run that recorded some gets defaults only for
    # parameters the pipeline has gained since.
    declared = pipe.signature.parameters
    missing = [n for n, p in declared.items() if n not in values and (p.default is p.empty or not recorded)]
    if missing:
        raise ReplayError(
            f"run {run['id'][:8]}: pipeline {pipe.name!r} needs parameter(s) {', '.join(missing)}, which the run did "
            f"not record (defaults are not assumed for a run that recorded none); pass them with "
            f"--param {missing[0]}=VALUE"
        )
    graph = pipe.compile(**values)
    forced = forced_invocations(graph, from_step, only)
    context = RunContext(orchestrator="local", native={RERUN_OF_KEY: run["id"]})
    result = pipe.run(runner=runner, context=context, recompute=forced, max_workers=max_workers, **values)
    position = {name: n for n, name in enumerate(graph.nodes)}
    order = sorted(result.steps, key=lambda i: (position.get(i.partition("[")[0], -1), len(i), i))  # map order
    return RerunResult(
        rerun_of=run["id"],
        run_id=result.id,
        pipeline=pipe.name,
        pipeline_path=path,
        status=str(result.status),
        forced=forced,
        computed=[i for i in order if not result.steps[i].cache_hit],
        hits=[i for i in order if result.steps[i].cache_hit],
        params=values,
    )
