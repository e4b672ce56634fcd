"""The StepRunner: the one execution path every adapter uses.

resolve inputs -> fingerprints -> cache lookup / lease -> execute with retries -> materialize ->
record -> lineage hook.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from isthmus import defaults, lineage
from isthmus.artifacts.errors import HoldsSecret, InvalidArtifactRef
from isthmus.artifacts.materializers import candidates
from isthmus.artifacts.refs import ArtifactRef
from isthmus.artifacts.store import ArtifactStore
from isthmus.cache import cache_key, declared_inputs_and_record, lease_keeper, step_fields
from isthmus.config import Settings, get_settings
from isthmus.context import RunContext
from isthmus.errors import (
    ArtifactMissing,
    ConfigurationError,
    MaterializationError,
    ScrubbedError,
    SecretValueError,
    StepDefinitionError,
    StepFailed,
)
from isthmus.fingerprint.arguments import (
    INCOMPLETE_CODE,
    NotListed,
    NotPlain,
    code_of_ref,
    code_of_value,
    plain_form,
)
from isthmus.fingerprint.code import CodeFingerprint, code_fingerprint
from isthmus.fingerprint.deps import DependencyFingerprint, dependency_fingerprint
from isthmus.fingerprint.environment import DEFAULT_ENV_ALLOWLIST, IMAGE_VARS, environment_snapshot
from isthmus.fingerprint.redact import traceback_secret_literals
from isthmus.fingerprint.values import state_digest
from isthmus.hashing import PROCESS_KEY, UnhashableValueError, hash_value, keyed_hash
from isthmus.metadata_log import collecting
from isthmus.parameters import ref_list
from isthmus.pinned import input_record, resolve_argument
from isthmus.records import RunStatus, StepRunRecord
from isthmus.redaction import (
    REDACTED,
    find_secret,
    forbidden_bytes,
    is_secret_name,
    known_secrets_in,
    redact_params,
    resolved_secrets,
    reveal_secrets,
    scrub,
    secret_env_values,
    secret_values,
)
from isthmus.step import Step
from isthmus.store.claims import CacheCandidate, ClaimBusy, ClaimCandidates, ClaimHit, ClaimStarted
from isthmus.store.holders import current_holder
from isthmus.store.metadata import MetadataStore, link_rows_for, utcnow

log = logging.getLogger("isthmus")


@dataclass
class StepResult:
    """What one step execution produced (or reused from the cache)."""

    step_run_id: str
    step_name: str
    invocation: str
    status: RunStatus
    cache_hit: bool
    outputs: dict[str, ArtifactRef]
    cache_key: str | None = None
    source_step_run_id: str | None = None
    duration_ms: float = 0.0
    error: str | None = None
    artifacts: ArtifactStore | None = field(default=None, repr=False)

    def load(self, name: str | None = None) -> Any:
        """Load an output's value (the only output when ``name`` is None)."""
        if name is None:
            if len(self.outputs) != 1:
                raise KeyError(f"step {self.step_name!r} has outputs {list(self.outputs)}; pass one name")
            name = next(iter(self.outputs))
        store = self.artifacts or defaults.artifact_store()
        return store.load(self.outputs[name])

    @property
    def value(self) -> Any:
        """The value of the single output, or a tuple of all outputs."""
        if len(self.outputs) == 1:
            return self.load()
        return tuple(self.load(n) for n in self.outputs)


_HOLD_NO_TEXT = frozenset({int, float, bool, type(None), complex})


@dataclass(frozen=True)
class CallSecrets:
    """What one step call knows to be secret. ``scrubbed``: every secret it knows (its arguments', the
    secrets given with the call, the environment's), hidden in errors, tracebacks and stored parameters.
    ``given``: the secrets the step received (in its arguments, by name, type, form or value), which
    none of its outputs may hold."""

    scrubbed: frozenset[str]
    given: frozenset[str]


def _code_order(code: Any) -> tuple[str, str]:
    return (code.__module__, code.__qualname__)


@dataclass(frozen=True)
class PreparedRun:
    """One step call ready to run: what :meth:`StepRunner._prepare` worked out, and (from :meth:`StepRunner.run`)
    the lease holder and the number of attempts. Its repr leaves out the arguments and the secrets."""

    step: Step[Any, Any]
    context: RunContext
    arguments: Mapping[str, Any] = field(repr=False)
    inputs: dict[str, ArtifactRef]  # refs, by argument name (``name[i]`` for a list of artifacts)
    collections: dict[str, int]  # list arguments made of artifacts: their lengths
    key: str | None  # the cache key (None: caching is off)
    base: StepRunRecord  # the step run row's common fields
    known: CallSecrets = field(repr=False)
    t0: float  # when the call started (time.perf_counter())
    holder: str | None = None  # the lease holder, when there is a cache key
    row_written: bool = False  # the first attempt's RUNNING row is written (with the lease)
    attempts: int = 1
    recompute: bool = False  # compute even when a result is cached (the new result is cached too)


def _recorded_refs(cand: CacheCandidate) -> dict[str, ArtifactRef] | None:
    """The output refs of a recorded step run, or None if one is malformed (never a hit)."""
    try:
        return {k: ArtifactRef.from_dict(v) for k, v in (cand["outputs"] or {}).items()}
    except InvalidArtifactRef:
        return None


class StepRunner:
    """Runs steps with caching and recording. Adapters build a :class:`RunContext` and call :meth:`run`."""

    def __init__(
        self,
        metadata: MetadataStore | None = None,
        artifacts: ArtifactStore | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.metadata = metadata or defaults.metadata_store()
        self.artifacts = artifacts or defaults.artifact_store()
        self._deps: dict[tuple[str, Any], DependencyFingerprint] = {}  # (code hash, deps policy) -> fingerprint
        self._env_memo: dict[str | None, tuple[tuple[str | None, ...], str]] = {}
        self._env_names = tuple(sorted(set(DEFAULT_ENV_ALLOWLIST) | set(self.settings.env_allowlist) | set(IMAGE_VARS)))

    # -- fingerprints ----------------------------------------------------------------------------
    def secret_salt(self) -> bytes:
        """The salt of the secret parts of cache keys: the one kept outside the store
        (``ISTHMUS_SECRET_SALT`` / ``ISTHMUS_SECRET_SALT_FILE``) if configured, else this store's."""
        return self.settings.secret_salt or self.metadata.secret_salt()

    def fingerprints(
        self, step: Step[Any, Any], code: tuple[Any, ...] = ()
    ) -> tuple[CodeFingerprint, DependencyFingerprint]:
        """Code and dependency fingerprints of ``step``; ``code``: project functions and classes the
        values of a call reference (their code joins the code fingerprint). Secret constants are keyed
        with :meth:`secret_salt`. The code snapshot is stored once per fingerprint."""
        code_fp = code_fingerprint(step, code)
        if code_fp.secret_digests:
            code_fp = code_fp.keyed(self.secret_salt())
        memo = (code_fp.hash, step.cache.deps)
        deps_fp = self._deps.get(memo)
        if deps_fp is None:
            deps_fp = dependency_fingerprint(step.cache.deps, code_fp.modules)
            self.metadata.save_code_snapshot(code_fp.hash, code_fp.components, code_fp.sources)
            self._deps[memo] = deps_fp
        return code_fp, deps_fp

    def environment_hash(self, fn: Any) -> str:
        """The environment snapshot hash for code defined in ``fn``'s module (stored once per hash;
        rebuilt only when a recorded variable changes)."""
        import sys

        mod = sys.modules.get(getattr(fn, "__module__", "") or "")
        path = getattr(mod, "__file__", None)
        code_dir = os.path.dirname(path) if path else None
        names = self._env_names
        watched = tuple(os.environ.get(n) for n in names)
        memo = self._env_memo.get(code_dir)
        if memo is not None and memo[0] == watched:
            return memo[1]
        snap = environment_snapshot(code_dir, self.settings.env_allowlist)
        self.metadata.save_environment(snap.hash, snap.data)
        self._env_memo[code_dir] = (watched, snap.hash)
        return snap.hash

    # -- the run ---------------------------------------------------------------------------------
    def run(
        self,
        step: Step[Any, Any],
        arguments: Mapping[str, Any],
        context: RunContext | None = None,
        *,
        retries: int | None = None,
        secrets: Iterable[str] = (),
        recompute: bool = False,
    ) -> StepResult:
        """Run ``step`` with ``arguments`` (values, or ArtifactRefs for inputs) and record it.

        ``retries`` overrides the step's own in-process retries, e.g. ``0`` when the orchestrator
        retries the task itself (each orchestrator try is then one attempt, ``context.attempt``).
        ``secrets``: values known to be secret where the arguments came from (a pipeline's secret-named
        parameters, an orchestrator's secret inputs): an argument that is, or holds, one of them is a
        secret parameter whatever the step calls it (keyed in the cache key, ``***`` where recorded).
        ``recompute``: compute without looking up the cache; the fresh result becomes the newest cache
        entry for its key, so later runs hit it.
        """
        prepared = replace(self._prepare(step, arguments, context or RunContext(), secrets), recompute=recompute)
        if recompute:  # recorded, so `isthmus why` can tell a forced run from a miss
            prepared.base["context"]["forced"] = True
        key = prepared.key
        holder: str | None = None
        if key is not None:
            holder = current_holder(prepared.base["id"])
            hit = self._claim(prepared, holder)
            if hit is not None:
                return hit
        attempts = 1 + (step.retries if retries is None else retries)
        prepared = replace(prepared, holder=holder, row_written=key is not None, attempts=attempts)

        try:
            return self._execute(prepared)
        except StepFailed:
            # The final write released the lease. What this frame holds is shown by traceback formatters
            # that print locals (rich, structlog's dev renderer, Sentry): keep the arguments out of it.
            arguments = secrets = prepared = None  # type: ignore[assignment]  # noqa: F841
            raise
        except BaseException:
            if holder is not None and key is not None:
                try:
                    self.metadata.release_lease(key, holder)
                except Exception:  # an expired lease is as good as a released one
                    log.debug("could not release lease %s", key, exc_info=True)
            raise
        finally:
            if holder is not None and key is not None:
                lease_keeper.drop(self.metadata, key, holder)

    def _prepare(
        self, step: Step[Any, Any], arguments: Mapping[str, Any], ctx: RunContext, secrets: Iterable[str] = ()
    ) -> PreparedRun:
        """The call made ready: inputs (refs), cache key, the step run row's common fields, list-of-artifact
        arguments, and what the call knows to be secret (see :meth:`run` for ``secrets``)."""
        t0 = time.perf_counter()
        invocation = ctx.invocation or step.name

        inputs: dict[str, ArtifactRef] = {}
        params: dict[str, Any] = {}
        collections: dict[str, int] = {}  # list arguments made of artifacts (e.g. a mapped task's results)
        code: set[Any] = set()  # project functions and classes the values reference: join the code fingerprint
        secret_params: set[str] = set()  # objects holding secrets: hashed (keyed) for the key, never stored
        keyed: set[str] = set()  # plain data holding a secret given with the call: keyed whole in the key
        env = secret_env_values()
        # (the environment's secrets are keyed where they sit, however the call was made: see cache.cache_key)
        given = frozenset(s for s in secrets if isinstance(s, str) and len(s) >= 4) - env if secrets else frozenset()
        shown = secret_values(arguments, {})  # what the arguments show by name, type and form
        # Secrets recognised by value wherever they are passed (the same set object from call to call when
        # nothing is given: its hash, and the matchers built for it, are reused).
        by_value = given | env if given else env
        known = by_value.union(shown) if shown else by_value
        passed = given.union(shown)  # secrets the step receives
        for name, value in arguments.items():
            # a pinned artifact (ArtifactAlias, ArtifactVersion) becomes the ref of the version it names now
            value = resolve_argument(value, self.metadata, self.artifacts, where=f"step {step.name!r}: input {name!r}")
            try:  # refs are untrusted: valid and of this store, or refused before anything is touched
                ref = ArtifactRef.coerce(value)
                refs = None if ref is not None else ref_list(value)
                for r in [ref] if ref is not None else refs or []:
                    self.artifacts.check_ref(r)
            except (InvalidArtifactRef, MaterializationError) as exc:
                raise type(exc)(f"step {step.name!r}: input {name!r}: {exc}") from None
            if ref is not None:
                inputs[name] = ref
                continue
            if refs is not None:
                collections[name] = len(refs)
                inputs.update({f"{name}[{i}]": r for i, r in enumerate(refs)})
                continue
            try:  # plain data; a pathlib path counts by what is there now (the step gets the path)
                params[name] = plain_form(value, code)
            except NotPlain:
                pass
            else:
                if type(value) not in _HOLD_NO_TEXT:
                    hits = known_secrets_in(value, by_value)
                    if hits:
                        passed |= hits
                        if not hits.isdisjoint(given):
                            keyed.add(name)
                continue
            digest: str | None = None
            if not (is_secret_name(name) or find_secret(value, known, by_key=True) is not None):
                # Objects passed in directly become input artifacts (hashed by content, kept for lineage); the
                # materializer lists the project code their bytes refer to by name. One whose stored form
                # would hold a secret the call knows (where the walk does not look: slots, a partial's
                # arguments, a model's extra fields …) is not stored: it is keyed as a secret, below.
                # (A stream is read to its end by the save: it is stored, as its bytes cannot be read again.)
                try:
                    inputs[name] = self.artifacts.save(
                        value, step_name=step.name, output=f"input:{name}", forbidden=forbidden_bytes(value, known)
                    )
                    continue
                except HoldsSecret as held:
                    # exactly what it is (the hash its stored form would have had), keyed, never stored
                    digest = held.content_hash
            # A secret (by its name, what it holds, or its stored form): never stored, never an artifact;
            # only its digest enters the cache key, through the store's keyed hash; the function gets the
            # object itself (a SecretStr stays one).
            passed |= known_secrets_in(value, by_value)
            secret_params.add(name)
            if digest is not None:
                params[name] = digest
            else:
                try:
                    params[name] = hash_value(reveal_secrets(value))
                except UnhashableValueError:  # no canonical hash: its state, or unique to this process
                    params[name] = state_digest(reveal_secrets(value))
            try:
                code |= code_of_value(value)
            except NotListed:
                code.add(INCOMPLETE_CODE)
            continue

        for ref in inputs.values():
            code |= code_of_ref(ref)
        unseen: dict[str, str] = {}
        if INCOMPLETE_CODE in code:  # code we could not list: never reused by another process
            code.discard(INCOMPLETE_CODE)
            unseen["<unlisted code>"] = keyed_hash(PROCESS_KEY, "unlisted code")
        code_fp, deps_fp = self.fingerprints(step, tuple(sorted(code, key=_code_order)))
        env_hash = self.environment_hash(step.fn)
        policy = step.cache
        key_parts: dict[str, Any] | None = None
        if policy.enabled:
            salt = self.secret_salt()
            declared, key_parts = declared_inputs_and_record(policy, salt)
            key: str | None = cache_key(
                **step_fields(step),
                code_hash=code_fp.hash,
                deps_hash=deps_fp.hash,
                params={**params, **{f"<{k}>": n for k, n in collections.items()}, **unseen},
                inputs=inputs,
                declared=declared,
                salt=salt,
                secret_params=secret_params | keyed,
            )
        else:
            key = None
        step_run_id = str(uuid.uuid4())
        base: StepRunRecord = {
            "id": step_run_id,
            "pipeline_run_id": ctx.pipeline_run_id,
            "invocation": invocation,
            "step_name": step.name,
            "step_path": step.import_path,
            "orchestrator": ctx.orchestrator,
            "attempt": ctx.attempt,
            "code_hash": code_fp.hash,
            "deps_hash": deps_fp.hash,
            "deps": deps_fp.versions,
            "environment_hash": env_hash,
            "params": redact_params({k: REDACTED if k in secret_params else v for k, v in params.items()}, known),
            "inputs": {k: input_record(v) for k, v in inputs.items()},
            "cache_key": key,
            "resources": step.resources_dict(),
            "context": json.loads(json.dumps(ctx.to_dict(), default=str)),
        }
        if key_parts is not None:  # the policy's parts of the key, for 'isthmus why' (values never stored)
            base["context"]["key_parts"] = key_parts
        return PreparedRun(
            step=step,
            context=ctx,
            arguments=arguments,
            inputs=inputs,
            collections=collections,
            key=key,
            base=base,
            known=CallSecrets(scrubbed=known, given=passed),
            t0=t0,
        )

    def cache_key(
        self,
        step: Step[Any, Any],
        arguments: Mapping[str, Any],
        context: RunContext | None = None,
        *,
        secrets: Iterable[str] = (),
    ) -> str | None:
        """The cache key :meth:`run` would use for ``step`` with ``arguments`` (None when caching is off)."""
        return self._prepare(step, arguments, context or RunContext(), secrets).key

    def lookup(
        self,
        step: Step[Any, Any],
        arguments: Mapping[str, Any],
        context: RunContext | None = None,
        *,
        secrets: Iterable[str] = (),
    ) -> StepResult | None:
        """A cache hit for ``step`` with ``arguments``, recorded as a step run, or None (nothing recorded).

        For adapters that run the step elsewhere (a Slurm job): look up first, and submit only on a
        miss. Unlike :meth:`run` it never takes the lease nor waits for an identical run in progress.
        """
        prepared = self._prepare(step, arguments, context or RunContext(), secrets)
        if prepared.key is None:
            return None
        cands = self.metadata.cache_candidates(prepared.key, time.time())
        hit = self._validated(prepared.key, cands) if cands else None
        if hit is None:
            return None
        return self._record_hit(prepared, hit)

    # -- cache -----------------------------------------------------------------------------------
    def _verdict(self, refs: dict[str, ArtifactRef]) -> bool | None:
        """True if every artifact is known good, False if one is gone, None if a hash check is due."""
        verdict: bool | None = True
        for ref in refs.values():
            v = self.artifacts.quick_check(ref)
            if v is False:
                return False
            if v is None:
                verdict = None
        return verdict

    def _hit_row(self, base: StepRunRecord, cand: CacheCandidate, t0: float) -> StepRunRecord:
        return {
            **base,
            "status": RunStatus.COMPLETED,
            "cache_hit": True,
            "source_step_run_id": cand["id"],
            "outputs": cand["outputs"],
            "metadata": cand.get("metadata"),
            "started_at": utcnow(),
            "ended_at": utcnow(),
            "duration_ms": (time.perf_counter() - t0) * 1000,
        }

    def _record_hit(self, prepared: PreparedRun, hit: CacheCandidate) -> StepResult:
        """Record ``hit`` (a fully checked candidate) as this call's step run, and return it."""
        refs = hit["refs"]
        assert refs is not None  # checked by _validated
        row = self._hit_row(prepared.base, hit, prepared.t0)
        self.metadata.finish_step_run(
            prepared.base["id"],
            {},
            outputs=refs,
            inputs=prepared.inputs,
            step_name=prepared.step.name,
            insert_row=row,
            new_artifacts=False,
        )
        return self._hit_result(prepared.step, row, refs)

    def _claim(self, prepared: PreparedRun, holder: str) -> StepResult | None:
        """Return a cache hit (recorded), or None once this process (``holder``) holds the lease and the
        RUNNING row is written. While another live process computes the same key, wait for its result; a
        crashed holder's lease expires and is taken over."""
        step, key, base, inputs, t0 = prepared.step, prepared.key, prepared.base, prepared.inputs, prepared.t0
        assert key is not None  # only calls with a cache key claim
        ttl = self.settings.lease_ttl
        delay, waited, told = 0.02, 0.0, False
        start_row: StepRunRecord = {**base, "started_at": utcnow()}

        def try_hit(cand: CacheCandidate) -> bool | None:
            refs = cand["refs"] = _recorded_refs(cand)
            return False if refs is None else self._verdict(refs)

        def hit_write(cand: CacheCandidate) -> tuple[StepRunRecord, list[dict[str, Any]]]:
            cand["row"] = self._hit_row(base, cand, t0)
            return cand["row"], link_rows_for(base["id"], step.name, cand["refs"], inputs)

        while True:
            match self.metadata.claim_step_run(
                start_row, key, holder, ttl, try_hit, hit_write, recompute=prepared.recompute
            ):
                case ClaimHit(candidate=cand):
                    refs = cand["refs"]
                    assert refs is not None  # try_hit confirmed them
                    return self._hit_result(step, cand["row"], refs)
                case ClaimStarted(aborted=aborted):
                    lease_keeper.hold(self.metadata, key, holder, ttl)
                    self._report_aborted(step, aborted)
                    return None
                case ClaimCandidates(rows=rows):  # results need a hash check: done outside the transaction
                    hit = self._validated(key, rows)
                    if hit is not None:
                        return self._record_hit(prepared, hit)
                    continue
                case ClaimBusy():
                    pass
            if not told and waited > 1.0:
                other = self.metadata.lease_holder(key)
                log.info(
                    "step %r: identical run in progress by %s; waiting for its result", step.name, other and other[0]
                )
                told = True
            time.sleep(delay)
            waited += delay
            delay = min(delay * 1.5, 0.5)

    def _report_aborted(self, step: Step[Any, Any], step_run_ids: list[str]) -> None:
        """Log and send lineage ABORT for runs of dead holders this process took the step over from, and
        remove the partial writes dead processes left behind."""
        if step_run_ids:
            try:
                self.artifacts.clean_tmp()
            except OSError:  # best effort: prune removes them later
                log.debug("could not remove partial writes of dead processes", exc_info=True)
        for run_id in step_run_ids:
            log.warning("step %r: step run %s was abandoned by a dead process; computing it again", step.name, run_id)
            try:
                lineage.emit("on_step_end", self.metadata.get_step_run(run_id))
            except Exception:  # lineage never fails a step
                log.debug("no lineage for aborted step run %s", run_id, exc_info=True)

    def _validated(self, key: str, candidates: list[CacheCandidate]) -> CacheCandidate | None:
        """The first candidate whose artifacts pass a full check; failing entries are dropped."""
        for cand in candidates:
            refs = cand.get("refs") or _recorded_refs(cand)
            if refs is not None and all(self.artifacts.is_valid(r) for r in refs.values()):
                cand["refs"] = refs
                return cand
            self.metadata.drop_cache_entry(key, cand["id"])  # deleted or corrupted: never a hit again
        return None

    def _hit_result(self, step: Step[Any, Any], row: StepRunRecord, refs: dict[str, ArtifactRef]) -> StepResult:
        log.info("step %r: cache hit, outputs from step run %s", step.name, row["source_step_run_id"])
        lineage.emit_hit(row)
        return StepResult(
            step_run_id=row["id"],
            step_name=step.name,
            invocation=row["invocation"],
            status=RunStatus.COMPLETED,
            cache_hit=True,
            outputs=refs,
            cache_key=row["cache_key"],
            source_step_run_id=row["source_step_run_id"],
            duration_ms=row.get("duration_ms") or 0.0,
            artifacts=self.artifacts,
        )

    # -- execution -------------------------------------------------------------------------------
    def _save_output(self, step: Step[Any, Any], name: str, value: Any, secrets: frozenset[str]) -> ArtifactRef:
        """Output ``name`` committed as an artifact; refused when its stored form holds one of ``secrets``
        (where the search of the value does not look: slots, a partial's arguments, a pickled closure)."""
        try:
            return self.artifacts.save(
                value,
                step_name=step.name,
                output=name,
                materializer=step.materializers.get(name),
                forbidden=forbidden_bytes(value, secrets),
            )
        except HoldsSecret:
            raise _refused_output(step, name, "in its stored form") from None

    def _load_inputs(self, step: Step[Any, Any], inputs: dict[str, ArtifactRef]) -> dict[str, Any]:
        values = {}
        for name, ref in inputs.items():
            if not self.artifacts.is_valid(ref):
                raise ArtifactMissing(
                    f"step {step.name!r}: input {name!r} ({ref.uri}) is missing or corrupt; "
                    "re-run the step that produced it (its cache entry no longer counts)"
                )
            values[name] = self.artifacts.load(ref)
        return values

    def _execute(self, prepared: PreparedRun) -> StepResult:
        """Run the step, with its attempts; record each attempt and emit its lineage."""
        step, ctx, base, inputs, key = prepared.step, prepared.context, prepared.base, prepared.inputs, prepared.key
        attempts, holder, known = prepared.attempts, prepared.holder, prepared.known
        attempt = 0
        release = (key, holder) if key is not None and holder is not None else None
        secrets = known.scrubbed  # everything the run knows to be secret, for scrubbing
        # Outputs are checked against the secrets the step was given, not against the environment's: a value
        # a step reads from a variable itself is its own to return (documented in the README).
        in_outputs = known.given
        failure: StepFailed | None = None
        while True:
            attempt += 1
            row: StepRunRecord = {
                **base,
                "attempt": ctx.attempt + attempt - 1,
                "started_at": utcnow(),
                "cache_hit": False,
                "status": RunStatus.RUNNING,
            }
            if attempt > 1:
                row["id"] = str(uuid.uuid4())
            step_run_id = row["id"]
            started = time.perf_counter()
            if attempt > 1 or not prepared.row_written:
                self.metadata.start_step_run(row)
            lineage.emit("on_step_start", row)
            try:
                values = self._load_inputs(step, inputs)
                for name, n in prepared.collections.items():
                    values[name] = [values.pop(f"{name}[{i}]") for i in range(n)]
                call_args = {**{k: v for k, v in prepared.arguments.items() if k not in inputs}, **values}
                with collecting(step.name, step.output_names, secrets) as logged:
                    result = step.invoke(call_args)
                named = step.split_outputs(result)
                refused = in_outputs | resolved_secrets()
                for name, value in named.items():
                    _refuse_secret_output(step, name, value, refused)
                refs = {name: self._save_output(step, name, value, refused) for name, value in named.items()}
                for name, extra in logged.per_output.items():
                    refs[name] = replace(refs[name], metadata={**refs[name].metadata, "logged": extra})
            except Exception as exc:
                deterministic = isinstance(
                    exc,
                    (MaterializationError, ArtifactMissing, StepDefinitionError, SecretValueError, ConfigurationError),
                )
                retryable = not deterministic and attempt < attempts
                status = RunStatus.RETRY if retryable else RunStatus.FAILED
                # the traceback shows source lines: credentials written in them are scrubbed too
                shown = secrets | traceback_secret_literals(exc.__traceback__) | resolved_secrets()
                message = scrub(f"{type(exc).__name__}: {exc}", shown)
                tb = scrub(traceback.format_exc(), shown)
                duration = (time.perf_counter() - started) * 1000
                self.metadata.finish_step_run(
                    step_run_id,
                    {"status": status, "error": message, "traceback": tb, "duration_ms": duration},
                    inputs=inputs,
                    step_name=step.name,
                    release=None if retryable else release,
                )
                lineage.emit("on_step_end", {**row, "status": status, "error": message, "traceback": tb})
                if retryable:
                    log.warning("step %r attempt %d/%d failed: %s; retrying", step.name, attempt, attempts, message)
                    if step.retry_delay:
                        time.sleep(step.retry_delay)
                    continue
                failure = _scrubbed_failure(step, attempt, step_run_id, exc, message, tb)
            except BaseException as exc:  # interrupted (Ctrl-C, task killed): not a failure of the step
                self.metadata.finish_step_run(
                    step_run_id,
                    {
                        "status": RunStatus.ABORTED,
                        "error": type(exc).__name__,
                        "duration_ms": (time.perf_counter() - started) * 1000,
                    },
                    inputs=inputs,
                    step_name=step.name,
                    release=release,
                )
                lineage.emit("on_step_end", {**row, "status": RunStatus.ABORTED, "error": type(exc).__name__})
                raise
            if failure is not None:
                # Raised here, outside the handler: the step's own exception (which may carry secrets in its
                # message, arguments or attributes) is neither the cause nor the context of what callers,
                # orchestrator logs and lineage integrations see. Nor does this frame hold the arguments
                # or the secrets: traceback formatters that print locals would show them.
                prepared = call_args = values = secrets = shown = in_outputs = known = None  # type: ignore[assignment]  # noqa: F841
                result = named = None  # type: ignore[assignment]  # noqa: F841
                raise failure
            duration = (time.perf_counter() - started) * 1000
            expires = time.time() + step.cache.expires_after if step.cache.expires_after else None
            outputs_json = {k: v.to_dict() for k, v in refs.items()}
            run_metadata = logged.run or None
            self.metadata.finish_step_run(
                step_run_id,
                {
                    "status": RunStatus.COMPLETED,
                    "outputs": outputs_json,
                    "duration_ms": duration,
                    "metadata": run_metadata,
                },
                outputs=refs,
                inputs=inputs,
                step_name=step.name,
                cache_key=key,
                expires_at=expires,
                release=release,
            )
            lineage.emit(
                "on_step_end",
                {
                    **row,
                    "status": RunStatus.COMPLETED,
                    "outputs": outputs_json,
                    "duration_ms": duration,
                    "metadata": run_metadata,
                },
            )
            return StepResult(
                step_run_id=step_run_id,
                step_name=step.name,
                invocation=base["invocation"],
                status=RunStatus.COMPLETED,
                cache_hit=False,
                outputs=refs,
                cache_key=key,
                duration_ms=(time.perf_counter() - prepared.t0) * 1000,
                artifacts=self.artifacts,
            )


def _refused_output(step: Step[Any, Any], name: str, what: str) -> SecretValueError:
    return SecretValueError(
        f"step {step.name!r}: output {name!r} holds a secret ({what}); isthmus never writes secrets into "
        "artifacts: return the value without it, and pass the secret to the steps that need it as a "
        "parameter (stored as ***) or read it inside them"
    )


def _refuse_secret_output(step: Step[Any, Any], name: str, value: Any, known: frozenset[str]) -> None:
    """Raise :class:`SecretValueError` when an output holds a secret: it would be written into an artifact
    (a file anyone with the artifact root can read, and a cache entry shared across orchestrators)."""
    found = find_secret(value, known)
    if found is None and known:
        chosen = next(iter(candidates(value, step.materializers.get(name))), None)
        inside = chosen.contents_secret(value, known) if chosen is not None else None
        found = None if inside is None else (f" ({inside})", "a secret the step was given")
    if found is not None:
        where, what = found
        raise _refused_output(step, name, f"{what} at {name}{where}")


def _scrubbed_failure(
    step: Step[Any, Any], attempt: int, step_run_id: str, exc: BaseException, message: str, tb: str
) -> StepFailed:
    """The StepFailed to raise for ``exc``: scrubbed text only, with a :class:`ScrubbedError` as its cause."""
    failure = StepFailed(
        f"step {step.name!r} failed after {attempt} attempt(s): {message}", step_name=step.name, step_run_id=step_run_id
    )
    exc_type = type(exc)
    failure.__cause__ = ScrubbedError(
        message, original_type=f"{exc_type.__module__}.{exc_type.__qualname__}", traceback_text=tb
    )
    failure.__suppress_context__ = True
    return failure


_default_runner: StepRunner | None = None


def default_runner() -> StepRunner:
    """A StepRunner on the configured default stores (rebuilt after :func:`isthmus.configure`)."""
    global _default_runner
    meta, arts = defaults.metadata_store(), defaults.artifact_store()
    if _default_runner is None or _default_runner.metadata is not meta or _default_runner.artifacts is not arts:
        _default_runner = StepRunner(meta, arts, get_settings())
    return _default_runner


def run_step(
    step: Step[Any, Any], arguments: Mapping[str, Any], context: RunContext | None = None, *, recompute: bool = False
) -> StepResult:
    """Run one step through the default StepRunner (``recompute``: see :meth:`StepRunner.run`)."""
    try:
        return default_runner().run(step, arguments, context, recompute=recompute)
    except StepFailed:
        arguments = None  # type: ignore[assignment]  # noqa: F841 - not shown by locals-printing formatters
        raise
