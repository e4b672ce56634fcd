"""The ``isthmus`` command line (typer + rich)."""

from isthmus.cli.app import app, main

__all__ = ["app", "main"]
