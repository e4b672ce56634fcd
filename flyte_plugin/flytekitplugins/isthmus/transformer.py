"""How isthmus values travel between Flyte tasks.

Large objects travel as an :class:`~isthmus.artifacts.refs.ArtifactRef` — a small Flyte struct literal
(uri, content hash, size, materializer, python type: what the Flyte UI shows) — through
:class:`ArtifactRefTransformer`; the object itself stays in the isthmus artifact store, stored once.

Primitives and small JSON values (``int``, ``float``, ``str``, ``bool``, ``list``/``dict`` of those,
``Optional`` of those) travel as ordinary Flyte literals, so the UI shows the value. The ref of the
artifact that holds the same value rides along in the literal's metadata (:data:`REF_METADATA_KEY`):
the next isthmus task hands the *ref* to the StepRunner, exactly as a local run does, so the cache key
— and a cache hit across orchestrators — is the same. A literal without that metadata (a workflow
input, a plain flytekit task's output) is passed to the runner as a parameter value.
"""

from __future__ import annotations

import html
import inspect
import types
import typing
from typing import Any

from flytekit.core.context_manager import FlyteContext
from flytekit.core.type_engine import TypeEngine, TypeTransformer, TypeTransformerFailedError
from flytekit.models.literals import Literal, Scalar
from flytekit.models.types import LiteralType, SimpleType

from flytekitplugins.isthmus.files import register as register_file_materializers
from isthmus import defaults
from isthmus.artifacts.errors import InvalidArtifactRef
from isthmus.artifacts.refs import ArtifactRef, loads_bounded
from isthmus.artifacts.types import check_type_path
from isthmus.redaction import find_secret

REF_METADATA_KEY = "isthmus.artifact_ref"
LITERAL_TYPE_METADATA = {"isthmus": "ArtifactRef", "version": 1}

_PRIMITIVES = (int, float, str, bool)
_UNION_TYPES: tuple[Any, ...] = (typing.Union, types.UnionType)


def is_small_type(tp: Any) -> bool:
    """True if values of ``tp`` travel as plain Flyte literals (JSON-like values)."""
    if tp in _PRIMITIVES or tp is dict:  # a bare list is no Flyte type (flytekit needs list[T])
        return True
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in _UNION_TYPES:
        members = [a for a in args if a is not type(None)]
        return bool(members) and all(is_small_type(a) for a in members)
    if origin is list:
        return len(args) == 1 and is_small_type(args[0])
    if origin is dict:
        return len(args) == 2 and args[0] is str and is_small_type(args[1])
    return False


def _artifact_ref_type() -> type[ArtifactRef]:
    return ArtifactRef


def flyte_type_for(annotation: Any, default: Any = inspect.Parameter.empty) -> Any:
    """The Flyte-facing python type of a step parameter or output: itself if small, else ArtifactRef
    (``Optional[ArtifactRef]`` when the annotation is optional or the default is None)."""
    ref = _artifact_ref_type()
    if annotation is inspect.Parameter.empty or annotation is None or isinstance(annotation, str):
        if default is not inspect.Parameter.empty and default is not None and type(default) in _PRIMITIVES:
            return type(default)
        return typing.Optional[ref] if default is None else ref  # noqa: UP045
    if is_small_type(annotation):
        return annotation
    optional = default is None or (
        typing.get_origin(annotation) in _UNION_TYPES and type(None) in typing.get_args(annotation)
    )
    return typing.Optional[ref] if optional else ref  # noqa: UP045


def _checked(ref: Any) -> Any:
    """``ref`` if its python_type names nothing whose lookup could run a program (a literal is untrusted)."""
    try:
        check_type_path(ref.python_type)
    except InvalidArtifactRef as exc:
        raise TypeTransformerFailedError(str(exc)) from None
    return ref


def ref_from_literal(lv: Literal) -> Any:
    """The ArtifactRef a literal carries in its metadata, or None."""
    meta = lv.metadata
    if meta:
        text = meta.get(REF_METADATA_KEY)
        if text:
            return _checked(_artifact_ref_type().from_json(text))
    return None


def _struct_to_dict(struct: Any) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(struct)


def _ref_from_mapping(data: dict[str, Any]) -> Any:
    ArtifactRef = _artifact_ref_type()
    data = dict(data)
    if "size" in data:
        data["size"] = int(data["size"])  # protobuf structs carry numbers as floats
    ref = ArtifactRef.coerce(data)
    if ref is None:
        raise TypeTransformerFailedError(f"literal {data!r:.300} is not an isthmus ArtifactRef")
    return _checked(ref)


class ArtifactRefTransformer(TypeTransformer[Any]):
    """``ArtifactRef`` <-> a Flyte struct literal ``{uri, content_hash, size, materializer, python_type}``.

    Any other object handed to an ``ArtifactRef``-typed input (e.g. a DataFrame passed to an isthmus task
    in a local call) is written to the isthmus artifact store first, exactly as the StepRunner would.
    """

    def __init__(self) -> None:
        super().__init__("isthmus-artifact-ref", _artifact_ref_type(), enable_type_assertions=False)

    def get_literal_type(self, t: Any = None) -> LiteralType:
        return LiteralType(simple=SimpleType.STRUCT, metadata=dict(LITERAL_TYPE_METADATA))

    def guess_python_type(self, literal_type: LiteralType) -> Any:
        meta = literal_type.metadata or {}
        if literal_type.simple == SimpleType.STRUCT and meta.get("isthmus") == "ArtifactRef":
            return self.python_type
        raise ValueError(f"{literal_type} is not an isthmus ArtifactRef type")

    def assert_type(self, t: Any, v: Any) -> None:
        return None  # anything can become an artifact

    def to_literal(self, ctx: FlyteContext, python_val: Any, python_type: Any, expected: LiteralType) -> Literal:
        from google.protobuf.struct_pb2 import Struct

        ref = self.python_type.coerce(python_val)
        if ref is None:
            found = find_secret(python_val, by_key=True)
            if found is not None:  # never written into an artifact
                raise TypeTransformerFailedError(
                    f"a task input holds a secret ({found[1]} at input{found[0]}); isthmus never writes secrets into "
                    "artifacts, so it cannot travel between Flyte tasks: request it with secret_requests= and read "
                    "it inside the step (flytekit.current_context().secrets), or pass it as a plain str parameter"
                )
            ref = defaults.artifact_store().save(python_val, step_name="flyte", output="input")
        struct = Struct()
        struct.update(ref.to_dict())
        return Literal(scalar=Scalar(generic=struct), metadata={REF_METADATA_KEY: ref.to_json()})

    def to_python_value(self, ctx: FlyteContext, lv: Literal, expected_python_type: Any) -> Any:
        ref = ref_from_literal(lv)
        if ref is not None:
            return ref
        scalar = lv.scalar
        if scalar is not None:
            if scalar.generic is not None:
                return _ref_from_mapping(_struct_to_dict(scalar.generic))
            if scalar.binary is not None:  # e.g. entered as a JSON object in the Flyte console
                import msgpack

                return _ref_from_mapping(msgpack.loads(scalar.binary.value))
            if scalar.primitive is not None and scalar.primitive.string_value:
                text = scalar.primitive.string_value
                return _ref_from_mapping(loads_bounded(text, "artifact ref literal", TypeTransformerFailedError))
        raise TypeTransformerFailedError(f"cannot read an isthmus ArtifactRef from literal {lv}")

    def from_generic_idl(self, generic: Any, expected_python_type: Any) -> Any:
        return _ref_from_mapping(_struct_to_dict(generic))

    def to_html(self, ctx: FlyteContext, python_val: Any, expected_python_type: Any) -> str:
        ref = self.python_type.coerce(python_val)
        if ref is None:  # a type name, not repr(): a repr may show a password
            if isinstance(python_val, str) and python_val == "***":  # an input the Input deck redacted
                return "***"
            return html.escape(f"<{type(python_val).__module__}.{type(python_val).__qualname__}>")
        return ref_table(ref)


def ref_table(ref: Any) -> str:
    """An escaped HTML table of one artifact ref."""
    rows = [
        ("uri", ref.uri),
        ("content hash", ref.content_hash),
        ("size", f"{ref.size:,} bytes"),
        ("materializer", ref.materializer),
        ("python type", ref.python_type),
    ]
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(str(v))}</code></td></tr>" for k, v in rows)
    return f"<table class='isthmus-ref'>{cells}</table>"


_registered = False


def ensure_registered() -> None:
    """Register :class:`ArtifactRefTransformer` with flytekit's TypeEngine and the ``FlyteFile`` /
    ``FlyteDirectory`` materializers with the core (once; imports the isthmus core)."""
    global _registered
    if _registered:
        return
    ref_type = _artifact_ref_type()
    if ref_type not in TypeEngine._REGISTRY:
        TypeEngine.register(ArtifactRefTransformer())
    register_file_materializers()
    _registered = True
