"""``SlurmJobOptions``: how isthmus shapes a step's Slurm job beyond the step's own ``Resources``.

One value object for the executor (:class:`~isthmus.slurm.SlurmExecutor`), the Airflow operator and
connection defaults, and Flyte's ``SlurmJob``; :func:`merge_options` layers them (connection defaults
under a task's own options).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from isthmus.errors import StepDefinitionError

RECORD_MODES = ("db", "manifest")


@dataclass(frozen=True)
class SlurmJobOptions:
    """Options of a step's Slurm job (all optional; the step's ``Resources`` win where they set a value).

    - ``partition``/``account``/``qos``/``constraint``: where the step's ``Resources`` set none;
      ``extra_options``: more sbatch options; ``env``: exported in the job;
    - ``python``: the interpreter on the compute nodes (default: the submitting one, for a shared
      filesystem); ``pythonpath``: extra import roots (the step's own root is added);
    - ``work_root``: job directories (manifest, logs) on the shared filesystem (default
      ``$ISTHMUS_HOME/slurm``);
    - ``record``: ``"db"`` (the default) when compute nodes reach the metadata store, ``"manifest"`` when
      they do not (the rows travel in the manifest and are ingested by the submitter).
    """

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    extra_options: Sequence[str] = ()  # any sequence of strings; kept as a tuple
    env: Mapping[str, str] = field(default_factory=dict)
    python: str | None = None
    pythonpath: Sequence[str] = ()  # any sequence of strings; kept as a tuple
    work_root: str | None = None
    record: str | None = None

    def __post_init__(self) -> None:
        for name in ("partition", "account", "qos", "constraint", "python", "work_root", "record"):
            value = getattr(self, name)
            object.__setattr__(self, name, str(value) if value not in (None, "") else None)
        for name in ("extra_options", "pythonpath"):
            value = getattr(self, name) or ()
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise StepDefinitionError(f"{name}={value!r} must be a list of strings")
            object.__setattr__(self, name, tuple(str(v) for v in value))
        env = self.env or {}
        if not isinstance(env, Mapping):
            raise StepDefinitionError(f"env={env!r} must be a dict of environment variables")
        object.__setattr__(self, "env", {str(k): str(v) for k, v in env.items()})
        if self.record not in (None, *RECORD_MODES):
            raise StepDefinitionError(f"record={self.record!r} must be 'db' or 'manifest'")

    @property
    def record_mode(self) -> str:
        """``record``, or ``"db"`` when unset."""
        return self.record or RECORD_MODES[0]

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names (keyword arguments of the class, keys of :meth:`to_dict`)."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> SlurmJobOptions:
        """The options among ``data``'s keys (other keys are ignored; empty values are unset)."""
        data = data or {}
        return cls(**{k: data[k] for k in cls.names() if data.get(k) not in (None, "", [], (), {})})

    def to_dict(self, *, set_only: bool = False) -> dict[str, Any]:
        """JSON-ready (lists and dicts); ``set_only``: without the options left unset."""
        out = {k: getattr(self, k) for k in self.names()}
        out = {k: list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, Mapping) else v for k, v in out.items()}
        return {k: v for k, v in out.items() if v not in (None, [], {})} if set_only else out


def merge_options(*layers: SlurmJobOptions) -> SlurmJobOptions:
    """The options of ``layers`` (lowest priority first) as one: a later layer's set value wins, its ``env``
    entries win, its import roots come first (``pythonpath``) and its sbatch options last (the last of a
    repeated sbatch option applies)."""
    out = SlurmJobOptions()
    for layer in layers:
        scalars = {k: v for k, v in layer.to_dict(set_only=True).items() if not isinstance(v, (list, dict))}
        out = dataclasses.replace(
            out,
            **scalars,
            extra_options=(*out.extra_options, *layer.extra_options),
            env={**out.env, **layer.env},
            pythonpath=(*layer.pythonpath, *out.pythonpath),
        )
    return out


__all__ = ["RECORD_MODES", "SlurmJobOptions", "merge_options"]
