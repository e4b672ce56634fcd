"""The isthmus web UI (FastAPI): :func:`create_app`. Needs the ``ui`` extra (fastapi, jinja2, uvicorn)."""

from __future__ import annotations

from isthmus.ui.app import create_app
from isthmus.ui.views import UISettings

__all__ = ["UISettings", "create_app"]
