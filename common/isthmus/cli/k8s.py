"""Commands for steps on Kubernetes: ``isthmus k8s render`` (the Job a step would run as, without a
cluster) and ``isthmus run-step --on k8s`` (run it as a Job and wait). :mod:`isthmus.k8s` and the
``kubernetes`` client are imported inside the commands, so ``isthmus --help`` stays fast."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import click

from isthmus.cli.commands import group

k8s_app = group("k8s", help="Steps as Kubernetes Jobs (the k8s extra).")
TARGETS = ("local", "k8s", "kubernetes")


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {' '.join(message.split())}", err=True)
    raise click.exceptions.Exit(1)


def _prepare(
    step_path: str, inputs: dict[str, Any], params: dict[str, Any], context: dict[str, Any], **options: Any
) -> Any:
    """(executor, step, refs/params split, run context) for a step given by import path."""
    from isthmus.artifacts.refs import ArtifactRef
    from isthmus.context import RunContext
    from isthmus.k8s import KubernetesJobExecutor
    from isthmus.step import load_step

    step = load_step(step_path)
    ex = KubernetesJobExecutor(**{k: v for k, v in options.items() if v not in (None, "")})
    refs = {}
    for name, value in inputs.items():
        ref = ArtifactRef.coerce(value)
        if ref is None:
            _fail(f"--inputs {name!r} is not an artifact ref; pass plain values in --params")
        refs[name] = ref
    ctx = RunContext.from_dict(context) if context else RunContext(orchestrator="kubernetes")
    return ex, step, {**params, **refs}, ctx


@k8s_app.command("render")
@click.option("--step", required=True, help="Import path 'package.module:function'.")
@click.option("--params", help="JSON object name -> value (or @file).")
@click.option("--inputs", help="JSON object name -> ArtifactRef (or @file).")
@click.option("--image", help="Container image (default $ISTHMUS_K8S_IMAGE).")
@click.option("--namespace", "-n")
@click.option("--record", help="'db' or 'manifest'.")
def render(
    step: str, params: str | None, inputs: str | None, image: str | None, namespace: str | None, record: str | None
) -> None:
    """Print the batch/v1 Job a step would run as (JSON; no cluster needed). Credentials appear only as
    Secret references; the Job's own Secret is listed by its keys, never its values."""
    from isthmus.cli.remote import _json_arg
    from isthmus.errors import IsthmusError

    try:
        ex, s, arguments, ctx = _prepare(
            step,
            _json_arg(inputs, "inputs"),
            _json_arg(params, "params"),
            {},
            image=image,
            namespace=namespace,
            record=record,
        )
        ins, ps = ex.split_arguments(s, arguments)
        job, secret = ex.build(s, ins, ps, ctx, ex.cache_key(s, ins, ps, ctx))
    except IsthmusError as exc:
        _fail(str(exc))
    click.echo(json.dumps(job.job, indent=2))
    keys = ", ".join(sorted(secret["stringData"]))
    click.echo(
        f"# the executor also creates Secret {job.secret_name} (keys: {keys}) and deletes both when done", err=True
    )


def run_step_on(
    target: str,
    step: str,
    inputs: dict[str, Any],
    params: dict[str, Any],
    context: dict[str, Any],
    record: str,
) -> dict[str, Any]:
    """``isthmus run-step --on k8s``: the step as a Kubernetes Job (cache asked first), waited for; the
    summary ``run-step`` prints."""
    if target not in TARGETS:
        _fail(f"--on {target!r} must be one of {', '.join(TARGETS)}")
    from isthmus.errors import IsthmusError
    from isthmus.k8s import K8sStepFailed

    try:
        ex, s, arguments, ctx = _prepare(step, inputs, params, context, record=record)
        jobs: list[Any] = []
        result = ex.run(s, arguments, ctx, on_submit=jobs.append)
    except K8sStepFailed as exc:
        return {"status": "FAILED", "step_run_id": exc.step_run_id, "job": exc.job_name, "error": str(exc)}
    except IsthmusError as exc:
        _fail(str(exc))
    return {
        "status": "COMPLETED",
        "step_run_id": result.step_run_id,
        "cache_hit": result.cache_hit,
        "job": jobs[0].name if jobs else None,
        "outputs": {k: v.to_dict() for k, v in result.outputs.items()},
    }
