"""Airflow benchmark: the same 10-task DAG with plain ``@task`` and with ``@task.isthmus``, under ``dag.test()``.

    python bench/bench_airflow.py [--repeat 3] [--work-ms 300]

Each task does ``--work-ms`` of CPU work. Prints median wall times: plain, isthmus uncached (a fresh
parameter each run, so every task computes) and isthmus all cached, with the ratios to plain.
Sets up its own AIRFLOW_HOME (SQLite) and ISTHMUS_HOME in a temporary folder.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work-ms", type=int, default=300)
    args = parser.parse_args()
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
    for col in ("DAG", "wall time", "vs plain @task", "target"):
        t.add_column(col)
    t.add_row("plain @task (peer)", f"{plain:.2f} s", "-", "-")
    t.add_row("@task.isthmus, uncached", f"{uncached:.2f} s", f"{(uncached / plain - 1) * 100:+.1f} %", "<= +10 %")
    t.add_row(
        "@task.isthmus, all cached", f"{cached:.2f} s", f"{(cached / plain - 1) * 100:+.1f} %", "faster than plain"
    )
    Console(width=120).print(t)
    print(f"(total benchmark time {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
