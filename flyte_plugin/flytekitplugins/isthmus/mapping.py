"""Mapped steps (``step.partial(...).map(...)``) in a Flyte workflow: one ArrayNode map task per mapped node.

A mapped node becomes three things in the workflow ``Pipeline.to_flyte_workflow()`` builds:

1. an *items* task (``<workflow>.<invocation>.items``, a bookkeeping task rebuilt from the pipeline in a
   container, so it reads literal arguments from the traced graph, not from the workflow spec). It turns
   every mapped argument into one list of :class:`~isthmus.artifacts.refs.ArtifactRef` — a list output of an
   upstream step split into one artifact per item by :func:`isthmus.local_run.split_items` (the item refs a
   local run and Airflow hand the step, so the keys match), the results of a mapped step as they are, a
   list parameter or literal list as one *parameter ref* per item — checks that zipped lists have the same
   length, stores every fixed (``partial``) value once as a parameter ref, and lists the map indexes;
2. a ``flytekit`` :class:`~flytekit.core.array_node_map_task.ArrayNodeMapTask` over the step's
   :class:`~flytekitplugins.isthmus.task.IsthmusTask` (``Isthmus(mapped=True)``): the mapped lists and the
   map indexes are zipped by the ArrayNode itself, the fixed refs are bound inputs (a ref of ~300 bytes per
   item instead of the value: a 226 KB CSV parameter is not copied into every item's inputs). Each item is
   one step run, invocation ``<invocation>[i]`` with ``map_index`` i;
3. for a step with several outputs (a map task has one), a *gather* task that turns the list of per-item
   output lists into one list per output.

Why a map task and not ``@dynamic``: an ArrayNode expresses everything ``map()`` can (zipped lists are
several list inputs of one ArrayNode; mapping over a mapped step's results passes its list on), needs no
pod to compile a sub-workflow at run time, and Flyte shows it as one node with its items. Every input of
a mapped task is a ref with the ref in the literal itself (not in literal metadata, which a map task's
input slicing does not read), and plain values come back as plain values before the runner keys them
(:func:`load_parameter`), so a mapped item has the cache key of the same item in a local or Airflow run.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flytekit.core.array_node_map_task import ArrayNodeMapTask
from flytekit.core.interface import Interface

from isthmus.artifacts.errors import HoldsSecret
from isthmus.artifacts.refs import ArtifactRef
from isthmus.errors import PipelineDefinitionError, StepDefinitionError
from isthmus.graph import MappedOutput, Node, OutputHandle, Param
from isthmus.local_run import split_items
from isthmus.redaction import find_secret, forbidden_bytes, is_secret_name
from isthmus.runner import default_runner
from isthmus.secret_params import call_secrets

MAP_INDEX_INPUT = "isthmus_map_index"
CACHE_INPUT = "isthmus_cache"
OUTPUTS = "isthmus_outputs"  # the one output of a mapped step with several outputs: its refs in output order
PARAM_KEY = "isthmus_param"  # ref metadata: the artifact holds a plain parameter value
RESERVED_INPUTS = (MAP_INDEX_INPUT, CACHE_INPUT)
REF_LIST = list[ArtifactRef]


_FIX = "pass it through a secret-named pipeline parameter (password, api_token …) fixed with partial()"


def store_parameter(value: Any, label: str, known: Iterable[str] = ()) -> ArtifactRef:
    """``value`` stored once as an artifact, its ref marked as holding a parameter (:data:`PARAM_KEY`);
    refused when it holds a secret, by name or type, or one of the ``known`` secrets (the pipeline's
    secret parameters, the environment's) anywhere — also where only its stored form shows it."""
    found = find_secret(value, known, by_key=True)
    if found is not None:
        raise StepDefinitionError(
            f"{label} holds a secret ({found[1]} at {label}{found[0]}); isthmus never writes secrets into "
            f"artifacts: {_FIX}"
        )
    try:
        ref = default_runner().artifacts.save(
            value, step_name="flyte", output="parameter", forbidden=forbidden_bytes(value, known)
        )
    except HoldsSecret:
        raise StepDefinitionError(
            f"{label} ({type(value).__name__}) holds a secret in its stored form; isthmus never writes secrets "
            f"into artifacts: {_FIX}"
        ) from None
    return ArtifactRef(**{**_fields(ref), "metadata": {**ref.metadata, PARAM_KEY: True}})


def _fields(ref: ArtifactRef) -> dict[str, Any]:
    return {k: getattr(ref, k) for k in ("uri", "content_hash", "size", "materializer", "python_type")}


def load_parameter(ref: ArtifactRef, artifacts: Any) -> Any:
    """The plain value a parameter ref holds (what a local run passes the runner as a parameter)."""
    return artifacts.load(ref)


def _is_handle_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, OutputHandle) for v in value)


@dataclass
class MappedNode:
    """How one mapped node is laid out: the items task's inputs (name -> what feeds it) and outputs."""

    node: Node
    inputs: dict[str, OutputHandle | Param] = field(default_factory=dict)
    stored: list[str] = field(default_factory=list)  # arguments the items task hands on as refs
    secret: dict[str, Param] = field(default_factory=dict)  # fixed secret parameters: bound as themselves
    lists: list[str] = field(default_factory=list)  # fixed arguments that are lists of refs (fan-in)
    params: list[str] = field(default_factory=list)  # arguments whose refs hold plain parameter values

    @property
    def invocation(self) -> str:
        return self.node.invocation

    @property
    def several_outputs(self) -> bool:
        return len(self.node.step.output_names) > 1


def lay_out(pipeline_name: str, node: Node) -> MappedNode:
    """Where each argument of mapped ``node`` comes from, and how it reaches the map task."""
    laid = MappedNode(node)
    where = f"pipeline {pipeline_name!r}: step {node.step.name!r}"
    for arg in node.step.signature.parameters:
        if arg in RESERVED_INPUTS:
            raise StepDefinitionError(
                f"{where}: parameter {arg!r} is reserved for the Flyte workflow isthmus builds; rename it"
            )
    wanted = 0  # items task inputs: one per output or parameter, one per output in a list
    for arg, value in node.arguments.items():
        mapped = arg in node.mapped
        if isinstance(value, Param) and is_secret_name(value.name):
            if mapped:
                raise StepDefinitionError(
                    f"{where}: map({arg}=...) maps over secret parameter {value.name!r}; each item would be "
                    "stored as an artifact, and isthmus never stores secrets: map over the non-secret values "
                    "and fix the secret with partial()"
                )
            laid.secret[arg] = value
            continue
        laid.stored.append(arg)
        if isinstance(value, (OutputHandle, Param)):
            laid.inputs[arg] = value
            wanted += 1
        elif _is_handle_list(value):
            for j, handle in enumerate(value):
                laid.inputs[f"{arg}__{j}"] = handle
            wanted += len(value)
        if isinstance(value, Param) or not (isinstance(value, OutputHandle) or _is_handle_list(value)):
            laid.params.append(arg)  # a parameter value (or its items), stored once as a parameter ref
        if not mapped and (isinstance(value, MappedOutput) or _is_handle_list(value)):
            laid.lists.append(arg)
    if len(laid.inputs) != wanted:
        raise StepDefinitionError(
            f"{where}: its argument names {sorted(node.arguments)} collide in the Flyte items task (an argument "
            "named like another one's items, 'x__0'); rename it"
        )
    return laid


def items_interface(laid: MappedNode, input_type: typing.Callable[[OutputHandle | Param], Any]) -> Interface:
    """The items task's interface; ``input_type`` gives the Flyte type of what feeds an input."""
    inputs = {name: input_type(source) for name, source in laid.inputs.items()}
    outputs: dict[str, Any] = {}
    for arg in laid.stored:
        outputs[arg] = REF_LIST if (arg in laid.node.mapped or arg in laid.lists) else ArtifactRef
    outputs[MAP_INDEX_INPUT] = list[int]
    return Interface(inputs, outputs)


def _as_ref(value: Any, producer: str, output: str) -> ArtifactRef:
    """The ref an upstream output arrived as (a plain value without one is stored, hashed the same)."""
    ref = ArtifactRef.coerce(value)
    if ref is not None:
        return ref
    return default_runner().artifacts.save(value, step_name=producer, output=output)


def make_items(pipeline_name: str, graph: Any, laid: MappedNode, given: Mapping[str, Any]) -> tuple[Any, ...]:
    """Run the items task: the outputs of :func:`items_interface`, in its order."""
    node = laid.node
    artifacts = default_runner().artifacts
    where = f"pipeline {pipeline_name!r}: step {node.step.name!r}"
    known = call_secrets(given)  # the pipeline's secret parameters and the environment's secrets

    def refs_of(arg: str, value: Any) -> list[ArtifactRef]:
        if isinstance(value, MappedOutput):
            return [_as_ref(v, value.invocation, value.output) for v in given[arg]]
        return [_as_ref(given[f"{arg}__{j}"], h.invocation, h.output) for j, h in enumerate(value)]

    def values_of(arg: str, value: Any) -> list[Any]:
        if isinstance(value, Param):
            value = given[arg]
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
            raise PipelineDefinitionError(
                f"{where}: map({arg}=...) got {type(value).__name__}, not a list; pass a list or tuple"
            )
        return [store_parameter(v, f"{where}: map({arg}=...)", known) for v in value]

    lists: dict[str, list[ArtifactRef]] = {}
    for arg in node.mapped:
        value = node.arguments[arg]
        if isinstance(value, MappedOutput) or _is_handle_list(value):
            lists[arg] = refs_of(arg, value)
        elif isinstance(value, OutputHandle):
            producer = graph.nodes[value.invocation].step.name
            whole = _as_ref(given[arg], producer, value.output)
            lists[arg] = split_items(producer, value.output, whole, artifacts)
        else:
            lists[arg] = values_of(arg, value)
    lengths = {n: len(v) for n, v in lists.items()}
    if len(set(lengths.values())) > 1:
        raise PipelineDefinitionError(f"{where}: map() lists must have the same length, got {lengths}")
    outputs: list[Any] = []
    for arg in laid.stored:
        value = node.arguments[arg]
        if arg in lists:
            outputs.append(lists[arg])
        elif arg in laid.lists:
            outputs.append(refs_of(arg, value))
        elif isinstance(value, OutputHandle):
            outputs.append(_as_ref(given[arg], graph.nodes[value.invocation].step.name, value.output))
        else:
            plain = given[arg] if isinstance(value, Param) else value
            outputs.append(store_parameter(plain, f"{where}: argument {arg!r}", known))
    outputs.append(list(range(next(iter(lengths.values()), 0))))
    return tuple(outputs)


def gather_interface(laid: MappedNode) -> Interface:
    """A mapped step with several outputs: per-item lists of refs in, one list of refs per output out."""
    return Interface({OUTPUTS: list[REF_LIST]}, dict.fromkeys(laid.node.step.output_names, REF_LIST))


def gather(laid: MappedNode, per_item: list[list[Any]]) -> tuple[list[ArtifactRef], ...]:
    names = laid.node.step.output_names
    for i, refs in enumerate(per_item):
        if len(refs) != len(names):
            raise StepDefinitionError(
                f"step {laid.node.step.name!r}: item {i} returned {len(refs)} outputs, expected {len(names)} {names}"
            )
    return tuple([ArtifactRef.coerce(refs[k]) for refs in per_item] for k in range(len(names)))  # type: ignore[misc]


def map_task_for(task: Any, name: str, mapped: Iterable[str]) -> ArrayNodeMapTask:
    """The ArrayNode map task running ``task`` (a mapped IsthmusTask) once per item over the inputs
    ``mapped`` and the map indexes, named ``name`` (flytekit names a map task after its function, which
    two invocations of one step would share)."""
    bound = set(task.python_interface.inputs) - {*mapped, MAP_INDEX_INPUT}
    mt = ArrayNodeMapTask(task, bound_inputs=bound)
    mt._name = name
    mt.sub_node_metadata._name = name
    return mt


def map_index(step_name: str, value: Any) -> int:
    """The map index a mapped task was given (a literal: checked)."""
    if type(value) is not int or value < 0:
        raise StepDefinitionError(
            f"step {step_name!r}: {MAP_INDEX_INPUT}={value!r:.80} must be a whole number >= 0 (the item's map "
            "index, which the workflow's items task lists)"
        )
    return value
