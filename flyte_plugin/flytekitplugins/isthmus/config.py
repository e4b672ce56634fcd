"""``Isthmus``: the task config that makes a flytekit task an isthmus step.

Kept free of heavy imports, so ``from flytekitplugins.isthmus import Isthmus`` stays cheap; building an
``Isthmus()`` loads :mod:`flytekitplugins.isthmus.task`, which registers it with flytekit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Isthmus:
    """Run a Flyte task as an isthmus step: cached, recorded and traceable through the isthmus core.

    ``@task(task_config=Isthmus())`` on a plain function (or a ``@step``), or ``isthmus_task(step)``.

    - ``pipeline``: the pipeline name step runs are recorded under (default: the Flyte workflow's name;
      a stand-alone local task call records no pipeline run).
    - ``invocation``: the step's name inside that pipeline (default: the step name); set by
      ``Pipeline.to_flyte_workflow()`` so a step called twice keeps both invocations apart.
    - ``tolerations``: Kubernetes tolerations (dicts with key/operator/value/effect, or
      ``V1Toleration``) added to the task's pod template, next to ``Resources(node_selector=...)``.
    - ``ref_inputs`` / ``ref_outputs``: inputs and outputs passed as ``ArtifactRef`` although their type
      is small; ``to_flyte_workflow`` sets them where connected steps disagree on a type.
    - ``secret_inputs``: inputs whose values are secrets whatever the step calls them (``to_flyte_workflow``
      sets them for inputs fed by a secret-named workflow input): recorded as ``***``, keyed in the cache
      key, scrubbed from errors and never shown in a deck.
    - ``ref_list_inputs``: inputs that receive a list of ``ArtifactRef`` (fan-in: the results of a mapped
      step, or a list of step outputs), handed to the runner as that list of refs.
    - ``param_inputs``: inputs whose ``ArtifactRef`` holds a plain parameter value stored once (a big
      value fixed with ``partial()``, a mapped list item); loaded back before the runner keys it, so the
      cache key is the parameter's, as in a local run.
    - ``mapped``: one item of a mapped step (``step.map``): the task takes an ``isthmus_map_index`` input
      and records invocation ``<invocation>[i]`` with ``map_index`` i.
    - ``cache_input``: the task takes an ``isthmus_cache: bool = True`` input; ``False`` computes the step
      again (``recompute``), as ``Pipeline.run(cache=False)`` does.
    """

    pipeline: str | None = None
    invocation: str | None = None
    tolerations: list[Any] = field(default_factory=list)
    ref_inputs: tuple[str, ...] = ()
    ref_outputs: tuple[str, ...] = ()
    secret_inputs: tuple[str, ...] = ()
    ref_list_inputs: tuple[str, ...] = ()
    param_inputs: tuple[str, ...] = ()
    mapped: bool = False
    cache_input: bool = False

    def __post_init__(self) -> None:
        # start-up cost: the task module loads the isthmus core; it registers IsthmusTask for this config
        # with flytekit, which `@task(task_config=Isthmus())` looks up right after this
        import flytekitplugins.isthmus.task  # noqa: F401

    def to_options(self) -> dict[str, Any]:
        """What a container needs to rebuild the task (JSON)."""
        out: dict[str, Any] = {}
        if self.pipeline:
            out["pipeline"] = self.pipeline
        if self.invocation:
            out["invocation"] = self.invocation
        if self.ref_inputs:
            out["ref_inputs"] = sorted(self.ref_inputs)
        if self.ref_outputs:
            out["ref_outputs"] = sorted(self.ref_outputs)
        for name in ("secret_inputs", "ref_list_inputs", "param_inputs"):
            if getattr(self, name):
                out[name] = sorted(getattr(self, name))
        for flag in ("mapped", "cache_input"):
            if getattr(self, flag):
                out[flag] = True
        return out

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Isthmus:
        """The config :meth:`to_options` describes (inside a container; unknown keys are ignored)."""

        def names(key: str) -> tuple[str, ...]:
            return tuple(options.get(key, ()))

        return cls(
            pipeline=options.get("pipeline"),
            invocation=options.get("invocation"),
            ref_inputs=names("ref_inputs"),
            ref_outputs=names("ref_outputs"),
            secret_inputs=names("secret_inputs"),
            ref_list_inputs=names("ref_list_inputs"),
            param_inputs=names("param_inputs"),
            mapped=bool(options.get("mapped")),
            cache_input=bool(options.get("cache_input")),
        )
