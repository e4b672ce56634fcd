"""The metadata store: runs, step runs, artifacts, aliases, snapshots, cache entries and leases."""

from isthmus.store.metadata import MetadataStore

__all__ = ["MetadataStore"]
