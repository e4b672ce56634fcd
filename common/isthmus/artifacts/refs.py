"""``ArtifactRef``: the small JSON value that stands for an artifact between tasks and orchestrators.

Refs arrive through XCom, Flyte literals, Slurm manifests and the command line, so they are untrusted
input. Every way to make one (the constructor, :meth:`ArtifactRef.from_dict`, ``from_json``, ``coerce``)
goes through one validation: a ref that exists has a content hash of a known algorithm with exactly its
number of lowercase hex digits (so it can only ever name ``objects/<2 hex>/<hex>`` under a store's root),
a non-negative int size, plain-text uri, materializer and type fields, and JSON metadata of bounded size
and depth. A malformed ref raises :class:`~isthmus.artifacts.errors.InvalidArtifactRef` with a one-line
message before any path exists. (What a type path may name is checked where it is used:
:func:`isthmus.artifacts.types.check_type_path`, by every store the ref is handed to.)
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

from isthmus.artifacts.errors import InvalidArtifactRef

REF_MARKER = "__isthmus_artifact__"
_REQUIRED = ("uri", "content_hash", "size", "materializer", "python_type")

# Algorithm prefix -> number of lowercase hex digits of its digest. Add one with :func:`register_hash_algorithm`.
HASH_ALGORITHMS: dict[str, int] = {"blake3": 64}
_HEX = re.compile(r"[0-9a-f]+")

_MATERIALIZER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}(@[A-Za-z0-9_.+-]{1,64})?")
_IDENT = r"[^\W\d]\w*"
# module (dotted identifiers: it may be imported) ":" qualname (any printable text: R[dict[str, int]])
_PYTHON_TYPE = re.compile(rf"{_IDENT}(\.{_IDENT})*:[^\x00-\x1f\x7f]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_URI = 2048
_MAX_TYPE = 1024
_MAX_SIZE = 2**63 - 1
MAX_METADATA_BYTES = 128 * 1024  # about the JSON size of a ref's metadata (a table's columns, a shape)
MAX_METADATA_DEPTH = 16
MAX_JSON_DEPTH = 100  # nesting of any JSON isthmus parses from outside (refs, --params, manifests)


def register_hash_algorithm(name: str, hex_digits: int) -> None:
    """Accept content hashes ``<name>:<hex_digits lowercase hex digits>`` (e.g. for a store that another
    hash function filled)."""
    if not re.fullmatch(r"[a-z0-9]+", name) or not 16 <= hex_digits <= 256:
        raise ValueError(f"hash algorithm {name!r} with {hex_digits} hex digits: use [a-z0-9]+ and 16..256 digits")
    HASH_ALGORITHMS[name] = hex_digits


def _show(value: Any) -> str:
    text = repr(value)  # escapes NUL, newlines and control characters: the message stays one line
    return text if len(text) <= 90 else f"{text[:80]}...({len(text)} chars)"


def check_content_hash(value: Any) -> str:
    """``value`` if it is ``<known algorithm>:<exact hex digest>``; raises InvalidArtifactRef otherwise."""
    if not isinstance(value, str):
        raise InvalidArtifactRef(
            f"artifact ref: content_hash must be a string like 'blake3:<64 hex digits>', got {type(value).__name__} "
            f"{_show(value)}"
        )
    algorithm, sep, digest = value.partition(":")
    digits = HASH_ALGORITHMS.get(algorithm) if sep else None
    if digits is None:
        raise InvalidArtifactRef(
            f"artifact ref: content_hash {_show(value)} has no known algorithm prefix "
            f"({', '.join(a + ':' for a in HASH_ALGORITHMS)}); pass a ref written by isthmus"
        )
    if len(digest) != digits or _HEX.fullmatch(digest) is None:
        raise InvalidArtifactRef(
            f"artifact ref: content_hash {_show(value)} is not {algorithm}: followed by exactly {digits} "
            "lowercase hex digits; pass a ref written by isthmus"
        )
    return value


def json_depth_error(value: Any, limit: int = MAX_JSON_DEPTH) -> str | None:
    """Why ``value`` (parsed JSON) nests too deep, or None. Iterative: any depth is measured safely."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > limit:
            return f"nests deeper than {limit} levels"
        stack.extend((child, depth + 1) for child in children)
    return None


def loads_bounded(text: str | bytes, what: str, error: type[Exception] = ValueError) -> Any:
    """``json.loads(text)``, raising ``error`` with one line (naming ``what``) for invalid JSON and for JSON
    nested deeper than :data:`MAX_JSON_DEPTH` levels (which would otherwise end in a RecursionError)."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise error(f"{what} nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise error(f"{what} is not valid JSON ({exc})") from None
    problem = json_depth_error(data)
    if problem:
        raise error(f"{what} {problem}")
    return data


def metadata_problem(metadata: dict[str, Any]) -> str | None:
    """Why ``metadata`` is not small, shallow JSON, or None (walked iteratively, stopping at the limits)."""
    budget = MAX_METADATA_BYTES
    stack: list[tuple[Any, int]] = [(metadata, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_METADATA_DEPTH:
            return f"nests deeper than {MAX_METADATA_DEPTH} levels"
        if isinstance(item, dict):
            for key, value in item.items():
                if not isinstance(key, str):
                    return f"has a key that is not a string ({_show(key)})"
                budget -= len(key) + 4
                stack.append((value, depth + 1))
        elif isinstance(item, (list, tuple)):
            budget -= 2 + len(item)
            stack.extend((value, depth + 1) for value in item)
        elif isinstance(item, str):
            budget -= len(item) + 2
        elif item is None or isinstance(item, (bool, int, float)):
            budget -= 8
        else:
            return f"holds a {type(item).__name__}, which is not JSON"
        if budget < 0:
            return f"is larger than {MAX_METADATA_BYTES // 1024} KiB"
    return None


def _check_text(name: str, value: Any, pattern: re.Pattern[str] | None, limit: int, hint: str) -> None:
    if not isinstance(value, str):
        raise InvalidArtifactRef(f"artifact ref: {name} must be a string, got {type(value).__name__} {_show(value)}")
    if not value or len(value) > limit or _CONTROL.search(value) or (pattern and not pattern.fullmatch(value)):
        raise InvalidArtifactRef(f"artifact ref: {name} {_show(value)} is not {hint}")


@dataclass(frozen=True)
class ArtifactRef:
    """Where an artifact lives and what it is. Its ``content_hash`` names the bytes at ``uri``.

    Validated on construction (see the module docstring); a store additionally refuses a ref whose
    ``uri`` is not where that store keeps ``content_hash``.
    """

    uri: str
    content_hash: str
    size: int
    materializer: str
    python_type: str
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        check_content_hash(self.content_hash)
        if type(self.size) is not int or not 0 <= self.size <= _MAX_SIZE:
            raise InvalidArtifactRef(
                f"artifact ref {self.content_hash}: size must be a non-negative integer, got "
                f"{type(self.size).__name__} {_show(self.size)}"
            )
        _check_text("uri", self.uri, None, _MAX_URI, f"a URL of at most {_MAX_URI} printable characters")
        _check_text("materializer", self.materializer, _MATERIALIZER, 200, "a materializer key like 'json@1'")
        _check_text("python_type", self.python_type, _PYTHON_TYPE, _MAX_TYPE, "a type path like 'package.module:Class'")
        if not isinstance(self.metadata, dict):
            raise InvalidArtifactRef(
                f"artifact ref {self.content_hash}: metadata must be a JSON object, got {_show(self.metadata)}"
            )
        if self.metadata:
            problem = metadata_problem(self.metadata)
            if problem:
                raise InvalidArtifactRef(
                    f"artifact ref {self.content_hash}: metadata {problem}; artifact metadata is a short description "
                    "(shape, columns), pass the ref exactly as isthmus wrote it"
                )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {  # marker first: recognisable at the head of any JSON form
            REF_MARKER: 1,
            "uri": self.uri,
            "content_hash": self.content_hash,
            "size": self.size,
            "materializer": self.materializer,
            "python_type": self.python_type,
        }
        if self.metadata:
            data["metadata"] = copy.deepcopy(self.metadata)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Any) -> ArtifactRef:
        """The ref in ``data`` (a ``to_dict`` form); raises InvalidArtifactRef for anything malformed."""
        if not isinstance(data, dict):
            raise InvalidArtifactRef(f"artifact ref must be a JSON object, got {type(data).__name__} {_show(data)}")
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise InvalidArtifactRef(f"artifact ref {_show(data)} lacks {', '.join(missing)}")
        metadata = data.get("metadata")
        if metadata is None:
            metadata = {}
        elif not isinstance(metadata, dict):
            raise InvalidArtifactRef(f"artifact ref: metadata must be a JSON object, got {_show(metadata)}")
        return cls(**{k: data[k] for k in _REQUIRED}, metadata=dict(metadata))

    @classmethod
    def from_json(cls, text: str) -> ArtifactRef:
        if not isinstance(text, (str, bytes)):
            raise InvalidArtifactRef(f"artifact ref is not valid JSON (a {type(text).__name__}): {_show(text)}")
        return cls.from_dict(loads_bounded(text, f"artifact ref {_show(text)}", InvalidArtifactRef))

    @staticmethod
    def is_ref_dict(value: Any) -> bool:
        return isinstance(value, dict) and value.get(REF_MARKER) == 1 and all(k in value for k in _REQUIRED)

    @classmethod
    def coerce(cls, value: Any) -> ArtifactRef | None:
        """An ArtifactRef from a ref, its dict or its JSON string; None for anything that is not shaped like
        a ref. Something shaped like one (the marker and every field) must be a valid ref: otherwise
        InvalidArtifactRef, never a silent fallback to a plain value."""
        if isinstance(value, ArtifactRef):
            return value
        if cls.is_ref_dict(value):
            return cls.from_dict(value)
        if isinstance(value, str) and value.lstrip()[:1] == "{" and REF_MARKER in value:
            try:
                data = json.loads(value)
            except ValueError:
                return None
            except RecursionError:
                raise InvalidArtifactRef(f"artifact ref {_show(value)} nests deeper than JSON can be read") from None
            return cls.from_dict(data) if cls.is_ref_dict(data) else None
        return None

    @property
    def short_hash(self) -> str:
        return self.content_hash.split(":", 1)[-1][:12]
