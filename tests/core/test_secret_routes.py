"""Secrets that reach a step by a route its names do not show never reach a record, an artifact, a lineage
event, a log or a command's output.

Each case runs in fresh processes against one ``ISTHMUS_HOME`` and then greps every byte there (the
SQLite file and its WAL, artifacts, ``lineage/events.jsonl``), the processes' stdout and stderr, and what
``isthmus runs show`` / ``isthmus diff --json`` print, for a planted canary. The cache still works: the
same secret is a hit in another process, a rotated one a miss.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import REPO

STEPS = """
import os, re
from types import SimpleNamespace
import isthmus


@isthmus.step
def connect(host: str, value: str) -> int:  # an innocent parameter name
    if value != "ok":
        raise PermissionError(f"login to {host} refused for {value}")
    return 1


@isthmus.step
def measure(host: str, value: str) -> int:
    return len(host) + len(value)


@isthmus.pipeline
def etl(host: str, password: str):
    return connect(host, password)  # positional: the step never sees the name 'password'


@isthmus.pipeline
def etl_ok(host: str, password: str):
    return measure(host, password)


class Client:  # a project class holding what it was given (no secret-looking field names)
    def __init__(self, value):
        self.value = value


@isthmus.step
def use_client(client: Client, n: int) -> int:
    return len(client.value) + n


@isthmus.step
def fail_with(cfg: dict) -> int:
    raise ValueError("could not log in with " + cfg["inner"]["password"])


@isthmus.step
def echo_cfg(cfg: dict) -> dict:
    return cfg


@isthmus.step
def echo_value(value: str) -> str:
    return "got " + value
"""


def _env(home: Path, project: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ISTHMUS_", "OPENLINEAGE"))}
    env.update(extra, ISTHMUS_HOME=str(home))
    env["PYTHONPATH"] = os.pathsep.join([str(project), str(REPO)])
    return env


def _python(code: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "isthmus", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def _leaks(home: Path, canary: str, *outputs: subprocess.CompletedProcess[str]) -> list[str]:
    """Where ``canary`` shows up: files under ``home`` (relative paths) and the processes' outputs."""
    found = [
        str(p.relative_to(home)) for p in sorted(home.rglob("*")) if p.is_file() and canary.encode() in p.read_bytes()
    ]
    for i, proc in enumerate(outputs):
        if canary in proc.stdout:
            found.append(f"stdout of process {i}")
        if canary in proc.stderr:
            found.append(f"stderr of process {i}")
    return found


def _last_json(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    (path / "route_steps.py").write_text(textwrap.dedent(STEPS))
    return path


# -- B1: a secret pipeline parameter follows its value into every step run ----------------------------------
PIPELINE = """
import json, sys, traceback
import isthmus
import route_steps as s

out = {}
try:
    s.etl.run(host="db1", password=sys.argv[1])
except isthmus.StepFailed as exc:
    traceback.print_exc()  # what a user's script shows
    out["failed"] = [str(exc), exc.step_run_id]
run = s.etl_ok.run(host="db1", password=sys.argv[1])
out["ok"] = [run.id, run.steps["measure"].cache_hit, run.steps["measure"].step_run_id]
print(json.dumps(out))
"""


def test_a_secret_pipeline_parameter_is_secret_in_every_step_it_reaches(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    canary = "pipe-CANARY-0b5e55ed"
    env = _env(home, project)
    first = _python(PIPELINE.replace("sys.argv[1]", repr(canary)), env, project)
    assert first.returncode == 0, first.stderr
    out = _last_json(first)
    assert "refused for ***" in out["failed"][0] and not out["ok"][1]
    again = _python(PIPELINE.replace("sys.argv[1]", repr(canary)), env, project)  # another day, same secret
    assert _last_json(again)["ok"][1], "the same secret in a fresh process must be a hit"
    rotated = _python(PIPELINE.replace("sys.argv[1]", repr(canary + "-rotated")), env, project)
    assert not _last_json(rotated)["ok"][1], "a rotated secret must be a miss"

    show = _cli(["runs", "show", "latest"], env, project)
    listed = _cli(["runs", "list"], env, project)
    assert show.returncode == 0 and listed.returncode == 0, show.stderr + listed.stderr
    from isthmus.store import MetadataStore

    meta = MetadataStore(f"sqlite:///{home / 'isthmus.db'}")
    failed = meta.get_step_run(out["failed"][1])
    assert failed["params"] == {"host": "db1", "value": "***"} and "refused for ***" in failed["error"]
    assert meta.get_step_run(out["ok"][2])["params"] == {"host": "db1", "value": "***"}
    meta.dispose()
    assert (home / "lineage" / "events.jsonl").read_text().count('"eventType"') >= 4
    assert _leaks(home, canary, first, again, rotated, show, listed) == []


# -- B2: a parameter holding the value of a secret environment variable is a secret parameter ------------
ENV_SECRET = """
import json, os
import isthmus
import route_steps as s

token = os.environ["MY_API_TOKEN"]
r = isthmus.run_step(s.measure, {"host": "h", "value": token})
inside = isthmus.run_step(s.measure, {"host": "h", "value": "Token " + token + " (prod)"})
obj = isthmus.run_step(s.use_client, {"client": s.Client(token), "n": 1})
shaped = isthmus.run_step(s.measure, {"host": "h", "value": os.environ["BUILD_NOTE"]})  # no secret name
try:
    isthmus.run_step(s.connect, {"host": "api", "value": token})
except isthmus.StepFailed as exc:
    failed = [str(exc), exc.step_run_id]
try:
    isthmus.run_step(s.echo_value, {"value": token})
    refused = None
except isthmus.StepFailed as exc:
    refused = str(exc)
print(json.dumps({"plain": [r.step_run_id, r.cache_hit, r.cache_key], "inside": inside.step_run_id,
                  "object": [obj.step_run_id, obj.value, obj.cache_hit], "failed": failed, "refused": refused,
                  "shaped": shaped.step_run_id}))
"""


def test_a_parameter_holding_a_secret_environment_value_is_a_secret_parameter(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    canary = "tok-CANARY-51c0ffee"
    shaped = "ghp_ENVCANARY0123456789abcdefABCDEF0123"  # a credential by its shape, under any name
    env = _env(home, project, MY_API_TOKEN=canary, BUILD_NOTE=shaped)
    first = _python(ENV_SECRET, env, project)
    assert first.returncode == 0, first.stderr
    out = _last_json(first)
    second = _python(ENV_SECRET, env, project)
    again = _last_json(second)
    assert again["plain"][1] and again["object"][2], "the same secret in a fresh process must be a hit"
    # through the keyed hash: with another salt the key of the secret parameter changes
    salted = _python(ENV_SECRET, {**env, "ISTHMUS_SECRET_SALT": "s" * 40}, project)
    assert _last_json(salted)["plain"][2] != out["plain"][2]
    rotated = _python(ENV_SECRET, {**env, "MY_API_TOKEN": canary + "-rotated"}, project)
    assert not _last_json(rotated)["plain"][1], "a rotated secret must be a miss"

    from isthmus.store import MetadataStore

    meta = MetadataStore(f"sqlite:///{home / 'isthmus.db'}")
    assert meta.get_step_run(out["plain"][0])["params"] == {"host": "h", "value": "***"}
    assert meta.get_step_run(out["inside"])["params"] == {"host": "h", "value": "Token *** (prod)"}
    obj = meta.get_step_run(out["object"][0])
    assert out["object"][1] == len(canary) + 1
    assert obj["params"] == {"client": "***", "n": 1} and obj["inputs"] == {}, "never written as an artifact"
    assert "refused for ***" in out["failed"][0] and "refused for ***" in meta.get_step_run(out["failed"][1])["error"]
    assert out["refused"] and "holds a secret" in out["refused"]
    assert meta.get_step_run(out["shaped"])["params"] == {"host": "h", "value": "***"}
    meta.dispose()
    assert _leaks(home, canary, first, second, salted, rotated) == []
    assert _leaks(home, "ENVCANARY", first, second, salted, rotated) == []


# -- B3: no silent scan budget: a secret after 20,000 other nodes is found -----------------------------------
BUDGET = """
import json, sys, traceback
import isthmus
import route_steps as s

canary = sys.argv[1]
cfg = {"pad": list(range(20000)), "names": ["x%d" % i for i in range(20000)], "inner": {"password": canary}}
out = {}
try:
    isthmus.run_step(s.fail_with, {"cfg": cfg})
except isthmus.StepFailed as exc:
    traceback.print_exc()
    out["failed"] = str(exc)
try:
    isthmus.run_step(s.echo_cfg, {"cfg": cfg})
    out["echo"] = "stored"
except isthmus.StepFailed as exc:
    out["echo"] = str(exc)
print(json.dumps(out))
"""


def test_a_secret_deep_inside_a_large_value_is_found(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    canary = "CANARY-pw-7f3a9e"
    env = _env(home, project)
    proc = _python(BUDGET.replace("sys.argv[1]", repr(canary)), env, project)
    assert proc.returncode == 0, proc.stderr
    out = _last_json(proc)
    assert "could not log in with ***" in out["failed"]
    assert "holds a secret" in out["echo"] and "['inner']" in out["echo"], out["echo"]
    assert _leaks(home, canary, proc) == []


# -- B5: a value known secret in one place of the code snapshot is hidden everywhere in it -----------------
CONSTS = """
import os, re
from types import SimpleNamespace
import isthmus

CFG = SimpleNamespace(user="svc", pw=os.environ["SVC_X"])         # secret by its field name
PATTERN = re.compile(os.environ["SVC_X"] + "|foo")              # the same value, under no secret name
BANNER = "connecting as svc with " + os.environ["SVC_X"]
ENDPOINT = "https://svc:" + os.environ["SVC_X"] + "@api.example.com/v1"


@isthmus.step
def use_consts(n: int) -> int:
    return len(CFG.pw) + bool(PATTERN) + len(BANNER) + len(ENDPOINT) + n


@isthmus.pipeline
def consts_flow(n: int):
    return use_consts(n)
"""

CONSTS_RUN = """
import json
import consts_mod
run = consts_mod.consts_flow.run(n=1)
print(json.dumps([run.id, run.steps["use_consts"].cache_hit]))
"""


def test_a_secret_seen_once_in_the_code_is_hidden_everywhere_in_its_snapshot(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    canary = "constX-CANARY-1234"
    (project / "consts_mod.py").write_text(textwrap.dedent(CONSTS))
    env = _env(home, project, SVC_X=canary)
    first = _python(CONSTS_RUN, env, project)
    assert first.returncode == 0, first.stderr
    same = _python(CONSTS_RUN, env, project)
    assert _last_json(same)[1], "the same secret in a fresh process must be a hit"
    rotated = _python(CONSTS_RUN, {**env, "SVC_X": canary + "-rotated"}, project)
    assert not _last_json(rotated)[1], "a rotated secret must be a miss"
    diff = _cli(["diff", "--json", _last_json(first)[0], _last_json(rotated)[0]], env, project)
    assert diff.returncode == 0, diff.stderr
    assert "use_consts" in diff.stdout  # the code changed (a keyed digest), shown redacted
    from isthmus.store import MetadataStore

    meta = MetadataStore(f"sqlite:///{home / 'isthmus.db'}")
    sources = [meta.get_code_snapshot(r["code_hash"]) for r in meta.step_runs_of(_last_json(first)[0])]
    meta.dispose()
    text = json.dumps(sources, default=str)
    assert "re.compile('***|foo')" in text and "connecting as svc with ***" in text, text
    assert _leaks(home, canary, first, same, rotated, diff) == []
    assert _leaks(home, canary + "-rotated", first, same, rotated, diff) == []


# -- B7: a locals-showing traceback formatter finds no secret in isthmus's frames ---------------------------
LOCALS = """
import io, json, os, sys
from rich.console import Console
from rich.traceback import Traceback
import isthmus
import route_steps as s

def rendered(call):
    try:
        call()
    except isthmus.StepFailed:
        buf = io.StringIO()
        Console(file=buf, width=250, color_system=None).print(Traceback(show_locals=True, width=250))
        return buf.getvalue()
    raise AssertionError("no failure")

secret = os.environ["PWD_FOR_TEST"]
texts = [
    rendered(lambda: isthmus.run_step(s.fail_with, {"cfg": {"inner": {"password": secret}}})),
    rendered(lambda: s.etl.run(host="db1", password=secret)),
    rendered(lambda: isthmus.run_step(s.connect, {"host": "db1", "value": secret})),
    rendered(lambda: s.connect.run("db1", secret)),
]
print(json.dumps(texts))
"""


def test_isthmus_frames_hold_no_secret_when_a_step_failure_propagates(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    canary = "locals-CANARY-99aa"
    env = _env(home, project, PWD_FOR_TEST=canary)
    proc = _python(LOCALS, env, project)
    assert proc.returncode == 0, proc.stderr
    texts = _last_json(proc)
    assert all("StepFailed" in t for t in texts)
    assert all("arguments" in t or "params" in t for t in texts), "the locals panels were rendered"
    counts = [t.count(canary) for t in texts]
    assert counts == [0, 0, 0, 0], [line for t in texts for line in t.splitlines() if canary in line]
    assert _leaks(home, canary, proc) == []


# -- B11: an allowlisted variable holding a credential-shaped value is recorded as *** ------------------------
ALLOW = """
import json
import isthmus
import route_steps as s
r = isthmus.run_step(s.measure, {"host": "h", "value": "v"})
from isthmus.runner import default_runner
meta = default_runner().metadata
print(json.dumps(meta.get_environment(meta.get_step_run(r.step_run_id)["environment_hash"])["env"]))
"""


def test_an_allowlisted_variable_with_a_credential_shaped_value_is_redacted(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    values = {
        "GH_PAT": "ghp_ENVCANARY0123456789abcdefABCDEF0123",
        "OPENAI": "sk-proj-ENVCANARYabcdefghijklmnop0123456789",
        "AWS_ID": "AKIAENVCANARY1234567",
        "SLACK": "xoxb-1234567890-ENVCANARY-abcdefghij",
        "GITLAB": "glpat-ENVCANARYabcdef123456",
        "SESSIONLESS": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJFTlZDQU5BUlkifQ.c2lnbmF0dXJlX2J5dGVzX2hlcmU",
        "OPAQUE": "Zq8vENVCANARYk3LmP9xR2tY7wQ4nB6cH1jD5fG0sA",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "BUILD_COMMIT": "4a6cf7d0b5e55ed0123456789abcdef012345678",
        "RUN_UUID": "6f1c9a52-3b0e-4f7d-9a43-2a6c1d8e5b71",
        "VENV_DIR": "/opt/conda/envs/Py311ProjectEnv2024Release/bin",
    }
    env = _env(home, project, ISTHMUS_ENV_ALLOWLIST=",".join(values), **values)
    proc = _python(ALLOW, env, project)
    assert proc.returncode == 0, proc.stderr
    recorded = _last_json(proc)
    for name in ("GH_PAT", "OPENAI", "AWS_ID", "SLACK", "GITLAB", "SESSIONLESS", "OPAQUE"):
        assert recorded[name] == "***", (name, recorded[name])
    for name in ("CUDA_VISIBLE_DEVICES", "BUILD_COMMIT", "RUN_UUID", "VENV_DIR"):
        assert recorded[name] == values[name], name  # ordinary values are still recorded
    assert _leaks(home, "ENVCANARY", proc) == []
    assert _leaks(home, "RU5DQU5BUlk", proc) == []  # the JWT's payload


# -- a credential written in the source of a step that fails: its traceback shows that line ------------------
LITERAL = """
import isthmus


def connect(host, password):
    raise PermissionError(f"{host} refused the login")


@isthmus.step
def login(host: str) -> int:
    client = {"user": "etl", "password": "litX-CANARY-5678"}
    return connect(host, password="litX-CANARY-5678") + len(client)
"""

LITERAL_RUN = """
import json, traceback
import isthmus
import literal_mod
try:
    literal_mod.login.run("db1")
except isthmus.StepFailed as exc:
    traceback.print_exc()
    print(json.dumps([str(exc), exc.step_run_id]))
"""


def test_a_credential_written_in_failing_source_is_scrubbed_from_its_traceback(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (project / "literal_mod.py").write_text(textwrap.dedent(LITERAL))
    env = _env(home, project)
    failed = _python(LITERAL_RUN, env, project)
    error, step_run_id = _last_json(failed)
    assert "PermissionError: db1 refused the login" in error
    show = _cli(["runs", "show", "latest"], env, project)
    assert show.returncode == 0, show.stderr
    from isthmus.store import MetadataStore

    meta = MetadataStore(f"sqlite:///{home / 'isthmus.db'}")
    tb = meta.get_step_run(step_run_id)["traceback"]
    meta.dispose()
    assert 'return connect(host, password="***")' in tb, tb  # the line is shown, the credential is not
    assert _leaks(home, "litX-CANARY-5678", failed, show) == []
