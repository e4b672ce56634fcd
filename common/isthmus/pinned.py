"""Pinned and promoted inputs: a step or pipeline argument that names an artifact version already in the store.

``ArtifactAlias("train.model", "production")`` follows an alias (``isthmus artifacts alias``);
``ArtifactVersion("blake3:<64 hex digits>")`` names one version by its full content hash. Either one is
resolved once, when the run starts (:func:`resolve_pinned`), to the :class:`ArtifactRef` of that version
— which must be recorded in this metadata store, kept in this artifact store, pass the store's ref checks
and match its hash — and is from then on an ordinary input artifact: the cache key sees its content hash
only, so a run fed the alias and one fed the same version's hash share a key. The ref carries a small
record, ``metadata["pinned"] = {"alias": "train.model@production", "version": "blake3:…"}``, which the
step run keeps with its recorded inputs.

Across a process or a serialized DAG a pin travels as ``{"isthmus_pinned": "train.model@production"}``
(or the hash): :func:`as_pin` reads that form back. Only full hashes pin a version: a prefix that is
unique today can match a newer artifact tomorrow, and a pinned input must name one version for good.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from isthmus.artifacts.errors import InvalidArtifactRef
from isthmus.artifacts.refs import HASH_ALGORITHMS, ArtifactRef, check_content_hash
from isthmus.artifacts.store import ArtifactStore
from isthmus.errors import IsthmusError, MaterializationError
from isthmus.governance.projects import alias_project
from isthmus.store import schema as s
from isthmus.store.metadata import MetadataStore

if TYPE_CHECKING:  # the runner imports this module to resolve the pins of each step call
    from isthmus.runner import StepRunner

PIN_KEY = "isthmus_pinned"  # the JSON form of a pin: {"isthmus_pinned": "name@alias" | "blake3:<hex>"}
RECORD_KEY = "pinned"  # where a resolved ref's metadata keeps the pin it came from

_NAME_LIMIT, _ALIAS_LIMIT = 512, 255  # the widths of the artifact_aliases columns
_RECORD_FIELDS = frozenset({"alias", "version"})
_BAD_TEXT = re.compile(r"[\x00-\x20\x7f@]")  # control characters, whitespace and "@"


class InvalidPin(IsthmusError, ValueError):
    """An ``ArtifactAlias``/``ArtifactVersion`` (or its JSON form) is malformed."""


class UnresolvedPin(IsthmusError, LookupError):
    """A pinned input names no usable version in this store: an unknown alias or version, or an alias that
    points at something missing, corrupt or refused. Raised before the step runs."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 90 else f"{text[:80]}...({len(text)} chars)"


def _check_part(what: str, value: Any, limit: int, example: str) -> None:
    if not isinstance(value, str) or not value or len(value) > limit or _BAD_TEXT.search(value):
        raise InvalidPin(
            f"ArtifactAlias: {what} {_show(value)} must be 1-{limit} characters without spaces, control "
            f"characters or '@'; e.g. {example}"
        )


@dataclass(frozen=True)
class ArtifactAlias:
    """The version ``name@alias`` points at when the run starts (``name`` is ``step.output``)."""

    name: str
    alias: str

    def __post_init__(self) -> None:
        _check_part("name", self.name, _NAME_LIMIT, "ArtifactAlias('train.model', 'production')")
        _check_part("alias", self.alias, _ALIAS_LIMIT, "ArtifactAlias('train.model', 'production')")

    @classmethod
    def parse(cls, text: str) -> ArtifactAlias:
        """``ArtifactAlias.parse("train.model@production")``."""
        if not isinstance(text, str) or text.count("@") != 1:
            raise InvalidPin(
                f"ArtifactAlias.parse({_show(text)}): expected 'name@alias' with one '@', e.g. 'train.model@production'"
            )
        name, alias = text.split("@")
        return cls(name, alias)

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}"

    def to_json(self) -> dict[str, str]:
        """The form that crosses processes and serialized DAGs: ``{"isthmus_pinned": "name@alias"}``."""
        return {PIN_KEY: str(self)}


@dataclass(frozen=True)
class ArtifactVersion:
    """One artifact version by its full content hash (``blake3:`` and 64 hex digits)."""

    content_hash: str

    def __post_init__(self) -> None:
        try:
            check_content_hash(self.content_hash)
        except InvalidArtifactRef:
            text = self.content_hash if isinstance(self.content_hash, str) else ""
            algorithm, _, digest = text.rpartition(":")
            digits = HASH_ALGORITHMS.get(algorithm or "blake3")
            prefix = digits is not None and 0 < len(digest) < digits and re.fullmatch(r"[0-9a-f]+", digest) is not None
            fix = (
                f"a prefix is not a pin (a newer artifact could match it too): 'isthmus artifacts show "
                f"{self.content_hash}' prints the full hash"
                if prefix
                else "pass the full hash, as 'isthmus artifacts list --json' prints it"
            )
            raise InvalidPin(
                f"ArtifactVersion({_show(self.content_hash)}) is not a content hash like 'blake3:<64 lowercase hex "
                f"digits>'; {fix}"
            ) from None

    def __str__(self) -> str:
        return self.content_hash

    def to_json(self) -> dict[str, str]:
        """The form that crosses processes and serialized DAGs: ``{"isthmus_pinned": "blake3:…"}``."""
        return {PIN_KEY: self.content_hash}


Pin = ArtifactAlias | ArtifactVersion


def as_pin(value: Any) -> Pin | None:
    """The pin ``value`` is (an ArtifactAlias, an ArtifactVersion or its ``{"isthmus_pinned": …}`` form), or
    None for anything else. A malformed JSON form raises :class:`InvalidPin`."""
    if isinstance(value, (ArtifactAlias, ArtifactVersion)):
        return value
    if isinstance(value, dict) and len(value) == 1 and PIN_KEY in value:
        text = value[PIN_KEY]
        if isinstance(text, str) and "@" in text:
            return ArtifactAlias.parse(text)
        return ArtifactVersion(text)
    return None


def pin_record(ref: ArtifactRef) -> dict[str, str] | None:
    """The pin record a ref carries, when it is well formed and names the ref's own hash (a ref is untrusted:
    a record that claims another version is no record)."""
    record = ref.metadata.get(RECORD_KEY) if isinstance(ref.metadata, dict) else None
    if not isinstance(record, dict) or record.get("version") != ref.content_hash or set(record) - _RECORD_FIELDS:
        return None
    alias = record.get("alias")
    if alias is not None:
        try:
            ArtifactAlias.parse(alias)
        except InvalidPin:
            return None
    return dict(record)


def input_record(ref: ArtifactRef) -> dict[str, Any]:
    """``ref.to_dict()`` as a step run records an input: a pin record that does not hold (see
    :func:`pin_record`) is left out."""
    data = ref.to_dict()
    meta = data.get("metadata")
    if meta and RECORD_KEY in meta and pin_record(ref) is None:
        data["metadata"] = {k: v for k, v in meta.items() if k != RECORD_KEY}
        if not data["metadata"]:
            del data["metadata"]
    return data


def _fix(pin: Pin) -> str:
    if isinstance(pin, ArtifactAlias):
        return f"point the alias at a version with 'isthmus artifacts alias {pin} HASH' (see 'isthmus artifacts list')"
    return "pin a version this store holds (see 'isthmus artifacts list'), or re-run the step that produced it"


def resolve_pinned(
    value: Any, metadata: MetadataStore, artifacts: ArtifactStore, *, where: str = ""
) -> tuple[ArtifactRef, dict[str, str]]:
    """The ref of the version ``value`` (a pin, see :func:`as_pin`) names now, and its record.

    The version must be recorded in ``metadata`` and its bytes must be in ``artifacts``, pass the store's
    ref checks (a code-executing materializer only for bytes it wrote there) and match the hash; otherwise
    :class:`UnresolvedPin` (``where``, e.g. ``"step 'train': input 'model'"``, opens its one-line message).
    Nothing is loaded here.
    """
    prefix = f"{where}: " if where else ""
    pin = as_pin(value)
    if pin is None:
        raise InvalidPin(f"{prefix}{_show(value)} is not an ArtifactAlias or ArtifactVersion")
    aliases, table = s.artifact_aliases, s.artifacts
    with metadata.engine.connect() as conn:
        if isinstance(pin, ArtifactAlias):
            owner = alias_project()  # the project runs are recorded in (ISTHMUS_PROJECT, else default)
            target = conn.execute(
                select(aliases.c.content_hash).where(
                    aliases.c.project == owner, aliases.c.name == pin.name, aliases.c.alias == pin.alias
                )
            ).scalar()
            if target is None:
                of = "" if owner == "default" else f" of project {owner!r}"
                raise UnresolvedPin(f"{prefix}no alias {str(pin)!r}{of} in this store; {_fix(pin)}")
        else:
            target = pin.content_hash
        row = conn.execute(select(table).where(table.c.content_hash == target)).mappings().first()
    named = f"{str(pin)!r}" + (f" (-> {_show(target)})" if isinstance(pin, ArtifactAlias) else "")
    if row is None:
        raise UnresolvedPin(f"{prefix}{named} names no artifact recorded in this store; {_fix(pin)}")
    try:
        ref = ArtifactRef(
            uri=row["uri"],
            content_hash=row["content_hash"],
            size=row["size"],
            materializer=row["materializer"],
            python_type=row["python_type"],
            metadata=dict(row["metadata"]) if isinstance(row["metadata"], Mapping) else {},
        )
        artifacts.check_ref(ref)
    except (InvalidArtifactRef, MaterializationError) as exc:
        raise UnresolvedPin(f"{prefix}{named} is refused: {exc}") from None
    if not artifacts.is_valid(ref, "hash"):
        raise UnresolvedPin(
            f"{prefix}{named}: the artifact is missing from the artifact store or its bytes do not match its hash; "
            f"{_fix(pin)}"
        )
    record = {"version": ref.content_hash}
    if isinstance(pin, ArtifactAlias):
        record = {"alias": str(pin), **record}
    ref = replace(ref, metadata={**ref.metadata, RECORD_KEY: record})
    return ref, record


def resolve_argument(value: Any, metadata: MetadataStore, artifacts: ArtifactStore, *, where: str) -> Any:
    """``value`` with its pins resolved (see :func:`resolve_pinned`): a pin becomes its ref, a list or tuple
    holding pins (and refs) a list of refs; anything else is returned as it is."""
    try:
        pin = as_pin(value)
    except InvalidPin as exc:  # a malformed {"isthmus_pinned": …}: name the step and the input
        raise InvalidPin(f"{where}: {exc}") from None
    if pin is not None:
        return resolve_pinned(pin, metadata, artifacts, where=where)[0]
    if (
        isinstance(value, (list, tuple))
        and value
        and (_is_pin(value[0]) or ArtifactRef.is_ref_dict(value[0]) or isinstance(value[0], ArtifactRef))
        and any(_is_pin(v) for v in value)
    ):
        out = []
        for i, item in enumerate(value):
            if _is_pin(item):
                out.append(resolve_pinned(item, metadata, artifacts, where=f"{where}[{i}]")[0])
            elif ArtifactRef.coerce(item) is not None:
                out.append(item)
            else:
                raise InvalidPin(
                    f"{where}[{i}]: a list with pinned artifacts holds {_show(item)}; pass a list of artifacts only "
                    "(ArtifactAlias, ArtifactVersion or refs), or the values as their own argument"
                )
        return out
    return value


def _is_pin(value: Any) -> bool:
    try:
        return as_pin(value) is not None
    except InvalidPin:
        return True  # resolve_pinned reports it


def resolve_pipeline_params(params: Mapping[str, Any], runner: StepRunner, *, pipeline: str = "") -> dict[str, Any]:
    """``params`` with every pinned value resolved once, now (see :func:`resolve_argument`): every step of the
    run then gets the same version, even if the alias moves while it runs."""
    label = f"pipeline {pipeline!r}: " if pipeline else ""
    return {
        name: resolve_argument(value, runner.metadata, runner.artifacts, where=f"{label}parameter {name!r}")
        for name, value in params.items()
    }
