"""Airflow benchmark: the same 10-task DAG with plain ``@task`` and with ``@task.isthmus``.

    python bench/bench_airflow.py [--repeat 3] [--work-ms 0 300] [--mode both|live|dagtest]

Each task does ``--work-ms`` of CPU work: first none (the table shows the whole overhead isthmus adds
per task), then 300 ms (a task with some work) beside it. Two settings, each with its own AIRFLOW_HOME (SQLite) and
ISTHMUS_HOME in a temporary folder:

- ``live``: a real deployment (api-server, scheduler, dag-processor, triggerer, LocalExecutor; the one
  the tests use, ``tests/airflow_live.py``), runs triggered through the REST API one after the other.
  Prints medians of the DAG run's wall time (trigger to end, as a user waits, and Airflow's own start
  to end), of a task instance's duration, and of the isthmus part of a task: the StepRunner's time
  minus the step's own work when it computes, the whole lookup when it hits.
- ``dagtest``: the same DAGs under ``dag.test()`` in one process.

Plain, isthmus uncached (a fresh parameter each run, so every task computes) and isthmus all cached;
the first round is a warm-up and is not counted. Never passes or fails.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.airflow_live: the deployment the tests start

DAG_FILE = """
import time
from airflow.sdk import dag, task
from isthmus import step

WORK_S = {work_s}


def busy(x: int) -> int:
    end = time.perf_counter() + WORK_S
    n = 0
    while time.perf_counter() < end:
        n += 1
    return x + 1


@task
def plain_step(x: int) -> int:
    return busy(x)


@step
def isthmus_step(x: int) -> int:
    return busy(x)


@dag(dag_id="bench_plain", schedule=None, params={{"start": 0}}, render_template_as_native_obj=True)
def bench_plain():
    x = "{{{{ params.start }}}}"
    for i in range(10):
        x = plain_step.override(task_id=f"t{{i}}")(x)


@dag(dag_id="bench_isthmus", schedule=None, params={{"start": 0}}, render_template_as_native_obj=True)
def bench_isthmus():
    x = "{{{{ params.start }}}}"
    for i in range(10):
        x = task.isthmus(isthmus_step, task_id=f"t{{i}}")(x)


bench_plain()
bench_isthmus()
"""

RUNNER = """
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
plan = json.loads(sys.argv[2])
out = []
for dag_id, start in plan:
    dag = bag.get_dag(dag_id)
    t0 = time.perf_counter()
    dr = dag.test(run_conf={"start": start})
    out.append([dag_id, start, time.perf_counter() - t0, str(dr.state)])
print("RESULT " + json.dumps(out))
"""


def run_dagtest(args: argparse.Namespace) -> None:
    home = Path(tempfile.mkdtemp(prefix="isthmus-bench-airflow-"))
    dags = home / "dags"
    dags.mkdir()
    (dags / "bench_dags.py").write_text(textwrap.dedent(DAG_FILE.format(work_s=args.work_ms / 1000)))
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__OPENLINEAGE__DISABLED": "true",
        "ISTHMUS_HOME": str(home / "isthmus"),
        "PYTHONPATH": str(REPO),
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "db", "migrate"], env=env, check=True, capture_output=True
    )
    plan = []
    for i in range(args.repeat + 1):  # the first round warms up the DAG bundle and the metadata DB
        start = 1000 + 100 * i  # chains of different rounds never share a value
        plan += [["bench_plain", i], ["bench_isthmus", start], ["bench_isthmus", start]]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(dags), __import__("json").dumps(plan)],
        env=env,
        capture_output=True,
        text=True,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"benchmark failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    results = __import__("json").loads(line[7:])[3:]  # drop the warm-up round
    assert all(r[3] == "success" for r in results), results
    plain = statistics.median(r[2] for r in results[0::3])
    uncached = statistics.median(r[2] for r in results[1::3])
    cached = statistics.median(r[2] for r in results[2::3])

    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"10-task DAG under dag.test() ({args.work_ms} ms of work per task, median of {args.repeat})")
    for col in ("DAG", "wall time", "vs plain @task", "added per task", "target"):
        t.add_column(col)
    t.add_row("plain @task (peer)", f"{plain:.2f} s", "-", "-", "-")
    t.add_row(
        "@task.isthmus, uncached",
        f"{uncached:.2f} s",
        f"{(uncached / plain - 1) * 100:+.1f} %",
        f"{(uncached - plain) / 10 * 1000:+.1f} ms",
        "<= +10 %",
    )
    t.add_row(
        "@task.isthmus, all cached",
        f"{cached:.2f} s",
        f"{(cached / plain - 1) * 100:+.1f} %",
        f"{(cached - plain) / 10 * 1000:+.1f} ms",
        "faster than plain" if args.work_ms else "-",
    )
    Console(width=120).print(t)
    print(f"(total benchmark time {time.perf_counter() - t0:.0f} s)")


def _plan(repeat: int) -> list[tuple[str, str, int]]:
    """(label, dag_id, start) per DAG run; each round's chain starts from a value no other round uses."""
    plan = []
    for i in range(repeat + 1):
        start = 1000 + 100 * i
        plan += [
            ("plain", "bench_plain", start),
            ("uncached", "bench_isthmus", start),
            ("cached", "bench_isthmus", start),
        ]
    return plan


def _seconds(start: str | None, end: str | None) -> float:
    from datetime import datetime

    if not start or not end:
        return float("nan")
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def run_live(args: argparse.Namespace) -> None:
    from isthmus.context import derived_run_id
    from tests.airflow_live import LiveAirflow

    live = LiveAirflow()
    t0 = time.perf_counter()
    try:
        live.start()
        started = time.perf_counter() - t0
        live.put_dag("bench_dags", textwrap.dedent(DAG_FILE.format(work_s=args.work_ms / 1000)))
        rows: dict[str, list[dict[str, float]]] = {"plain": [], "uncached": [], "cached": []}
        for n, (label, dag_id, start) in enumerate(_plan(args.repeat)):
            live.wait_for_dag(dag_id)
            t1 = time.perf_counter()
            run_id = live.trigger(dag_id, {"start": start})
            while live.dag_run(dag_id, run_id)["state"] not in ("success", "failed"):
                time.sleep(0.1)
            waited = time.perf_counter() - t1
            dag_run = live.dag_run(dag_id, run_id)
            if dag_run["state"] != "success":
                sys.exit(f"{dag_id} {run_id} {dag_run['state']}:\n{live.log_tails(['scheduler'], 60)}")
            tis = live.task_instances(dag_id, run_id).values()
            sample = {
                "wait": waited,
                "dag_run": _seconds(dag_run["start_date"], dag_run["end_date"]),
                "task": statistics.median(ti["duration"] for ti in tis),
            }
            if label != "plain":
                store = live.metadata()
                steps = store.step_runs_of(derived_run_id("airflow", dag_id, run_id))
                store.dispose()
                assert all(s["cache_hit"] == (label == "cached") for s in steps), (label, steps)
                work = 0.0 if label == "cached" else args.work_ms / 1000
                sample["isthmus"] = statistics.median(s["duration_ms"] / 1000 - work for s in steps)
            if n >= 3:  # the first round warms up the DAG bundle, the workers and the stores
                rows[label].append(sample)
    finally:
        live.stop()

    from rich.console import Console
    from rich.table import Table

    def med(label: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[label])

    t = Table(
        title=f"10-task DAG under the live scheduler, LocalExecutor ({args.work_ms} ms of work per task, "
        f"median of {args.repeat} runs)"
    )
    for col in ("DAG", "trigger -> end", "DAG run (Airflow)", "task instance", "isthmus part of a task"):
        t.add_column(col, justify="right")
    for label, name in (
        ("plain", "plain @task (peer)"),
        ("uncached", "@task.isthmus, uncached"),
        ("cached", "@task.isthmus, all cached"),
    ):
        isthmus_part = "-" if label == "plain" else f"{med(label, 'isthmus') * 1000:.0f} ms"
        wait, dag_run = med(label, "wait"), med(label, "dag_run")
        vs = "" if label == "plain" else f" ({(wait / med('plain', 'wait') - 1) * 100:+.0f} %)"
        t.add_row(name, f"{wait:.2f} s{vs}", f"{dag_run:.2f} s", f"{med(label, 'task'):.2f} s", isthmus_part)
    Console(width=140).print(t)
    print(f"(deployment up in {started:.0f} s; total {time.perf_counter() - t0:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work-ms", type=int, nargs="+", default=[0, 300])
    parser.add_argument("--mode", choices=("both", "live", "dagtest"), default="both")
    args = parser.parse_args()
    for work_ms in args.work_ms:  # zero-work tasks first: the whole overhead
        one = argparse.Namespace(**{**vars(args), "work_ms": work_ms})
        if args.mode in ("both", "live"):
            run_live(one)
        if args.mode in ("both", "dagtest"):
            run_dagtest(one)


if __name__ == "__main__":
    main()
