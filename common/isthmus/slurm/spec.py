"""``JobSpec``: one batch job, built from a step's ``Resources``, as sbatch options or a REST body."""

from __future__ import annotations

import hashlib
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from isthmus.context import RunContext
from isthmus.errors import StepDefinitionError
from isthmus.resources import Resources

# Options isthmus sets itself: given again as extra options they would silently break the contract.
_RESERVED = {
    "--job-name": "job_name",
    "-J": "job_name",
    "--output": "the log paths",
    "-o": "the log paths",
    "--error": "the log paths",
    "-e": "the log paths",
    "--chdir": "work_dir",
    "-D": "work_dir",
    "--parsable": "",
    "--wrap": "",
    "--wait": "",
    "-W": "",
    "--array": "",
    "-a": "",
}
# sbatch options the REST backend can express (option -> (job property, kind)).
REST_OPTIONS: dict[str, tuple[str, str]] = {
    "--exclusive": ("exclusive", "flag"),
    "--requeue": ("requeue", "true"),
    "--no-requeue": ("requeue", "false"),
    "--nice": ("nice", "int"),
    "--reservation": ("reservation", "str"),
    "--comment": ("comment", "str"),
    "--nodelist": ("required_nodes", "str"),
    "-w": ("required_nodes", "str"),
    "--exclude": ("excluded_nodes", "str"),
    "-x": ("excluded_nodes", "str"),
    "--nodes": ("nodes", "str"),
    "-N": ("nodes", "str"),
    "--ntasks": ("tasks", "int"),
    "-n": ("tasks", "int"),
    "--licenses": ("licenses", "str"),
    "-L": ("licenses", "str"),
    "--wckey": ("wckey", "str"),
    "--hold": ("hold", "true"),
    "-H": ("hold", "true"),
}
_NAME_OK = re.compile(r"[^A-Za-z0-9_.-]+")
_TOKEN_OK = re.compile(r"^[A-Za-z0-9_.:+-]+$")


def job_name_for(step_name: str, context: RunContext | None, cache_key: str | None = None, salt: str = "") -> str:
    """A job name derived from the run context: the same task retried derives the same name, so it
    finds the job it already submitted instead of submitting twice. The orchestrator's try number is
    not part of it; the cache key is (changed inputs or code make a different job), and so is ``salt``
    (the executor's job directory: another isthmus home is another task)."""
    ctx = context or RunContext()
    native = ctx.native or {}
    parts = [
        ctx.orchestrator,
        ctx.pipeline_run_id or "",
        ctx.invocation or step_name,
        str(native.get("map_index", "")),
        cache_key or "",
        salt,
    ]
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:12]
    short = _NAME_OK.sub("-", step_name).strip("-")[:40] or "step"
    return f"isthmus-{short}-{digest}"


def _slurm_minutes(seconds: float) -> int:
    return max(1, math.ceil(seconds / 60))


def format_time_limit(seconds: float) -> str:
    """sbatch ``--time`` from seconds, rounded up to whole minutes (Slurm's granularity): ``D-HH:MM:00``."""
    minutes = _slurm_minutes(seconds)
    days, rem = divmod(minutes, 1440)
    hours, mins = divmod(rem, 60)
    return f"{days}-{hours:02d}:{mins:02d}:00" if days else f"{hours:02d}:{mins:02d}:00"


def split_option(option: str) -> tuple[str, str | None]:
    """``"--nice=10"`` -> (``--nice``, ``"10"``); ``"--exclusive"`` -> (``--exclusive``, None)."""
    if option.startswith("--") and "=" in option:
        name, value = option.split("=", 1)
        return name, value
    return option, None


@dataclass
class JobSpec:
    """A batch job: resources, scheduler placement, environment and paths.

    ``script`` is the batch script body (a ``#!`` line is added if missing); ``env`` is exported in
    the job; ``extra_options`` are further sbatch options (``["--exclusive", "--nice=10"]``).
    """

    name: str
    script: str
    cpus_per_task: int | None = None
    mem_mb: int | None = None
    gpus: int = 0
    gpu_type: str | None = None
    time_limit: float | None = None  # seconds
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    extra_options: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    work_dir: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    requeue: bool = True

    def __post_init__(self) -> None:
        self.validate()

    # -- building --------------------------------------------------------------------------------
    @classmethod
    def from_resources(
        cls,
        resources: Resources | Mapping[str, Any] | None,
        *,
        name: str,
        script: str,
        partition: str | None = None,
        account: str | None = None,
        qos: str | None = None,
        constraint: str | None = None,
        extra_options: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        work_dir: str | None = None,
        stdout: str | None = None,
        stderr: str | None = None,
        label: str = "",
    ) -> JobSpec:
        """Map ``Resources``: cpu -> ``--cpus-per-task`` (rounded up), memory -> ``--mem`` (MiB, rounded
        up), gpu/gpu_type -> ``--gres=gpu[:type]:N``, time_limit -> ``--time``, partition/account/qos.
        ``extra["constraint"]`` -> ``--constraint``; other ``extra`` keys starting with ``--`` are sbatch
        options. Keyword arguments given here win over the step's resources (operator/connection
        defaults are passed only where the step sets nothing)."""
        try:
            res = Resources.coerce(resources)
        except StepDefinitionError as exc:
            raise StepDefinitionError(f"{label}{exc}") from None
        extra = dict(res.extra)
        options = [k if v in ("", None) else f"{k}={v}" for k, v in extra.items() if k.startswith("-")]
        return cls(
            name=name,
            script=script,
            cpus_per_task=math.ceil(res.cpu) if res.cpu else None,
            mem_mb=math.ceil(res.memory / 1024**2) if res.memory else None,
            gpus=res.gpu,
            gpu_type=res.gpu_type,
            time_limit=res.time_limit,
            partition=partition or res.partition,
            account=account or res.account,
            qos=qos or res.qos,
            constraint=constraint or extra.get("constraint"),
            extra_options=[*options, *extra_options],
            env=dict(env or {}),
            work_dir=work_dir,
            stdout=stdout,
            stderr=stderr,
        )

    def validate(self) -> None:
        """Reject what sbatch would misread, naming the value and the fix."""
        who = f"Slurm job {self.name!r}"
        if not self.name or len(self.name) > 200 or _NAME_OK.search(self.name):
            raise StepDefinitionError(f"{who}: job name must be 1-200 characters of letters, digits, '_', '.', '-'")
        for attr in ("partition", "account", "qos", "gpu_type"):
            value = getattr(self, attr)
            if value is not None and not (isinstance(value, str) and _TOKEN_OK.match(value)):
                hint = "e.g. 'gpu' or 'a,b'" if attr == "partition" else "letters, digits, '_', '.', '-'"
                if attr == "partition" and isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_.,-]+", value):
                    continue  # a list of partitions is fine
                raise StepDefinitionError(f"{who}: {attr}={value!r} is not a valid Slurm {attr} name ({hint})")
        if self.cpus_per_task is not None and (not isinstance(self.cpus_per_task, int) or self.cpus_per_task < 1):
            raise StepDefinitionError(f"{who}: cpus_per_task={self.cpus_per_task!r} must be a whole number >= 1")
        if self.mem_mb is not None and (not isinstance(self.mem_mb, int) or self.mem_mb < 1):
            raise StepDefinitionError(f"{who}: mem_mb={self.mem_mb!r} must be a whole number of MiB >= 1")
        if not isinstance(self.gpus, int) or self.gpus < 0:
            raise StepDefinitionError(f"{who}: gpus={self.gpus!r} must be a whole number >= 0")
        if self.gpu_type and not self.gpus:
            raise StepDefinitionError(f"{who}: gpu_type={self.gpu_type!r} given with gpus=0; request gpus=1 or more")
        if self.time_limit is not None and (not math.isfinite(self.time_limit) or self.time_limit <= 0):
            raise StepDefinitionError(f"{who}: time_limit={self.time_limit!r} must be a positive number of seconds")
        for opt in self.extra_options:
            if not isinstance(opt, str) or not opt.startswith("-"):
                raise StepDefinitionError(
                    f"{who}: extra sbatch option {opt!r} must start with '-' (e.g. '--exclusive' or '--nice=10')"
                )
            name, _ = split_option(opt)
            if name in _RESERVED:
                what = _RESERVED[name]
                fix = f"set {what} instead" if what else "isthmus sets it itself"
                raise StepDefinitionError(f"{who}: extra sbatch option {opt!r} is not allowed: {fix}")
        for key, value in self.env.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) or not isinstance(value, str):
                raise StepDefinitionError(f"{who}: environment {key!r}={value!r} must be NAME=string")

    @property
    def gres(self) -> str | None:
        if not self.gpus:
            return None
        return f"gpu:{self.gpu_type}:{self.gpus}" if self.gpu_type else f"gpu:{self.gpus}"

    def full_script(self) -> str:
        script = self.script if self.script.startswith("#!") else "#!/bin/bash\n" + self.script
        return script if script.endswith("\n") else script + "\n"

    # -- sbatch ----------------------------------------------------------------------------------
    def sbatch_args(self) -> list[str]:
        """Options for ``sbatch --parsable`` (the script goes on standard input)."""
        args = [f"--job-name={self.name}"]
        if self.partition:
            args.append(f"--partition={self.partition}")
        if self.account:
            args.append(f"--account={self.account}")
        if self.qos:
            args.append(f"--qos={self.qos}")
        if self.cpus_per_task:
            args.append(f"--cpus-per-task={self.cpus_per_task}")
        if self.mem_mb:
            args.append(f"--mem={self.mem_mb}M")
        if self.gres:
            args.append(f"--gres={self.gres}")
        if self.time_limit:
            args.append(f"--time={format_time_limit(self.time_limit)}")
        if self.constraint:
            args.append(f"--constraint={self.constraint}")
        if self.work_dir:
            args.append(f"--chdir={self.work_dir}")
        if self.stdout:
            args.append(f"--output={self.stdout}")
        if self.stderr:
            args.append(f"--error={self.stderr}")
        args.append("--requeue" if self.requeue else "--no-requeue")
        args.extend(self.extra_options)
        return args

    def command_line(self) -> str:
        return shlex.join(["sbatch", "--parsable", *self.sbatch_args()])

    # -- REST ------------------------------------------------------------------------------------
    def rest_body(self, version: str, base_env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The ``job/submit`` body for slurmrestd ``version`` (``v0.0.38``: plain values and an
        environment object; ``v0.0.39`` and later, the data_parser API: ``{"set", "number"}`` values
        and ``["NAME=value"]`` environment)."""
        env = {**(base_env or {}), **self.env}
        legacy = version == "v0.0.38"
        job: dict[str, Any] = {"name": self.name}

        def number(n: int) -> Any:
            return n if legacy else {"set": True, "infinite": False, "number": n}

        if self.partition:
            job["partition"] = self.partition
        if self.account:
            job["account"] = self.account
        if self.qos:
            job["qos"] = self.qos
        if self.cpus_per_task:
            job["cpus_per_task"] = self.cpus_per_task
        if self.mem_mb:
            job["memory_per_node"] = number(self.mem_mb)
        if self.gres:
            if legacy:
                job["gres"] = self.gres
            else:
                job["tres_per_node"] = f"gres/{self.gres}"
        if self.time_limit:
            job["time_limit"] = number(_slurm_minutes(self.time_limit))
        if self.constraint:
            job["constraints"] = self.constraint
        if self.work_dir:
            job["current_working_directory"] = self.work_dir
        if self.stdout:
            job["standard_output"] = self.stdout
        if self.stderr:
            job["standard_error"] = self.stderr
        job["requeue"] = self.requeue
        job["environment"] = dict(env) if legacy else [f"{k}={v}" for k, v in env.items()]
        for opt in self.extra_options:
            name, value = split_option(opt)
            if name not in REST_OPTIONS:
                known = ", ".join(sorted(k for k in REST_OPTIONS if k.startswith("--")))
                raise StepDefinitionError(
                    f"Slurm job {self.name!r}: sbatch option {opt!r} has no slurmrestd equivalent here; "
                    f"use the 'cli' backend for it, or one of: {known}"
                )
            prop, kind = REST_OPTIONS[name]
            if kind in ("int", "str") and value is None:
                raise StepDefinitionError(f"Slurm job {self.name!r}: option {name} needs a value, e.g. {name}=VALUE")
            if kind == "flag":
                job[prop] = True if legacy else ["USER"]
            elif kind == "true":
                job[prop] = True
            elif kind == "false":
                job[prop] = False
            elif kind == "int":
                job[prop] = int(value)  # type: ignore[arg-type]
            else:
                job[prop] = value if (legacy or prop not in ("required_nodes", "excluded_nodes")) else value.split(",")  # type: ignore[union-attr]
        script = self.full_script()
        if legacy or version == "v0.0.39":
            return {"script": script, "job": job}
        job["script"] = script
        return {"job": job}

    def to_dict(self) -> dict[str, Any]:
        """The requested resources, for metadata and lineage (no script, no environment values)."""
        out: dict[str, Any] = {"job_name": self.name}
        for key in ("partition", "account", "qos", "cpus_per_task", "mem_mb", "constraint"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.gres:
            out["gres"] = self.gres
        if self.time_limit:
            out["time_limit"] = format_time_limit(self.time_limit)
        if self.extra_options:
            out["extra_options"] = list(self.extra_options)
        return out
