"""``isthmus reproduce``: a recorded step run's function called here with its exact recorded inputs and
parameters; what differs from where it ran is printed; nothing is recorded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from isthmus import Client
from isthmus.errors import ReplayError, RunNotFound, StepFailed
from isthmus.store import schema
from tests.core.test_processes import _fake_dist
from tests.core.test_rerun import isthmus_cli
from tests.helpers import REPO, import_fresh, run_python, write_module

STEPS = """
import fakedep
from isthmus import pipeline, step


@step
def load(n: int) -> list[int]:
    return list(range(10, 10 + n))


@step
def check(value: int, limit: int) -> int:
    if value == 13:
        raise ValueError(f"bad value {value} (limit {limit})")
    return value * fakedep.VALUE


@step
def total(values: list) -> int:
    return sum(values)


@pipeline
def flow(n: int = 3, limit: int = 5):
    values = check.partial(limit=limit).map(value=load(n))
    return total(values)
"""

RUN = """
import json
from isthmus.errors import StepFailed
from rp_steps import flow
try:
    run = flow.run(n={n}, max_workers=1)
    print(json.dumps({{"id": run.id}}))
except StepFailed as exc:
    print(json.dumps({{"id": exc.pipeline_run_id, "failed": exc.step_run_id}}))
"""


def _counts() -> tuple[int, int, int]:
    meta = Client().metadata
    with meta.engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (schema.pipeline_runs, schema.step_runs, schema.cache_entries)
        )


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    _fake_dist(site, "1.0")
    write_module(tmp_path, "rp_steps", STEPS)
    return site


def test_a_failed_step_run_raises_again_with_its_recorded_inputs(
    tmp_path: Path, isthmus_home: Path, site: Path
) -> None:
    env = {"ISTHMUS_HOME": str(isthmus_home), "PYTHONPATH": str(site)}
    failed = run_python(RUN.format(n=5), env=env, cwd=tmp_path)
    before = _counts()
    proc = isthmus_cli("reproduce", f"{failed['id']}:check[3]", "--json", home=isthmus_home, cwd=tmp_path, env=env)
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert out["raised"] == "ValueError: bad value 13 (limit 5)" and out["reproduced"] is True
    assert out["recorded_status"] == "FAILED" and "bad value 13" in out["recorded_error"]
    assert list(out["inputs"]) == ["value"] and out["differences"] == []
    proc = isthmus_cli("reproduce", failed["failed"][:12], home=isthmus_home, cwd=tmp_path, env=env)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ValueError: bad value 13" in proc.stderr and "rp_steps.py" in proc.stderr
    assert "raised ValueError: bad value 13 (limit 5) (as recorded)" in proc.stdout
    assert "same python, packages, git commit and code" in proc.stdout
    assert _counts() == before  # nothing recorded, no cache entry


def test_a_list_input_is_given_back_in_order_and_environment_changes_are_named(
    tmp_path: Path, isthmus_home: Path, site: Path
) -> None:
    env = {"ISTHMUS_HOME": str(isthmus_home), "PYTHONPATH": str(site)}
    done = run_python(RUN.format(n=3), env=env, cwd=tmp_path)
    proc = isthmus_cli("reproduce", f"{done['id']}:total", "--json", home=isthmus_home, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert list(out["inputs"]) == ["values[0]", "values[1]", "values[2]"] and out["reproduced"] is True
    # The next day: fakedep is upgraded and the step's code changes.
    shutil.rmtree(site)
    _fake_dist(site, "1.1")
    source = (tmp_path / "rp_steps.py").read_text().replace("return sum(values)", "return sum(values) + 1")
    (tmp_path / "rp_steps.py").write_text(source)
    proc = isthmus_cli("reproduce", f"{done['id']}:check[1]", "--json", home=isthmus_home, cwd=tmp_path, env=env)
    out = json.loads(proc.stdout)
    assert {(d["kind"], d["name"]): (d["recorded"], d["now"]) for d in out["differences"]} == {
        ("package", "fakedep"): ("1.0", "1.1")
    }
    proc = isthmus_cli("reproduce", f"{done['id']}:total", home=isthmus_home, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "package fakedep: 1.0 recorded, 1.1 now" in proc.stdout
    assert "code total: changed since the recorded run" in proc.stdout
    assert "returned 34" in proc.stdout  # 10 + 11 + 12, plus the edit


def test_pdb_stops_in_the_step_and_continues(tmp_path: Path, isthmus_home: Path, site: Path) -> None:
    env = {"ISTHMUS_HOME": str(isthmus_home), "PYTHONPATH": str(site)}
    done = run_python(RUN.format(n=2), env=env, cwd=tmp_path)
    full = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO), str(site)])}
    proc = subprocess.run(
        [sys.executable, "-m", "isthmus", "reproduce", f"{done['id']}:check[0]", "--pdb"],
        input="p value, limit\nc\n",
        cwd=tmp_path,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "(Pdb)" in proc.stdout and "rp_steps.py" in proc.stdout and "(10, 5)" in proc.stdout
    assert "returned 10" in proc.stdout


SECRET_STEP = """
from pathlib import Path
from isthmus import step


@step
def read_rows(src: Path) -> int:
    return len(src.read_text().splitlines())


@step
def call_api(url: str, api_token: str) -> int:
    if api_token != "right-token-1234":
        raise PermissionError(f"rejected {api_token}")
    return len(url)
"""


def test_secret_parameters_must_be_given_and_refs_are_checked(tmp_path: Path, isthmus_home: Path) -> None:
    write_module(tmp_path, "rp_secret", SECRET_STEP)
    mod = import_fresh(tmp_path, "rp_secret")
    with pytest.raises(StepFailed):
        mod.call_api.run("https://example.org", api_token="wrong-token-5678")
    client = Client()
    failed = client.step_runs("latest")[0]
    assert failed["params"]["api_token"] == "***"
    with pytest.raises(ReplayError, match=r"api_token were recorded as \*\*\* .*--param api_token=VALUE"):
        client.reproduce(failed["id"])
    again = client.reproduce(failed["id"], params={"api_token": "wrong-token-5678"})
    assert (
        again.reproduced
        and isinstance(again.error, PermissionError)
        and again.error_text == "PermissionError: rejected ***"
    )
    fixed = client.reproduce("latest:call_api", params={"api_token": "right-token-1234"})
    assert fixed.value == len("https://example.org") and not fixed.reproduced
    with pytest.raises(ReplayError, match=r"takes no parameter\(s\) nope"):
        client.reproduce(failed["id"], params={"api_token": "x" * 8, "nope": 1})
    data = tmp_path / "rows.txt"
    data.write_text("a\nb\n")
    assert mod.read_rows.run(data).value == 2
    data.write_text("a\nb\nc\n")  # the file changes after the run: the path is given back, the change named
    again = client.reproduce("latest:read_rows")
    assert again.value == 3 and [(d.kind, d.name) for d in again.differences] == [("file", "src")]
    for ref, message in [
        ("nosuchid", "no step run matches 'nosuchid'"),
        ("latest:zzz", "has no step 'zzz'"),
        (":call_api", "RUN:STEP needs both parts"),  # "$RUN:call_api" with RUN unset: not the latest run
        ("latest:", "RUN:STEP needs both parts"),
    ]:
        with pytest.raises(RunNotFound, match=message):
            client.reproduce(ref)
        proc = isthmus_cli("reproduce", ref, home=isthmus_home, cwd=tmp_path)
        assert proc.returncode == 1 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_a_tampered_input_ref_is_refused(tmp_path: Path, isthmus_home: Path, site: Path) -> None:
    sys.path.insert(0, str(site))
    try:
        mod = import_fresh(tmp_path, "rp_steps")
        run = mod.flow.run(n=2)
    finally:
        sys.path.remove(str(site))
    client = Client()
    target = run.steps["total"].step_run_id
    row = client.step_run(target)
    hostile = dict(row["inputs"])
    hostile["values[0]"] = {**hostile["values[0]"], "uri": "file:///etc/passwd"}
    with client.metadata.engine.begin() as conn:
        conn.execute(update(schema.step_runs).where(schema.step_runs.c.id == target).values(inputs=hostile))
    with pytest.raises(ReplayError, match=r"input 'values\[0\]'"):
        client.reproduce(target)
    hostile["values[0]"] = row["inputs"]["values[0]"]
    hostile["values[5]"] = row["inputs"]["values[1]"]
    with client.metadata.engine.begin() as conn:
        conn.execute(update(schema.step_runs).where(schema.step_runs.c.id == target).values(inputs=hostile))
    with pytest.raises(ReplayError, match=r"list input 'values' is recorded with gaps"):
        client.reproduce(target)


NOISY_STEP = """
import os
from isthmus import pipeline, step


@step
def connect(db_url: str, password: str) -> int:
    print("hello from the step on stdout")
    os.write(1, b"and from its file descriptor 1\\n")
    raise ConnectionError(f"cannot reach {db_url} with {password}")


@pipeline
def noisy(db_url: str = "postgresql://etl:hunter2pw@db/x", password: str = "s3cretpassw0rd"):
    return connect(db_url, password)
"""


def test_a_reproduced_failure_shows_no_secret_and_json_stays_json(tmp_path: Path, isthmus_home: Path) -> None:
    """The traceback of a reproduced failure is scrubbed like the recorded one (secrets given with --param
    or ISTHMUS_PARAM_*, URL passwords); with --json, what the step prints goes to stderr."""
    write_module(tmp_path, "rp_noisy", NOISY_STEP)
    mod = import_fresh(tmp_path, "rp_noisy")
    with pytest.raises(StepFailed):
        mod.noisy.run()
    secrets = ("hunter2pw", "s3cretpassw0rd")
    params = ["--param", "password=s3cretpassw0rd", "--param", "db_url=postgresql://etl:hunter2pw@db/x"]
    by_env = {"ISTHMUS_PARAM_PASSWORD": "s3cretpassw0rd", "ISTHMUS_PARAM_DB_URL": "postgresql://etl:hunter2pw@db/x"}
    for args, env in [(params, None), ([], by_env)]:
        proc = isthmus_cli("reproduce", "latest:connect", *args, home=isthmus_home, cwd=tmp_path, env=env)
        assert proc.returncode == 1 and "Traceback" in proc.stderr and "ConnectionError" in proc.stderr
        assert not any(s in proc.stdout + proc.stderr for s in secrets), proc.stdout + proc.stderr
        assert "hello from the step" in proc.stdout  # without --json, the step's output stays where it was
        proc = isthmus_cli("reproduce", "latest:connect", *args, "--json", home=isthmus_home, cwd=tmp_path, env=env)
        assert proc.returncode == 1 and json.loads(proc.stdout)["raised"].startswith("ConnectionError")
        assert "hello from the step on stdout" in proc.stderr and "from its file descriptor 1" in proc.stderr
        assert not any(s in proc.stdout + proc.stderr for s in secrets)
    proc = isthmus_cli("reproduce", "latest:connect", "--pdb", "--json", home=isthmus_home, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1
    assert "--pdb and --json" in proc.stderr
