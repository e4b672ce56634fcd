"""Pinned and promoted inputs: ``ArtifactAlias`` / ``ArtifactVersion`` as step and pipeline arguments.

Resolved when the run starts to the version the alias names then, recorded with the step run, an ordinary
input for the cache key (alias and hash share it); the alias moving between runs — two fresh processes —
changes the input. Unknown, malformed and hostile pins are refused before anything runs or loads.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import insert

import isthmus
from isthmus import ArtifactAlias, ArtifactRef, ArtifactVersion, InvalidPin, UnresolvedPin
from isthmus.artifacts.store import hash_file
from isthmus.pinned import as_pin, resolve_pipeline_params
from isthmus.runner import StepRunner
from isthmus.store import schema as s
from isthmus.store.metadata import utcnow
from tests.helpers import REPO, import_fresh, run_python, write_module

STEPS = """
from pathlib import Path
from isthmus import pipeline, step, ArtifactAlias

LOG = Path(__file__).with_name("calls.log")


def _note(name):
    with LOG.open("a") as f:
        f.write(name + "\\n")


class Model:
    def __init__(self, weights):
        self.weights = weights


@step
def produce(n: int) -> list:
    return list(range(n))


@step
def make_model(n: int) -> Model:
    return Model([n] * n)


@step
def consume(data: list) -> int:
    _note("consume")
    return sum(data)


@step
def weigh(model: Model) -> int:
    return sum(model.weights)


@step
def total(parts: list) -> int:
    return sum(sum(p) for p in parts)


@step
def promote_other(data: list, other: str) -> int:
    # moves the alias while the pipeline runs: the next step must still get the version the run started with
    from isthmus import defaults
    defaults.metadata_store().set_alias("produce.output", "production", other)
    return len(data)


@step
def last(data: list, seen: int) -> int:
    return sum(data)


@pipeline
def moving(data: list, other: str):
    return last(data, promote_other(data, other))


@pipeline
def scored(data: list):
    return consume(data)
"""

ALIAS = ArtifactAlias("produce.output", "production")


@pytest.fixture
def mod(tmp_path: Path):
    write_module(tmp_path, "pin_steps", STEPS)
    return import_fresh(tmp_path, "pin_steps")


def _calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().split() if log.exists() else []


def _versions(runner: StepRunner, mod, *ns: int) -> list[ArtifactRef]:
    return [runner.run(mod.produce, {"n": n}).outputs["output"] for n in ns]


# -- the values ------------------------------------------------------------------------------------
def test_alias_and_version_are_small_frozen_values_with_a_json_form() -> None:
    assert ArtifactAlias.parse("train.model@production") == ArtifactAlias("train.model", "production")
    assert str(ArtifactAlias("train.model", "production")) == "train.model@production"
    h = "blake3:" + "ab" * 32
    assert str(ArtifactVersion(h)) == h
    for pin in (ArtifactAlias("train.model", "production"), ArtifactVersion(h)):
        assert as_pin(pin.to_json()) == pin  # what crosses a process or a serialized DAG
        with pytest.raises(AttributeError):
            pin.name = "x"  # type: ignore[misc,union-attr]
    assert as_pin({"isthmus_pinned": "a@b", "other": 1}) is None  # only the one-key form
    assert as_pin("train.model@production") is None  # a string stays a string parameter


@pytest.mark.parametrize(
    ("make", "shown", "fix"),
    [
        (lambda: ArtifactAlias.parse("train.model"), "'train.model'", "'name@alias'"),
        (lambda: ArtifactAlias.parse("a@b@c"), "'a@b@c'", "'name@alias'"),
        (lambda: ArtifactAlias("", "prod"), "name ''", "ArtifactAlias('train.model', 'production')"),
        (lambda: ArtifactAlias("train model", "prod"), "'train model'", "without spaces"),
        (lambda: ArtifactAlias("train", "pr\nod"), "'pr\\nod'", "without spaces"),
        (lambda: ArtifactAlias("train", 3), "alias 3", "1-255 characters"),  # type: ignore[arg-type]
        (lambda: ArtifactVersion("blake3:abcd12"), "'blake3:abcd12'", "a prefix is not a pin"),
        (lambda: ArtifactVersion("abcd12"), "'abcd12'", "'isthmus artifacts show abcd12'"),
        (lambda: ArtifactVersion("blake3:" + "AB" * 32), "'blake3:ABAB", "full hash"),
        (lambda: ArtifactVersion("md5:" + "ab" * 16), "'md5:", "full hash"),
        (lambda: ArtifactVersion(None), "ArtifactVersion(None)", "full hash"),  # type: ignore[arg-type]
        (lambda: as_pin({"isthmus_pinned": "../../etc/passwd"}), "'../../etc/passwd'", "full hash"),
    ],
)
def test_malformed_pins_are_refused_at_construction_in_one_line(make, shown: str, fix: str) -> None:
    with pytest.raises(InvalidPin) as err:
        make()
    message = str(err.value)
    assert shown in message and fix in message and "\n" not in message
    assert isinstance(err.value, ValueError) and isinstance(err.value, isthmus.IsthmusError)


# -- a step fed a pin --------------------------------------------------------------------------------
def test_an_alias_resolves_when_the_run_starts_and_is_recorded(runner: StepRunner, mod, tmp_path: Path) -> None:
    v3, v4 = _versions(runner, mod, 3, 4)
    runner.metadata.set_alias(ALIAS.name, ALIAS.alias, v3.content_hash)
    first = runner.run(mod.consume, {"data": ALIAS})
    assert first.value == 3 and not first.cache_hit
    row = runner.metadata.get_step_run(first.step_run_id)
    assert row["inputs"]["data"]["content_hash"] == v3.content_hash
    assert row["inputs"]["data"]["metadata"]["pinned"] == {
        "alias": "produce.output@production",
        "version": v3.content_hash,
    }
    assert row["params"] == {}  # an input artifact, not a parameter

    runner.metadata.set_alias(ALIAS.name, ALIAS.alias, v4.content_hash)  # promoted: the next run gets it
    second = runner.run(mod.consume, {"data": ArtifactAlias.parse("produce.output@production")})
    assert second.value == 6 and not second.cache_hit and second.cache_key != first.cache_key
    runner.metadata.set_alias(ALIAS.name, ALIAS.alias, v3.content_hash)  # rolled back: the first result again
    third = runner.run(mod.consume, {"data": ALIAS.to_json()})  # the JSON form, as from another process
    assert third.cache_hit and third.source_step_run_id == first.step_run_id
    assert _calls(tmp_path) == ["consume", "consume"]


def test_the_same_version_by_alias_by_hash_or_by_ref_shares_one_cache_key(runner: StepRunner, mod) -> None:
    (v3,) = _versions(runner, mod, 3)
    runner.metadata.set_alias(ALIAS.name, ALIAS.alias, v3.content_hash)
    keys = {
        runner.cache_key(mod.consume, {"data": value})
        for value in (ALIAS, ArtifactVersion(v3.content_hash), {"isthmus_pinned": v3.content_hash}, v3)
    }
    assert len(keys) == 1
    by_hash = runner.run(mod.consume, {"data": ArtifactVersion(v3.content_hash)})
    by_alias = runner.run(mod.consume, {"data": ALIAS})
    assert not by_hash.cache_hit and by_alias.cache_hit and by_alias.source_step_run_id == by_hash.step_run_id
    pinned = runner.metadata.get_step_run(by_hash.step_run_id)["inputs"]["data"]["metadata"]["pinned"]
    assert pinned == {"version": v3.content_hash}
    assert runner.metadata.get_step_run(by_alias.step_run_id)["inputs"]["data"]["metadata"]["pinned"]["alias"] == (
        "produce.output@production"
    )


def test_a_list_of_pins_becomes_a_list_of_input_artifacts(runner: StepRunner, mod) -> None:
    v2, v3 = _versions(runner, mod, 2, 3)
    runner.metadata.set_alias(ALIAS.name, ALIAS.alias, v3.content_hash)
    result = runner.run(mod.total, {"parts": [ArtifactVersion(v2.content_hash), ALIAS, v2]})
    assert result.value == 1 + 3 + 1
    inputs = runner.metadata.get_step_run(result.step_run_id)["inputs"]
    assert [inputs[f"parts[{i}]"]["content_hash"] for i in range(3)] == [
        v2.content_hash,
        v3.content_hash,
        v2.content_hash,
    ]


def test_unknown_alias_or_version_is_one_line_naming_step_input_alias_and_fix(runner: StepRunner, mod) -> None:
    (v3,) = _versions(runner, mod, 3)
    before = runner.metadata.count_runs()
    with pytest.raises(UnresolvedPin) as err:
        runner.run(mod.consume, {"data": ArtifactAlias("produce.output", "staging")})
    message = str(err.value)
    assert message.startswith("step 'consume': input 'data': no alias 'produce.output@staging'")
    assert "isthmus artifacts alias produce.output@staging HASH" in message and "\n" not in message
    unknown = "blake3:" + "0" * 64
    with pytest.raises(UnresolvedPin, match=r"^step 'consume': input 'data': 'blake3:0{64}' names no artifact"):
        runner.run(mod.consume, {"data": ArtifactVersion(unknown)})
    assert runner.metadata.count_runs() == before  # refused before anything ran or was recorded
    # an alias row naming no artifact of this store (a typo in the database, another store's hash)
    runner.metadata.set_alias(ALIAS.name, ALIAS.alias, "blake3:" + "1" * 64)
    with pytest.raises(UnresolvedPin, match="names no artifact recorded in this store.*isthmus artifacts alias"):
        runner.run(mod.consume, {"data": ALIAS})
    assert v3  # the store holds other versions: the alias alone is wrong


def test_a_malformed_pin_from_another_process_names_the_step_and_input(runner: StepRunner, mod) -> None:
    with pytest.raises(InvalidPin) as err:
        runner.run(mod.consume, {"data": {"isthmus_pinned": "blake3:abc"}})
    assert str(err.value).startswith("step 'consume': input 'data': ArtifactVersion('blake3:abc')")
    assert "a prefix is not a pin" in str(err.value)


def test_a_forged_pin_record_in_a_ref_is_not_recorded(runner: StepRunner, mod) -> None:
    v3, v4 = _versions(runner, mod, 3, 4)
    forged = ArtifactRef.from_dict(
        {**v3.to_dict(), "metadata": {"pinned": {"alias": "produce.output@production", "version": v4.content_hash}}}
    )
    result = runner.run(mod.consume, {"data": forged})
    assert "pinned" not in (runner.metadata.get_step_run(result.step_run_id)["inputs"]["data"].get("metadata") or {})


# -- hostile alias targets -------------------------------------------------------------------------
def test_an_alias_to_a_missing_or_corrupt_artifact_is_refused_never_loaded(runner: StepRunner, mod, tmp_path) -> None:
    v3, v4 = _versions(runner, mod, 3, 4)
    runner.metadata.set_alias(ALIAS.name, ALIAS.alias, v3.content_hash)
    path = Path(runner.artifacts.path_for(v3.content_hash))
    path.write_bytes(b"[9, 9, 9]"[: v3.size].ljust(v3.size))  # same size, other bytes
    with pytest.raises(UnresolvedPin) as err:
        runner.run(mod.consume, {"data": ALIAS})
    assert "bytes do not match its hash" in str(err.value) and "isthmus artifacts alias produce.output@production" in (
        str(err.value)
    )
    runner.metadata.set_alias(ALIAS.name, ALIAS.alias, v4.content_hash)
    Path(runner.artifacts.path_for(v4.content_hash)).unlink()
    with pytest.raises(UnresolvedPin, match="missing from the artifact store"):
        runner.run(mod.consume, {"data": ALIAS})
    assert _calls(tmp_path) == []


def _forge(runner: StepRunner, data: bytes, materializer: str, python_type: str) -> str:
    """Bytes written straight into the store's objects (by their true hash) and an artifacts row that says
    whatever the attacker likes: what a hostile database or a shared artifact root could hold."""
    tmp = Path(runner.artifacts.root) / "forged.bin"
    tmp.write_bytes(data)
    content_hash, size = hash_file(str(tmp))
    target = Path(runner.artifacts.path_for(content_hash))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(target)
    row = {
        "content_hash": content_hash,
        "uri": runner.artifacts.uri_for(content_hash),
        "size": size,
        "materializer": materializer,
        "python_type": python_type,
        "metadata": None,
        "producer_step_run_id": None,
        "created_at": utcnow(),
    }
    with runner.metadata.engine.begin() as conn:
        conn.execute(insert(s.artifacts).values(**row))
    return content_hash


class _Boom:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['PIN_SENTINEL']}",))


def test_a_pickle_isthmus_did_not_write_is_refused_and_never_unpickled(
    runner: StepRunner, mod, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sentinel = tmp_path / "unpickled"
    monkeypatch.setenv("PIN_SENTINEL", str(sentinel))
    payload = pickle.dumps(_Boom())
    evil = _forge(runner, payload, "cloudpickle", "pin_steps:Model")
    runner.metadata.set_alias("make_model.output", "production", evil)
    with pytest.raises(UnresolvedPin) as err:
        runner.run(mod.weigh, {"model": ArtifactAlias("make_model", "production")})
    assert "no alias" in str(err.value)  # a different name: checked by name and alias, never by prefix
    with pytest.raises(UnresolvedPin) as err:
        runner.run(mod.weigh, {"model": ArtifactAlias("make_model.output", "production")})
    assert "is refused" in str(err.value) and "can run code" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UnresolvedPin, match="is refused"):
        runner.run(mod.weigh, {"model": ArtifactVersion(evil)})
    # the same bytes claimed as JSON: data, which the JSON loader refuses; nothing is unpickled
    as_json = _forge(runner, payload + b" ", "json", "builtins:list")
    with pytest.raises(isthmus.StepFailed):
        runner.run(mod.consume, {"data": ArtifactVersion(as_json)})
    assert not sentinel.exists()


@pytest.mark.filterwarnings("ignore:step 'make_model' output 'output'")
def test_an_alias_to_another_steps_artifact_is_just_that_data(runner: StepRunner, mod) -> None:
    model = runner.run(mod.make_model, {"n": 3}).outputs["output"]
    assert model.materializer.startswith("cloudpickle")  # isthmus wrote it: its writer mark is in the store
    runner.metadata.set_alias("champion", "production", model.content_hash)
    result = runner.run(mod.weigh, {"model": ArtifactAlias("champion", "production")})
    assert result.value == 9
    (v3,) = _versions(runner, mod, 3)
    runner.metadata.set_alias("champion", "production", v3.content_hash)  # now a list, not a Model
    with pytest.raises(isthmus.StepFailed, match="AttributeError"):  # the step gets the list, as data
        runner.run(mod.weigh, {"model": ArtifactAlias("champion", "production")})


# -- pipelines -------------------------------------------------------------------------------------
def test_a_pipeline_resolves_its_pins_once_when_the_run_starts(runner: StepRunner, mod) -> None:
    v3, v4 = _versions(runner, mod, 3, 4)
    runner.metadata.set_alias(ALIAS.name, ALIAS.alias, v3.content_hash)
    run = mod.moving.run(data=ALIAS, other=v4.content_hash)  # the first step moves the alias to v4
    assert run.outputs == 3  # the second step still got v3
    rows = {r["invocation"]: r for r in runner.metadata.step_runs_of(run.id)}
    for name in ("promote_other", "last"):
        assert rows[name]["inputs"]["data"]["content_hash"] == v3.content_hash
        assert rows[name]["inputs"]["data"]["metadata"]["pinned"]["alias"] == "produce.output@production"
    assert runner.metadata.list_aliases()[0]["content_hash"] == v4.content_hash
    resolved = resolve_pipeline_params({"data": ALIAS, "n": 3}, runner, pipeline="moving")
    assert resolved["n"] == 3 and resolved["data"].content_hash == v4.content_hash


def test_a_pipeline_with_an_unknown_alias_fails_before_it_starts(runner: StepRunner, mod) -> None:
    before = runner.metadata.count_runs()
    with pytest.raises(UnresolvedPin, match=r"^pipeline 'scored': parameter 'data': no alias 'produce.output@nope'"):
        mod.scored.run(data=ArtifactAlias("produce.output", "nope"))
    assert runner.metadata.count_runs() == before


# -- fresh processes ------------------------------------------------------------------------------
CONSUME = """
import json
from isthmus import ArtifactAlias
from isthmus.runner import default_runner
from pin_steps import consume

r = default_runner().run(consume, {"data": ArtifactAlias.parse("produce.output@production")})
row = default_runner().metadata.get_step_run(r.step_run_id)
print(json.dumps([r.cache_hit, r.step_run_id, r.source_step_run_id, row["inputs"]["data"]["content_hash"], r.value]))
"""


def test_moving_the_alias_between_runs_in_fresh_processes_changes_the_input(
    runner: StepRunner, mod, tmp_path: Path, isthmus_home: Path
) -> None:
    v3, v4 = _versions(runner, mod, 3, 4)
    env = {"ISTHMUS_HOME": str(isthmus_home)}

    def consume_in_a_fresh_process() -> list:
        return run_python(CONSUME, env=env, cwd=tmp_path)

    runner.metadata.set_alias(ALIAS.name, ALIAS.alias, v3.content_hash)
    first = consume_in_a_fresh_process()
    assert first[0] is False and first[3:] == [v3.content_hash, 3]
    runner.metadata.set_alias(ALIAS.name, ALIAS.alias, v4.content_hash)  # promote
    second = consume_in_a_fresh_process()
    assert second[0] is False and second[3:] == [v4.content_hash, 6]
    runner.metadata.set_alias(ALIAS.name, ALIAS.alias, v3.content_hash)  # roll back
    third = consume_in_a_fresh_process()
    assert third[0] is True and third[2] == first[1] and third[3:] == [v3.content_hash, 3]
    assert _calls(tmp_path) == ["consume", "consume"]


def test_the_cli_shows_the_pin_and_reports_an_unknown_alias_in_one_line(
    runner: StepRunner, mod, tmp_path: Path, isthmus_home: Path
) -> None:
    (v3,) = _versions(runner, mod, 3)
    runner.metadata.set_alias(ALIAS.name, ALIAS.alias, v3.content_hash)
    run = mod.scored.run(data=ALIAS)
    env = {**os.environ, "ISTHMUS_HOME": str(isthmus_home), "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "isthmus", *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )

    shown = cli("runs", "show", run.id)
    assert shown.returncode == 0, shown.stderr
    assert f"input data of consume: produce.output@production → {v3.content_hash[:19]}…" in shown.stdout

    failed = cli(
        "run-step", "--step", "pin_steps:consume", "--params", '{"data": {"isthmus_pinned": "produce.output@nope"}}'
    )
    assert failed.returncode == 1
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in failed.stderr, failed.stderr
    # the remote entrypoint's error line names the error type, as for any input refused before the step ran
    assert lines[0].startswith("error: UnresolvedPin: step 'consume': input 'data': no alias 'produce.output@nope'")
    assert "isthmus artifacts alias produce.output@nope HASH" in lines[0]


def test_a_slurm_job_gets_the_ref_its_submitter_resolved(runner: StepRunner, mod) -> None:
    from isthmus.slurm import SlurmExecutor

    v2, v3 = _versions(runner, mod, 2, 3)
    runner.metadata.set_alias(ALIAS.name, ALIAS.alias, v3.content_hash)
    executor = SlurmExecutor(None, runner)  # type: ignore[arg-type]  # splitting arguments uses no cluster
    inputs, params = executor.split_arguments(mod.consume, {"data": ALIAS})
    assert params == {} and ArtifactRef.from_dict(inputs["data"]) == v3  # the ref, never a pickled ArtifactAlias
    assert inputs["data"]["metadata"]["pinned"]["alias"] == "produce.output@production"
    assert executor.cache_key(mod.consume, inputs, params, isthmus.RunContext()) == runner.cache_key(
        mod.consume, {"data": v3}
    )
    inputs, params = executor.split_arguments(mod.total, {"parts": [ALIAS, ArtifactVersion(v2.content_hash)]})
    assert [p["content_hash"] for p in params["parts"]] == [v3.content_hash, v2.content_hash] and inputs == {}
    with pytest.raises(UnresolvedPin, match="^step 'consume': input 'data': no alias 'produce.output@nope'"):
        executor.split_arguments(mod.consume, {"data": ArtifactAlias("produce.output", "nope")})
