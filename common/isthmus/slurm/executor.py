"""Run a step as a Slurm job: cache lookup first, then a batch job whose script runs the isthmus remote
entrypoint, then the result manifest (ingested when the job could not reach the metadata database).

The Airflow operator and trigger (and later the Flyte connector) use this module; so can a script::

    from isthmus.slurm import SlurmExecutor, connect
    result = SlurmExecutor(connect("cli")).run(train, {"features": ref, "n_estimators": 200})
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import posixpath
import shlex
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from isthmus.artifacts.errors import HoldsSecret
from isthmus.artifacts.refs import ArtifactRef, json_depth_error
from isthmus.context import RunContext
from isthmus.errors import StepDefinitionError
from isthmus.lineage.parent import PARENT_KEY, ROOT_KEY, RUN_ID_KEY, env_for
from isthmus.manifest import MANIFEST_KEY_ENV, is_authentic, job_manifest_key
from isthmus.parameters import json_param, ref_list
from isthmus.pinned import resolve_argument
from isthmus.records import RunStatus
from isthmus.redaction import forbidden_bytes, is_secret_env
from isthmus.remote import ingest_manifest
from isthmus.runner import StepResult, StepRunner, default_runner
from isthmus.secret_params import (
    SECRET_PARAMS_ENV,
    call_secrets,
    encode_secret_params,
    secret_param_names,
    secret_texts,
)
from isthmus.slurm.backends.base import SlurmClient, cancel_quietly, run_sync
from isthmus.slurm.errors import SlurmJobRecordError, SlurmStepFailed, SlurmSubmitError
from isthmus.slurm.lineage import emit_waiting
from isthmus.slurm.options import SlurmJobOptions, merge_options
from isthmus.slurm.spec import JobSpec, job_name_for
from isthmus.slurm.states import JobStatus
from isthmus.step import Step

log = logging.getLogger("isthmus.slurm")
# Passed on to the job when set here (the job records, caches, verifies and emits lineage like this
# process). Every ``OPENLINEAGE__...`` variable (transport settings) is passed on too.
_PASS_ENV = (
    "ISTHMUS_LEASE_TTL",
    "ISTHMUS_ENV_ALLOWLIST",
    "ISTHMUS_IMAGE",
    "ISTHMUS_LINEAGE",
    "OPENLINEAGE_URL",
    "OPENLINEAGE_API_KEY",
    "OPENLINEAGE_ENDPOINT",
    "OPENLINEAGE_CONFIG",
    "OPENLINEAGE_NAMESPACE",
    "OPENLINEAGE_DISABLED",
)
SECRET_ENV_FILE = "job.env"  # in the job directory, mode 0600: what must not be in the batch script


@dataclass(frozen=True)
class SecretParam:
    """A parameter holding a secret (see :mod:`isthmus.secret_params`): the job receives it through its
    0600 credentials file, never on its command line, in its script or as an input artifact."""

    value: Any

    def __repr__(self) -> str:
        return "SecretParam(***)"


@dataclass
class SubmittedJob:
    """A step's job: where its manifest and logs go. JSON-serializable (Airflow trigger kwargs)."""

    job_id: str
    job_name: str
    step_path: str
    step_name: str
    work_dir: str
    manifest: str
    stdout: str
    stderr: str
    record: str = "db"
    adopted: bool = False
    spec: dict[str, Any] = field(default_factory=dict)
    backend: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)  # the run context (for lineage while it waits)
    inputs: dict[str, Any] = field(default_factory=dict)  # input artifact refs
    cache_key: str | None = None
    code_hash: str | None = None  # the step's fingerprints, for lineage while it waits
    deps_hash: str | None = None
    secret_env_file: str | None = None  # removed once the job is collected

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SubmittedJob:
        """A job record from its JSON form (Airflow trigger kwargs, Flyte resource meta): untrusted, so the
        files isthmus reads or removes for it must lie inside its job directory."""
        job = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        job.check_paths()
        return job

    def check_paths(self) -> None:
        """Raise :class:`SlurmJobRecordError` unless the manifest, logs and credentials file are files of
        ``work_dir``: a crafted record cannot make isthmus read or remove anything else."""
        work_dir = _clean_path(self.work_dir, "work_dir", self.job_name)
        for name in ("manifest", "stdout", "stderr", "secret_env_file"):
            value = getattr(self, name)
            if not value and name in ("stdout", "stderr", "secret_env_file"):
                continue
            path = _clean_path(value, name, self.job_name)
            if posixpath.dirname(path) != work_dir:
                raise SlurmJobRecordError(
                    f"Slurm job record {self.job_name!r}: {name} {value!r} is not a file of its job directory "
                    f"{self.work_dir!r}; job records are not edited by hand"
                )
        if self.secret_env_file and posixpath.basename(self.secret_env_file) != SECRET_ENV_FILE:
            raise SlurmJobRecordError(
                f"Slurm job record {self.job_name!r}: secret_env_file {self.secret_env_file!r} must be "
                f"{SECRET_ENV_FILE!r} in its job directory"
            )


def _clean_path(value: Any, name: str, job_name: str) -> str:
    """``value`` as a normalised POSIX path without ``..``, NUL or control characters."""
    if not isinstance(value, str) or not value or any(c < " " or c == "\x7f" for c in value):
        raise SlurmJobRecordError(f"Slurm job record {job_name!r}: {name} {value!r:.120} is not a path")
    if ".." in value.split("/"):
        raise SlurmJobRecordError(f"Slurm job record {job_name!r}: {name} {value!r:.120} contains '..'")
    return posixpath.normpath(value)


def import_root(step: Step[Any, Any]) -> str | None:
    """The directory to put on PYTHONPATH so the job imports ``step``'s module as it is imported here."""
    mod = sys.modules.get(step.module)
    path = getattr(mod, "__file__", None)
    if not path:
        return None
    root = os.path.dirname(os.path.abspath(path))
    if os.path.basename(path).startswith("__init__."):
        root = os.path.dirname(root)
    for _ in range(step.module.count(".")):
        root = os.path.dirname(root)
    return root


class SlurmExecutor:
    """Submit steps as Slurm jobs through ``client`` and record them in ``runner``'s stores.

    The job's options are a :class:`~isthmus.slurm.options.SlurmJobOptions` (``options=``) or its fields
    as keyword arguments (``partition=``, ``account=``, ``qos=``, ``constraint=``, ``extra_options=``,
    ``env=``, ``python=``, ``pythonpath=``, ``work_root=``, ``record=``), which win over ``options``.
    ``poll_interval``: seconds between polls while waiting for a job.
    """

    def __init__(
        self,
        client: SlurmClient,
        runner: StepRunner | None = None,
        *,
        options: SlurmJobOptions | None = None,
        poll_interval: float = 2.0,
        **option_values: Any,
    ) -> None:
        unknown = sorted(set(option_values) - set(SlurmJobOptions.names()))
        if unknown:
            raise TypeError(f"SlurmExecutor() got unexpected keyword argument(s) {', '.join(unknown)}")
        self.options = merge_options(options or SlurmJobOptions(), SlurmJobOptions(**option_values))
        self.client = client
        self.runner = runner or default_runner()
        self.python = self.options.python or sys.executable
        self.work_root = self.options.work_root or str(self.runner.settings.home / "slurm")
        self.record = self.options.record_mode
        self.poll_interval = poll_interval

    # -- arguments and cache -----------------------------------------------------------------------
    def split_arguments(
        self, step: Step[Any, Any], arguments: Mapping[str, Any], secrets: Iterable[str] = ()
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(inputs as ref dicts, JSON params). Objects that are not plain data are saved as input
        artifacts here, exactly as the runner would, so the job computes the same cache key. A parameter
        that holds a secret (by its name, type or form, or one of ``secrets``: values known to be secret
        where the arguments came from) becomes a :class:`SecretParam` in the params."""
        inputs: dict[str, Any] = {}
        params: dict[str, Any] = {}
        secret = secret_param_names(arguments, secrets)
        for name, value in arguments.items():
            # a pin is resolved here, once: the job (which may not reach the metadata store) gets its ref
            value = resolve_argument(
                value, self.runner.metadata, self.runner.artifacts, where=f"step {step.name!r}: input {name!r}"
            )
            ref = ArtifactRef.coerce(value)
            if ref is not None:
                inputs[name] = ref.to_dict()
                continue
            if name in secret:
                encode_secret_params(step.name, {name: value})  # one that cannot travel is refused now
                params[name] = SecretParam(value)
                continue
            refs = ref_list(value)
            if refs is not None:
                params[name] = [r.to_dict() for r in refs]
                continue
            try:
                params[name] = json_param(value)
            except TypeError:
                try:  # an object whose stored form holds a secret the call knows is never stored
                    saved = self.runner.artifacts.save(
                        value,
                        step_name=step.name,
                        output=f"input:{name}",
                        forbidden=forbidden_bytes(value, call_secrets(arguments, secrets)),
                    )
                except HoldsSecret:
                    raise StepDefinitionError(
                        f"step {step.name!r}: input {name!r} ({type(value).__name__}) holds a secret where only "
                        "its stored form shows it, and a Slurm job gets secrets only as parameters: pass the "
                        "secret as a secret-named or SecretStr parameter and build the object inside the step"
                    ) from None
                inputs[name] = saved.to_dict()
        return inputs, params

    def arguments_for_runner(self, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        plain = {k: v.value if isinstance(v, SecretParam) else v for k, v in params.items()}
        return {**plain, **{k: ArtifactRef.from_dict(v) for k, v in inputs.items()}}

    @staticmethod
    def given_secrets(params: Mapping[str, Any]) -> frozenset[str]:
        """The secrets a run of the step is given: the text its secret params hold (the job passes the
        same to its runner, so both compute the same cache key)."""
        return secret_texts({k: v.value for k, v in params.items() if isinstance(v, SecretParam)})

    def lookup(
        self, step: Step[Any, Any], inputs: dict[str, Any], params: dict[str, Any], ctx: RunContext
    ) -> StepResult | None:
        """A cache hit (recorded) or None: a hit means no job at all."""
        arguments = self.arguments_for_runner(inputs, params)
        return self.runner.lookup(step, arguments, ctx, secrets=self.given_secrets(params))

    def cache_key(
        self, step: Step[Any, Any], inputs: dict[str, Any], params: dict[str, Any], ctx: RunContext
    ) -> str | None:
        """The cache key the job will compute (None when the step does not cache)."""
        arguments = self.arguments_for_runner(inputs, params)
        return self.runner.cache_key(step, arguments, ctx, secrets=self.given_secrets(params))

    # -- the job -----------------------------------------------------------------------------------
    def manifest_key(self, work_dir: str) -> bytes:
        """The key the job in ``work_dir`` signs its manifest with (derived from the metadata store's secret
        salt: whichever process collects the job derives it again; it is never written into a record)."""
        return job_manifest_key(self.runner.metadata.secret_salt(), work_dir)

    def _job_env(self, step: Step[Any, Any], ctx: RunContext, work_dir: str) -> tuple[dict[str, str], dict[str, str]]:
        """(variables exported by the batch script, credentials that go to a 0600 file it sources: those of
        the environment, and the key the job signs its manifest with)."""
        arts = self.runner.artifacts
        root = arts.root if arts.local else f"{arts.protocol}://{arts.root}"
        env = {
            "ISTHMUS_HOME": str(self.runner.settings.home),
            "ISTHMUS_ARTIFACT_ROOT": root,
            "ISTHMUS_VERIFY": arts.verify_mode,
        }
        if self.record == "db":
            env["ISTHMUS_STORE_URL"] = self.runner.metadata.url
        paths = [p for p in [import_root(step), *self.options.pythonpath] if p]
        existing = os.environ.get("PYTHONPATH")
        if existing:
            paths.append(existing)
        if paths:
            env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        for name, value in os.environ.items():
            if value and (name in _PASS_ENV or name.startswith("OPENLINEAGE__")):
                env[name] = value
        env.update(env_for(ctx.native.get(PARENT_KEY), ctx.native.get(ROOT_KEY)))
        env.update(self.options.env)
        secret = {k: v for k, v in env.items() if is_secret_env(k, v)}
        secret[MANIFEST_KEY_ENV] = self.manifest_key(work_dir).hex()
        return {k: v for k, v in env.items() if k not in secret}, secret

    def build(
        self,
        step: Step[Any, Any],
        inputs: dict[str, Any],
        params: dict[str, Any],
        ctx: RunContext,
        cache_key: str | None = None,
    ) -> tuple[JobSpec, SubmittedJob]:
        """The job spec and script for one step run (no side effects)."""
        step.check_importable()
        name = job_name_for(step.name, ctx, cache_key, salt=self.work_root)
        if not ctx.pipeline_run_id and RUN_ID_KEY not in ctx.native:
            # no pipeline run to derive the OpenLineage run id from: choose one, so the OTHER sent
            # while the job waits and the job's own START/COMPLETE are one run
            ctx = replace(ctx, native={**ctx.native, RUN_ID_KEY: str(uuid.uuid4())})
        work_dir = f"{self.work_root.rstrip('/')}/{name}"
        manifest_dir = work_dir
        command = [
            self.python,
            "-m",
            "isthmus.slurm",
            "run-step",
            "--step",
            step.import_path,
            "--inputs",
            json.dumps(inputs, sort_keys=True),
            "--params",
            json.dumps({k: v for k, v in params.items() if not isinstance(v, SecretParam)}, sort_keys=True),
            "--context",
            json.dumps(ctx.to_dict(), sort_keys=True, default=str),
            "--record",
            self.record,
        ]
        env, secret = self._job_env(step, ctx, work_dir)
        code_fp, deps_fp = self.runner.fingerprints(step)
        secret_file = f"{work_dir}/{SECRET_ENV_FILE}"
        lines = [
            "#!/bin/bash",
            f"# isthmus step {step.name} ({step.import_path}); written by isthmus.slurm",
            *[f"export {k}={shlex.quote(v)}" for k, v in env.items()],
            f"set -a; . {shlex.quote(secret_file)}; set +a  # credentials: {', '.join(sorted(secret))}",
            f'echo "isthmus: step {step.name} in Slurm job $SLURM_JOB_ID on $(hostname) (restart ${{SLURM_RESTART_COUNT:-0}})"',
            f'exec {shlex.join(command)} --manifest "{manifest_dir}/manifest-$SLURM_JOB_ID.json"',
        ]
        label = f"step {step.name!r}: "
        try:
            spec = JobSpec.from_resources(
                step.resources,
                name=name,
                script="\n".join(lines) + "\n",
                partition=step.resources.partition or self.options.partition,
                account=step.resources.account or self.options.account,
                qos=step.resources.qos or self.options.qos,
                constraint=self.options.constraint,
                extra_options=list(self.options.extra_options),
                env=env,
                work_dir=work_dir,
                stdout=f"{work_dir}/slurm-%j.out",
                stderr=f"{work_dir}/slurm-%j.err",
                label=label,
            )
        except StepDefinitionError as exc:
            text = str(exc)
            raise StepDefinitionError(text if text.startswith(label) else f"{label}{text}") from None
        job = SubmittedJob(
            job_id="",
            job_name=name,
            step_path=step.import_path,
            step_name=step.name,
            work_dir=work_dir,
            manifest=f"{manifest_dir}/manifest-%j.json",
            stdout=spec.stdout or "",
            stderr=spec.stderr or "",
            record=self.record,
            spec=spec.to_dict(),
            backend=self.client.describe(),
            context=json.loads(json.dumps(ctx.to_dict(), default=str)),
            inputs=dict(inputs),
            cache_key=cache_key,
            code_hash=code_fp.hash,
            deps_hash=deps_fp.hash,
            secret_env_file=secret_file,
        )
        return spec, job

    async def submit(
        self,
        step: Step[Any, Any],
        inputs: dict[str, Any],
        params: dict[str, Any],
        ctx: RunContext,
        *,
        cache_key: str | None = None,
        adopt: bool = True,
    ) -> SubmittedJob:
        """Submit the step's job — or, with ``adopt``, follow a job of the same name (same task, same
        inputs) that is still queued/running or completed, instead of submitting twice."""
        spec, job = self.build(step, inputs, params, ctx, cache_key)
        if adopt:
            for found in await self.client.find(spec.name):
                if not found.terminal or found.success:
                    log.info(
                        "step %r: following Slurm job %s (%s) submitted earlier for this task",
                        step.name,
                        found.job_id,
                        found.state,
                    )
                    return self._with_id(job, found.job_id, adopted=True)
        await self.client.make_dirs(job.work_dir)
        if job.secret_env_file:
            secret = self._job_env(step, ctx, job.work_dir)[1]
            hidden = {k: v.value for k, v in params.items() if isinstance(v, SecretParam)}
            if hidden:
                secret[SECRET_PARAMS_ENV] = encode_secret_params(step.name, hidden)
            text = "".join(f"{k}={shlex.quote(v)}\n" for k, v in secret.items())
            await self.client.write_file(job.secret_env_file, text, mode=0o600)
        try:
            job_id = await self.client.submit(spec)
        except BaseException as exc:
            await self.forget_secrets(job)
            if isinstance(exc, SlurmSubmitError):
                raise SlurmSubmitError(f"step {step.name!r}: {exc}") from None
            raise
        log.info("step %r: submitted Slurm job %s (%s) via %s", step.name, job_id, spec.name, self.client.kind)
        return self._with_id(job, job_id)

    @staticmethod
    def _with_id(job: SubmittedJob, job_id: str, adopted: bool = False) -> SubmittedJob:
        data = job.to_dict()
        if adopted:  # the run id the found job carries is its own, not the one just chosen for a new job
            native = {k: v for k, v in (data["context"].get("native") or {}).items() if k != RUN_ID_KEY}
            data["context"] = {**data["context"], "native": native}
        data.update(
            job_id=str(job_id),
            adopted=adopted,
            manifest=job.manifest.replace("%j", str(job_id)),
            stdout=job.stdout.replace("%j", str(job_id)),
            stderr=job.stderr.replace("%j", str(job_id)),
        )
        return SubmittedJob.from_dict(data)

    async def read_manifest(self, job: SubmittedJob) -> dict[str, Any] | None:
        return await read_manifest(self.client, job)

    async def forget_secrets(self, job: SubmittedJob) -> None:
        """Remove the job's credentials file (once the job ended or was never submitted)."""
        if job.secret_env_file:
            try:
                await self.client.remove_file(job.secret_env_file)
            except Exception as exc:  # reported, never fatal: the file is the user's own and 0600
                log.warning("could not remove %s: %s", job.secret_env_file, exc)

    async def wait(
        self, job: SubmittedJob, *, timeout: float | None = None, on_change: Callable[[JobStatus], Any] | None = None
    ) -> JobStatus:
        """Poll until the job ends (see :func:`wait_for_job`)."""
        return await wait_for_job(
            self.client, job, poll_interval=self.poll_interval, timeout=timeout, on_change=on_change
        )

    async def wait_until(self, job: SubmittedJob, states: set[str], *, timeout: float = 60) -> JobStatus:
        """Poll until the job is in one of ``states`` (or ends); raises TimeoutError."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            status = await self.client.status(job.job_id)
            if status is not None and (status.state in states or status.terminal):
                return status
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"Slurm job {job.job_id} not in {sorted(states)} after {timeout:.0f}s")
            await asyncio.sleep(self.poll_interval)

    async def collect(self, step_name: str, job: SubmittedJob, status: JobStatus) -> StepResult:
        """The step's result from the manifest of a finished job; raises :class:`SlurmStepFailed`.

        The manifest must carry a valid tag under the job's key (see :mod:`isthmus.manifest`): a manifest
        someone else wrote or altered in the job directory is refused, its outputs unused, nothing recorded."""
        await self.forget_secrets(job)
        manifest = await self.read_manifest(job)
        key = self.manifest_key(job.work_dir)
        if manifest is not None and not is_authentic(manifest, key):
            raise SlurmStepFailed(
                f"step {step_name!r}: Slurm job {job.job_id}: the manifest {job.manifest} is not signed with this job's "
                "key (written or altered by something other than the job); its outputs were not used and nothing was "
                "recorded. Check who can write the job directory, then re-run the step",
                step_name=step_name,
                job_id=job.job_id,
                state="FAILED",
            )
        if manifest is not None and manifest.get("records"):
            added = ingest_manifest(self.runner.metadata, manifest, artifacts=self.runner.artifacts, key=key)
            log.info("step %r: ingested %d record(s) from the manifest of job %s", step_name, added, job.job_id)
        if status.success and manifest is not None and manifest.get("status") == RunStatus.COMPLETED:
            outputs = {k: ArtifactRef.from_dict(v) for k, v in (manifest.get("outputs") or {}).items()}
            return StepResult(
                step_run_id=manifest.get("step_run_id") or "",
                step_name=step_name,
                invocation=(manifest.get("context") or {}).get("invocation") or step_name,
                status=RunStatus.COMPLETED,
                cache_hit=bool(manifest.get("cache_hit")),
                outputs=outputs,
                cache_key=manifest.get("cache_key"),
                source_step_run_id=manifest.get("source_step_run_id"),
                artifacts=self.runner.artifacts,
            )
        logs = await self.client.logs(_status_with_paths(status, job))
        state = status.state if not status.success else "LOST"
        error = (manifest or {}).get("error")
        tb = (manifest or {}).get("traceback")
        if status.success and manifest is None:
            detail = f"the job ended COMPLETED but wrote no manifest at {job.manifest}"
        elif status.success:
            state = "FAILED"
            detail = f"the step failed: {error}"
        elif error:
            detail = f"the step failed: {error}"
        else:
            detail = f"Slurm ended the job {status.state}" + (f" ({status.reason})" if status.reason else "")
        message = f"step {step_name!r}: Slurm job {job.job_id} {state}: {detail}"
        if tb:
            message += f"\n{tb.rstrip()}"
        tail = (logs.get("stderr") or logs.get("stdout") or "").strip()
        if tail and not tb:
            message += "\n--- job log (tail) ---\n" + "\n".join(tail.splitlines()[-30:])
        if state == "TIMEOUT":
            message += "\nfix: raise Resources(time_limit=...) for this step"
        elif state == "OUT_OF_MEMORY":
            message += "\nfix: raise Resources(memory=...) for this step"
        raise SlurmStepFailed(
            message,
            step_name=step_name,
            job_id=job.job_id,
            state=state,
            error=error,
            traceback=tb,
            logs=logs,
            step_run_id=(manifest or {}).get("step_run_id"),
        )

    # -- all in one ----------------------------------------------------------------------------------
    async def arun(
        self,
        step: Step[Any, Any],
        arguments: Mapping[str, Any],
        context: RunContext | None = None,
        *,
        timeout: float | None = None,
        on_submit: Callable[[SubmittedJob], Any] | None = None,
        secrets: Iterable[str] = (),
    ) -> StepResult:
        """Cache lookup; on a miss submit (or adopt) the job, wait, and collect. Cancelling this
        coroutine (or an error while waiting) cancels the job. ``secrets``: values known to be secret where
        the arguments came from (see :meth:`split_arguments`)."""
        ctx = context or RunContext(orchestrator="slurm")
        inputs, params = self.split_arguments(step, arguments, secrets)
        hit = self.lookup(step, inputs, params, ctx)
        if hit is not None:
            return hit
        key = self.cache_key(step, inputs, params, ctx)
        job = await self.submit(step, inputs, params, ctx, cache_key=key)
        if on_submit:
            on_submit(job)
        try:
            status = await self.wait(
                job, timeout=timeout, on_change=lambda st: emit_waiting(job.to_dict(), st.to_dict())
            )
        except SlurmSubmitError as exc:
            raise SlurmSubmitError(f"step {step.name!r}: {exc} (requested {job.spec})") from None
        except BaseException:
            await asyncio.shield(cancel_quietly(self.client, job.job_id))
            await asyncio.shield(self.forget_secrets(job))
            raise
        return await self.collect(step.name, job, status)

    def run(
        self, step: Step[Any, Any], arguments: Mapping[str, Any], context: RunContext | None = None, **kw: Any
    ) -> StepResult:
        """:meth:`arun` from synchronous code."""

        async def go() -> StepResult:
            try:
                return await self.arun(step, arguments, context, **kw)
            finally:
                await self.client.close()

        return run_sync(go())


async def read_manifest(client: SlurmClient, job: SubmittedJob) -> dict[str, Any] | None:
    """The job's result manifest, or None while it has none."""
    text = await client.read_file(job.manifest, max_bytes=64 * 1024 * 1024)
    if not text:
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None  # the writer renames a finished file into place, so this is a foreign file
    return data if isinstance(data, dict) and json_depth_error(data) is None else None


async def wait_for_job(
    client: SlurmClient,
    job: SubmittedJob,
    *,
    poll_interval: float = 2.0,
    timeout: float | None = None,
    on_change: Callable[[JobStatus], Any] | None = None,
) -> JobStatus:
    """Poll until the job ends. A job the controller forgot (no accounting to ask) is settled by its
    manifest; without one it is LOST, never success."""

    async def from_manifest(job_id: str) -> JobStatus | None:
        manifest = await read_manifest(client, job)
        if manifest is None:
            return None
        state = "COMPLETED" if manifest.get("status") == RunStatus.COMPLETED else "FAILED"  # Slurm job states
        return JobStatus(job_id=job_id, state=state, stdout=job.stdout, stderr=job.stderr, source="manifest")

    return await client.wait(
        job.job_id, poll_interval=poll_interval, timeout=timeout, on_change=on_change, fallback=from_manifest
    )


def _status_with_paths(status: JobStatus, job: SubmittedJob) -> JobStatus:
    """The status with the job's log paths filled in when the cluster did not report them."""
    if status.stdout and status.stderr:
        return status
    data = status.to_dict()
    data["stdout"] = status.stdout or job.stdout
    data["stderr"] = status.stderr or job.stderr
    return JobStatus.from_dict(data)
