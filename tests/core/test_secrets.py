"""Secrets never reach the metadata store, the artifacts or error records."""

from __future__ import annotations

import collections
import functools
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from isthmus import StepFailed, pipeline, step
from isthmus.runner import default_runner

ENV_CANARY = "canary-env-7f3a9c1e5b"
PARAM_CANARY = "canary-param-d41d8cd98f"


@step
def connect(host: str, password: str, retries: int = 1) -> dict:
    # uses the secret, returns something derived from it
    return {"host": host, "password_length": len(password)}


@step
def leaky(password: str) -> int:
    raise ConnectionError(f"login failed for password {password} at db://admin:{password}@db.local/x")


@pipeline
def secret_pipeline(password: str, host: str = "db.local"):
    return connect(host, password=password)


def _all_bytes(root: Path) -> bytes:
    blob = b""
    for path in root.rglob("*"):
        if path.is_file():
            blob += path.read_bytes()
    return blob


def test_canary_secret_appears_nowhere(isthmus_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_API_TOKEN", ENV_CANARY)
    monkeypatch.setenv("DATABASE_PASSWORD", ENV_CANARY)
    # even an explicitly allowlisted secret-looking variable is redacted
    monkeypatch.setenv("ISTHMUS_ENV_ALLOWLIST", "MY_SERVICE_API_TOKEN,DATABASE_PASSWORD,OMP_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    from isthmus import config

    config.reset()
    run = secret_pipeline.run(password=PARAM_CANARY)
    assert run.outputs == {"host": "db.local", "password_length": len(PARAM_CANARY)}
    second = secret_pipeline.run(password=PARAM_CANARY)
    assert second.steps["connect"].cache_hit
    with pytest.raises(StepFailed) as info:
        default_runner().run(leaky, {"password": PARAM_CANARY})
    assert PARAM_CANARY not in str(info.value)

    meta = default_runner().metadata
    sr = meta.get_step_run(run.steps["connect"].step_run_id)
    assert sr["params"]["password"] == "***" and sr["params"]["host"] == "db.local"
    assert meta.get_run(run.id)["params"]["password"] == "***"
    env = meta.get_environment(sr["environment_hash"])
    assert env["env"]["MY_SERVICE_API_TOKEN"] == "***" and env["env"]["OMP_NUM_THREADS"] == "3"
    failed = meta.get_step_run(info.value.step_run_id)
    assert "***" in failed["error"] and "admin:***@" in failed["error"]

    default_runner().metadata.dispose()
    everything = _all_bytes(isthmus_home)  # SQLite file + WAL + artifacts + caches
    assert everything, "nothing was written"
    for canary in (ENV_CANARY, PARAM_CANARY):
        assert canary.encode() not in everything
    # and through SQL, in case of any encoding
    from sqlalchemy import text

    with meta.engine.connect() as conn:
        for table in ("pipeline_runs", "step_runs", "environments", "code_snapshots", "artifacts", "cache_entries"):
            for row in conn.execute(text(f"SELECT * FROM {table}")):
                assert ENV_CANARY not in str(row) and PARAM_CANARY not in str(row)


def test_git_remote_credentials_are_redacted(tmp_path: Path) -> None:
    import subprocess

    from isthmus.fingerprint.environment import git_info

    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "remote", "add", "origin", f"https://user:{PARAM_CANARY}@example.invalid/x.git"],
        check=True,
    )
    (repo / "a.txt").write_text("x")
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], check=True
    )
    info = git_info(str(repo))
    assert info is not None and info["commit"] and info["dirty"] is False
    assert PARAM_CANARY not in info["remote"] and "user:***@" in info["remote"]
    (repo / "a.txt").write_text("changed")
    git_info.cache_clear()
    assert git_info(str(repo))["dirty"] is True


# -- every route a secret could take, planted with canaries ---------------------------------------------
CANARY = "cnry"  # every planted secret starts with this; none of them may appear in any record or output

SECRET_STEPS = """
import dataclasses, os
from pydantic import BaseModel, SecretBytes, SecretStr
from isthmus import pipeline, step


class DbConfig(BaseModel):
    host: str
    password: str


@dataclasses.dataclass
class ApiConfig:
    url: str
    api_key: str


@step
def use_secret(creds: SecretStr, n: int) -> int:
    assert isinstance(creds, SecretStr), type(creds)  # the object itself reaches the step
    return len(creds.get_secret_value()) + n


@step
def use_configs(db: DbConfig, api: ApiConfig, blob: SecretBytes) -> str:
    return f"{db.host}|{api.url}|{len(blob.get_secret_value())}"


@step
def return_secretstr(n: int) -> SecretStr:
    return SecretStr(os.environ["C_OUT_SECRETSTR"])


@step
def return_config(n: int) -> ApiConfig:
    return ApiConfig("https://api.example", os.environ["C_OUT_DATACLASS"])


@step
def echo(token: str) -> dict:
    return {"echoed": token}


@step
def call_api(url: str, headers: list) -> int:
    token = headers[0][1].split(" ", 1)[1]  # the token cut out of 'Bearer <token>'
    raise PermissionError(f"401 from {url} for {token}")


@step
def reveal(creds: SecretStr) -> int:
    raise ValueError(f"bad credentials {creds.get_secret_value()!r} (retry later)")


@step
def env_leak(n: int) -> int:
    raise RuntimeError("the service said: " + os.environ["MY_SERVICE_TOKEN"])


@pipeline
def api_flow(url: str, headers: list, api: ApiConfig):
    use_configs(DbConfig(host="db", password=api.api_key), api, SecretBytes(b"x"))
    return call_api(url, headers)


@pipeline
def object_params(api: ApiConfig, n: int = 1):
    return use_secret(SecretStr(api.api_key), n)
"""

SECRET_SCRIPT = """
import json, os, sys, traceback
from pydantic import SecretBytes, SecretStr
from isthmus import StepFailed
from isthmus.runner import default_runner
import secret_steps as s

env = os.environ
runner = default_runner()
out = {}

r1 = runner.run(s.use_secret, {"creds": SecretStr(env["C_SECRETSTR"]), "n": 1})
r2 = runner.run(s.use_secret, {"creds": SecretStr(env["C_SECRETSTR"]), "n": 1})
r3 = runner.run(s.use_secret, {"creds": SecretStr(env["C_SECRETSTR"] + "-rotated"), "n": 1})
out["secretstr"] = [r1.value, r2.cache_hit, r3.cache_hit, r1.step_run_id]

r = runner.run(s.use_configs, {
    "db": s.DbConfig(host="db", password=env["C_MODEL_FIELD"]),
    "api": s.ApiConfig("https://api.example", env["C_DATACLASS_FIELD"]),
    "blob": SecretBytes(env["C_SECRETBYTES"].encode()),
})
out["configs"] = [r.value, r.step_run_id]

out["refused"] = {}
for step, args in ((s.return_secretstr, {"n": 1}), (s.return_config, {"n": 1}), (s.echo, {"token": env["C_ECHO"]})):
    try:
        runner.run(step, args)
        out["refused"][step.name] = None
    except StepFailed as exc:
        out["refused"][step.name] = str(exc)

out["failures"] = {}
headers = [["Authorization", "Bearer " + env["C_BEARER"]]]
api = s.ApiConfig("https://api.example", env["C_PIPELINE_PARAM"])
cases = (
    ("call_api", lambda: s.api_flow.run(url="https://api.example/v1", headers=headers, api=api)),
    ("reveal", lambda: runner.run(s.reveal, {"creds": SecretStr(env["C_REVEALED"])})),
    ("env_leak", lambda: runner.run(s.env_leak, {"n": 1})),
)
for name, call in cases:
    try:
        call()
    except StepFailed as exc:
        traceback.print_exc()  # what a user's script or an orchestrator log shows
        out["failures"][name] = {"message": str(exc), "id": exc.step_run_id, "cause": type(exc.__cause__).__name__}

run = s.object_params.run(api=api, n=2)
out["object_params_run"] = run.id
print(json.dumps(out))
sys.stdout.flush()
runner.run(s.reveal, {"creds": SecretStr(env["C_REVEALED"])})  # uncaught: Python prints the chain itself
"""


def _canaries() -> dict[str, str]:
    routes = [
        "SECRETSTR",
        "MODEL_FIELD",
        "DATACLASS_FIELD",
        "SECRETBYTES",
        "OUT_SECRETSTR",
        "OUT_DATACLASS",
        "ECHO",
        "BEARER",
        "PIPELINE_PARAM",
        "REVEALED",
        "ENV",
    ]
    return {f"C_{r}": f"{CANARY}{r.lower().replace('_', '')}7f3a9c" for r in routes}


def test_secrets_on_every_route_reach_no_record_artifact_event_or_output(isthmus_home: Path, tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    from tests.helpers import REPO, write_module

    write_module(tmp_path, "secret_steps", SECRET_STEPS)
    canaries = _canaries()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENLINEAGE")}
    env.update(canaries, ISTHMUS_HOME=str(isthmus_home), MY_SERVICE_TOKEN=canaries["C_ENV"])
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO)])
    proc = subprocess.run(
        [sys.executable, "-c", SECRET_SCRIPT], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1, proc.stderr  # the last, uncaught StepFailed
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    # the SecretStr reached the step intact; its hash is in the key (same secret: hit, rotated: miss)
    assert out["secretstr"][:3] == [len(canaries["C_SECRETSTR"]) + 1, True, False]
    assert out["configs"][0] == f"db|https://api.example|{len(canaries['C_SECRETBYTES'])}"
    refused = out["refused"]
    assert "output 'output' holds a secret (a pydantic.types.SecretStr" in refused["return_secretstr"]
    assert "holds a secret (a secret-named field at output.api_key)" in refused["return_config"]
    assert "holds a secret (the value of a secret at output['echoed'])" in refused["echo"]
    assert all("never writes secrets into artifacts" in m for m in refused.values())
    failures = out["failures"]
    assert set(failures) == {"call_api", "reveal", "env_leak"}
    assert all(f["cause"] == "ScrubbedError" and "***" in f["message"] for f in failures.values())

    # no canary in stdout/stderr, but the scrubbed traceback of the step is there
    for canary in canaries.values():
        assert canary not in proc.stdout and canary not in proc.stderr, canary
    assert "ScrubbedError" in proc.stderr and "step traceback (secrets scrubbed)" in proc.stderr
    assert 'in reveal\n    raise ValueError(f"bad credentials' in proc.stderr
    assert "bad credentials '***'" in proc.stderr and "401 from https://api.example/v1 for ***" in proc.stderr
    assert CANARY not in proc.stdout + proc.stderr

    # records: the step runs, pipeline runs, artifacts (no secret object was written) and lineage events
    meta = _store(isthmus_home)
    sr = meta.get_step_run(out["secretstr"][3])
    assert sr["params"] == {"creds": "***", "n": 1} and sr["inputs"] == {}
    cfg = meta.get_step_run(out["configs"][1])
    assert cfg["params"] == {"db": "***", "api": "***", "blob": "***"} and cfg["inputs"] == {}
    call = meta.get_step_run(failures["call_api"]["id"])
    assert call["params"]["headers"] == [["Authorization", "***"]] and "for ***" in call["error"]
    assert "***" in call["traceback"] and "call_api" in call["traceback"]
    run = meta.get_run(out["object_params_run"])
    assert run["params"] == {"api": "***", "n": 2}
    failed_run = meta.get_run(meta.get_step_run(failures["call_api"]["id"])["pipeline_run_id"])
    assert failed_run["params"]["api"] == "***" and failed_run["params"]["headers"] == [["Authorization", "***"]]
    meta.dispose()

    events = (isthmus_home / "lineage" / "events.jsonl").read_text()
    assert '"eventType": "FAIL"' in events and "401 from" in events
    everything = _all_bytes(isthmus_home)  # SQLite file + WAL + every artifact + lineage events + caches
    assert list((isthmus_home / "artifacts").rglob("*")), "no artifact was written"
    assert CANARY.encode() not in everything


def _store(home: Path):
    from isthmus.store import MetadataStore

    return MetadataStore(f"sqlite:///{home / 'isthmus.db'}")


@step
def takes_secretstr(creds: object, n: int) -> int:
    from pydantic import SecretStr

    assert isinstance(creds, SecretStr)
    return len(creds.get_secret_value()) * n


@step
def raises_with(creds: object, token_header: list) -> int:
    raise ConnectionError(f"{creds.get_secret_value()} / {token_header[1]} / {token_header[1].split()[1]}")


def test_secretstr_parameter_is_hashed_never_stored_and_reaches_the_step(isthmus_home: Path) -> None:
    from pydantic import SecretStr

    runner = default_runner()
    first = runner.run(takes_secretstr, {"creds": SecretStr(PARAM_CANARY), "n": 2})
    assert first.value == 2 * len(PARAM_CANARY) and not first.cache_hit
    assert runner.run(takes_secretstr, {"creds": SecretStr(PARAM_CANARY), "n": 2}).cache_hit
    assert not runner.run(takes_secretstr, {"creds": SecretStr(PARAM_CANARY + "x"), "n": 2}).cache_hit
    row = runner.metadata.get_step_run(first.step_run_id)
    assert row["params"] == {"creds": "***", "n": 2} and row["inputs"] == {}


def test_the_raised_step_failure_carries_no_secret_in_its_chain(isthmus_home: Path) -> None:
    import traceback

    from pydantic import SecretStr

    from isthmus.errors import ScrubbedError

    with pytest.raises(StepFailed) as info:
        default_runner().run(
            raises_with, {"creds": SecretStr(PARAM_CANARY), "token_header": ["X-Api-Key", f"Bearer {ENV_CANARY}"]}
        )
    exc = info.value
    assert isinstance(exc.__cause__, ScrubbedError) and exc.__suppress_context__
    assert exc.__cause__.original_type == "builtins.ConnectionError"
    assert exc.__cause__.__traceback__ is None and exc.__context__ is None
    printed = "".join(traceback.format_exception(exc))
    assert PARAM_CANARY not in printed and ENV_CANARY not in printed
    assert "ConnectionError: *** / *** / ***" in printed and "in raises_with" in printed


@pytest.mark.parametrize(
    ("route", "value"),
    [
        ("dict of headers", {"Authorization": f"Bearer {PARAM_CANARY}"}),
        ("header pair", ("Proxy-Authorization", f"Basic {PARAM_CANARY}")),
        ("url", f"https://user:{PARAM_CANARY}@host/x"),
        ("bearer text", f"curl -H 'Authorization: Bearer {PARAM_CANARY}'"),
    ],
)
def test_json_parameters_are_stored_redacted(route: str, value: object, isthmus_home: Path) -> None:
    @step(name=f"json_param_{abs(hash(route))}")
    def uses(config: object) -> int:
        return 1

    result = default_runner().run(uses, {"config": value})
    stored = default_runner().metadata.get_step_run(result.step_run_id)["params"]["config"]
    assert PARAM_CANARY not in str(stored) and "***" in str(stored), route


class _Slotted:
    __slots__ = ("user", "password")

    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user, password


def _connect_to(host: str, password: str | None = None) -> str:
    return host


@step
def takes_config(config: object) -> int:
    return 1


class _Extra(BaseModel):
    model_config = ConfigDict(extra="allow")
    host: str


@pipeline
def config_pipeline(password: str):
    return [
        takes_config(_Slotted("u", password)),
        takes_config(functools.partial(_connect_to, "h", password=password)),
        takes_config(_Extra(host="h", password=password)),
        takes_config(collections.deque([f"postgresql://u:{password}@db/x"])),
        takes_config(bytearray(password.encode())),
    ]


def test_an_object_whose_stored_form_holds_a_known_secret_is_not_stored(isthmus_home: Path) -> None:
    """Where the walk for secrets does not look (slots, a partial's arguments, a model's extra fields, a
    deque, a bytearray), the stored form of an input object is searched for the secrets the call knows:
    one that holds a secret is keyed as a secret (digest only), never written to the artifact store."""
    run = config_pipeline.run(password=PARAM_CANARY)
    assert all(sr.status == "COMPLETED" for sr in run.steps.values())
    assert PARAM_CANARY.encode() not in _all_bytes(isthmus_home)
    store = default_runner().metadata
    rows = store.step_runs_of(run.id)
    assert len(rows) == 5 and all(r["inputs"] == {} and r["params"] == {"config": "***"} for r in rows)
    again = config_pipeline.run(password=PARAM_CANARY)  # the same secrets: the same keys, all hits
    assert again.cache_hits == 5
    other = config_pipeline.run(password=PARAM_CANARY + "-rotated")  # another secret: computed again
    assert other.cache_hits == 0


@step
def make_client(host: str, api_token: str) -> object:
    return _Slotted(host, api_token)


@step
def make_partial(host: str, password: str) -> object:
    return functools.partial(_connect_to, host, password=password)


def test_an_output_whose_stored_form_holds_a_given_secret_is_refused(isthmus_home: Path) -> None:
    """Where the search of an output does not look (slots, a partial's arguments), its stored form is
    searched for the secrets the step was given: refused in one line (no retry), nothing stored."""
    from isthmus import StepFailed
    from isthmus.errors import SecretValueError

    for made, args in (
        (make_client, {"host": "h", "api_token": PARAM_CANARY}),
        (make_partial, {"host": "h", "password": PARAM_CANARY}),
    ):
        with pytest.raises(StepFailed) as info:
            default_runner().run(made, args)
        message = str(info.value)
        assert f"step {made.name!r}" in message and "output 'output' holds a secret (in its stored form)" in message
        assert isinstance(info.value.__cause__, SecretValueError) or "SecretValueError" in message
        assert PARAM_CANARY not in message and "\n" not in message
    assert PARAM_CANARY.encode() not in _all_bytes(isthmus_home)
    plain = default_runner().run(make_client, {"host": "h", "api_token": "x"})  # too short to be searched for
    assert plain.outputs["output"].python_type.endswith("_Slotted")


@step
def keyed_by(names: list) -> dict:
    return {name: len(name) for name in names}


def test_plain_data_is_searched_by_its_values_not_its_stored_form() -> None:
    """A list of names that reads like a header pair makes its strings secrets the step was given; an
    output dict keyed by those names holds no secret value (keys are names): stored, not refused."""
    names = ["MY_API_TOKEN", "OPENLINEAGE_PARENT_ID"]
    result = default_runner().run(keyed_by, {"names": names})
    assert default_runner().artifacts.load(result.outputs["output"]) == {n: len(n) for n in names}


def test_an_object_without_a_known_secret_is_still_an_input_artifact(isthmus_home: Path) -> None:
    @pipeline
    def plain(password: str):
        return takes_config(_Slotted("u", "not-the-password"))

    run = plain.run(password=PARAM_CANARY)
    row = default_runner().metadata.step_runs_of(run.id)[0]
    assert set(row["inputs"]) == {"config"} and row["params"] == {}


def test_a_models_extra_fields_are_part_of_its_secret_digest(isthmus_home: Path) -> None:
    """A pydantic model's extra fields (``extra="allow"``) holding a secret the run knows: the model is
    never stored, and a rotated secret in an extra field computes again instead of hitting the old key."""
    from pydantic import BaseModel, ConfigDict

    class Settings(BaseModel):
        model_config = ConfigDict(extra="allow")
        host: str

    @pipeline
    def with_settings(api_key: str):
        return takes_config(Settings(host="h", key=api_key))

    first = with_settings.run(api_key="literal-key-0001")
    row = default_runner().metadata.step_runs_of(first.id)[0]
    assert row["inputs"] == {} and row["params"] == {"config": "***"}
    assert b"literal-key-0001" not in _all_bytes(isthmus_home / "artifacts")
    assert with_settings.run(api_key="literal-key-0001").cache_hits == 1
    assert with_settings.run(api_key="literal-key-0002").cache_hits == 0


class _Tagged(list):
    pass


def _tagged(mode: int) -> _Tagged:
    items = _Tagged([1, 2])
    items.mode = mode  # type: ignore[attr-defined]
    return items


def _retries(n: int = 0) -> int:
    return n


@step
def describe_container(obj: object) -> str:
    if isinstance(obj, collections.defaultdict):
        return f"factory {obj.default_factory()}"
    return f"mode={getattr(obj, 'mode', None)}"


def test_a_container_subclass_with_state_besides_its_items_is_keyed_by_all_of_it(isthmus_home: Path) -> None:
    """A list whose subclass carries attributes, a defaultdict's factory: not plain data (their items alone
    would key them), so a change there computes again instead of returning the old result."""
    runner = default_runner()
    for make in (_tagged, lambda n: collections.defaultdict(functools.partial(_retries, n))):
        first = runner.run(describe_container, {"obj": make(1)})
        second = runner.run(describe_container, {"obj": make(2)})
        assert not second.cache_hit and second.load() != first.load()
        assert runner.run(describe_container, {"obj": make(2)}).cache_hit
