"""``isthmus why``: why a step run computed, or where its cache hit came from."""

from __future__ import annotations

from typing import TYPE_CHECKING

from isthmus.cli.commands import argument, command, json_option
from isthmus.cli.render import dump_json, print_explanation
from isthmus.cli.shared import client, fail
from isthmus.errors import IsthmusError

if TYPE_CHECKING:
    from isthmus.client import Client


@command("why")
@argument("step_run", help="Step run id, unique prefix, or RUN:STEP (e.g. latest:train).")
@json_option
def why(step_run: str, as_json: bool) -> None:
    """Why a step run computed (what in its cache key changed), or where its cache hit came from."""
    c = client()
    try:
        explanation = c.explain(step_run)
    except IsthmusError as exc:
        fail(_pipeline_run_hint(c, step_run) or str(exc))
    if as_json:
        dump_json(explanation.to_dict())
        return
    print_explanation(explanation)


def _pipeline_run_hint(c: Client, ref: str) -> str | None:
    """When ``ref`` names no step run but a pipeline run: say so, with one of its steps as RUN:STEP."""
    if ":" in ref:
        return None
    try:
        run_id = c.resolve_run(ref)
        steps = list(dict.fromkeys(str(sr["invocation"]) for sr in c.step_runs(run_id)))
    except IsthmusError:
        return None
    example = f"{run_id[:8]}:{steps[0] if steps else 'STEP'}"
    listed = f" (its steps: {', '.join(steps[:8])}{', …' if len(steps) > 8 else ''})" if steps else ""
    return f"{ref.strip()!r} is a pipeline run; name one of its steps: RUN:STEP, e.g. {example}{listed}"
