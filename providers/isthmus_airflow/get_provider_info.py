"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "isthmus",
        "name": "isthmus",
        "description": "Portable, cached, recorded isthmus steps as Airflow tasks, with OpenLineage facets.",
        "versions": ["0.1.0"],
    }
