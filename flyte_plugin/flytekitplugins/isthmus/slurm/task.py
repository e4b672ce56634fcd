"""The ``isthmus_slurm`` task: :class:`SlurmJob` (its config) and :class:`IsthmusSlurmTask`.

    train_task = isthmus_task(steps.train, slurm=SlurmJob(partition="gpu"))

    featurize_task = isthmus_task(
        steps.featurize, slurm=SlurmJob(backend="rest", client_options={"url": "https://slurm:6820"})
    )

Nothing secret goes into the task template: the slurmrestd token comes from the environment
(``$SLURM_JWT`` by default) or a flytekit secret where the client is built. ``SlurmJob`` task configs
build an :class:`IsthmusSlurmTask` (registered with flytekit at the bottom of this module).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from flytekit.core.base_task import TaskMetadata
from flytekit.core.context_manager import FlyteContextManager
from flytekit.core.task import TaskPlugins
from flytekit.extend.backend.base_connector import AsyncConnectorExecutorMixin, Resource, ResourceMeta
from flytekit.models.literals import LiteralMap

from flytekitplugins.isthmus.context import finish_pipeline_run, flyte_run
from flytekitplugins.isthmus.registration import TASK_TYPE
from flytekitplugins.isthmus.task import DISPATCHING, IsthmusTask
from flytekitplugins.isthmus.transformer import ArtifactRefTransformer, is_small_type
from isthmus.artifacts.refs import ArtifactRef
from isthmus.errors import StepDefinitionError
from isthmus.records import RunStatus
from isthmus.redaction import is_secret_env, redact_url, scrub, secret_values
from isthmus.runner import default_runner
from isthmus.slurm import SlurmExecutor, SlurmJobOptions
from isthmus.slurm.backends import backend_class, check_kind

if TYPE_CHECKING:
    from flytekit.configuration import SerializationSettings

    from flytekitplugins.isthmus.config import Isthmus
    from isthmus.slurm import SlurmClient, SlurmExecutor, SlurmJobOptions

log = logging.getLogger("flytekitplugins.isthmus")

_SECRET_OPTION_WORDS = ("token", "password", "passphrase", "secret", "jwt")
_OWN_FIELDS = ("backend", "client_options", "token_env", "token_secret")

# Set by IsthmusSlurmTask.execute in a local execution: the run the task belongs to (a connector
# service derives it from the task execution metadata instead).
LOCAL_RUN: ContextVar[Any] = ContextVar("isthmus_slurm_local_run", default=None)
# The input literals flytekit handed the task (they carry the artifact refs in their metadata).
_INPUT_LITERALS: ContextVar[LiteralMap | None] = ContextVar("isthmus_slurm_inputs", default=None)


class SlurmJob:
    """Run an isthmus step as a Slurm job from Flyte: ``isthmus_task(step, slurm=SlurmJob(...))``.

    - the job's options, as keyword arguments (``partition``, ``account``, ``qos``, ``constraint``,
      ``extra_options``, ``env``, ``python``, ``pythonpath``, ``work_root``, ``record``): the fields of
      :class:`isthmus.slurm.SlurmJobOptions`, kept as ``options`` and readable as attributes; ``env``
      travels in the task template, so it holds no secrets;
    - ``backend``: a backend of :data:`isthmus.slurm.backends.BACKENDS` (default: the registry's
      default), run where the connector runs; ``client_options``: its non-secret options (``host``,
      ``user``, ``key_file``, ``known_hosts`` for SSH; ``url`` or ``socket``, ``user``, ``version`` for
      slurmrestd);
    - the token of a backend that takes one is never part of the config: it is read where the client is
      built, from the flytekit secret ``token_secret`` (``"group/key"`` or ``"key"``) or else the
      environment variable ``token_env`` (default ``SLURM_JWT``, what ``scontrol token`` prints).
    """

    def __init__(
        self,
        *,
        backend: str | None = None,
        client_options: dict[str, Any] | None = None,
        token_env: str | None = "SLURM_JWT",
        token_secret: str | None = None,
        **options: Any,
    ) -> None:

        unknown = sorted(set(options) - set(SlurmJobOptions.names()))
        if unknown:
            raise TypeError(f"SlurmJob() got unexpected keyword argument(s) {', '.join(unknown)}")
        try:
            self.options: SlurmJobOptions = SlurmJobOptions(**options)
        except StepDefinitionError as exc:
            raise ValueError(f"SlurmJob: {exc}") from None
        self.backend = check_kind(backend, "SlurmJob: backend")
        self.client_options = dict(client_options or {})
        self.token_env = token_env
        self.token_secret = token_secret
        self._check_secrets()

    def _check_secrets(self) -> None:
        """The config is stored in the Flyte task template: refuse credentials in it."""
        for key in self.client_options:
            if any(word in key.lower() for word in _SECRET_OPTION_WORDS):
                raise ValueError(
                    f"SlurmJob(client_options={{{key!r}: ...}}): credentials must not be part of the task config "
                    f"(it is stored in the Flyte task template); put the slurmrestd token in ${self.token_env or 'SLURM_JWT'} "
                    "or a flytekit secret named by token_secret='group/key'"
                )
        url = self.client_options.get("url")
        if url and redact_url(str(url)) != str(url):
            raise ValueError(
                "SlurmJob(client_options={'url': ...}): the URL carries credentials; "
                "pass the token through token_env / token_secret instead"
            )
        # env (and a client's own job environment) travel in the task template: no credentials there
        for where, env in (
            ("env", self.options.env),
            *((f"client_options[{k!r}]", v) for k, v in self.client_options.items() if k in ("env", "job_env")),
        ):
            if not isinstance(env, dict):
                raise ValueError(f"SlurmJob({where}={env!r}) must be a dict of environment variables")
            secret = sorted(str(k) for k, v in env.items() if is_secret_env(str(k), str(v)))
            if secret:
                raise ValueError(
                    f"SlurmJob({where}=...): {', '.join(secret)} hold(s) credentials (by name, or a URL with a "
                    "password), and this is stored in the Flyte task template; provide secrets where the connector "
                    "or the job runs instead (its environment, a flytekit secret, the metadata store's own config)"
                )

    def __getattr__(self, name: str) -> Any:
        options = self.__dict__.get("options")
        if options is not None and name in options.names():
            return getattr(options, name)
        raise AttributeError(f"'SlurmJob' object has no attribute {name!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SlurmJob) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SlurmJob({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"

    # -- (de)serialization: the task template's custom field and the connector's resource meta --
    def to_dict(self) -> dict[str, Any]:
        return {**self.options.to_dict(), **{k: getattr(self, k) for k in _OWN_FIELDS}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SlurmJob:
        known = (*SlurmJobOptions.names(), *_OWN_FIELDS)
        return cls(**{k: v for k, v in (data or {}).items() if k in known})

    # -- what it builds ------------------------------------------------------------------------
    def token(self) -> str | None:
        """The slurmrestd token: the flytekit secret ``token_secret``, else ``$token_env``."""
        if self.token_secret:
            group, _, key = self.token_secret.rpartition("/")
            try:
                import flytekit

                value = flytekit.current_context().secrets.get(group=group or None, key=key)
                if value:
                    return str(value).strip()
            except Exception as exc:  # fall back to the environment
                log.debug("flytekit secret %r not available: %s", self.token_secret, exc)
        if self.token_env:
            value = os.environ.get(self.token_env)
            if value:
                return value.strip()
        return None

    def connect(self) -> SlurmClient:
        """A client of ``backend`` with ``client_options`` (and the token, for a backend that takes one)."""
        cls = backend_class(self.backend)
        options = dict(self.client_options)
        if cls.takes_token:
            token = self.token()
            if token:
                options["token"] = token
        for key in ("port",):  # numbers come back as floats from a protobuf Struct
            if isinstance(options.get(key), float):
                options[key] = int(options[key])
        return cls(**options)

    def executor(self, client: SlurmClient, runner: Any = None) -> SlurmExecutor:
        return SlurmExecutor(client, runner or default_runner(), options=self.options)


class IsthmusSlurmTask(AsyncConnectorExecutorMixin, IsthmusTask):
    """An isthmus step run as a Slurm job by :class:`IsthmusSlurmConnector` (task type ``isthmus_slurm``).

    Built by ``isthmus_task(step, slurm=SlurmJob(...))``. The step's ``Resources`` become the job's
    sbatch options (cpus, memory, GPUs, partition, time limit); the Flyte task has no pod, so no pod
    resources and no Flyte timeout (the Slurm time limit applies).
    """

    def __init__(
        self,
        task_config: Isthmus | None,
        task_function: Any,
        task_type: str = TASK_TYPE,
        *,
        slurm: SlurmJob | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(task_config, SlurmJob):  # @task(task_config=SlurmJob(...))
            name = getattr(task_function, "__name__", "fn")
            raise TypeError(
                f"@task(task_config=SlurmJob(...)) on {name!r}: the Slurm job imports the step by its path, "
                f"and @task puts the task where the function was; decorate the function with @step and "
                f"build the task with isthmus_task({name}, slurm=SlurmJob(...)) under another name"
            )
        if kwargs.get("enable_deck"):
            raise TypeError("enable_deck is not available for a Slurm task: the step runs in a Slurm job, not here")
        metadata = kwargs.get("metadata") or TaskMetadata()
        kwargs["metadata"] = metadata
        timeout = metadata.timeout
        super().__init__(task_config, task_function, task_type=task_type, **kwargs)
        self._slurm = slurm or SlurmJob()
        # No pod runs this task: pod settings derived from the step's Resources do not apply, and the
        # step's time limit is the job's (a Flyte timeout would also count the time in the queue).
        self.pod_template = None
        self.accelerator = None
        self.metadata.timeout = timeout

    @property
    def slurm(self) -> SlurmJob:
        return self._slurm

    def get_custom(self, settings: SerializationSettings) -> dict[str, Any]:
        """What the connector needs (JSON, no credentials): the step, the task options and the SlurmJob."""
        self._step.check_importable()
        return {
            "step": self._step.import_path,
            "task_name": self.name,
            **self.task_config.to_options(),
            "slurm": self._slurm.to_dict(),
        }

    def dispatch_execute(self, ctx: Any, input_literal_map: LiteralMap) -> Any:
        token = _INPUT_LITERALS.set(input_literal_map)
        try:
            return super().dispatch_execute(ctx, input_literal_map)
        finally:
            _INPUT_LITERALS.reset(token)

    def execute(self, **kwargs: Any) -> Any:
        """Local execution: flytekit's connector mixin runs :class:`IsthmusSlurmConnector` in-process —
        create (cache lookup or submit), poll until the job ends, outputs."""
        from flytekit.core.promise import Promise

        config = self.task_config
        run = flyte_run(self.name, config.pipeline, config.invocation or self._step.name)
        given = _INPUT_LITERALS.get()
        literals = given.literals if given is not None and DISPATCHING.get() else {}
        # The input literals as flytekit handed them over (their metadata carries the artifact refs);
        # a Promise passes a literal through the mixin's conversion unchanged.
        passed = {name: Promise(var=name, val=literals[name]) if name in literals else v for name, v in kwargs.items()}
        passed = {name: self._ref_literal(name, v) for name, v in passed.items()}
        token = LOCAL_RUN.set(run)
        try:
            with _serializable_context():
                out = super().execute(**passed)
        except Exception as exc:
            if run.local and run.pipeline_run_id:  # a local workflow stops at the first failure
                error = scrub(f"{type(exc).__name__}: {exc}", secret_values(kwargs))
                finish_pipeline_run(default_runner(), run.pipeline_run_id, RunStatus.FAILED, error=error)
            raise
        finally:
            LOCAL_RUN.reset(token)
        if DISPATCHING.get() or not isinstance(out, LiteralMap):
            return out
        # called directly (not through dispatch_execute): Python values, as IsthmusTask returns them
        from flytekit.core.type_engine import TypeEngine

        ctx = FlyteContextManager.current_context()
        values = TypeEngine.literal_map_to_kwargs(ctx, out, self.python_interface.outputs)
        native = [values[n] for n in self.python_interface.outputs]
        return native[0] if len(native) == 1 else tuple(native)

    def _ref_literal(self, name: str, value: Any) -> Any:
        """An ArtifactRef handed to an input declared as a small type (an upstream ref outside
        dispatch) travels as a ref literal: the connector reads the ref from its metadata."""
        from flytekit.core.promise import Promise

        if isinstance(value, Promise) or not isinstance(value, ArtifactRef):
            return value
        if not is_small_type(self.python_interface.inputs.get(name)):
            return value
        ctx = FlyteContextManager.current_context()
        transformer = ArtifactRefTransformer()
        lv = transformer.to_literal(ctx, value, ArtifactRef, transformer.get_literal_type())
        return Promise(var=name, val=lv)

    async def _get(self, resource_meta: ResourceMeta) -> Resource:
        if not getattr(resource_meta, "job_id", None):  # a cache hit: no job to poll
            return await self._connector.get(resource_meta=resource_meta)
        try:
            return await super()._get(resource_meta)
        except Exception:
            # polling broke off (flytekit calls no delete then): no job outlives the local run
            try:
                await self._connector.delete(resource_meta=resource_meta)
            except Exception as exc:
                log.warning("Slurm job %s: cancelling it after the error failed: %s", resource_meta.job_id, exc)
            raise


@contextlib.contextmanager
def _serializable_context() -> Iterator[None]:
    """The connector mixin serializes the task into a template; a plain local ``wf()`` call has no
    serialization settings (``pyflyte run`` has), so lend it flytekit's default image."""
    ctx = FlyteContextManager.current_context()
    if ctx.serialization_settings is not None:
        yield
        return
    from flytekit.configuration import ImageConfig, SerializationSettings

    settings = SerializationSettings(ImageConfig.auto_default_image())
    with FlyteContextManager.with_context(ctx.with_serialization_settings(settings)):
        yield


TaskPlugins.register_pythontask_plugin(SlurmJob, IsthmusSlurmTask)

__all__ = ["TASK_TYPE", "IsthmusSlurmTask", "SlurmJob"]
