"""``MapItemsOperator``: the list a mapped step of a ``to_airflow_dag`` DAG maps over, where Airflow cannot
expand over it as it is.

Airflow expands only over a literal list or the ``return_value`` of a task; a DAG param, a list of step
outputs, one output of a step with several, the results of such a step mapped before, or a literal list
zipped with a step output need one small task that pushes the list: this one. It runs no step (nothing is
recorded): it resolves its value and pushes the items, splitting a step's list output into one artifact
per item exactly as a local run does (:func:`isthmus.local_run.split_items`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from isthmus.artifacts.refs import ArtifactRef
from isthmus.errors import StepDefinitionError
from isthmus.local_run import split_items
from isthmus_airflow.hooks.isthmus import IsthmusHook
from isthmus_airflow.mapping import joined
from isthmus_airflow.operators.step import PARAM_MARKER, TemplatesAsWritten


class MapItemsOperator(TemplatesAsWritten):
    """Push the items of ``value`` (templated: XComArgs and param placeholders resolved) for a mapped task.

    ``split=(step name, output)``: ``value`` is that step output's ref, split into one item ref per item;
    otherwise ``value`` must be a list (of values, or of step output refs). ``label`` names the mapped
    argument in errors (``pipeline 'p': step 's': map(x=...)``).
    """

    template_fields: Sequence[str] = ("value",)
    template_fields_renderers = {"value": "json"}
    ui_color = "#eef7f1"
    custom_operator_name = "isthmus map items"

    def __init__(
        self,
        *,
        value: Any,
        label: str,
        split: tuple[str, str] | None = None,
        isthmus_conn_id: str = IsthmusHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.value = value
        self.argument_label = label
        self.split = split
        self.isthmus_conn_id = isthmus_conn_id

    def execute(self, context: Any) -> list[Any]:
        value = joined(self._param(self.value, context))
        if self.split is not None:
            step_name, output = self.split
            ref = ArtifactRef.coerce(value)
            if ref is None:
                raise AirflowFailException(
                    f"{self.argument_label}: output {output!r} of step {step_name!r} is not an artifact ref"
                )
            artifacts = IsthmusHook(self.isthmus_conn_id).get_conn().artifacts
            try:
                items = [item.to_dict() for item in split_items(step_name, output, ref, artifacts)]
            except StepDefinitionError as exc:  # not a list: a mistake in the pipeline, no retry fixes it
                raise AirflowFailException(f"{self.argument_label}: {exc}") from None
            self.log.info("%s: %d items of %s.%s", self.argument_label, len(items), step_name, output)
            return items
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
            raise AirflowFailException(f"{self.argument_label} got {type(value).__name__}, not a list; pass a list")
        items = [v.to_dict() if isinstance(v, ArtifactRef) else v for v in value]
        self.log.info("%s: %d items", self.argument_label, len(items))
        return items

    def _param(self, value: Any, context: Any) -> Any:
        if not (isinstance(value, dict) and set(value) == {PARAM_MARKER}):
            return value
        params = context.get("params") or {}
        name = value[PARAM_MARKER]
        if name not in params:
            raise AirflowFailException(
                f"{self.argument_label}: DAG param {name!r} is not defined; add it to the DAG's params"
            )
        return params[name]
