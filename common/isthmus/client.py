"""``isthmus.Client``: the day-2 API the command line (and the web UI) sit on.

Every method answers from the metadata store (and, for small output values, the artifact store) and
returns plain data — records, or dataclasses with ``to_dict()`` — never prints. Ids are resolved here
and only here:

- a pipeline run: its id, a unique prefix, ``latest`` or ``latest~N``;
- a step run: its id, a unique prefix, or ``RUN:INVOCATION`` (``latest:train``, ``3f2a:train_2``,
  ``latest~1:genre_stats[0]``) — the last attempt of that invocation (or step name) in that run.

An unknown or ambiguous id raises :class:`~isthmus.errors.RunNotFound` (one line naming the id and how
to list valid ones). Later day-2 commands (aliases, rerun, lineage, gc) are further methods here.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from isthmus import defaults
from isthmus.aliases import AliasChange, alias_history, promote, rollback
from isthmus.artifact_ids import ResolvedArtifact, list_versions, resolve_artifact
from isthmus.artifacts.refs import HASH_ALGORITHMS
from isthmus.cache_admin import prune
from isthmus.diff import diff_runs, diff_step_runs
from isthmus.errors import RunNotFound
from isthmus.errors import quoted as _quoted
from isthmus.explain import Explanation, explain_step_run
from isthmus.gc import DEFAULT_GRACE, DRY_RUN_LISTING, GcReport, collect_garbage
from isthmus.governance import audit
from isthmus.governance.audit import AuditEntry, authorize
from isthmus.governance.projects import alias_project, configured_project
from isthmus.governance.roles import Role
from isthmus.governance.scope import Projects, project_part
from isthmus.invalidate import Invalidation, invalidate_downstream
from isthmus.lineage_query import Lineage, lineage
from isthmus.records import PipelineRunRecord, RunStatus, StepRunRecord
from isthmus.store.metadata import MetadataStore

if TYPE_CHECKING:  # the artifact store, rerun and reproduce: imported when used, so queries start fast
    import datetime as dt

    from isthmus.artifacts.store import ArtifactStore
    from isthmus.reproduce import Reproduction
    from isthmus.rerun import RerunResult
    from isthmus.run_closing import ClosedRun

_LATEST = re.compile(r"latest(?:~\d+)?")


class Client:
    """Queries over recorded runs. ``metadata`` / ``artifacts`` default to the configured stores
    (:mod:`isthmus.defaults`), looked up on first use."""

    def __init__(self, metadata: MetadataStore | None = None, artifacts: ArtifactStore | None = None) -> None:
        self._metadata = metadata
        self._artifacts = artifacts

    @property
    def metadata(self) -> MetadataStore:
        if self._metadata is None:
            self._metadata = defaults.metadata_store()
        return self._metadata

    @property
    def artifacts(self) -> ArtifactStore:
        if self._artifacts is None:
            self._artifacts = defaults.artifact_store()
        return self._artifacts

    # -- ids ---------------------------------------------------------------------------------------
    def resolve_run(self, ref: str) -> str:
        """The id of the pipeline run ``ref`` names (id, unique prefix, ``latest``, ``latest~N``)."""
        ref = str(ref).strip()
        if not ref or any(c.isspace() for c in ref):
            raise RunNotFound(f"no pipeline run matches {_quoted(ref)}; see 'isthmus runs list' for run ids")
        if ref.startswith("latest~") and not _LATEST.fullmatch(ref):
            raise RunNotFound(
                f"{_quoted(ref)}: latest~N takes a whole number N >= 0 (latest~0 is the latest run, latest~1 the "
                "one before)"
            )
        if ":" in ref:
            raise RunNotFound(
                f"{_quoted(ref)} names a step run (RUN:STEP), not a pipeline run; give the run alone, or ask "
                f"'isthmus why {ref}' about the step run"
            )
        return self.metadata.resolve_run_id(ref)

    def resolve_step_run(self, ref: str) -> str:
        """The id of the step run ``ref`` names (id, unique prefix, or ``RUN:INVOCATION``)."""
        ref = str(ref).strip()
        algorithm, colon, _ = ref.partition(":")
        if colon and algorithm in HASH_ALGORITHMS:  # (no run id holds these letters)
            raise RunNotFound(
                f"{_quoted(ref)} is an artifact's content hash, not a step run; 'isthmus lineage HASH --upstream' "
                "shows the step run that produced it"
            )
        if colon:
            run_ref, _, invocation = ref.partition(":")
            return self._step_in_run(run_ref, invocation, ref)
        if not ref or _LATEST.fullmatch(ref) or not re.fullmatch(r"[0-9a-fA-F-]+", ref):
            hint = (
                f" (a step run of a run is RUN:STEP, e.g. '{ref or 'latest'}:train')" if _LATEST.fullmatch(ref) else ""
            )
            raise RunNotFound(
                (_LATEST.fullmatch(ref) and self._pipeline_run_hint(ref))
                or f"no step run matches {_quoted(ref)}{hint}; list step runs with 'isthmus runs show RUN'"
            )
        found = self.metadata.find_step_runs(ref.lower())
        if not found:
            raise RunNotFound(
                self._pipeline_run_hint(ref)
                or f"no step run matches {_quoted(ref)}; list step runs with 'isthmus runs show RUN'"
            )
        if len(found) > 1:
            ids = ", ".join(str(sr["id"])[:12] for sr in found[:2])
            raise RunNotFound(f"step run id prefix {_quoted(ref)} is ambiguous ({ids}, …); give more characters")
        return str(found[0]["id"])

    def _pipeline_run_hint(self, ref: str) -> str | None:
        """When ``ref`` names no step run but a pipeline run: say so, with one of its steps as RUN:STEP."""
        try:
            run_id = self.resolve_run(ref)
        except RunNotFound:
            return None
        steps = list(dict.fromkeys(str(sr["invocation"]) for sr in self.metadata.step_runs_of(run_id)))
        example = f"{run_id[:8]}:{steps[0] if steps else 'STEP'}"
        listed = f" (its steps: {', '.join(steps[:8])}{', …' if len(steps) > 8 else ''})" if steps else ""
        return f"{_quoted(ref)} is a pipeline run; name one of its steps: RUN:STEP, e.g. {example}{listed}"

    def _step_in_run(self, run_ref: str, invocation: str, ref: str) -> str:
        if not run_ref.strip() or not invocation.strip():  # "$RUN:train" with RUN unset names no run
            raise RunNotFound(
                f"no step run matches {_quoted(ref)}: RUN:STEP needs both parts, e.g. 'latest:train' or "
                "'<run id>:train'"
            )
        run_id = self.resolve_run(run_ref)
        steps = self.metadata.step_runs_of(run_id)
        chosen = [sr for sr in steps if sr["invocation"] == invocation] or [
            sr for sr in steps if sr["step_name"] == invocation
        ]
        if not chosen:
            names = ", ".join(dict.fromkeys(sr["invocation"] for sr in steps)) or "none"
            raise RunNotFound(
                f"run {run_id[:8]} has no step {_quoted(invocation)} (in {_quoted(ref)}); its steps: {names}"
            )
        invocations = {sr["invocation"] for sr in chosen}
        if len(invocations) > 1:
            raise RunNotFound(
                f"{_quoted(ref)} is ambiguous: step {invocation!r} ran as {', '.join(sorted(invocations))}; "
                "name the invocation"
            )
        return str(chosen[-1]["id"])  # ordered by start: the last attempt

    # -- records -----------------------------------------------------------------------------------
    def runs(
        self, limit: int = 20, pipeline: str | None = None, orchestrator: str | None = None
    ) -> list[dict[str, Any]]:
        """Recent pipeline runs, newest first, with their step and cache-hit counts."""
        return self.metadata.list_runs(limit=limit, pipeline=pipeline, orchestrator=orchestrator)

    def run(self, ref: str) -> PipelineRunRecord:
        """One pipeline run."""
        run = self.metadata.get_pipeline_run(self.resolve_run(ref))
        assert run is not None  # resolved just now
        return run

    def step_runs(self, run_ref: str) -> list[StepRunRecord]:
        """The step runs of a pipeline run (every attempt), in the order they started."""
        return self.metadata.step_runs_of(self.resolve_run(run_ref))

    def step_run(self, ref: str) -> StepRunRecord:
        """One step run."""
        step_run_id = self.resolve_step_run(ref)
        (found,) = [sr for sr in self.metadata.find_step_runs(step_run_id) if sr["id"] == step_run_id]
        return found

    def last_runs(self, pipeline: str, n: int = 2) -> list[PipelineRunRecord]:
        """The ``n`` newest runs of ``pipeline``, oldest first; fewer than ``n`` is an error."""
        runs = self.metadata.latest_runs_of(pipeline, limit=n)
        if len(runs) < n:
            raise RunNotFound(
                f"pipeline {_quoted(pipeline)} has {len(runs)} recorded run(s), {n} needed; "
                "see 'isthmus runs list' for pipelines and their runs"
            )
        return runs[::-1]

    def last_good_and_failed(self, pipeline: str) -> tuple[PipelineRunRecord, PipelineRunRecord]:
        """The latest successful run of ``pipeline`` and its latest failed one."""
        good = self.metadata.latest_runs_of(pipeline, RunStatus.COMPLETED, limit=1)
        bad = self.metadata.latest_runs_of(pipeline, RunStatus.FAILED, limit=1)
        if not good or not bad:
            missing = "successful" if not good else "failed"
            raise RunNotFound(
                f"pipeline {_quoted(pipeline)} has no {missing} run recorded; "
                f"see 'isthmus runs list --pipeline {pipeline}'"
            )
        return good[0], bad[0]

    # -- why -----------------------------------------------------------------------------------------
    def explain(self, step_run: str, *, projects: Projects = None) -> Explanation:
        """Why a step run computed (which cache-key components changed since the nearest earlier run of
        the step), or where its cached result came from; naming only step runs of ``projects`` (a scope)."""
        return explain_step_run(self.metadata, self.step_run(step_run), projects)

    def reasons(self, run: str, *, projects: Projects = None) -> dict[str, str]:
        """One line per step run of a pipeline run: why it computed, or where its hit came from."""
        return {str(sr["id"]): explain_step_run(self.metadata, sr, projects).reason for sr in self.step_runs(run)}

    # -- diff ----------------------------------------------------------------------------------------
    def diff_runs(self, run_a: str, run_b: str) -> dict[str, Any]:
        """What changed between two pipeline runs, and how each step ran (JSON-ready)."""
        return diff_runs(self.metadata, self.resolve_run(run_a), self.resolve_run(run_b), artifacts=self.artifacts)

    def diff_step_runs(self, step_run_a: str, step_run_b: str) -> dict[str, Any]:
        """What changed between two step runs, and how each ran (JSON-ready)."""
        a, b = self.step_run(step_run_a), self.step_run(step_run_b)
        return diff_step_runs(self.metadata, a, b, artifacts=self.artifacts)

    def diff_last(self, pipeline: str) -> dict[str, Any]:
        """The diff of the last two runs of ``pipeline``."""
        a, b = self.last_runs(pipeline, 2)
        return diff_runs(self.metadata, a["id"], b["id"], artifacts=self.artifacts)

    def diff_last_good(self, pipeline: str) -> dict[str, Any]:
        """What changed from the latest successful run of ``pipeline`` to its latest failed one."""
        good, bad = self.last_good_and_failed(pipeline)
        return diff_runs(self.metadata, good["id"], bad["id"], artifacts=self.artifacts)

    # -- lineage and retention -------------------------------------------------------------------
    def lineage(
        self,
        target: str,
        *,
        direction: str = "both",
        depth: int | None = None,
        max_step_runs: int = 2000,
        project: str | None = None,
        projects: Projects = None,
    ) -> Lineage:
        """Where an artifact, step run or pipeline run came from and what it fed (see :mod:`isthmus.lineage_query`);
        ``project``: whose ``name@alias``; ``projects``: only nodes of those projects (None: all)."""
        return lineage(
            self,
            target,
            direction=direction,
            depth=depth,
            max_step_runs=max_step_runs,
            project=project,
            projects=projects,
        )

    def gc(
        self,
        *,
        keep_last: int | None = None,
        older_than: float | None = None,
        dry_run: bool = False,
        prune_cache: bool = False,
        grace: float = DEFAULT_GRACE,
        listing: int = DRY_RUN_LISTING,
    ) -> GcReport:
        """Delete artifact objects no kept run, alias or live cache entry needs (see :mod:`isthmus.gc`);
        a dry run counts and lists the first ``listing`` that would go."""
        if not dry_run:
            self._authorize(Role.ADMIN, "gc")
        report = collect_garbage(
            self.metadata,
            self.artifacts,
            keep_last=keep_last,
            older_than=older_than,
            dry_run=dry_run,
            prune_cache=prune_cache,
            grace=grace,
            listing=listing,
        )
        if not dry_run:
            self._audit("gc", None, {"keep_last": keep_last, "older_than": older_than, "prune_cache": prune_cache})
        return report

    # -- rerun and reproduce -------------------------------------------------------------------------
    def rerun(
        self,
        run: str,
        *,
        from_step: str | None = None,
        only: str | None = None,
        pipeline: str | None = None,
        params: dict[str, Any] | None = None,
        max_workers: int | None = None,
    ) -> RerunResult:
        """Run a recorded pipeline run again locally (recorded parameters, current code), recomputing
        ``from_step`` and everything downstream of it, or ``only`` that step (see :mod:`isthmus.rerun`)."""
        record = self.run(run)
        self._authorize(Role.OPERATOR, "rerun", record.get("project"))
        self._audit(
            "rerun", record["id"], {"from_step": from_step, "only": only, "params": params}, record.get("project")
        )
        from isthmus.rerun import rerun
        from isthmus.runner import StepRunner

        runner = StepRunner(self.metadata, self.artifacts)
        return rerun(
            runner, record, from_step=from_step, only=only, pipeline=pipeline, params=params, max_workers=max_workers
        )

    def reproduce(self, step_run: str, *, params: dict[str, Any] | None = None, debug: bool = False) -> Reproduction:
        """Call a recorded step run's function here with its recorded inputs (under pdb with ``debug``);
        records nothing (see :mod:`isthmus.reproduce`)."""
        from isthmus.reproduce import reproduce

        return reproduce(self.metadata, self.artifacts, self.step_run(step_run), params=params, debug=debug)

    # -- artifacts, aliases, invalidation -----------------------------------------------------------
    # Aliases belong to a project: ``project=``, else ISTHMUS_PROJECT, else "default". ``projects`` narrows
    # artifact versions to those some step run of these projects produced or consumed (None: every one).
    def artifact(self, ref: str, *, project: str | None = None, projects: Projects = None) -> ResolvedArtifact:
        """The artifact version ``ref`` names: a hash or unique prefix, ``name`` (= ``name@latest``),
        ``name@alias`` (of ``project``), ``name~N`` (see :mod:`isthmus.artifact_ids`)."""
        return resolve_artifact(self.metadata, ref, project=project, projects=projects)

    def artifact_versions(
        self,
        name: str | None = None,
        limit: int = 50,
        by_run: bool = False,
        *,
        project: str | None = None,
        projects: Projects = None,
    ) -> list[dict[str, Any]]:
        """Artifact versions, newest first, each with how many step runs used it and the aliases pointing at
        it (of ``projects``, or of ``project`` when every project is seen); ``by_run``: one row per step run
        that produced or reused a version instead."""
        if by_run:
            return self.metadata.list_artifacts(name=name, limit=limit, projects=projects)
        home = alias_project(project)
        owners = project_part(projects)
        shown = owners if owners is not None else frozenset({home})
        return list_versions(self.metadata, name=name, limit=limit, projects=projects, alias_projects=shown, home=home)

    def aliases(self, *, projects: Projects = None, name: str | None = None) -> list[dict[str, Any]]:
        """Current aliases (of ``projects``, None: every project; of artifact ``name``)."""
        return self.metadata.list_aliases(projects, name=name)

    def alias_history(self, alias: str, *, project: str | None = None) -> list[AliasChange]:
        """Every change of ``name@alias`` of ``project``, oldest first."""
        return alias_history(self.metadata, alias, project)

    def promote(
        self,
        alias: str,
        version: str,
        *,
        reason: str | None = None,
        force: bool = False,
        via: str = "api",
        project: str | None = None,
        projects: Projects = None,
    ) -> AliasChange | None:
        """Point ``name@alias`` of ``project`` at ``version`` (any artifact id, among those of ``projects``);
        refuses a version of another name unless ``force``. None if it pointed there already."""
        owner = alias_project(project)
        self._authorize(Role.OPERATOR, "alias.promote", owner)
        change = promote(
            self.metadata, alias, version, reason=reason, force=force, via=via, project=owner, projects=projects
        )
        if change is not None:
            details = {"from": change.from_hash, "to": change.to_hash, "reason": reason}
            self._audit("alias.promote", alias, details, owner)
        return change

    def rollback(
        self,
        alias: str,
        to: str | None = None,
        *,
        reason: str | None = None,
        via: str = "api",
        project: str | None = None,
        projects: Projects = None,
    ) -> AliasChange:
        """Move ``name@alias`` of ``project`` back to its previous target, or to ``to``."""
        owner = alias_project(project)
        self._authorize(Role.OPERATOR, "alias.rollback", owner)
        change = rollback(self.metadata, alias, to, reason=reason, via=via, project=owner, projects=projects)
        details = {"from": change.from_hash, "to": change.to_hash, "reason": reason}
        self._audit("alias.rollback", alias, details, owner)
        return change

    def invalidate(
        self, artifact: str, *, dry_run: bool = False, reason: str | None = None, listing: int | None = None
    ) -> Invalidation:
        """Drop the cache entries of every step run derived from ``artifact`` and mark those runs.
        ``listing``: return only the first ``listing`` of them (the counts cover every one)."""
        if not dry_run:
            self._authorize(Role.OPERATOR, "invalidate")
        found = invalidate_downstream(self.metadata, artifact, dry_run=dry_run, reason=reason, listing=listing)
        if not dry_run:
            self._audit("invalidate", artifact, {"reason": reason})
        return found

    # -- governance: cache administration, the audit log ---------------------------------------------
    def clear_cache(self, step: str | None = None) -> int:
        """Forget the cache entries of ``step`` (or of every step); runs and artifacts are kept."""
        self._authorize(Role.OPERATOR, "cache.clear")
        cleared = self.metadata.clear_cache(step)
        self._audit("cache.clear", step or "*", {"entries": cleared})
        return cleared

    def prune_cache(self, *, delete_unreferenced: bool = False, dry_run: bool = False) -> dict[str, Any]:
        """Drop expired and broken cache entries (see :func:`isthmus.cache_admin.prune`); a dry run counts
        what would go, changes nothing and needs no role."""
        if not dry_run:
            self._authorize(Role.OPERATOR, "cache.prune")
        report = prune(self.metadata, self.artifacts, delete_unreferenced=delete_unreferenced, dry_run=dry_run)
        if not dry_run:
            self._audit("cache.prune", None, dict(report))
        return report

    def close_stale_runs(self, idle: dt.timedelta, *, dry_run: bool = False) -> list[ClosedRun]:
        """Close RUNNING pipeline runs with no activity for ``idle`` (see
        :func:`isthmus.run_closing.close_stale_runs`); a dry run changes nothing and needs no role."""
        from isthmus.run_closing import close_stale_runs

        if not dry_run:
            self._authorize(Role.OPERATOR, "runs.close")
        closed = close_stale_runs(self.metadata, idle, dry_run=dry_run)
        if not dry_run:
            self._audit(
                "runs.close", None, {"idle_seconds": idle.total_seconds(), "closed": [c.run_id for c in closed]}
            )
        return closed

    def audit_log(self, *, limit: int = 100, action: str | None = None, project: str | None = None) -> list[AuditEntry]:
        """The newest audit entries first (see :mod:`isthmus.governance.audit`)."""
        return audit.entries(self.metadata, limit=limit, action=action, project=project)

    def _authorize(self, needed: Role, action: str, project: str | None = None) -> None:
        authorize(self.metadata, needed, action, project)

    def _audit(self, action: str, target: str | None, details: dict[str, Any], project: str | None = None) -> None:
        audit.record(self.metadata, action, target, project=project or configured_project(), details=details)
