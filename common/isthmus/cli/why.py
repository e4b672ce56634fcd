"""``isthmus why``: why a step run computed, or where its cache hit came from."""

from __future__ import annotations

from isthmus.cli.commands import argument, command, json_option
from isthmus.cli.render import dump_json, print_explanation
from isthmus.cli.shared import client, fail
from isthmus.errors import IsthmusError


@command("why")
@argument("step_run", help="Step run id, unique prefix, or RUN:STEP (e.g. latest:train).")
@json_option
def why(step_run: str, as_json: bool) -> None:
    """Why a step run computed (what in its cache key changed), or where its cache hit came from."""
    c = client()
    try:
        explanation = c.explain(step_run)
    except IsthmusError as exc:
        fail(str(exc))
    if as_json:
        dump_json(explanation.to_dict())
        return
    print_explanation(explanation)
