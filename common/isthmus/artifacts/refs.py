"""``ArtifactRef``: the small JSON value that stands for an artifact between tasks and orchestrators."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

REF_MARKER = "__isthmus_artifact__"
_REQUIRED = ("uri", "content_hash", "size", "materializer", "python_type")


@dataclass(frozen=True)
class ArtifactRef:
    """Where an artifact lives and what it is. Its ``content_hash`` names the bytes at ``uri``."""

    uri: str
    content_hash: str
    size: int
    materializer: str
    python_type: str
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

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
    def from_dict(cls, data: dict[str, Any]) -> ArtifactRef:
        fields = {k: data[k] for k in _REQUIRED}
        return cls(**fields, metadata=dict(data.get("metadata") or {}))

    @classmethod
    def from_json(cls, text: str) -> ArtifactRef:
        return cls.from_dict(json.loads(text))

    @staticmethod
    def is_ref_dict(value: Any) -> bool:
        return isinstance(value, dict) and value.get(REF_MARKER) == 1 and all(k in value for k in _REQUIRED)

    @classmethod
    def coerce(cls, value: Any) -> ArtifactRef | None:
        """An ArtifactRef from a ref, its dict or its JSON string; None for anything else."""
        if isinstance(value, ArtifactRef):
            return value
        if cls.is_ref_dict(value):
            return cls.from_dict(value)
        if isinstance(value, str) and value.lstrip()[:1] == "{" and REF_MARKER in value:
            try:
                data = json.loads(value)
            except ValueError:
                return None
            return cls.from_dict(data) if cls.is_ref_dict(data) else None
        return None

    @property
    def short_hash(self) -> str:
        return self.content_hash.split(":", 1)[-1][:12]
