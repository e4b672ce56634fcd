"""Secret parameters of a step run as a real Slurm job: the job gets them only through its 0600
credentials file (never its command line, script, an input artifact or a record), and the cache key the
submitter looks up is the one the job stores."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from pathlib import Path

import pytest
from pydantic import SecretBytes, SecretStr

from isthmus.errors import IsthmusError, StepDefinitionError
from isthmus.runner import default_runner
from isthmus.secret_params import SECRET_PARAMS_ENV, secret_params_from_env
from isthmus.slurm import SlurmExecutor, SlurmStepFailed, connect
from tests.slurm import steps


def executor(client) -> SlurmExecutor:
    return SlurmExecutor(client, default_runner(), poll_interval=0.2)


def _canary(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex}"


def _record_scripts(client) -> list[str]:
    """The batch scripts the client submits (as Slurm stores them)."""
    scripts: list[str] = []
    submit = client.submit

    async def recording(spec):
        scripts.append(spec.script)
        return await submit(spec)

    client.submit = recording
    return scripts


def _files_holding(roots: list[Path], canaries: list[str]) -> list[str]:
    needles = [c.encode() for c in canaries] + [base64.b64encode(c.encode()) for c in canaries]
    hits = []
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                try:
                    data = path.read_bytes()
                except OSError:
                    continue
                hits.extend(f"{path}: {n[:12]!r}" for n in needles if n in data)
    return hits


def test_secret_params_reach_the_job_only_through_its_credentials_file(client, job_home: Path, slurm_cluster):
    token, word, salt, fed = _canary("tok"), _canary("str"), _canary("salt"), _canary("fed")
    ex = executor(client)
    scripts = _record_scripts(client)
    jobs: list = []
    named = asyncio.run(ex.arun(steps.token_length, {"api_token": token, "x": 1}, on_submit=jobs.append))
    typed = asyncio.run(
        ex.arun(
            steps.secret_length,
            {"token": SecretStr(word), "salt": SecretBytes(salt.encode())},
            on_submit=jobs.append,
        )
    )
    # a DAG's secret param feeding a parameter whose name says nothing
    given = asyncio.run(ex.arun(steps.text_length, {"text": fed}, on_submit=jobs.append, secrets={fed}))
    assert (named.value, typed.value, given.value) == (len(token) + 1, len(word) + len(salt), len(fed))
    assert not (named.cache_hit or typed.cache_hit or given.cache_hit) and len(jobs) == 3

    canaries = [token, word, salt, fed]
    assert len(scripts) == 3 and all(f"{j.work_dir}/job.env" in s for j, s in zip(jobs, scripts, strict=True))
    assert not [c for c in canaries for script in scripts if c in script], scripts
    for job in jobs:
        assert not Path(job.secret_env_file).exists()  # removed once the job ended
    # nothing on disk holds them: the store, the artifacts, the job directories and logs, the cluster's state
    assert _files_holding([job_home, slurm_cluster.base], canaries) == []
    record = default_runner().metadata.get_step_run(named.step_run_id)
    assert record["params"]["api_token"] != token and record["params"]["x"] == 1

    # what the submitter looks up is what the jobs stored: hits, no job
    again: list = []
    hits = [
        asyncio.run(ex.arun(steps.token_length, {"api_token": token, "x": 1}, on_submit=again.append)),
        asyncio.run(
            ex.arun(
                steps.secret_length,
                {"token": SecretStr(word), "salt": SecretBytes(salt.encode())},
                on_submit=again.append,
            )
        ),
        asyncio.run(ex.arun(steps.text_length, {"text": fed}, on_submit=again.append, secrets={fed})),
    ]
    assert all(h.cache_hit for h in hits) and not again
    # and a local run of the same step with the same secret is a hit on the job's result
    local = default_runner().run(steps.token_length, {"api_token": token, "x": 1})
    assert local.cache_hit and local.source_step_run_id == named.step_run_id


def test_a_failing_job_does_not_show_its_secret_param(client, job_home: Path, slurm_cluster):
    token = _canary("tok")
    with pytest.raises(SlurmStepFailed) as err:
        asyncio.run(executor(client).arun(steps.reject_token, {"api_token": token}))
    assert "the server refused" in str(err.value) and token not in str(err.value)
    record = default_runner().metadata.get_step_run(err.value.step_run_id)
    assert token not in str(record)
    assert _files_holding([job_home, slurm_cluster.base], [token]) == []


def test_an_object_holding_a_secret_is_refused_before_any_job(client, job_home: Path):
    password = _canary("pw")
    jobs: list = []
    with pytest.raises(StepDefinitionError) as err:
        asyncio.run(
            executor(client).arun(steps.login_user, {"login": steps.Login("ada", password)}, on_submit=jobs.append)
        )
    assert "step 'login_user': parameter 'login'" in str(err.value) and "SecretStr" in str(err.value)
    assert password not in str(err.value) and not jobs
    assert _files_holding([job_home], [password]) == []


class _Slotted:
    """An object whose secret only its stored form shows (the walk for secrets reads no slots)."""

    __slots__ = ("user", "word")

    def __init__(self, user: str, word: str) -> None:
        self.user, self.word = user, word


@pytest.mark.parametrize("how", ["another argument", "given with the call", "the environment"])
def test_an_object_whose_stored_form_holds_a_known_secret_never_becomes_a_job_input(
    how: str, isthmus_home: Path, monkeypatch: pytest.MonkeyPatch
):
    """The submitter saves non-JSON arguments as the job's input artifacts: one whose stored form holds a
    secret the call knows (from a secret-named argument, the DAG's secrets, the environment) is refused
    in one line before anything is stored or submitted; without a known secret, it travels as an input."""
    word = _canary("pw")
    ex = SlurmExecutor(connect("cli"), default_runner())
    arguments: dict[str, object] = {"login": _Slotted("ada", word)}
    secrets: set[str] = set()
    if how == "another argument":
        arguments["api_token"] = word
    elif how == "given with the call":
        secrets.add(word)
    else:
        monkeypatch.setenv("WAREHOUSE_PASSWORD", word)
    with pytest.raises(StepDefinitionError) as err:
        ex.split_arguments(steps.login_user, arguments, secrets)
    message = str(err.value)
    assert message.startswith("step 'login_user': input 'login' (_Slotted) holds a secret") and "\n" not in message
    assert "secret-named or SecretStr parameter" in message and word not in message
    assert _files_holding([isthmus_home], [word]) == []
    inputs, params = ex.split_arguments(steps.login_user, {"login": _Slotted("ada", "nothing-secret-here")})
    assert set(inputs) == {"login"} and params == {}


def test_the_job_takes_its_secret_params_out_of_the_environment():
    env = {
        SECRET_PARAMS_ENV: '{"a": {"plain": [1, "x"]}, "t": {"secret_str": "s3cr3t"}, "b": {"secret_bytes": "AAE="}}'
    }
    params = secret_params_from_env(env)
    assert SECRET_PARAMS_ENV not in env
    assert params["a"] == [1, "x"] and params["t"].get_secret_value() == "s3cr3t"
    assert params["b"].get_secret_value() == b"\x00\x01"
    for bad in ['{"a": {"pickle": "x"}}', "[1]", '{"b": {"secret_bytes": "%%"}}', "{" * 5000]:
        with pytest.raises(IsthmusError) as err:
            secret_params_from_env({SECRET_PARAMS_ENV: bad})
        assert SECRET_PARAMS_ENV in str(err.value) and "\n" not in str(err.value)
    assert secret_params_from_env({}) == {} and os.environ.get(SECRET_PARAMS_ENV) is None
