"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

from isthmus_airflow import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "isthmus",
        "name": "isthmus",
        "description": "Portable, cached, recorded isthmus steps as Airflow tasks, with OpenLineage facets.",
        "versions": [__version__],
        "integrations": [{"integration-name": "isthmus", "tags": ["software"]}],
        "hooks": [
            {
                "integration-name": "isthmus",
                "python-modules": ["isthmus_airflow.hooks.isthmus", "isthmus_airflow.hooks.slurm"],
            }
        ],
        "operators": [
            {
                "integration-name": "isthmus",
                "python-modules": [
                    "isthmus_airflow.operators.step",
                    "isthmus_airflow.operators.slurm",
                    "isthmus_airflow.operators.kubernetes",
                ],
            }
        ],
        "triggers": [{"integration-name": "isthmus", "python-modules": ["isthmus_airflow.triggers.slurm"]}],
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
            {
                "hook-class-name": "isthmus_airflow.hooks.slurm.SlurmHook",
                "hook-name": "Slurm (isthmus)",
                "connection-type": "slurm",
                "conn-fields": {
                    "backend": {
                        "label": "Backend",
                        "schema": {"type": ["string", "null"], "default": "cli", "enum": ["cli", "rest", "pyslurm"]},
                        "description": "cli: sbatch/squeue/scontrol here or over SSH; rest: slurmrestd",
                    },
                    "key_file": {"label": "SSH key file", "schema": {"type": ["string", "null"]}},
                    "known_hosts": {
                        "label": "SSH known_hosts",
                        "schema": {"type": ["string", "null"]},
                        "description": "Host keys are verified; default ~/.ssh/known_hosts",
                    },
                    "socket": {"label": "slurmrestd unix socket", "schema": {"type": ["string", "null"]}},
                    "slurm_conf": {"label": "SLURM_CONF (local cli)", "schema": {"type": ["string", "null"]}},
                    "partition": {"label": "Default partition", "schema": {"type": ["string", "null"]}},
                    "account": {"label": "Default account", "schema": {"type": ["string", "null"]}},
                    "qos": {"label": "Default QOS", "schema": {"type": ["string", "null"]}},
                    "python": {
                        "label": "Python on compute nodes",
                        "schema": {"type": ["string", "null"]},
                        "description": "Interpreter with isthmus and the steps installed",
                    },
                    "work_root": {
                        "label": "Shared job directory",
                        "schema": {"type": ["string", "null"]},
                        "description": "Where job logs and manifests go (visible to the nodes)",
                    },
                    "record": {
                        "label": "Record runs via",
                        "schema": {"type": ["string", "null"], "default": "db", "enum": ["db", "manifest"]},
                        "description": "manifest: compute nodes cannot reach the metadata store",
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema"],
                    "relabeling": {
                        "host": "SSH login node or slurmrestd URL",
                        "login": "User",
                        "password": "JWT (rest)",
                    },
                    "placeholders": {"host": "login.hpc.example or http://slurmrestd:6820", "port": "22 / 6820"},
                },
            },
        ],
        "task-decorators": [
            {"class-name": "isthmus_airflow.decorators.isthmus.isthmus_task", "name": "isthmus"},
            {"class-name": "isthmus_airflow.operators.slurm.slurm_task", "name": "isthmus_slurm"},
            {"class-name": "isthmus_airflow.operators.kubernetes.kubernetes_task", "name": "isthmus_kubernetes"},
        ],
        "plugins": [{"name": "isthmus", "plugin-class": "isthmus_airflow.plugins.isthmus.IsthmusPlugin"}],
    }
