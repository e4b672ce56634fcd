"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "isthmus",
        "name": "isthmus",
        "description": "Portable, cached, recorded isthmus steps as Airflow tasks, with OpenLineage facets.",
        "versions": ["0.1.0"],
        "integrations": [{"integration-name": "isthmus", "tags": ["software"]}],
        "hooks": [{"integration-name": "isthmus", "python-modules": ["isthmus_airflow.hooks.isthmus"]}],
        "operators": [{"integration-name": "isthmus", "python-modules": ["isthmus_airflow.operators.step"]}],
        "connection-types": [
            {
                "hook-class-name": "isthmus_airflow.hooks.isthmus.IsthmusHook",
                "hook-name": "isthmus",
                "connection-type": "isthmus",
                "conn-fields": {
                    "store_url": {
                        "label": "Metadata store URL",
                        "schema": {"type": ["string", "null"]},
                        "description": "Any SQLAlchemy URL; empty: PostgreSQL from host/port/schema/login/password",
                    },
                    "artifact_root": {
                        "label": "Artifact root",
                        "schema": {"type": ["string", "null"]},
                        "description": "A path or fsspec URL, e.g. s3://bucket/isthmus",
                    },
                    "verify": {
                        "label": "Verify artifacts",
                        "schema": {"type": ["string", "null"], "default": "hash", "enum": ["hash", "size", "off"]},
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["extra"],
                    "relabeling": {"host": "PostgreSQL host", "schema": "Database", "login": "User"},
                    "placeholders": {"host": "db.internal", "schema": "isthmus", "port": "5432"},
                },
            },
        ],
        "task-decorators": [{"class-name": "isthmus_airflow.decorators.isthmus.isthmus_task", "name": "isthmus"}],
        "plugins": [{"name": "isthmus", "plugin-class": "isthmus_airflow.plugins.isthmus.IsthmusPlugin"}],
    }
