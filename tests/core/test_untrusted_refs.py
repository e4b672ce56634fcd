"""Refs, manifests and run contexts are untrusted data.

Every case is hostile input as it arrives in practice: a ref in ``run-step --inputs`` (what a Slurm job, a
Kubernetes pod or a Flyte container receives), a result manifest handed to ``isthmus ingest``, a run
context whose ids become file names, objects changed behind the store's back (locally, on an S3-protocol
server, in memory). Proof runs in fresh processes; the in-process tests cover the full matrix quickly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3

import isthmus
from isthmus import ArtifactMissing, ArtifactRef, ArtifactStore, MaterializationError
from isthmus.artifacts import ArtifactStoreError, InvalidArtifactRef, UnsafePath, tmpfiles
from isthmus.artifacts import refs as refs_module
from isthmus.artifacts import store as store_module
from isthmus.artifacts.paths import join_under, safe_component
from isthmus.context import RunContext
from tests.conftest import skip_or_fail
from tests.helpers import REPO, write_module

# -- helpers ---------------------------------------------------------------------------------------


def _atime_is_recorded() -> bool:
    """Whether reading a file with an old atime updates it here (relatime): then a read is detectable."""
    probe = Path(os.environ.get("TMPDIR", "/tmp")) / f"isthmus-atime-{uuid.uuid4().hex}"
    probe.write_bytes(b"x")
    try:
        old = time.time_ns() - 3 * 86400 * 10**9
        os.utime(probe, ns=(old, os.stat(probe).st_mtime_ns))
        probe.read_bytes()
        return os.stat(probe).st_atime_ns != old
    finally:
        probe.unlink()


ATIME = _atime_is_recorded()


class Untouched:
    """Everything under ``dirs`` frozen: which paths exist, each file's bytes, inode and times.

    :meth:`check` asserts that nothing was created, removed, moved, written — or read, where the
    filesystem records reads (atimes are set three days back first, so relatime updates them on a read).
    """

    def __init__(self, *dirs: Path, ignore: tuple[Path, ...] = ()) -> None:
        self.dirs, self.ignore = dirs, tuple(str(p) for p in ignore)
        paths = self._paths()
        self.digests = {p: _digest(p) for p in paths if os.path.isfile(p)}
        old = time.time_ns() - 3 * 86400 * 10**9
        for p in self.digests:
            os.utime(p, ns=(old, os.stat(p).st_mtime_ns))
        self.stats = {p: _stat(p) for p in paths}

    def _paths(self) -> set[str]:
        out = set()
        for d in self.dirs:
            for dirpath, dirnames, filenames in os.walk(d):
                dirnames[:] = [n for n in dirnames if n != "__pycache__"]
                for n in [*dirnames, *filenames]:
                    p = os.path.join(dirpath, n)
                    if not any(p == i or p.startswith(i + os.sep) for i in self.ignore):
                        out.add(p)
        return out

    def check(self) -> None:
        now = self._paths()
        assert now == set(self.stats), (
            f"created: {sorted(now - set(self.stats))}, gone: {sorted(set(self.stats) - now)}"
        )
        for p, before in self.stats.items():
            assert _stat(p) == before, f"{p} was changed or read"
        for p, digest in self.digests.items():
            assert _digest(p) == digest, f"{p} was changed"


def _stat(p: str) -> tuple[Any, ...]:
    st = os.lstat(p)
    is_file = os.path.isfile(p)
    return (
        st.st_size if is_file else 0,
        st.st_mtime_ns if is_file else 0,
        st.st_ino,
        st.st_ctime_ns if is_file else 0,
    ) + ((st.st_atime_ns,) if ATIME and is_file else ())


def _digest(p: str) -> str:
    """The file's sha256, read without moving its atime (O_NOATIME: the owner may), so checks can repeat."""
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOATIME", 0))
    except PermissionError:
        fd = os.open(p, os.O_RDONLY)
    with os.fdopen(fd, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    assert "Traceback" not in text
    return lines[0]


def isthmus_cli(*args: str, env: dict[str, str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "isthmus", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def python(code: str, *, env: dict[str, str], cwd: Path, timeout: float = 180) -> Any:
    """Run ``code`` in a fresh interpreter; its last stdout line is JSON, returned."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def env_for(home: Path, cwd: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISTHMUS_")}
    env.update({"ISTHMUS_HOME": str(home), "PYTHONPATH": os.pathsep.join([str(cwd), str(REPO)]), **extra})
    return env


def traversal_hash(root: str, target: Path) -> str:
    """A 'content hash' that the old store turned into ``target``: objects/<hex[:2]>/<hex> with hex='../..'."""
    rel = os.path.relpath(target, root)
    assert rel.startswith("../")
    return f"blake3:{rel}"


def ref_dict(**fields: Any) -> dict[str, Any]:
    good = {
        "__isthmus_artifact__": 1,
        "uri": "file:///nowhere/objects/ab/" + "ab" * 32,
        "content_hash": "blake3:" + "ab" * 32,
        "size": 3,
        "materializer": "json@1",
        "python_type": "builtins:int",
    }
    good.update(fields)
    return good


def forged(store: ArtifactStore, **fields: Any) -> ArtifactRef:
    """A ref built around validation (object.__setattr__ on a frozen dataclass): the store must still refuse."""
    ref = store.save(1)
    for name, value in fields.items():
        object.__setattr__(ref, name, value)
    return ref


class Evil:
    """Unpickling it creates the file named by $ISTHMUS_TEST_MARKER: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


@pytest.fixture
def victim(tmp_path: Path) -> dict[str, Path]:
    """Files outside the artifact root that a hostile ref aims at: a secret and a pickle that runs code."""
    d = tmp_path / "victim"
    d.mkdir()
    marker = tmp_path / "code-ran"
    (d / "secret.json").write_text('"top secret"')
    (d / "payload.pkl").write_bytes(pickle.dumps(Evil(str(marker))))
    return {"dir": d, "secret": d / "secret.json", "payload": d / "payload.pkl", "marker": marker}


# -- 1. one validation point: every ref is valid or does not exist ------------------------------------------

BAD_FIELDS = [
    ("content_hash", "blake3:../../.."),
    ("content_hash", "blake3:../../victim/payload.pkl"),
    ("content_hash", "/etc/passwd"),
    ("content_hash", "blake3:/etc/passwd"),
    ("content_hash", "blake3:" + "ab" * 31 + "a\x00"),
    ("content_hash", "blake3:" + "ab" * 31),  # too short
    ("content_hash", "blake3:" + "ab" * 33),  # too long
    ("content_hash", "blake3:" + "AB" * 32),  # uppercase
    ("content_hash", "blake3:" + "ab" * 32 + "\n"),
    ("content_hash", "sha1:" + "ab" * 32),  # unknown algorithm
    ("content_hash", "ab" * 32),  # no algorithm
    ("content_hash", 12),
    ("content_hash", None),
    ("size", -1),
    ("size", "3"),
    ("size", 3.0),
    ("size", True),
    ("size", None),
    ("size", 2**70),
    ("uri", 7),
    ("uri", ""),
    ("uri", "file:///tmp/x\x00y"),
    ("materializer", "../../evil"),
    ("materializer", ""),
    ("materializer", ["cloudpickle@1"]),
    ("materializer", "json@1; rm -rf /"),
    ("python_type", "os.system"),
    ("python_type", "os; import x:system"),
    ("python_type", "mod:Cls\nnext line"),
    ("python_type", 5),
    ("metadata", ["not", "an", "object"]),
]


@pytest.mark.parametrize(("field", "value"), BAD_FIELDS, ids=[f"{f}={v!r}"[:60] for f, v in BAD_FIELDS])
def test_a_malformed_ref_never_exists(field: str, value: Any) -> None:
    data = ref_dict(**{field: value})
    for make in (
        lambda: ArtifactRef.from_dict(data),
        lambda: ArtifactRef.coerce(data),  # shaped like a ref: refused, never taken for a plain value
        lambda: ArtifactRef.coerce(json.dumps(data)),
        lambda: ArtifactRef(**{k: v for k, v in data.items() if k != "__isthmus_artifact__"}),
    ):
        with pytest.raises(InvalidArtifactRef) as info:
            make()
        message = str(info.value)
        assert "\n" not in message and "\x00" not in message
        assert field in message or (field == "content_hash" and "algorithm" in message)
        assert isinstance(info.value, isthmus.IsthmusError) and isinstance(info.value, ValueError)


def test_well_formed_refs_and_plain_values_still_pass() -> None:
    good = ArtifactRef.from_dict(ref_dict(metadata={"rows": 3}))
    assert ArtifactRef.coerce(good.to_json()) == good
    nested = ref_dict(python_type="pkg.mod:Outer.<locals>.Inner", materializer="my-type+v2@1.0")
    assert ArtifactRef.from_dict(ref_dict(python_type="app.models:Page[dict[str, int]]"))  # a generic model
    assert ArtifactRef.from_dict(nested).python_type == "pkg.mod:Outer.<locals>.Inner"
    for plain in ({"uri": "x"}, {"__isthmus_artifact__": 1}, "blake3:../../..", [1, 2], None):
        assert ArtifactRef.coerce(plain) is None
    with pytest.raises(InvalidArtifactRef, match="lacks size"):
        ArtifactRef.from_dict({k: v for k, v in ref_dict().items() if k != "size"})
    with pytest.raises(InvalidArtifactRef, match="JSON object"):
        ArtifactRef.from_dict(["not", "a", "ref"])
    with pytest.raises(InvalidArtifactRef, match="not valid JSON"):
        ArtifactRef.from_json("{nope")


def test_hash_algorithms_are_a_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(refs_module.HASH_ALGORITHMS, "sha256", 64)
    assert ArtifactRef.from_dict(ref_dict(content_hash="sha256:" + "cd" * 32)).content_hash.startswith("sha256:")
    with pytest.raises(InvalidArtifactRef, match="exactly 64"):
        ArtifactRef.from_dict(ref_dict(content_hash="sha256:" + "cd" * 16))
    refs_module.register_hash_algorithm("xxh128", 32)
    try:
        assert ArtifactRef.from_dict(ref_dict(content_hash="xxh128:" + "ef" * 16))
    finally:
        refs_module.HASH_ALGORITHMS.pop("xxh128")
    with pytest.raises(ValueError):
        refs_module.register_hash_algorithm("../x", 64)


@pytest.mark.parametrize("mode", ["hash", "size", "off"])
def test_the_store_refuses_forged_refs_before_touching_disk(tmp_path: Path, victim: dict[str, Path], mode: str) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"), verify=mode, local_cache=str(tmp_path / "cache"))
    hostile = traversal_hash(store.root, victim["payload"])
    attacks = [
        forged(store, content_hash=hostile, materializer="cloudpickle@1", size=victim["payload"].stat().st_size),
        forged(store, content_hash="blake3:" + "ab" * 31 + "/x"),
        forged(store, content_hash="/etc/passwd"),
    ]
    frozen = Untouched(tmp_path)
    for ref in attacks:
        for call in (store.load, store.exists, store.is_valid, store.quick_check, store.local_path, store.delete):
            with pytest.raises(InvalidArtifactRef):
                call(ref)
        with pytest.raises(InvalidArtifactRef):
            store.path_for(ref.content_hash)
    frozen.check()
    assert not victim["marker"].exists()


def test_a_ref_of_another_store_is_refused_or_absent(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    ref = store.save({"a": 1})
    elsewhere = dataclasses.replace(ref, uri="file:///etc/passwd")
    frozen = Untouched(tmp_path)
    with pytest.raises(InvalidArtifactRef, match=r"not where this artifact store keeps it.*ISTHMUS_ARTIFACT_ROOT"):
        store.load(elsewhere)
    assert store.exists(elsewhere) is False and store.is_valid(elsewhere) is False
    assert store.quick_check(elsewhere) is False  # a cached result pointing elsewhere is a miss, never a hit
    frozen.check()
    assert store.load(ref) == {"a": 1}


def test_an_unknown_materializer_is_refused_before_the_bytes_are_read(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    ref = dataclasses.replace(store.save({"a": 1}), materializer="evil@1")
    frozen = Untouched(tmp_path)
    with pytest.raises(MaterializationError, match=r"'evil@1'.*register_materializer"):
        store.load(ref)
    frozen.check()


def test_the_runner_refuses_hostile_inputs_naming_step_and_input(
    tmp_path: Path, victim: dict[str, Path], isthmus_home: Path
) -> None:
    runner = isthmus.StepRunner()
    calls: list[Any] = []

    @isthmus.step
    def consume(x: Any) -> int:
        calls.append(x)
        return 1

    root = runner.artifacts.root
    good = runner.artifacts.save(41)
    cases = {
        "traversal": ref_dict(content_hash=traversal_hash(root, victim["payload"]), materializer="cloudpickle@1"),
        "foreign uri": {**good.to_dict(), "uri": "file://" + str(victim["secret"])},
        "unknown materializer": {**good.to_dict(), "materializer": "evil@1"},
        "negative size": {**good.to_dict(), "size": -1},
    }
    frozen = Untouched(victim["dir"], Path(root))
    for what, data in cases.items():
        with pytest.raises((InvalidArtifactRef, MaterializationError)) as info:
            runner.run(consume, {"x": data})
        message = str(info.value)
        assert "step 'consume'" in message and "input 'x'" in message, what
        assert "\n" not in message
        with pytest.raises(InvalidArtifactRef):  # in a list of inputs too
            runner.run(consume, {"x": [good.to_dict(), cases["traversal"]]})
    assert calls == []
    frozen.check()
    assert not victim["marker"].exists()


# -- 2. the same attacks through `python -m isthmus run-step`, in fresh processes -----------------------------

CONSUMER = """
from isthmus import step

@step
def consume(x: object) -> str:
    return repr(x)
"""


@pytest.mark.parametrize("mode", ["hash", "size", "off"])
def test_run_step_refuses_a_path_traversal_ref_in_every_verify_mode(
    tmp_path: Path, victim: dict[str, Path], isthmus_home: Path, mode: str
) -> None:
    """Before: verify=hash moved the victim into .corrupt/, size read it in as the input, off ran its pickle."""
    write_module(tmp_path, "proj_consume", CONSUMER)
    root = str(isthmus_home / "artifacts")
    ArtifactStore(root)  # the store exists, as on any worker
    for target, materializer in ((victim["payload"], "cloudpickle@1"), (victim["secret"], "json@1")):
        attack = ref_dict(
            uri="file://" + str(target),
            content_hash=traversal_hash(root, target),
            size=target.stat().st_size,
            materializer=materializer,
            python_type="builtins:object",
        )
        manifest = tmp_path / "out" / f"m-{mode}-{target.stem}.json"
        frozen = Untouched(tmp_path, ignore=(manifest.parent,))
        proc = isthmus_cli(
            "run-step", "--step", "proj_consume:consume", "--inputs", json.dumps({"x": attack}),
            "--manifest", str(manifest),
            env=env_for(isthmus_home, tmp_path, ISTHMUS_VERIFY=mode), cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 1, proc.stdout + proc.stderr
        line = one_line(proc.stderr)
        assert "input 'x'" in line and "content_hash" in line and "pass a ref written by isthmus" in line
        data = json.loads(manifest.read_text())
        assert data["status"] == "FAILED" and "InvalidArtifactRef" in data["error"]
        frozen.check()
        assert not victim["marker"].exists()


MALFORMED_FOR_RUN_STEP = {
    "absolute path": {"content_hash": "/etc/passwd"},
    "NUL": {"content_hash": "blake3:" + "ab" * 31 + "a\x00"},
    "uppercase": {"content_hash": "blake3:" + "AB" * 32},
    "unknown algorithm": {"content_hash": "md5:" + "ab" * 16},
    "size as text": {"size": "1"},
    "unknown materializer": {"materializer": "evil@1"},
    "uri elsewhere": {"uri": "file:///etc/passwd"},
}


def test_run_step_refuses_every_kind_of_malformed_ref(tmp_path: Path, isthmus_home: Path) -> None:
    write_module(tmp_path, "proj_consume", CONSUMER)
    good = isthmus.ArtifactStore(str(isthmus_home / "artifacts")).save(41)
    out = tmp_path / "out"
    frozen = Untouched(tmp_path, ignore=(out,))
    for what, change in MALFORMED_FOR_RUN_STEP.items():
        proc = isthmus_cli(
            "run-step", "--step", "proj_consume:consume", "--inputs", json.dumps({"x": {**good.to_dict(), **change}}),
            "--manifest", str(out / "m.json"),
            env=env_for(isthmus_home, tmp_path, ISTHMUS_VERIFY="off"), cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 1, what
        line = one_line(proc.stderr)
        assert "input 'x'" in line, (what, line)
        assert json.loads((out / "m.json").read_text())["status"] == "FAILED"
    frozen.check()
    # the well-formed ref still works
    proc = isthmus_cli(
        "run-step", "--step", "proj_consume:consume", "--inputs", json.dumps({"x": good.to_dict()}),
        "--manifest", str(out / "ok.json"), env=env_for(isthmus_home, tmp_path), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "ok.json").read_text())["status"] == "COMPLETED"


# -- 3. nothing is unpickled unless its bytes were verified inside the store -------------------------------------


class Pickled:
    """No built-in materializer handles it: stored with cloudpickle."""

    def __init__(self, value: int) -> None:
        self.value = value


@pytest.mark.parametrize("materializer", ["cloudpickle", "joblib"])
@pytest.mark.parametrize("mode", ["hash", "size", "off"])
def test_pickled_bytes_are_hash_verified_whatever_the_verify_mode(
    tmp_path: Path, victim: dict[str, Path], mode: str, materializer: str
) -> None:
    root = str(tmp_path / "artifacts")
    ref = ArtifactStore(root).save(Pickled(list(range(200))), materializer=materializer)
    path = Path(ArtifactStore(root).path_for(ref.content_hash))
    bomb = victim["payload"].read_bytes()
    assert len(bomb) < ref.size
    path.write_bytes(bomb.ljust(ref.size, b"."))  # same size, other bytes: a pickle that runs code
    reader = ArtifactStore(root, verify=mode)  # a worker that did not write it
    with pytest.raises(ArtifactMissing, match="do not match"):
        reader.load(ref)
    assert not victim["marker"].exists()
    assert not path.exists()  # moved aside: never served again


@pytest.mark.parametrize("mode", ["size", "off"])
def test_pickled_loads_hash_exactly_the_bytes_they_unpickle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """A pickle is read once into memory, hashed, and those very bytes are unpickled: every load, also of
    this process's own commit (a memo of the file cannot vouch for bytes read later)."""
    store = ArtifactStore(str(tmp_path / "artifacts"), verify=mode)
    ref = store.save(Pickled(3), materializer="cloudpickle")
    by_path: list[str] = []
    in_memory: list[int] = []
    real_file, real_bytes = store_module.hash_file, store_module.hash_bytes
    monkeypatch.setattr(store_module, "hash_file", lambda p: by_path.append(p) or real_file(p))
    monkeypatch.setattr(store_module, "hash_bytes", lambda b: in_memory.append(len(b)) or real_bytes(b))
    assert store.load(ref).value == 3
    other = ArtifactStore(store.root, verify=mode)
    assert other.load(ref).value == 3
    assert by_path == [] and in_memory == [ref.size, ref.size]


def test_json_loads_follow_the_verify_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = ArtifactStore(str(tmp_path / "artifacts")).save({"a": 1})
    hashed: list[str] = []
    real = store_module.hash_file
    monkeypatch.setattr(store_module, "hash_file", lambda p: hashed.append(p) or real(p))
    assert ArtifactStore(str(tmp_path / "artifacts"), verify="off").load(ref) == {"a": 1}
    assert hashed == []  # cannot run code: 'off' means off
    assert ArtifactStore(str(tmp_path / "artifacts"), verify="hash").load(ref) == {"a": 1}
    assert len(hashed) == 1


def test_typed_json_loads_only_build_the_declared_kind_of_type(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    ref = store.save({"a": 1})
    for materializer in ("pydantic-json@1", "dataclass-json@1"):
        with pytest.raises(MaterializationError, match="is not a"):
            store.load(dataclasses.replace(ref, materializer=materializer, python_type="subprocess:Popen"))


def test_user_materializers_are_treated_as_able_to_run_code() -> None:
    class Mine(isthmus.Materializer):
        name = "test-mine"

    assert Mine.needs_verified_bytes is True
    from isthmus.artifacts.materializers import get_materializer

    for safe in ("json", "str", "bytes", "numpy", "pandas-parquet", "arrow-parquet", "pydantic-json", "dataclass-json"):
        assert get_materializer(safe).needs_verified_bytes is False
    for unsafe in ("joblib", "cloudpickle"):
        assert get_materializer(unsafe).needs_verified_bytes is True
    with pytest.raises(ValueError, match="letters, digits"):
        isthmus.register_materializer(type("Bad", (Mine,), {"name": "../bad"}))


# -- 4. paths built from run contexts stay under their root -----------------------------------------------

HOSTILE_IDS = ["../../escape", "/etc/cron.d/x", "a/b", "..", ".", "", "a\x00b", "a\\b", "x" * 300, "line\nbreak"]


@pytest.mark.parametrize("value", HOSTILE_IDS, ids=[repr(v)[:30] for v in HOSTILE_IDS])
def test_a_context_id_never_leaves_the_manifest_root(isthmus_home: Path, value: str) -> None:
    from isthmus.remote import default_manifest_path

    for ctx in (
        RunContext(native={"manifest_id": value}),
        RunContext(invocation=value),
        RunContext(pipeline_run_id=value),
        RunContext(native={"map_index": value}),
    ):
        if value == "" and ctx.native.get("manifest_id") is None:
            continue  # an empty id falls back to the default ("adhoc", "step")
        with pytest.raises(UnsafePath) as info:
            default_manifest_path(ctx)
        assert "\n" not in str(info.value)
    ok = default_manifest_path(
        RunContext(pipeline_run_id="r1", invocation="train_2", attempt=3, native={"map_index": 0})
    )
    assert ok == str(isthmus_home / "artifacts" / "manifests" / "r1-train_2-0-3.json")


def test_path_helpers() -> None:
    assert safe_component("manual__2024-01-01T00:00:00+00:00", "run id") == "manual__2024-01-01T00:00:00+00:00"
    assert safe_component(7, "map index") == "7"
    for bad in (None, True, 1.5, ["a"]):
        with pytest.raises(UnsafePath):
            safe_component(bad, "x")
    assert join_under("s3://bucket/root", "manifests", "a.json") == "s3://bucket/root/manifests/a.json"
    with pytest.raises(UnsafePath):
        join_under("s3://bucket/root", "..", "x")
    with pytest.raises(UnsafePath):
        join_under("/srv/root", "manifests", "../../x")


def test_run_step_never_writes_a_manifest_outside_the_root(tmp_path: Path, isthmus_home: Path) -> None:
    write_module(tmp_path, "proj_add", "from isthmus import step\n\n@step\ndef add(a: int) -> int:\n    return a + 1\n")
    ArtifactStore(str(isthmus_home / "artifacts"))
    escape = tmp_path / "escape"
    contexts = [
        {"native": {"manifest_id": "../../../escape/m"}},
        {"native": {"manifest_id": str(escape / "m")}},
        {"invocation": "../../../escape", "pipeline_run_id": "r"},
        {"pipeline_run_id": "../../../escape"},
        {"native": {"map_index": "../../escape"}},
    ]
    frozen = Untouched(tmp_path)
    for ctx in contexts:
        proc = isthmus_cli(
            "run-step", "--step", "proj_add:add", "--params", '{"a": 1}', "--context", json.dumps(ctx),
            env=env_for(isthmus_home, tmp_path), cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 1, proc.stdout + proc.stderr
        line = one_line(proc.stderr)
        assert "cannot be part of a file name" in line and "run context" in line
    frozen.check()  # nothing ran, nothing was written anywhere
    assert not escape.exists()
    for bad, what in (({"attempt": "1; rm"}, "attempt"), ({"orchestrator": "x" * 40}, "orchestrator")):
        proc = isthmus_cli(
            "run-step", "--step", "proj_add:add", "--params", '{"a": 1}', "--context", json.dumps(bad),
            env=env_for(isthmus_home, tmp_path), cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 1 and what in one_line(proc.stderr)
    proc = isthmus_cli(
        "run-step", "--step", "proj_add:add", "--params", '{"a": 1}',
        "--context", json.dumps({"invocation": "add", "native": {"map_index": 2}}),
        env=env_for(isthmus_home, tmp_path), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    written = isthmus_home / "artifacts" / "manifests" / "adhoc-add-2-1.json"
    assert json.loads(written.read_text())["status"] == "COMPLETED"


def test_slurm_job_directories_are_named_from_a_digest() -> None:
    from isthmus.slurm.spec import job_name_for

    for value in HOSTILE_IDS:
        name = job_name_for("../../" + value, RunContext(invocation=value or None, pipeline_run_id="../x"))
        assert safe_component(name, "job name") == name and name.startswith("isthmus-")


# -- 5. `isthmus ingest`: shape, consistency, and hash verification before a cache entry ------------------------

ADD = """
import os
from isthmus import step

@step
def add(a: int) -> int:
    with open(os.environ["COUNTER"], "a") as fh:
        fh.write("computed\\n")
    return a + 1
"""

RUN_ADD = """
import json
import proj_add
from isthmus.runner import run_step

r = run_step(proj_add.add, {"a": 1})
print(json.dumps({"hit": r.cache_hit, "value": r.value}))
"""


JOB_KEY = "5e" * 32  # the key a submitter hands to its job ($ISTHMUS_MANIFEST_KEY, from the job's 0600 job.env)


def _remote_manifest(tmp_path: Path, home: Path, *, key: str | None = JOB_KEY, params: str = '{"a": 1}') -> Path:
    """Run ``add(1)`` as a compute node without database access would: its rows ride in the manifest, signed
    with ``key`` (what a job started by the Slurm executor or the Flyte connector receives)."""
    write_module(tmp_path, "proj_add", ADD)
    manifest = tmp_path / "job" / f"manifest-{uuid.uuid4().hex[:8]}.json"
    signing = {"ISTHMUS_MANIFEST_KEY": key} if key else {}
    proc = isthmus_cli(
        "run-step", "--step", "proj_add:add", "--params", params, "--record", "manifest",
        "--manifest", str(manifest),
        env=env_for(home, tmp_path, COUNTER=str(tmp_path / "counter"),
                    ISTHMUS_STORE_URL="postgresql+psycopg://nobody@127.0.0.1:9/unreachable", **signing),
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return manifest


def _swap_output(manifest: Path, store: ArtifactStore, new_hash: str) -> None:
    """Point every mention of the job's output (refs, artifact rows, links) at ``new_hash``: a consistent lie."""
    data = json.loads(manifest.read_text())
    old = data["outputs"]["output"]
    text = manifest.read_text().replace(old["uri"], store.uri_for(new_hash)).replace(old["content_hash"], new_hash)
    manifest.write_text(text)


def test_a_tampered_manifest_does_not_poison_the_cache(tmp_path: Path, isthmus_home: Path) -> None:
    """Day 1 a job's manifest is altered to point at an object the attacker planted (same size, bytes that do
    not hash to its name); it is ingested; day 2 a local run in 'size' mode must not return the planted value."""
    manifest = _remote_manifest(tmp_path, isthmus_home)
    store = ArtifactStore(str(isthmus_home / "artifacts"))
    planted = "blake3:" + blake3(b"attacker").hexdigest()
    Path(store.path_for(planted)).parent.mkdir(parents=True, exist_ok=True)
    Path(store.path_for(planted)).write_bytes(b"9")  # same size as "2"
    _swap_output(manifest, store, planted)

    env = env_for(isthmus_home, tmp_path, COUNTER=str(tmp_path / "counter"))
    proc = isthmus_cli("ingest", str(manifest), env=env, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout
    line = one_line(proc.stderr)
    assert planted in line and "do not match" in line and "nothing was recorded" in line

    day2 = python(RUN_ADD, env={**env, "ISTHMUS_VERIFY": "size"}, cwd=tmp_path)
    assert day2 == {"hit": False, "value": 2}
    assert (tmp_path / "counter").read_text().count("computed") == 2  # the job's run, and day 2's


def test_an_untampered_manifest_is_ingested_and_hits(tmp_path: Path, isthmus_home: Path) -> None:
    """The legitimate path: the job signed its manifest with the key it was handed; ingested with that key,
    it creates the cache entry, and the next fresh process hits."""
    manifest = _remote_manifest(tmp_path, isthmus_home)
    assert "auth" in json.loads(manifest.read_text()) and JOB_KEY not in manifest.read_text()
    env = env_for(isthmus_home, tmp_path, COUNTER=str(tmp_path / "counter"))
    proc = isthmus_cli("ingest", str(manifest), env={**env, "ISTHMUS_MANIFEST_KEY": JOB_KEY}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ingested" in proc.stdout and "1 cache entry" in proc.stdout
    assert python(RUN_ADD, env={**env, "ISTHMUS_VERIFY": "size"}, cwd=tmp_path) == {"hit": True, "value": 2}


def test_a_manifest_pointing_outside_the_store_is_refused_and_touches_nothing(
    tmp_path: Path, victim: dict[str, Path], isthmus_home: Path
) -> None:
    manifest = _remote_manifest(tmp_path, isthmus_home)
    store = ArtifactStore(str(isthmus_home / "artifacts"))
    data = json.loads(manifest.read_text())
    old = data["outputs"]["output"]["content_hash"]
    manifest.write_text(manifest.read_text().replace(old, traversal_hash(store.root, victim["secret"])))
    frozen = Untouched(victim["dir"], Path(store.root))
    proc = isthmus_cli("ingest", str(manifest), env=env_for(isthmus_home, tmp_path), cwd=tmp_path)
    assert proc.returncode == 1
    line = one_line(proc.stderr)
    assert "content_hash" in line and "was altered" in line
    frozen.check()


def _mutations() -> dict[str, Any]:
    def set_path(data: dict[str, Any], path: str, value: Any) -> None:
        *head, last = path.split(".")
        for key in head:
            data = data[int(key)] if isinstance(data, list) else data[key]
        if isinstance(data, list):
            data[int(last)] = value
        else:
            data[last] = value

    def m(path: str, value: Any) -> Any:
        return lambda d: set_path(d, path, value)

    return {
        "unknown version": (m("version", 2), "version 2 is not supported"),
        "no version": (lambda d: d.pop("version"), "version None is not supported"),
        "unknown field": (m("surprise", 1), "surprise"),
        "status": (m("status", "DONE"), "status"),
        "attempt as text": (m("records.step_runs.0.attempt", "1"), "records.step_runs.0.attempt"),
        "cache_hit as int": (m("records.step_runs.0.cache_hit", 0), "cache_hit"),
        "bad datetime": (m("records.step_runs.0.started_at", {"__datetime__": "yesterday"}), "started_at"),
        "ref in a run": (m("records.step_runs.0.outputs.output.size", -5), "records.step_runs.0.outputs.output"),
        "artifact row": (m("records.artifacts.0.content_hash", "blake3:zz"), "records.artifacts.0.content_hash"),
        "foreign cache entry": (m("records.cache_entries.0.step_run_id", str(uuid.uuid4())), "cache_entries.0"),
        "entry for another key": (m("records.cache_entries.0.cache_key", "blake3:" + "0" * 64), "cache_entries.0"),
        "records not an object": (m("records", []), "records"),
        "huge id": (m("records.step_runs.0.id", "x" * 400), "records.step_runs.0.id"),
        "link to nothing": (m("records.step_run_artifacts.0.name", "other"), "step_run_artifacts.0"),
    }


def test_ingest_refuses_malformed_manifests_in_one_line(tmp_path: Path, isthmus_home: Path) -> None:
    import copy

    manifest = _remote_manifest(tmp_path, isthmus_home)
    original = json.loads(manifest.read_text())
    env = env_for(isthmus_home, tmp_path)
    bad = tmp_path / "bad.json"
    db = isthmus_home / "isthmus.db"
    for what, (mutate, expected) in _mutations().items():
        data = copy.deepcopy(original)
        mutate(data)
        bad.write_text(json.dumps(data))
        proc = isthmus_cli("ingest", str(bad), env=env, cwd=tmp_path)
        assert proc.returncode == 1, (what, proc.stdout)
        line = one_line(proc.stderr)
        assert line.startswith("error: manifest ") and expected in line, (what, line)
    for text, expected in (
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ("\xff\xfe", "not valid"),
    ):
        bad.write_bytes(text.encode("latin-1"))
        proc = isthmus_cli("ingest", str(bad), env=env, cwd=tmp_path)
        assert proc.returncode == 1 and expected in one_line(proc.stderr)
    proc = isthmus_cli("ingest", str(tmp_path / "missing.json"), env=env, cwd=tmp_path)
    assert proc.returncode == 1 and "cannot be read" in one_line(proc.stderr)
    if db.exists():  # nothing was recorded by any refused manifest
        from isthmus.store import MetadataStore

        assert MetadataStore(f"sqlite:///{db}").list_cache_entries() == []


def test_ingest_manifest_in_process_verifies_before_recording(tmp_path: Path, isthmus_home: Path) -> None:
    from isthmus import defaults
    from isthmus.manifest import ManifestError
    from isthmus.remote import ingest_manifest, read_manifest

    manifest = _remote_manifest(tmp_path, isthmus_home)
    data = read_manifest(str(manifest))
    store = defaults.artifact_store()
    out = ArtifactRef.from_dict(data["outputs"]["output"])
    Path(store.path_for(out.content_hash)).write_bytes(b"7")  # the job's output corrupted after the job
    meta = defaults.metadata_store()
    with pytest.raises(ManifestError, match="do not match"):
        ingest_manifest(meta, data)
    assert meta.list_cache_entries() == []
    other = ArtifactStore(str(tmp_path / "other-root"))
    with pytest.raises(ManifestError, match="not in this artifact store"):
        ingest_manifest(meta, data, artifacts=other)


# -- 6. remote stores: verify by hash, remember the verdict by version token ---------------------------------


@pytest.fixture
def s3_env(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server.env()


def _s3_store(s3_server: Any, tmp_path: Path, *, versioned: bool = False, cache: str = "cache") -> ArtifactStore:
    bucket = s3_server.new_bucket(versioned=versioned)
    return ArtifactStore(f"s3://{bucket}/root", local_cache=str(tmp_path / cache))


def _overwrite(s3_server: Any, store: ArtifactStore, ref: ArtifactRef, data: bytes) -> None:
    bucket, _, key = store.path_for(ref.content_hash).partition("/")
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=data)


def test_s3_same_size_corruption_is_never_served(s3_server: Any, s3_env: dict[str, str], tmp_path: Path) -> None:
    writer = _s3_store(s3_server, tmp_path)
    ref = writer.save({"weights": [1, 2, 3]})
    assert ref.uri.startswith("s3://") and writer.is_valid(ref)
    reader = ArtifactStore(writer.url, local_cache=str(tmp_path / "reader-cache"))
    assert reader.load(ref) == {"weights": [1, 2, 3]}
    _overwrite(s3_server, writer, ref, b'{"weights":[6,6,6]}'.ljust(ref.size)[: ref.size])
    for store in (writer, reader, ArtifactStore(writer.url, local_cache=str(tmp_path / "fresh"))):
        assert store.exists(ref)  # same size: only the hash can tell
        assert store.quick_check(ref) is not True
    assert not ArtifactStore(writer.url, local_cache=str(tmp_path / "fresh2")).is_valid(ref)
    assert not writer.exists(ref)  # moved aside under .corrupt/
    with pytest.raises(ArtifactMissing):
        ArtifactStore(writer.url, local_cache=str(tmp_path / "fresh3")).load(ref)
    bucket = writer.root.split("/")[0]
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert any("/.corrupt/" in k for k in keys)
    assert writer.save({"weights": [1, 2, 3]}) == ref  # saving again repairs it
    assert ArtifactStore(writer.url, local_cache=str(tmp_path / "fresh4")).load(ref, verify=True) == {
        "weights": [1, 2, 3]
    }


@pytest.mark.parametrize("versioned", [False, True], ids=["etag", "version-id"])
def test_s3_verdict_is_remembered_by_version_token(
    s3_server: Any, s3_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, versioned: bool
) -> None:
    writer = _s3_store(s3_server, tmp_path, versioned=versioned)
    ref = writer.save(list(range(2000)))
    reader = ArtifactStore(writer.url, local_cache=str(tmp_path / "reader-cache"))
    downloads: list[str] = []
    real = reader.fs.open
    monkeypatch.setattr(reader.fs, "open", lambda p, mode="rb", **kw: downloads.append(p) or real(p, mode, **kw))
    assert reader.quick_check(ref) is None  # never verified here: a hash check is due
    assert reader.is_valid(ref) and len(downloads) == 1
    assert reader.is_valid(ref) and reader.quick_check(ref) is True and len(downloads) == 1
    assert reader.load(ref) == list(range(2000)) and len(downloads) == 1  # the verified copy
    _overwrite(s3_server, writer, ref, Path(reader._cache_path(ref)).read_bytes())  # same bytes, new PUT
    if versioned:  # a new version: verified again
        assert reader.quick_check(ref) is None and reader.is_valid(ref) and len(downloads) == 2
    else:  # S3's ETag of a single PUT is the MD5 of the bytes: unchanged, still known good
        assert reader.quick_check(ref) is True and len(downloads) == 1


CACHED_STEP = """
import json
from isthmus import step
from isthmus.runner import run_step

@step
def weights(n: int) -> dict:
    with open({counter!r}, "a") as fh:
        fh.write("computed\\n")
    return {{"w": list(range(n))}}

r = run_step(weights, {{"n": 5}})
print(json.dumps({{"hit": r.cache_hit, "value": r.value, "ref": r.outputs["output"].to_dict()}}))
"""


def test_s3_cached_step_with_a_corrupted_object_recomputes_in_a_new_process(
    s3_server: Any, s3_env: dict[str, str], tmp_path: Path, isthmus_home: Path
) -> None:
    """Day 1 computes on one machine; the object is overwritten with same-size bytes; day 2 runs on another
    machine (its own local cache, the shared metadata store). Before: a hit serving the corrupted bytes."""
    bucket = s3_server.new_bucket()
    counter = tmp_path / "counter"
    env = env_for(isthmus_home, tmp_path, **s3_env, ISTHMUS_ARTIFACT_ROOT=f"s3://{bucket}/root")
    code = CACHED_STEP.format(counter=str(counter))
    day1 = python(code, env=env, cwd=tmp_path)
    assert day1["hit"] is False and day1["value"] == {"w": [0, 1, 2, 3, 4]}
    ref = ArtifactRef.from_dict(day1["ref"])
    store = ArtifactStore(f"s3://{bucket}/root", local_cache=str(tmp_path / "x"))
    _overwrite(s3_server, store, ref, b'{"w":[9,9,9,9,9]}'.ljust(ref.size)[: ref.size])
    for machine in ("second", "third"):
        other = {
            **env,
            "ISTHMUS_HOME": str(tmp_path / machine),
            "ISTHMUS_STORE_URL": f"sqlite:///{isthmus_home}/isthmus.db",
        }
        day = python(code, env=other, cwd=tmp_path)
        assert day["value"] == {"w": [0, 1, 2, 3, 4]}
        assert day["hit"] is (machine == "third")  # recomputed once, then a hit on the repaired object
    assert counter.read_text().count("computed") == 2


@pytest.mark.parametrize("mode", ["hash", "size", "off"])
def test_s3_hostile_refs_write_nothing_anywhere(
    s3_server: Any, s3_env: dict[str, str], tmp_path: Path, victim: dict[str, Path], isthmus_home: Path, mode: str
) -> None:
    """Before: the local download cache joined the hash into a path: a ref could write a file anywhere."""
    write_module(tmp_path, "proj_consume", CONSUMER)
    bucket = s3_server.new_bucket()
    root = f"s3://{bucket}/root"
    store = ArtifactStore(root, local_cache=str(isthmus_home / "cache"))
    store.save("seed")
    hostile_later = forged(store)
    s3_server.client().put_object(Bucket=bucket, Key="root/x", Body=b"planted")
    landing = tmp_path / "victim" / "landed"
    cache = isthmus_home / "cache"
    attack = ref_dict(
        uri=f"s3://{bucket}/root/x",
        content_hash="blake3:" + os.path.relpath(landing, cache),
        size=7,
        materializer="bytes@1",
        python_type="builtins:bytes",
    )
    out = tmp_path / "out"
    frozen = Untouched(tmp_path, ignore=(out,))
    proc = isthmus_cli(
        "run-step", "--step", "proj_consume:consume", "--inputs", json.dumps({"x": attack}),
        "--manifest", str(out / "m.json"),
        env=env_for(isthmus_home, tmp_path, **s3_env, ISTHMUS_ARTIFACT_ROOT=root, ISTHMUS_VERIFY=mode),
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1 and "content_hash" in one_line(proc.stderr)
    frozen.check()
    assert not landing.exists()
    object.__setattr__(hostile_later, "content_hash", attack["content_hash"])
    hostile = hostile_later
    for call in (store.load, store.is_valid, store.local_path, store.exists):
        with pytest.raises(InvalidArtifactRef):
            call(hostile)
    frozen.check()


def test_memory_store_verifies_by_hash_every_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mem = ArtifactStore(f"memory://isthmus-{uuid.uuid4().hex}", local_cache=str(tmp_path / "cache"))
    ref = mem.save({"x": [1, 2]})
    assert mem.is_valid(ref) and mem.quick_check(ref) is None  # no version token: nothing is remembered
    mem.fs.pipe_file(mem.path_for(ref.content_hash), b'{"x":[6,6]}')  # same size
    assert mem.exists(ref)
    assert not ArtifactStore(mem.url, local_cache=str(tmp_path / "c2")).is_valid(ref)
    assert not mem.exists(ref)  # moved aside
    with pytest.raises(ArtifactMissing):
        ArtifactStore(mem.url, local_cache=str(tmp_path / "c3")).load(ref)
    with pytest.raises(InvalidArtifactRef):
        mem.load(forged(mem, content_hash="blake3:../../x"))


# -- 7. a long-lived process sees bytes changed under an unchanged size and mtime -----------------------------


@pytest.mark.parametrize("how", ["in place", "new inode"])
def test_rewritten_bytes_with_restored_mtime_are_caught(tmp_path: Path, how: str) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    value = {"weights": list(range(50))}
    ref = store.save(value)
    path = store.path_for(ref.content_hash)
    assert store.quick_check(ref) is True  # its own commit: trusted at once
    st = os.stat(path)
    data = bytearray(Path(path).read_bytes())
    data[-3] = ord("9") if data[-3] != ord("9") else ord("8")
    if how == "in place":
        with open(path, "r+b") as fh:
            fh.write(bytes(data))
    else:
        tmp = path + ".new"
        Path(tmp).write_bytes(bytes(data))
        os.replace(tmp, path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime restored, size unchanged
    now = os.stat(path)
    assert (now.st_size, now.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert store.quick_check(ref) is None  # the ctime moved: the memo no longer vouches
    assert not store.is_valid(ref)
    with pytest.raises(ArtifactMissing):
        store.load(ref)


def test_a_long_lived_runner_recomputes_after_a_silent_rewrite(isthmus_home: Path) -> None:
    calls: list[int] = []

    @isthmus.step
    def produce(n: int) -> list:
        calls.append(n)
        return list(range(n))

    runner = isthmus.StepRunner()
    first = runner.run(produce, {"n": 30})
    path = runner.artifacts.path_for(first.outputs["output"].content_hash)
    st = os.stat(path)
    data = Path(path).read_bytes().replace(b"29", b"92")
    with open(path, "r+b") as fh:
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = runner.run(produce, {"n": 30})
    assert second.cache_hit is False and second.value == list(range(30))
    assert calls == [30, 30]


# -- 8. partial writes of dead writers go at once --------------------------------------------------------------


def test_clean_tmp_removes_parts_of_dead_writers_at_once(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    tmp = Path(store.root) / ".tmp"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = tmp / f"{uuid.uuid4().hex}.{gone.pid}@{tmpfiles.HOST_ID}.part"
    other_host = tmp / f"{uuid.uuid4().hex}.{gone.pid}@another-host~1.part"
    mine = tmp / tmpfiles.part_name()
    legacy = tmp / "legacy.part"
    for p in (dead, other_host, mine, legacy):
        p.write_bytes(b"x")
    assert str(os.getpid()) in mine.name
    assert store.clean_tmp(older_than=3600) == 1
    assert sorted(p.name for p in tmp.iterdir()) == sorted([other_host.name, mine.name, legacy.name])
    for p in (other_host, legacy):
        t = time.time() - 7200
        os.utime(p, (t, t))
    assert store.clean_tmp(older_than=3600) == 2
    assert [p.name for p in tmp.iterdir()] == [mine.name]


SLOW_WRITER = """
import os, time
from isthmus import Materializer, register_materializer, step
from isthmus.runner import run_step

class Big:
    pass

class Slow(Materializer):
    name = "test-slow"
    def can_handle(self, obj):
        return False
    def save(self, obj, path):
        with open(path, "wb") as fh:
            fh.write(b"x" * 1000)
            fh.flush()
            open(os.environ["MARKER"], "w").close()
            time.sleep(60)
    def load(self, path, python_type):
        return Big()

register_materializer(Slow, types=(Big,))

@step
def produce() -> Big:
    return Big()

run_step(produce, {})
"""


def test_cache_prune_removes_a_killed_writers_part_at_once(tmp_path: Path, isthmus_home: Path) -> None:
    write_module(tmp_path, "proj_slow", SLOW_WRITER)
    marker = tmp_path / "writing"
    env = env_for(isthmus_home, tmp_path, MARKER=str(marker))
    proc = subprocess.Popen([sys.executable, "-c", "import proj_slow"], env=env, cwd=tmp_path)
    deadline = time.time() + 60
    while not marker.exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    parts = list((isthmus_home / "artifacts" / ".tmp").iterdir())
    assert len(parts) == 1 and f".{proc.pid}@" in parts[0].name
    out = isthmus_cli("cache", "prune", env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "partial writes removed: 1" in out.stdout  # with the default one-hour grace
    assert list((isthmus_home / "artifacts" / ".tmp").iterdir()) == []


# -- 9. an unwritable artifact root is the store's fault, said so, and retried ---------------------------------


@pytest.fixture
def unwritable_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory in which this user cannot create files (chmod for users; a sysfs directory for root)."""
    if os.geteuid() != 0:
        d = tmp_path / "read-only"
        d.mkdir()
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    for candidate in (Path("/sys/kernel"), Path("/sys")):
        try:
            (candidate / f"isthmus-probe-{uuid.uuid4().hex}").open("wb").close()
        except OSError:
            yield candidate
            return
    skip_or_fail("no directory here refuses file creation to root (no sysfs)")


def test_an_unwritable_root_is_a_store_error_not_a_materializer_one(tmp_path: Path, unwritable_dir: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    tmp = Path(store.root) / ".tmp"
    tmp.rmdir()
    tmp.symlink_to(unwritable_dir)  # e.g. a volume remounted read-only, or the wrong owner
    with pytest.raises(ArtifactStoreError) as info:
        store.save({"a": 1}, step_name="train", output="model")
    message = str(info.value)
    assert "\n" not in message
    assert "ISTHMUS_ARTIFACT_ROOT" in message and str(tmp) in message and "step 'train' output 'model'" in message
    assert "permissions" in message and "register a materializer" not in message
    assert isinstance(info.value, OSError) and not isinstance(info.value, MaterializationError)
    with pytest.raises(ArtifactStoreError, match="ISTHMUS_ARTIFACT_ROOT"):
        ArtifactStore(str(unwritable_dir / "isthmus-artifacts"))


def test_run_step_on_an_unwritable_root_retries_and_names_the_setting(
    tmp_path: Path, isthmus_home: Path, unwritable_dir: Path
) -> None:
    write_module(
        tmp_path,
        "proj_retry",
        """
        import os
        from isthmus import step

        @step(retries=1)
        def make(n: int) -> dict:
            with open(os.environ["COUNTER"], "a") as fh:
                fh.write("attempt\\n")
            return {"n": n}
        """,
    )
    root = tmp_path / "root"
    ArtifactStore(str(root))
    (root / ".tmp").rmdir()
    (root / ".tmp").symlink_to(unwritable_dir)
    counter = tmp_path / "counter"
    env = env_for(isthmus_home, tmp_path, ISTHMUS_ARTIFACT_ROOT=str(root), COUNTER=str(counter))
    proc = isthmus_cli(
        "run-step", "--step", "proj_retry:make", "--params", '{"n": 1}', "--manifest", str(tmp_path / "m.json"),
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    retry, line = proc.stderr.strip().splitlines()  # the runner's retry warning, then the error
    assert "attempt 1/2 failed" in retry and "retrying" in retry
    assert "after 2 attempt(s)" in line and "ArtifactStoreError" in line and "ISTHMUS_ARTIFACT_ROOT" in line
    assert "register a materializer" not in line
    assert counter.read_text().count("attempt") == 2  # retried: the store may come back
    env["ISTHMUS_ARTIFACT_ROOT"] = str(unwritable_dir / "isthmus-artifacts")
    proc = isthmus_cli("run-step", "--step", "proj_retry:make", "--params", '{"n": 1}', env=env, cwd=tmp_path)
    assert proc.returncode == 1
    line = one_line(proc.stderr)
    assert "ISTHMUS_ARTIFACT_ROOT" in line and "cannot create the directory" in line


# -- 10. a python_type never runs a module: loads, run-step, Flyte literals ---------------------------------------

ATTACK = """
import os
from pydantic import BaseModel
from isthmus import step

class Page(BaseModel):
    x: int

@step
def make_page(x: int) -> Page:
    return Page(x=x)

@step
def fetch_text(body: str) -> str:  # e.g. text scraped from a web page or a form field
    return body.strip()

@step
def pick(v: object) -> str:
    return repr(v)
"""

ZEN = "Beautiful is better than ugly"  # what importing the standard library's `this` prints


def run_code(code: str, *, env: dict[str, str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def test_a_python_type_never_imports_a_module_outside_the_project(tmp_path: Path, isthmus_home: Path) -> None:
    """Before: isthmus.load imported whatever module a ref's python_type named (`this:X` printed the Zen of
    Python) before checking it named a pydantic model. Day 2 is a fresh process where the project module that
    defines the model is not imported yet: the genuine ref still loads."""
    write_module(tmp_path, "proj_attack", ATTACK)
    env = env_for(isthmus_home, tmp_path)
    day1 = python(
        """
        import json, proj_attack
        from isthmus.runner import run_step
        print(json.dumps(run_step(proj_attack.make_page, {"x": 7}).outputs["output"].to_dict()))
        """,
        env=env,
        cwd=tmp_path,
    )
    assert day1["materializer"] == "pydantic-json@1" and day1["python_type"] == "proj_attack:Page"
    hostile = ["this:Anything", "this.x:X", "venv.__main__:X", "venv.__main__.x:X", "json.decoder:JSONDecoder"]
    proc = run_code(
        f"""
        import json, sys, isthmus
        ref = {day1!r}
        out = {{}}
        for python_type in {hostile!r}:
            try:
                out[python_type] = "LOADED " + repr(isthmus.load(dict(ref, python_type=python_type)))
            except Exception as exc:
                out[python_type] = type(exc).__name__ + ": " + str(exc)
        out["imported"] = [m for m in ("this", "venv", "venv.__main__", "proj_attack") if m in sys.modules]
        out["genuine"] = repr(isthmus.load(ref))
        print(json.dumps(out))
        """,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert ZEN not in proc.stdout and "usage: venv" not in proc.stdout + proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["imported"] == []  # nothing the refs named was imported
    assert out["genuine"] == "Page(x=7)"  # the project module, imported by name in a fresh process
    for python_type in hostile:
        assert not out[python_type].startswith("LOADED"), python_type
        assert "\n" not in out[python_type]
    assert out["this:Anything"].startswith("MaterializationError") and "pydantic model" in out["this:Anything"]
    assert "json.decoder:JSONDecoder" in out["json.decoder:JSONDecoder"]  # imported, but not a pydantic model
    for python_type in ("this.x:X", "venv.__main__:X", "venv.__main__.x:X"):
        assert out[python_type].startswith("InvalidArtifactRef") and "python_type" in out[python_type]


@pytest.mark.parametrize("python_type", ["venv.__main__.x:X", "this.x:X", "http.server.__main__:X"])
def test_run_step_never_runs_a_module_named_by_an_input_ref(
    tmp_path: Path, isthmus_home: Path, python_type: str
) -> None:
    """Before: a worker given this ref (its object need not even exist) imported the parents of the module it
    names while fingerprinting the input: `venv.__main__` ran venv's command line (rc=2, no manifest)."""
    write_module(tmp_path, "proj_attack", ATTACK)
    store = ArtifactStore(str(isthmus_home / "artifacts"))
    zero = "blake3:" + "0" * 64
    attack = ref_dict(uri=store.uri_for(zero), content_hash=zero, size=1, python_type=python_type)
    manifest = tmp_path / "out" / "m.json"
    proc = isthmus_cli(
        "run-step", "--step", "proj_attack:pick", "--inputs", json.dumps({"v": attack}), "--manifest", str(manifest),
        env=env_for(isthmus_home, tmp_path), cwd=tmp_path,
    )  # fmt: skip
    assert ZEN not in proc.stdout and "usage:" not in proc.stdout + proc.stderr
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = one_line(proc.stderr)
    assert "input 'v'" in line and "python_type" in line
    assert json.loads(manifest.read_text())["status"] == "FAILED"


def test_type_resolution_imports_only_project_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from isthmus.artifacts.types import check_type_path, is_project_module_name, resolve_type

    pkg = tmp_path / "proj_types_pkg"
    pkg.mkdir()
    marker = tmp_path / "imported"
    (pkg / "__init__.py").write_text(f"open({str(marker)!r}, 'a').write('pkg\\n')\n")
    (pkg / "models.py").write_text(
        "import dataclasses\n\n@dataclasses.dataclass\nclass Point:\n    x: int\n\n"
        "class Outer:\n    class Inner:\n        pass\n\n"
        "def __getattr__(name):\n    raise AssertionError('a module __getattr__ ran for ' + name)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("proj_types_pkg", "proj_types_pkg.models"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert is_project_module_name("proj_types_pkg.models") and not marker.exists()  # found, nothing imported
    point = resolve_type("proj_types_pkg.models:Point")
    assert point is not None and dataclasses.is_dataclass(point) and marker.read_text() == "pkg\n"
    assert resolve_type("proj_types_pkg.models:Outer.Inner").__qualname__ == "Outer.Inner"
    assert resolve_type("proj_types_pkg.models:Missing") is None  # no module __getattr__ ran
    # anything that is not the project's is resolved only when it is imported already
    for name in ("this", "antigravity", "idlelib.idle", "turtledemo.__main__", "venv.__main__", "pip.__main__"):
        monkeypatch.delitem(sys.modules, name, raising=False)
        assert not is_project_module_name(name)
        assert resolve_type(f"{name}:X") is None and name not in sys.modules
    assert resolve_type("collections:OrderedDict") is __import__("collections").OrderedDict
    assert resolve_type("isthmus.artifacts.refs:ArtifactRef") is ArtifactRef
    for bad in ("", "x", "a b:C", "os:path.<locals>", "builtins:int\x00", 5, "m:" + "x" * 2000):
        assert resolve_type(bad) is None  # type: ignore[arg-type]
    # lookups by name never run a module that is not a package's __init__
    for bad in ("this.x:X", "venv.__main__:X", "json.__main__.x:X"):
        with pytest.raises(InvalidArtifactRef, match="python_type"):
            check_type_path(bad)
    for fine in ("builtins:int", "numpy:ndarray", "pandas.core.frame:DataFrame", "not_installed_pkg.mod:X", "os.x:Y"):
        check_type_path(fine)
    assert "this" not in sys.modules


def test_flyte_literals_are_refs_checked_like_any_other(isthmus_home: Path) -> None:
    """Before: the transformer passed a literal naming any python_type through to the runner unchanged."""
    from flytekit.core.context_manager import FlyteContextManager
    from flytekit.core.type_engine import TypeTransformerFailedError
    from flytekit.models.literals import Literal, Scalar
    from google.protobuf.struct_pb2 import Struct

    from flytekitplugins.isthmus.transformer import ArtifactRefTransformer

    transformer = ArtifactRefTransformer()
    ctx = FlyteContextManager.current_context()
    good = isthmus.StepRunner().artifacts.save({"a": 1})
    literal = transformer.to_literal(ctx, good, ArtifactRef, transformer.get_literal_type())
    assert transformer.to_python_value(ctx, literal, ArtifactRef) == good
    for python_type in ("this.x:X", "venv.__main__.x:X"):
        struct = Struct()
        struct.update({**good.to_dict(), "python_type": python_type})  # a literal entered by hand
        with pytest.raises((TypeTransformerFailedError, InvalidArtifactRef), match="python_type"):
            transformer.to_python_value(ctx, Literal(scalar=Scalar(generic=struct)), ArtifactRef)
    assert "this" not in sys.modules


# -- 11. a ref cannot relabel bytes for a loader that runs code ---------------------------------------------------


@pytest.mark.parametrize("materializer", ["cloudpickle@1", "joblib@1"])
def test_a_ref_cannot_relabel_text_as_a_pickle(tmp_path: Path, isthmus_home: Path, materializer: str) -> None:
    """Before: an honest step stored attacker-influenced text (a protocol-0 pickle is plain text) with `str`; its
    genuine, hash-checked ref re-sent with "materializer": "cloudpickle@1" made a run-step worker unpickle it."""
    write_module(tmp_path, "proj_attack", ATTACK)
    marker = tmp_path / "PWNED"
    payload = f"cposix\nsystem\n(S'touch {marker}'\ntR."
    env = env_for(isthmus_home, tmp_path)
    ref = python(
        f"""
        import json, proj_attack
        from isthmus.runner import run_step
        print(json.dumps(run_step(proj_attack.fetch_text, {{"body": {payload!r}}}).outputs["output"].to_dict()))
        """,
        env=env,
        cwd=tmp_path,
    )
    assert ref["materializer"] == "str@1"
    relabelled = dict(ref, materializer=materializer)
    for mode in ("hash", "size", "off"):
        manifest = tmp_path / "out" / f"{mode}.json"
        proc = isthmus_cli(
            "run-step", "--step", "proj_attack:pick", "--inputs", json.dumps({"v": relabelled}),
            "--manifest", str(manifest), env={**env, "ISTHMUS_VERIFY": mode}, cwd=tmp_path,
        )  # fmt: skip
        assert not marker.exists(), f"code ran in a run-step worker (verify={mode})"
        assert proc.returncode == 1, proc.stdout + proc.stderr
        line = one_line(proc.stderr)
        assert "no record that isthmus wrote these bytes" in line and ref["content_hash"] in line
    proc = run_code(f"import isthmus; isthmus.load({relabelled!r})", env=env, cwd=tmp_path)
    assert proc.returncode == 1 and "InvalidArtifactRef" in proc.stderr and not marker.exists()


def test_pickles_load_only_with_the_materializer_that_wrote_them(tmp_path: Path, victim: dict[str, Path]) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    pickled = store.save(Pickled(5), materializer="cloudpickle")
    assert store.load(pickled).value == 5 and store.is_valid(pickled) and store.exists(pickled)
    assert ArtifactStore(store.root, verify="off").load(pickled).value == 5  # a fresh reader: the mark is on disk
    as_joblib = dataclasses.replace(pickled, materializer="joblib@1")
    text = store.save(victim["payload"].read_bytes())  # a pickle that runs code, stored as plain bytes
    as_pickle = dataclasses.replace(text, materializer="cloudpickle@1")
    for ref in (as_joblib, as_pickle):
        assert not store.exists(ref) and not store.is_valid(ref) and store.quick_check(ref) is False
        with pytest.raises(InvalidArtifactRef, match="no record that isthmus wrote these bytes"):
            store.load(ref)
    assert not victim["marker"].exists()
    assert store.load(text) == victim["payload"].read_bytes()  # the genuine ref is untouched


def test_an_object_pickled_without_a_writer_mark_is_recomputed(isthmus_home: Path) -> None:
    """An object pickled before writer marks existed (or whose mark is gone) is a cache miss, never a load."""
    calls: list[int] = []

    @isthmus.step(materializers={"output": "cloudpickle"})
    def make(n: int) -> Pickled:
        calls.append(n)
        return Pickled(n)

    runner = isthmus.StepRunner()
    first = runner.run(make, {"n": 4})
    mark = runner.artifacts._mark_path(first.outputs["output"].content_hash, "cloudpickle")
    os.remove(mark)
    second = runner.run(make, {"n": 4})
    assert second.cache_hit is False and second.value.value == 4 and calls == [4, 4]
    assert os.path.isfile(mark) and runner.run(make, {"n": 4}).cache_hit


def test_s3_pickles_are_bound_to_their_writer_and_verified_in_memory(
    s3_server: Any, s3_env: dict[str, str], tmp_path: Path, victim: dict[str, Path]
) -> None:
    writer = _s3_store(s3_server, tmp_path)
    pickled = writer.save(Pickled(9), materializer="cloudpickle")
    reader = ArtifactStore(writer.url, local_cache=str(tmp_path / "reader-cache"))
    assert reader.load(pickled).value == 9
    text = writer.save(victim["payload"].read_bytes())
    with pytest.raises(InvalidArtifactRef, match="no record that isthmus wrote these bytes"):
        reader.load(dataclasses.replace(text, materializer="cloudpickle@1"))
    # another local user plants the reader's cached copy of the genuine pickle (same size)
    bomb = victim["payload"].read_bytes().ljust(pickled.size, b".")
    Path(reader._cache_path(pickled)).write_bytes(bomb)
    assert reader.load(pickled).value == 9  # the copy did not verify: downloaded again, verified in memory
    assert not victim["marker"].exists()


@pytest.mark.parametrize("materializer", ["cloudpickle", "joblib"])
def test_large_pickles_load_from_a_frozen_private_mapping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, materializer: str
) -> None:
    import mmap

    import numpy as np

    from isthmus.artifacts import safefs

    store = ArtifactStore(str(tmp_path / "artifacts"))
    value = Pickled(np.arange(400_000))
    ref = store.save(value, materializer=materializer)
    kinds: list[type] = []
    real = safefs.frozen_content
    monkeypatch.setattr(safefs, "frozen_content", lambda fd, size: kinds.append(type(out := real(fd, size))) or out)
    loaded = ArtifactStore(store.root, verify="off").load(ref)
    np.testing.assert_array_equal(loaded.value, value.value)
    assert kinds == [mmap.mmap]  # this user's file, a MiB and more: mapped, not copied
    os.chmod(store.path_for(ref.content_hash), 0o666)  # others could write it in place: copied instead
    np.testing.assert_array_equal(ArtifactStore(store.root).load(ref).value, value.value)
    assert kinds == [mmap.mmap, bytes]


SWAPPER = """
import os, shutil, sys
path, good, evil = sys.argv[1:4]
while True:
    for source in (good, evil):
        shutil.copyfile(source, path + ".swap")
        os.replace(path + ".swap", path)
"""


@pytest.mark.parametrize("size", ["small", "mapped"])
@pytest.mark.parametrize("mode", ["hash", "off"])
def test_a_pickle_swapped_under_its_reader_by_another_process_never_runs(
    tmp_path: Path, victim: dict[str, Path], mode: str, size: str
) -> None:
    """Before: the store hashed the file, then the materializer opened the path again; a second process that can
    write the root swapped an evil pickle of the same size in between (seconds). A large object is read through
    a private mapping, a small one copied: both are frozen before they are hashed."""
    store = ArtifactStore(str(tmp_path / "artifacts"))
    value = list(range(300 if size == "small" else 300_000))
    ref = store.save(Pickled(value), materializer="cloudpickle")
    path = store.path_for(ref.content_hash)
    good, evil = tmp_path / "good", tmp_path / "evil"
    good.write_bytes(Path(path).read_bytes())
    evil.write_bytes(victim["payload"].read_bytes().ljust(ref.size, b"."))  # pickle ignores bytes after STOP
    swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, path, str(good), str(evil)])
    reader = ArtifactStore(store.root, verify=mode)
    loaded = refused = 0
    deadline = time.monotonic() + 8
    try:
        while time.monotonic() < deadline and not victim["marker"].exists():
            try:
                result = reader.load(ref)
            except ArtifactMissing:
                refused += 1
                continue
            assert isinstance(result, Pickled) and result.value == value, f"the evil pickle ran: {result!r:.80}"
            loaded += 1
    finally:
        swapper.kill()
        swapper.wait()
    assert not victim["marker"].exists(), f"the evil pickle ran after {loaded} loads and {refused} refusals"
    assert loaded + refused > 20 and refused > 0


# -- 12. no link inside the store is followed ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["hash", "size", "off"])
def test_a_symlinked_object_is_never_read(tmp_path: Path, victim: dict[str, Path], mode: str) -> None:
    """Before: with verify=off/size an object that is a link to a file outside the root was loaded (someone who can
    write a shared root could read the victim's files through a victim's process)."""
    store = ArtifactStore(str(tmp_path / "artifacts"), verify=mode)
    secret = victim["secret"]
    content_hash = "blake3:" + blake3(secret.read_bytes()).hexdigest()
    path = Path(store.path_for(content_hash))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(secret)
    ref = ArtifactRef(store.uri_for(content_hash), content_hash, secret.stat().st_size, "json@1", "builtins:str")
    frozen = Untouched(victim["dir"])
    assert not store.exists(ref)
    assert store.quick_check(ref) is not True or mode == "off"  # 'off' trusts presence without a look
    with pytest.raises(ArtifactMissing):
        store.load(ref)
    with pytest.raises(ArtifactMissing):
        store.load(ref, verify=True)
    frozen.check()  # the victim's file was not read, moved or changed
    fifo = Path(store.path_for("blake3:" + "cd" * 32))
    fifo.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(fifo)  # a reader must not block on it
    with pytest.raises(ArtifactMissing):
        store.load(ArtifactRef(store.uri_for("blake3:" + "cd" * 32), "blake3:" + "cd" * 32, 0, "json@1", "x:y"))


def test_links_in_place_of_store_directories_are_refused(tmp_path: Path) -> None:
    """Before: a link at objects/<xx> made a commit land outside the root; a link at .corrupt made quarantine move
    store objects outside."""
    store = ArtifactStore(str(tmp_path / "artifacts"))
    outside = tmp_path / "outside"
    outside.mkdir()
    value = "hello"
    content_hash = "blake3:" + blake3(value.encode()).hexdigest()
    (Path(store.root) / "objects" / content_hash[7:9]).symlink_to(outside)
    with pytest.raises(ArtifactStoreError, match=r"link.*ISTHMUS_ARTIFACT_ROOT"):
        store.save(value, step_name="s", output="o")
    assert list(outside.iterdir()) == []
    # a corrupt object with .corrupt linked outside: it is removed, never moved there
    other = store.save({"k": 1})
    corrupt_path = Path(store.path_for(other.content_hash))
    corrupt_path.write_bytes(b'{"k":2}')
    (Path(store.root) / ".corrupt").symlink_to(outside)
    assert not ArtifactStore(store.root).is_valid(other)
    assert list(outside.iterdir()) == [] and not corrupt_path.exists()
    # .tmp linked outside: nothing is written through it
    tmp = Path(store.root) / ".tmp"
    tmp.rmdir()
    tmp.symlink_to(outside)
    with pytest.raises(ArtifactStoreError, match="link"):
        store.save([1, 2, 3])
    assert list(outside.iterdir()) == []


# -- 13. huge or deep ref metadata: refused in one line, bounded ---------------------------------------------------


def test_ref_metadata_is_small_shallow_json(tmp_path: Path, isthmus_home: Path) -> None:
    """Before: 5 MB of ref metadata was stored verbatim in step_runs.inputs, and 700 levels of it ended in a raw
    RecursionError from the runner."""
    runner = isthmus.StepRunner()
    good = runner.artifacts.save(2).to_dict()

    @isthmus.step
    def pick(v: object) -> str:
        return repr(v)

    deep: dict[str, Any] = {}
    cur = deep
    for _ in range(700):
        cur["a"] = {}
        cur = cur["a"]
    for metadata, why in (({"junk": "J" * 5_000_000}, "larger than"), (deep, "deeper than"), ({"x": {1, 2}}, "JSON")):
        with pytest.raises(InvalidArtifactRef, match=why) as info:
            runner.run(pick, {"v": dict(good, metadata=metadata)})
        assert "step 'pick'" in str(info.value) and "\n" not in str(info.value)
    from sqlalchemy import text

    with runner.metadata.engine.connect() as conn:  # refused before anything was recorded
        assert conn.execute(text("SELECT count(*) FROM step_runs")).scalar() == 0
    assert ArtifactRef.from_dict(dict(good, metadata={"shape": [2, 3], "columns": [{"name": "a"}]}))

    class Wordy(isthmus.Materializer):
        name = "test-wordy"
        needs_verified_bytes = False

        def can_handle(self, obj: Any) -> bool:
            return False

        def save(self, obj: Any, path: str) -> dict[str, Any]:
            Path(path).write_text("x")
            return {"notes": "n" * 1_000_000}

        def load(self, path: str, python_type: str) -> Any:
            return Path(path).read_text()

    ref = runner.artifacts.save("x", materializer=Wordy())
    assert "larger than" in ref.metadata["metadata_dropped"]  # kept small, and marked partial: a reader
    assert ref.metadata["code_incomplete"] is True  # never takes a dropped description for "refers to no code"


# -- 14. what an ingested manifest may create -----------------------------------------------------------------------


def _rewrite(manifest: Path, fn: Any, *, sign_with: str | None = None) -> None:
    """Apply ``fn`` to the manifest's JSON; re-sign it with ``sign_with`` (a job that holds its key)."""
    data = json.loads(manifest.read_text())
    fn(data)
    data.pop("auth", None)
    if sign_with:
        from isthmus.manifest import manifest_tag

        data["auth"] = {"alg": "hmac-sha256", "tag": manifest_tag(data, bytes.fromhex(sign_with))}
    manifest.write_text(json.dumps(data))


def _swap_all(data: Any, old: str, new: dict[str, Any]) -> Any:
    """Every ref (and artifact row, and link) of content hash ``old`` made to describe ``new``."""
    if isinstance(data, dict):
        if data.get("content_hash") == old:
            data.update(
                {k: new[k] for k in ("content_hash", "uri", "size", "materializer", "python_type") if k in data}
            )
        for value in data.values():
            _swap_all(value, old, new)
    elif isinstance(data, list):
        for value in data:
            _swap_all(value, old, new)
    return data


def _cache_entries(home: Path) -> list[dict[str, Any]]:
    from isthmus.store import MetadataStore

    db = home / "isthmus.db"
    return MetadataStore(f"sqlite:///{db}").list_cache_entries() if db.exists() else []


def test_a_manifest_with_outputs_swapped_for_another_artifact_creates_no_cache_entry(
    tmp_path: Path, isthmus_home: Path
) -> None:
    """Before: a manifest whose outputs were pointed at another valid artifact (666) was ingested, and a fresh
    run_step(add, {a: 1}) returned 666 as a cache hit. A manifest is not evidence that the step computed it."""
    manifest = _remote_manifest(tmp_path, isthmus_home)
    old = json.loads(manifest.read_text())["outputs"]["output"]["content_hash"]
    evil = ArtifactStore(str(isthmus_home / "artifacts")).save(666).to_dict()
    _rewrite(manifest, lambda d: _swap_all(d, old, evil))
    tampered = json.loads(manifest.read_text())
    env = env_for(isthmus_home, tmp_path, COUNTER=str(tmp_path / "counter"))
    # no tag (stripped, or never there), with or without the job's key: history, not evidence
    outcomes = [isthmus_cli("ingest", str(manifest), env={**env, **extra}, cwd=tmp_path)
                for extra in ({}, {"ISTHMUS_MANIFEST_KEY": JOB_KEY})]  # fmt: skip
    assert [p.returncode for p in outcomes] == [0, 0], outcomes[0].stderr
    assert _cache_entries(isthmus_home) == []
    day2 = python(RUN_ADD, env={**env, "ISTHMUS_VERIFY": "size"}, cwd=tmp_path)
    assert day2 == {"hit": False, "value": 2}
    for proc in outcomes:
        assert "not authenticated" in proc.stdout and "without cache entries" in proc.stdout
    # the tag of a genuine manifest on the altered one: refused, nothing recorded
    signed = json.loads(_remote_manifest(tmp_path, isthmus_home).read_text())
    manifest.write_text(json.dumps({**tampered, "auth": signed["auth"]}))
    proc = isthmus_cli("ingest", str(manifest), env={**env, "ISTHMUS_MANIFEST_KEY": JOB_KEY}, cwd=tmp_path)
    assert proc.returncode == 1
    assert "authentication tag does not match" in one_line(proc.stderr)
    from isthmus.store import MetadataStore

    meta = MetadataStore(f"sqlite:///{isthmus_home / 'isthmus.db'}")
    recorded = meta.get_step_run(tampered["step_run_id"])  # the claim is kept as history, marked as such
    assert recorded["context"]["native"]["isthmus_manifest"] == "unauthenticated"
    with pytest.raises(isthmus.RunNotFound):  # and no artifact row names it as the producer of 666
        meta.get_artifact(evil["content_hash"])


def test_an_unsigned_manifest_records_history_but_no_cache_entry(tmp_path: Path, isthmus_home: Path) -> None:
    """A job started by hand without a key: its run is recorded, but only a signed manifest creates cache entries."""
    manifest = _remote_manifest(tmp_path, isthmus_home, key=None)
    env = env_for(isthmus_home, tmp_path, COUNTER=str(tmp_path / "counter"))
    proc = isthmus_cli("ingest", str(manifest), env={**env, "ISTHMUS_MANIFEST_KEY": JOB_KEY}, cwd=tmp_path)
    assert proc.returncode == 0 and "not authenticated" in proc.stdout
    assert _cache_entries(isthmus_home) == []
    assert python(RUN_ADD, env=env, cwd=tmp_path) == {"hit": False, "value": 2}
    proc = isthmus_cli("ingest", str(manifest), env={**env, "ISTHMUS_MANIFEST_KEY": "xyz"}, cwd=tmp_path)
    assert proc.returncode == 1 and "ISTHMUS_MANIFEST_KEY must be 64 hex digits" in one_line(proc.stderr)


EXISTING_RUN = """
import json, proj_add
from isthmus.runner import run_step

r = run_step(proj_add.add, {"a": 5})
print(json.dumps({"id": r.step_run_id, "value": r.value}))
"""


@pytest.mark.parametrize("signed", [False, True], ids=["altered", "re-signed by its job"])
def test_a_manifest_cannot_attach_a_cache_entry_to_an_existing_run(
    tmp_path: Path, isthmus_home: Path, signed: bool
) -> None:
    """Before: a manifest of add(1) whose step run id was changed to an existing run's (add(5) = 6) made ingest
    skip that run's row but insert (key of add(1), that id) as a cache entry: add(1) then returned 6 as a hit.
    Even a job holding its key cannot do it: cache entries only for step runs the ingest itself created."""
    env = env_for(isthmus_home, tmp_path, COUNTER=str(tmp_path / "counter"))
    write_module(tmp_path, "proj_add", ADD)
    honest = python(EXISTING_RUN, env=env, cwd=tmp_path)
    manifest = _remote_manifest(tmp_path, isthmus_home)
    from isthmus.store import MetadataStore

    meta = MetadataStore(f"sqlite:///{isthmus_home / 'isthmus.db'}")
    meta.ensure_pipeline_run({"id": "someone-elses-run", "pipeline": "p", "orchestrator": "airflow"})
    own = json.loads(manifest.read_text())["step_run_id"]

    def squat(data: dict[str, Any]) -> None:
        text = json.dumps(data).replace(own, honest["id"])
        data.clear()
        data.update(json.loads(text))

    _rewrite(manifest, squat, sign_with=JOB_KEY if signed else None)
    proc = isthmus_cli("ingest", str(manifest), env={**env, "ISTHMUS_MANIFEST_KEY": JOB_KEY}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [e["step_run_id"] for e in _cache_entries(isthmus_home)] == [honest["id"]]  # add(5)'s own entry only
    assert python(RUN_ADD, env=env, cwd=tmp_path) == {"hit": False, "value": 2}
    assert ("0 cache entries" in proc.stdout) if signed else ("not authenticated" in proc.stdout)
    assert meta.get_step_run(honest["id"])["outputs"]["output"]["content_hash"] == (
        "blake3:" + blake3(b"6").hexdigest()
    )
    # a pipeline run id naming someone else's run: an unsigned manifest joins no pipeline run
    other = _remote_manifest(tmp_path, isthmus_home, params='{"a": 3}')
    _rewrite(other, lambda d: d["records"]["step_runs"][0].update(pipeline_run_id="someone-elses-run"))
    proc = isthmus_cli("ingest", str(other), env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert meta.step_runs_of("someone-elses-run") == []


@pytest.mark.parametrize("signed", [False, True], ids=["altered", "re-signed by its job"])
def test_a_manifest_cannot_record_an_artifact_outside_the_store(
    tmp_path: Path, isthmus_home: Path, signed: bool
) -> None:
    """Before: an input ref of a manifest was never checked: an `artifacts` row with uri file:///etc/passwd and the
    hash of a value a future honest run produces (add(99) = "100") was inserted and stayed. Not even a job
    holding its key can record it."""
    env = env_for(isthmus_home, tmp_path, COUNTER=str(tmp_path / "counter"))
    future = "blake3:" + blake3(b"100").hexdigest()
    store = ArtifactStore(str(isthmus_home / "artifacts"))
    for uri, expected in (("file:///etc/passwd", "not in this artifact store"), (store.uri_for(future), "missing")):
        manifest = _remote_manifest(tmp_path, isthmus_home)
        fake = ref_dict(uri=uri, content_hash=future, size=3, python_type="builtins:int")

        def plant(data: dict[str, Any], fake: dict[str, Any] = fake) -> None:
            data["records"]["step_runs"][0]["inputs"]["bogus"] = fake
            row = {k: fake[k] for k in ("content_hash", "uri", "size", "materializer", "python_type")}
            created = {"__datetime__": "2020-01-01T00:00:00+00:00"}
            data["records"]["artifacts"].append(
                {**row, "metadata": None, "producer_step_run_id": None, "created_at": created}
            )

        _rewrite(manifest, plant, sign_with=JOB_KEY if signed else None)
        proc = isthmus_cli("ingest", str(manifest), env={**env, "ISTHMUS_MANIFEST_KEY": JOB_KEY}, cwd=tmp_path)
        assert proc.returncode == 1, proc.stdout
        line = one_line(proc.stderr)
        assert future in line and expected in line
    code = "import json, proj_add\nfrom isthmus.runner import run_step\nprint(json.dumps(run_step(proj_add.add, {'a': 99}).value))"
    assert python(code, env=env, cwd=tmp_path) == 100
    proc = isthmus_cli("artifacts", "show", future, env=env, cwd=tmp_path)
    assert proc.returncode == 0 and "/etc/passwd" not in proc.stdout and store.root in proc.stdout


def test_an_authenticated_manifest_names_producers_and_uris_of_this_store_only(
    tmp_path: Path, isthmus_home: Path
) -> None:
    manifest = _remote_manifest(tmp_path, isthmus_home)
    someone = str(uuid.uuid4())
    _rewrite(manifest, lambda d: d["records"]["artifacts"][0].update(producer_step_run_id=someone), sign_with=JOB_KEY)
    env = env_for(isthmus_home, tmp_path, ISTHMUS_MANIFEST_KEY=JOB_KEY)
    proc = isthmus_cli("ingest", str(manifest), env=env, cwd=tmp_path)
    assert proc.returncode == 1 and "producer" in one_line(proc.stderr)
    assert _cache_entries(isthmus_home) == []


class _JobDirClient:
    """A Slurm client whose cluster filesystem is the local disk (what collect() reads and removes)."""

    backend = "local-files"

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend}

    async def read_file(self, path: str, max_bytes: int = 1 << 20) -> str | None:
        return Path(path).read_text() if Path(path).exists() else None

    async def remove_file(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)

    async def logs(self, status: Any, max_bytes: int = 1 << 20) -> dict[str, str]:
        return {}

    async def close(self) -> None:
        return None


def test_a_slurm_job_result_comes_only_from_a_manifest_signed_with_its_key(
    tmp_path: Path, isthmus_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The submitter derives a key per job, hands it to the job only through the 0600 job.env, and takes the
    job's result (and cache entry) only from a manifest signed with it: someone who can write the job
    directory cannot substitute another artifact as the step's result."""
    import asyncio

    from isthmus.slurm.executor import SECRET_ENV_FILE, SlurmExecutor, SlurmStepFailed
    from isthmus.slurm.states import JobStatus

    write_module(tmp_path, "proj_add", ADD)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("COUNTER", str(tmp_path / "counter"))
    import proj_add

    runner = isthmus.StepRunner()
    ex = SlurmExecutor(_JobDirClient(), runner, work_root=str(tmp_path / "jobs"), record="manifest")  # type: ignore[arg-type]
    inputs, params = ex.split_arguments(proj_add.add, {"a": 1})
    spec, planned = ex.build(proj_add.add, inputs, params, RunContext(orchestrator="slurm", invocation="add"))
    key = ex.manifest_key(planned.work_dir).hex()
    assert planned.secret_env_file == f"{planned.work_dir}/{SECRET_ENV_FILE}"
    assert key not in spec.full_script() and key not in json.dumps(planned.to_dict())
    assert ex._job_env(proj_add.add, RunContext(), planned.work_dir)[1]["ISTHMUS_MANIFEST_KEY"] == key
    assert ex.manifest_key(planned.work_dir + "-other").hex() != key  # no job can sign another's manifest
    job = dataclasses.replace(planned, job_id="7", manifest=planned.manifest.replace("%j", "7"))
    Path(job.work_dir).mkdir(parents=True)
    # the job, as its batch script runs it: the key comes from job.env, the metadata store is out of reach
    proc = isthmus_cli(
        "run-step", "--step", "proj_add:add", "--params", json.dumps(params), "--record", "manifest",
        "--manifest", job.manifest,
        env=env_for(isthmus_home, tmp_path, COUNTER=str(tmp_path / "counter"), ISTHMUS_MANIFEST_KEY=key,
                    ISTHMUS_STORE_URL="postgresql+psycopg://nobody@127.0.0.1:9/unreachable"),
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    genuine = Path(job.manifest).read_text()
    status = JobStatus(job_id="7", state="COMPLETED")
    old = json.loads(genuine)["outputs"]["output"]["content_hash"]
    evil = runner.artifacts.save(666).to_dict()
    for forge in (
        lambda d: _swap_all(d, old, evil),  # outputs swapped, the job's tag kept
        lambda d: (_swap_all(d, old, evil), d.pop("auth")),  # ... and the tag removed
    ):
        data = json.loads(genuine)
        forge(data)
        Path(job.manifest).write_text(json.dumps(data))
        with pytest.raises(SlurmStepFailed, match="not signed with this job's key") as info:
            asyncio.run(ex.collect("add", job, status))
        assert "\n" not in str(info.value)
    assert runner.metadata.list_cache_entries() == []
    Path(job.manifest).write_text(genuine)
    result = asyncio.run(ex.collect("add", job, status))
    assert result.value == 2
    assert [e["step_run_id"] for e in runner.metadata.list_cache_entries()] == [result.step_run_id]
    assert runner.run(proj_add.add, {"a": 1}).cache_hit


# -- 15. deeply nested JSON anywhere: one line ------------------------------------------------------------------


def test_deep_json_anywhere_on_the_command_line_is_one_line(tmp_path: Path, isthmus_home: Path) -> None:
    """Before: --params/--inputs/--context or a manifest nested a few thousand levels deep ended in a RecursionError
    traceback."""
    write_module(tmp_path, "proj_attack", ATTACK)
    env = env_for(isthmus_home, tmp_path)
    for deep in ('{"a": ' + "[" * 5000 + "]" * 5000 + "}", '{"a": ' + '{"b": ' * 150 + "1" + "}" * 151):
        (tmp_path / "deep.json").write_text(deep)
        for option, value in (
            ("--params", deep), ("--inputs", deep), ("--context", deep), ("--params", f"@{tmp_path / 'deep.json'}"),
        ):  # fmt: skip
            proc = isthmus_cli("run-step", "--step", "proj_attack:pick", option, value, env=env, cwd=tmp_path)
            assert proc.returncode == 1
            line = one_line(proc.stderr)
            assert option in line and "nests deeper than" in line, line
        proc = isthmus_cli("ingest", str(tmp_path / "deep.json"), env=env, cwd=tmp_path)
        assert proc.returncode == 1 and "nests deeper than" in one_line(proc.stderr)
    manifest = _remote_manifest(tmp_path, isthmus_home)
    _rewrite(manifest, lambda d: d["records"]["step_runs"][0]["params"].update(a=json.loads("[" * 200 + "]" * 200)))
    proc = isthmus_cli("ingest", str(manifest), env=env, cwd=tmp_path)
    assert proc.returncode == 1 and "nests deeper than" in one_line(proc.stderr)
    with pytest.raises(InvalidArtifactRef, match="nests deeper"):
        isthmus.load('{"__isthmus_artifact__": 1, "uri": ' + "[" * 5000 + "]" * 5000 + "}")
