"""Errors of the lineage package (a branch of :class:`~isthmus.errors.IsthmusError`)."""

from __future__ import annotations

from isthmus.errors import IsthmusError


class UnknownRunStatus(IsthmusError, ValueError):
    """A run record whose status is not a :class:`~isthmus.records.RunStatus`: no event type stands for it."""
