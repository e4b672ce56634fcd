"""``isthmus ui``: serve the web UI (:mod:`isthmus.ui`) standalone with uvicorn. FastAPI and uvicorn are
imported only when the command runs (the ``ui`` extra), so ``isthmus --help`` stays fast."""

from __future__ import annotations

import os

import click

from isthmus.cli.commands import command


@command("ui")
@click.option("--host", default="127.0.0.1", help="Address to listen on (keep 127.0.0.1 unless tokens guard it).")
@click.option("--port", type=int, default=8765, help="Port to listen on.")
@click.option("--airflow-url", help="Airflow's web address, for links to DAG runs (env ISTHMUS_AIRFLOW_URL).")
@click.option("--flyte-url", help="A Flyte console's address, for links to executions (env ISTHMUS_FLYTE_URL).")
def ui_cmd(host: str, port: int, airflow_url: str | None, flyte_url: str | None) -> None:
    """Serve the web UI: runs, diffs, artifacts and aliases, lineage, the audit log."""
    try:
        import uvicorn

        from isthmus.ui import UISettings, create_app
        from isthmus.ui.tokens_auth import standalone_authenticator
    except ImportError as exc:
        click.echo(f"isthmus ui: {exc.name or 'fastapi'} is not installed; install isthmus[ui]", err=True)
        raise click.exceptions.Exit(2) from None
    from isthmus.client import Client

    settings = UISettings(
        airflow_url=airflow_url or os.environ.get("ISTHMUS_AIRFLOW_URL") or None,
        flyte_url=flyte_url or os.environ.get("ISTHMUS_FLYTE_URL") or None,
    )
    client = Client()
    app = create_app(client, settings=settings, authenticate=standalone_authenticator(client))
    click.echo(f"isthmus UI on http://{host}:{port}/ (Ctrl-C stops it)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
