"""``isthmus ui``: serve the web UI (:mod:`isthmus.ui`) standalone with uvicorn. FastAPI and uvicorn are
imported only when the command runs (the ``ui`` extra), so ``isthmus --help`` stays fast."""

from __future__ import annotations

import os
from typing import Annotated

import typer


def ui_cmd(
    host: Annotated[str, typer.Option(help="Address to listen on (keep 127.0.0.1 unless tokens guard it).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    airflow_url: Annotated[
        str | None, typer.Option(help="Airflow's web address, for links to DAG runs (env ISTHMUS_AIRFLOW_URL).")
    ] = None,
    flyte_url: Annotated[
        str | None, typer.Option(help="A Flyte console's address, for links to executions (env ISTHMUS_FLYTE_URL).")
    ] = None,
) -> None:
    """Serve the web UI: runs, diffs, artifacts and aliases, lineage, the audit log."""
    try:
        import uvicorn

        from isthmus.ui import UISettings, create_app
        from isthmus.ui.tokens_auth import standalone_authenticator
    except ImportError as exc:
        typer.echo(f"isthmus ui: {exc.name or 'fastapi'} is not installed; install isthmus[ui]", err=True)
        raise typer.Exit(2) from None
    from isthmus.client import Client

    settings = UISettings(
        airflow_url=airflow_url or os.environ.get("ISTHMUS_AIRFLOW_URL") or None,
        flyte_url=flyte_url or os.environ.get("ISTHMUS_FLYTE_URL") or None,
    )
    client = Client()
    app = create_app(client, settings=settings, authenticate=standalone_authenticator(client))
    typer.echo(f"isthmus UI on http://{host}:{port}/ (Ctrl-C stops it)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
