"""The version of the isthmus distribution (its three packages ship together)."""

__version__ = "0.1.0"
