"""The ``isthmus`` command line (click + rich)."""

from isthmus.cli.app import app, main

__all__ = ["app", "main"]
