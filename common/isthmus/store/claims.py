"""What :meth:`MetadataStore.claim_step_run <isthmus.store.metadata.MetadataStore.claim_step_run>` answers:
one of four small frozen results, matched on by type.

- :class:`ClaimHit`: a cached result passed the cheap check and was recorded as a hit;
- :class:`ClaimCandidates`: cached results exist but need a full (rehashing) check first;
- :class:`ClaimStarted`: this holder took the lease and the RUNNING row is written;
- :class:`ClaimBusy`: another live holder computes the same key: wait and claim again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

from isthmus.artifacts.refs import ArtifactRef
from isthmus.records import StepRunRecord


class CacheCandidate(TypedDict, total=False):
    """A step run recorded under a cache key (newest first). The store fills ``id``, ``outputs``,
    ``pipeline_run_id``, ``metadata`` and ``created_at``; the runner adds the parsed ``refs`` (None when one is
    malformed) and, for a hit, the ``row`` it recorded."""

    id: str
    outputs: dict[str, Any] | None
    pipeline_run_id: str | None
    metadata: dict[str, Any] | None
    created_at: float
    refs: dict[str, ArtifactRef] | None
    row: StepRunRecord


@dataclass(frozen=True)
class ClaimHit:
    """A cached result, recorded as a hit in the claim's transaction (``candidate["row"]``)."""

    candidate: CacheCandidate


@dataclass(frozen=True)
class ClaimCandidates:
    """Cached results whose artifacts need a full check before one can be a hit."""

    rows: list[CacheCandidate]


@dataclass(frozen=True)
class ClaimStarted:
    """The lease is this holder's and the RUNNING row is written; ``aborted``: step runs of dead
    holders this claim marked ABORTED."""

    aborted: list[str]


@dataclass(frozen=True)
class ClaimBusy:
    """Another live holder computes the same key."""


ClaimResult = ClaimHit | ClaimCandidates | ClaimStarted | ClaimBusy
