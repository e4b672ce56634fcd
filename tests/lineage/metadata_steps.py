"""Steps that log metadata, importable by path (a Slurm job, an Airflow DAG file and a Flyte task load them
the way a user's project module is loaded), shared by the lineage tests of every orchestrator."""

from __future__ import annotations

from typing import Annotated

from isthmus import log_metadata, step

ACCURACY = 0.93


@step
def evaluate(rows: int) -> Annotated[dict, "model"]:
    """Logs numbers (an int, a float), a flag, a list and a short fact for its run, and one fact per output."""
    log_metadata({"accuracy": ACCURACY, "rows": rows, "passed": True, "classes": ["cat", "dog"]})
    log_metadata({"framework": "sklearn", "n_features": 3}, output="model")
    return {"weights": [0.5] * 3, "rows": rows}


@step
def count_tokens(text: str) -> int:
    """A secret-like key holding a number (a count of tokens, not a token): recorded and shown as a number."""
    tokens = len(text.split())
    log_metadata({"api_token_count": tokens, "max_tokens": 512})
    return tokens


@step
def log_password(user: str) -> int:
    """Logs a value built at run time under a secret-named key: refused, the step fails."""
    log_metadata({"db_password": f"{user}-pw-{len(user) * 7919}", "rows": 3})
    return len(user)
