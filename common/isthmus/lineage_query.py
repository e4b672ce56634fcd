"""Lineage and impact from the metadata store: where an artifact, a step run or a pipeline run came from
(upstream) and what it fed (downstream), across orchestrators.

The graph has two kinds of nodes, artifacts (by content hash) and step runs, linked by the rows of
``step_run_artifacts``: an artifact is an input of every step run that consumed it and an output of the
step runs that produced it. Content addressing makes the graph orchestrator-blind: a Flyte task that
consumed a DataFrame computed by a local run links to the same hash. Upstream of an artifact is the step
run that computed it (``artifacts.producer_step_run_id``; a cache hit returns its source's hashes and is
not shown as their producer), then that step run's inputs, recursively; an artifact named by a name
(``split.train``, ``~N``, ``@alias``) starts at the step run that output it under that name
(:func:`~isthmus.artifact_ids.producers_under`), also when the same bytes were computed earlier under
another name (``make.output``). Downstream of an artifact is every step run that consumed it, then what
they produced, recursively. A step run node carries what made it: code hash, dependency hash, environment
hash, parameters (secrets stay ``***``), orchestrator, status and, for a hit, the step run its result
came from.

``depth`` counts step-run hops from the target (None: no limit). A visited set makes a cycle (impossible
with content hashes, guarded anyway) harmless, and ``max_step_runs`` (each brought with its links) bounds an answer on a large store
(``truncated`` says so). Every query reads by an index: links by step run id (primary key) or by
content hash, step runs and artifacts by primary key.

For a caller limited to some ``projects`` the target must be in one of them (else it is "not found"), and
the answer keeps only the nodes of those projects: a step run of another project's pipeline run, an artifact
no step run of theirs produced or consumed (:mod:`isthmus.governance.scope`). ``hidden`` counts what was
left out; no id of a hidden node is kept (edges to it and a hit's ``source_step_run_id`` go too).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from isthmus.artifact_ids import hashes_starting, name_hint, producers_under, resolve_artifact_name
from isthmus.errors import RunNotFound
from isthmus.errors import quoted as _quoted
from isthmus.governance.projects import DEFAULT
from isthmus.governance.scope import Projects, run_visible, visible_hashes, visible_step_runs
from isthmus.redaction import safe_params

if TYPE_CHECKING:  # the client calls this module; only its resolvers are used here
    from isthmus.client import Client

DIRECTIONS = ("upstream", "downstream", "both")
_LATEST = re.compile(r"latest(?:~\d+)?")
_HEX_ID = re.compile(r"[0-9a-fA-F-]+")
_STEP_COLUMNS = (
    "invocation",
    "step_name",
    "step_path",
    "pipeline_run_id",
    "orchestrator",
    "cache_hit",
    "source_step_run_id",
    "code_hash",
    "deps_hash",
    "environment_hash",
    "params",
    "started_at",
)
"""The columns of a step run node (:class:`StepRunNode`): a wide answer reads no other JSON column."""


@dataclass(frozen=True)
class ArtifactNode:
    """An artifact in the graph. ``present``: its row is in the store (False once gc deleted it)."""

    content_hash: str
    names: tuple[str, ...]
    size: int | None
    python_type: str | None
    materializer: str | None
    present: bool
    depth: int


@dataclass(frozen=True)
class StepRunNode:
    """A step run in the graph, with what made it (parameters as recorded: secrets are ``***``)."""

    id: str
    invocation: str
    step_name: str
    step_path: str
    pipeline_run_id: str | None
    pipeline: str | None
    orchestrator: str
    status: str
    cache_hit: bool
    source_step_run_id: str | None
    code_hash: str | None
    deps_hash: str | None
    environment_hash: str | None
    params: dict[str, Any]
    started_at: str | None
    depth: int
    project: str = DEFAULT  # its pipeline run's project


@dataclass(frozen=True)
class LineageEdge:
    """``source`` → ``target``: an artifact into the step run that read it (``role`` input), or a step
    run to the artifact it returned (``role`` output); ``name`` is the parameter or output name."""

    source: str
    target: str
    role: str
    name: str


@dataclass
class Lineage:
    """The answer of :func:`lineage`: nodes by key (content hash or step run id), and edges."""

    target_kind: str  # "artifact", "step_run" or "pipeline_run"
    target: str
    direction: str
    depth: int | None
    artifacts: dict[str, ArtifactNode] = field(default_factory=dict)
    step_runs: dict[str, StepRunNode] = field(default_factory=dict)
    edges: list[LineageEdge] = field(default_factory=list)
    truncated: bool = False
    hidden: int = 0  # nodes of projects the caller may not see, left out

    def orchestrators(self) -> list[str]:
        """The orchestrators whose step runs appear, sorted."""
        return sorted({n.orchestrator for n in self.step_runs.values()})

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": {"kind": self.target_kind, "id": self.target},
            "direction": self.direction,
            "depth": self.depth,
            "truncated": self.truncated,
            "hidden": self.hidden,
            "orchestrators": self.orchestrators(),
            "artifacts": [asdict(a) for a in self.artifacts.values()],
            "step_runs": [asdict(s) for s in self.step_runs.values()],
            "edges": [asdict(e) for e in self.edges],
        }

    def to_dot(self) -> str:
        """The graph in Graphviz DOT; every label escaped (names and parameters are untrusted text)."""
        lines = ["digraph lineage {", "  rankdir=LR;", '  node [fontname="Helvetica"];']
        for a in self.artifacts.values():
            label = "\n".join(
                [", ".join(a.names) or "artifact", a.content_hash.split(":", 1)[-1][:12], _size(a.size)]
                + ([] if a.present else ["(deleted)"])
            )
            style = "" if a.present else ', style="dashed"'
            lines.append(f"  {_dot(a.content_hash)} [shape=box, label={_dot(label)}{style}];")
        for s in self.step_runs.values():
            how = "hit" if s.cache_hit else "computed"
            where = f"{s.pipeline or '-'} run {(s.pipeline_run_id or '-')[:8]}"
            label = "\n".join([s.invocation, f"{s.orchestrator} {s.status} ({how})", where, f"step run {s.id[:8]}"])
            lines.append(f"  {_dot(s.id)} [shape=ellipse, label={_dot(label)}];")
        for e in self.edges:
            lines.append(f"  {_dot(e.source)} -> {_dot(e.target)} [label={_dot(e.name)}];")
        lines.append("}")
        return "\n".join(lines) + "\n"


def _dot(text: str) -> str:
    """A DOT quoted string: backslashes and quotes escaped, line breaks as ``\\n``, no control characters."""
    cleaned = "".join(c if c == "\n" or c >= " " else " " for c in str(text))
    escaped = cleaned.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _size(n: int | None) -> str:
    return "-" if n is None else f"{n} B"


# -- targets ---------------------------------------------------------------------------------------
def resolve_target(client: Client, ref: str, project: str | None = None) -> tuple[str, str]:
    """(kind, id) of what ``ref`` names: ``artifact`` (content hash or unique prefix, ``blake3:…``,
    ``NAME``, ``NAME@latest``, ``NAME~N``, ``NAME@ALIAS`` of ``project``), ``step_run`` (id, prefix,
    ``RUN:STEP``, ``latest~N:STEP``) or ``pipeline_run`` (id, prefix, ``latest``, ``latest~N``). A bare
    prefix matching more than one kind is an error."""
    kind, target, _name = _resolve(client, ref, project)
    return kind, target


def _resolve(client: Client, ref: str, project: str | None) -> tuple[str, str, str | None]:
    """(kind, id, the artifact name ``ref`` named its version by, else None) of :func:`resolve_target`."""
    ref = str(ref).strip()
    meta = client.metadata
    unknown = (
        f"no artifact, step run or pipeline run matches {_quoted(ref)}; see 'isthmus artifacts list', "
        "'isthmus runs list' and 'isthmus runs show RUN' for ids"
    )
    if not ref or any(c.isspace() for c in ref):
        raise RunNotFound(unknown)
    if _LATEST.fullmatch(ref):
        return "pipeline_run", client.resolve_run(ref), None
    if ref.lower().startswith("blake3:"):
        return "artifact", _one_artifact(client, ref.lower(), ref), None
    run_part = ref.split(":", 1)[0]
    if ":" in ref and (_LATEST.fullmatch(run_part) or _HEX_ID.fullmatch(run_part)):  # RUN:STEP, latest~1:STEP
        return "step_run", client.resolve_step_run(ref), None
    if "@" in ref or "~" in ref:
        return "artifact", *resolve_artifact_name(meta, ref, project=project)
    if ":" in ref:
        return "step_run", client.resolve_step_run(ref), None
    if _HEX_ID.fullmatch(ref):
        prefix = ref.lower()
        found = {
            "pipeline_run": meta.find_pipeline_runs(prefix),
            "step_run": [str(x["id"]) for x in meta.find_step_runs(prefix, limit=2)],
            "artifact": [] if "-" in prefix else _artifacts_starting(meta, prefix),
        }
        kinds = {k: v for k, v in found.items() if v}
        if not kinds:
            raise RunNotFound(unknown)
        if len(kinds) > 1 or any(len(v) > 1 for v in kinds.values()):
            what = " and ".join(f"{len(v)}{'+' if len(v) > 1 else ''} {k.replace('_', ' ')}" for k, v in kinds.items())
            raise RunNotFound(
                f"{_quoted(ref)} is ambiguous (it starts {what} ids); give more characters, or blake3:HASH for an artifact"
            )
        ((kind, ids),) = kinds.items()
        return kind, ids[0], None
    try:
        return "artifact", *resolve_artifact_name(meta, ref, project=project)
    except RunNotFound:
        if "." in ref:  # an artifact name (STEP.OUTPUT): its error names the fix
            raise
        raise RunNotFound(unknown + name_hint(meta, ref)) from None


def _artifacts_starting(meta: Any, prefix: str) -> list[str]:
    """The content hashes starting ``blake3:prefix``, stored or only named by step runs (deleted by gc:
    their lineage still stands)."""
    return hashes_starting(meta, f"blake3:{prefix}")


def _one_artifact(client: Client, prefix: str, ref: str) -> str:
    rows = hashes_starting(client.metadata, prefix)
    if len(rows) == 1:
        return rows[0]
    what = "is ambiguous" if rows else "matches no artifact"
    raise RunNotFound(f"artifact {_quoted(ref)} {what}; see 'isthmus artifacts list'")


# -- the walk --------------------------------------------------------------------------------------
class _Walk:
    def __init__(self, client: Client, result: Lineage, max_step_runs: int) -> None:
        self.meta = client.metadata
        self.result = result
        self.max_step_runs = max_step_runs
        self.linked: set[str] = set()  # step runs whose links were read
        self.edge_keys: set[tuple[str, str, str, str]] = set()
        self.names: dict[str, set[str]] = {}

    def full(self) -> bool:
        if len(self.result.step_runs) >= self.max_step_runs:
            self.result.truncated = True
            return True
        return False

    def add_step_runs(self, ids: Iterable[str], depth: int) -> list[str]:
        """Add these step runs (at ``depth``) unless known; returns the new ones."""
        new = [i for i in dict.fromkeys(ids) if i not in self.result.step_runs]
        room = self.max_step_runs - len(self.result.step_runs)
        if len(new) > room:
            new, self.result.truncated = new[: max(room, 0)], True
        added = []
        for row in self.meta.step_runs_by_id(new, _STEP_COLUMNS):
            self.result.step_runs[str(row["id"])] = _step_node(row, depth)
            added.append(str(row["id"]))
        return added

    def read_links(self, step_run_ids: list[str]) -> list[dict[str, Any]]:
        """The links of these step runs; their artifacts and edges are added (at the step run's depth)."""
        todo = [i for i in step_run_ids if i not in self.linked]
        self.linked.update(todo)
        links = self.meta.links_of_step_runs(todo) if todo else []
        for link in links:
            self.add_edge(link)
        return links

    def add_edge(self, link: dict[str, Any]) -> None:
        step_id, content_hash = str(link["step_run_id"]), str(link["content_hash"])
        if step_id not in self.result.step_runs:
            return
        self.names.setdefault(content_hash, set())
        if link["role"] == "output":
            self.names[content_hash].add(str(link["artifact_name"]))
            key = (step_id, content_hash, "output", str(link["name"]))
        else:
            key = (content_hash, step_id, "input", str(link["name"]))
        if key not in self.edge_keys:
            self.edge_keys.add(key)
            self.result.edges.append(LineageEdge(*key))

    def finish(self) -> None:
        """Artifact nodes for every hash an edge names, at the depth of the nearest step run."""
        depth_of: dict[str, int] = {}
        for e in self.result.edges:
            content_hash, step_id = (e.target, e.source) if e.role == "output" else (e.source, e.target)
            d = self.result.step_runs[step_id].depth
            depth_of[content_hash] = min(depth_of.get(content_hash, d), d)
        for h in self.result.artifacts:
            depth_of.setdefault(h, 0)
        rows = self.meta.artifacts_by_hash(list(depth_of), ("size", "python_type", "materializer"))
        for h, d in depth_of.items():
            row = rows.get(h)
            known = self.result.artifacts.get(h)
            self.result.artifacts[h] = ArtifactNode(
                content_hash=h,
                names=tuple(sorted(self.names.get(h, set()) | set(known.names if known else ()))),
                size=row["size"] if row else None,
                python_type=row["python_type"] if row else None,
                materializer=row["materializer"] if row else None,
                present=row is not None,
                depth=min(d, known.depth) if known else d,
            )

    def producers(self, hashes: list[str], name: str | None = None) -> dict[str, str]:
        """The step run that computed each hash: the one that output it under ``name`` when given (a version
        of that name), else the artifact row's producer, else (row deleted) the earliest computing step run
        that output it."""
        found = producers_under(self.meta, name, hashes) if name else {}
        rows = self.meta.artifacts_by_hash([h for h in hashes if h not in found], ("producer_step_run_id",))
        found |= {h: str(r["producer_step_run_id"]) for h, r in rows.items() if r.get("producer_step_run_id")}
        missing = [h for h in hashes if h not in found]
        if missing:
            links = self.meta.links_of_hashes(missing, "output", limit=50 * len(missing))
            ids = [str(x["step_run_id"]) for x in links]
            runs = {str(r["id"]): r for r in self.meta.step_runs_by_id(ids, ("cache_hit", "started_at"))}
            for h in missing:
                cands = [
                    runs[str(x["step_run_id"])]
                    for x in links
                    if x["content_hash"] == h and str(x["step_run_id"]) in runs
                ]
                if cands:
                    best = min(cands, key=lambda r: (bool(r["cache_hit"]), r["started_at"]))
                    found[h] = str(best["id"])
        return found


def _step_node(row: dict[str, Any], depth: int) -> StepRunNode:
    started = row.get("started_at")
    params = row.get("params")
    return StepRunNode(
        id=str(row["id"]),
        invocation=str(row.get("invocation") or row.get("step_name")),
        step_name=str(row.get("step_name")),
        step_path=str(row.get("step_path") or ""),
        pipeline_run_id=row.get("pipeline_run_id"),
        pipeline=row.get("pipeline"),
        orchestrator=str(row.get("orchestrator")),
        status=str(row.get("status")),
        cache_hit=bool(row.get("cache_hit")),
        source_step_run_id=row.get("source_step_run_id"),
        code_hash=row.get("code_hash"),
        deps_hash=row.get("deps_hash"),
        environment_hash=row.get("environment_hash"),
        params=safe_params(params) if isinstance(params, dict) else {},
        started_at=started.isoformat() if isinstance(started, dt.datetime) else None,
        depth=depth,
        project=str(row.get("project") or DEFAULT),
    )


def lineage(
    client: Client,
    ref: str,
    *,
    direction: str = "both",
    depth: int | None = None,
    max_step_runs: int = 2000,
    project: str | None = None,
    projects: Projects = None,
) -> Lineage:
    """The lineage of what ``ref`` names (see :func:`resolve_target`; a ``name@alias`` of ``project``),
    ``upstream``, ``downstream`` or ``both``, at most ``depth`` step-run hops away; only the nodes of
    ``projects`` (None: every project)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
    if depth is not None and depth < 0:
        raise ValueError(f"depth {depth} is negative; give 0 or more (0: the target and its own links)")
    kind, target, name = _resolve(client, ref, project)
    if projects is not None and not _target_visible(client, kind, target, projects):
        raise RunNotFound(
            f"no artifact, step run or pipeline run matches {_quoted(str(ref).strip())}; see 'isthmus artifacts "
            "list', 'isthmus runs list' and 'isthmus runs show RUN' for ids"
        )
    result = Lineage(target_kind=kind, target=target, direction=direction, depth=depth)
    walk = _Walk(client, result, max_step_runs)
    if kind == "artifact":
        result.artifacts[target] = ArtifactNode(target, (), None, None, None, False, 0)
        start_steps: list[str] = []
    elif kind == "step_run":
        start_steps = walk.add_step_runs([target], 0)
    else:
        start_steps = walk.add_step_runs([str(sr["id"]) for sr in client.metadata.step_runs_of(target)], 0)
    walk.read_links(start_steps)
    if direction in ("upstream", "both"):
        _upstream(walk, kind, target, start_steps, depth, name)
    if direction in ("downstream", "both"):
        _downstream(walk, kind, target, start_steps, depth)
    walk.finish()
    if projects is not None:
        _restrict(client, result, projects)
    return result


def _target_visible(client: Client, kind: str, target: str, projects: Projects) -> bool:
    meta = client.metadata
    if kind == "artifact":
        return bool(visible_hashes(meta, [target], projects))
    if kind == "step_run":
        return target in visible_step_runs(meta, [target], projects)
    run = meta.get_pipeline_run(target)
    return run is not None and run_visible(run, projects)


def _restrict(client: Client, result: Lineage, projects: Projects) -> None:
    """Leave out the nodes out of ``projects`` (a scope), the edges touching them and every id of theirs."""
    in_scope = visible_step_runs(client.metadata, list(result.step_runs), projects) if result.step_runs else set()
    steps = {k: n for k, n in result.step_runs.items() if k in in_scope}
    shown = visible_hashes(client.metadata, list(result.artifacts), projects)
    artifacts = {h: n for h, n in result.artifacts.items() if h in shown}
    result.hidden = len(result.step_runs) - len(steps) + len(result.artifacts) - len(artifacts)
    sources = [str(n.source_step_run_id) for n in steps.values() if n.source_step_run_id]
    seen = visible_step_runs(client.metadata, sources, projects) if sources else set()
    for k, n in steps.items():
        if n.source_step_run_id and str(n.source_step_run_id) not in seen:
            steps[k] = replace(n, source_step_run_id=None)
    result.step_runs, result.artifacts = steps, artifacts
    kept = steps.keys() | artifacts.keys()
    result.edges = [e for e in result.edges if e.source in kept and e.target in kept]


def _input_hashes(walk: _Walk, step_ids: Iterable[str]) -> list[str]:
    ids = set(step_ids)
    return list(dict.fromkeys(e.source for e in walk.result.edges if e.role == "input" and e.target in ids))


def _output_hashes(walk: _Walk, step_ids: Iterable[str]) -> list[str]:
    ids = set(step_ids)
    return list(dict.fromkeys(e.target for e in walk.result.edges if e.role == "output" and e.source in ids))


def _upstream(walk: _Walk, kind: str, target: str, start: list[str], depth: int | None, name: str | None) -> None:
    """Producers of the target artifact (its producer under ``name``, the name it was named by) or of the
    start step runs' inputs, then of their inputs, level by level."""
    hashes = [target] if kind == "artifact" else _input_hashes(walk, start)
    seen: set[str] = set()
    level = 1
    while hashes and (depth is None or level <= depth) and not walk.full():
        seen.update(hashes)
        producers = walk.producers(hashes, name if level == 1 else None)
        new = walk.add_step_runs(producers.values(), level)
        walk.read_links(list(producers.values()))
        hashes = [h for h in _input_hashes(walk, new) if h not in seen]
        level += 1


def _downstream(walk: _Walk, kind: str, target: str, start: list[str], depth: int | None) -> None:
    hashes = [target] if kind == "artifact" else _output_hashes(walk, start)
    seen: set[str] = set()
    level = 1
    while hashes and (depth is None or level <= depth) and not walk.full():
        seen.update(hashes)
        room = walk.max_step_runs - len(walk.result.step_runs)
        consumers = walk.meta.links_of_hashes(hashes, "input", limit=room + 1)
        new = walk.add_step_runs([str(x["step_run_id"]) for x in consumers], level)
        walk.read_links(new)
        hashes = [h for h in _output_hashes(walk, new) if h not in seen]
        level += 1
