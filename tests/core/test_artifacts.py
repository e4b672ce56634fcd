"""The content-addressed artifact store, its materializers and ArtifactRef."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pydantic
import pytest

import isthmus
from isthmus import ArtifactMissing, ArtifactRef, ArtifactStore, MaterializationError, Materializer
from isthmus.artifacts import materializers as mats
from isthmus.artifacts import store as store_module
from isthmus.artifacts.refs import REF_MARKER

# -- module-level types (importable by path, as the JSON materializers need) ------------------------


class Settings(pydantic.BaseModel):
    name: str
    lr: float = 0.1
    layers: list[int] = []


@dataclasses.dataclass(frozen=True)
class Split:
    train: list[int]
    test: list[int]
    seed: int = 0


class Blob:
    """No built-in materializer handles it: stored with cloudpickle."""

    def __init__(self, value: int) -> None:
        self.value = value


class OtherBlob(Blob):
    pass


class Celsius:
    def __init__(self, degrees: float) -> None:
        self.degrees = degrees


class CelsiusMaterializer(Materializer):
    name = "test-celsius"
    version = "2"

    def can_handle(self, obj: Any) -> bool:
        return False  # only through types=

    def save(self, obj: Any, path: str) -> dict[str, Any] | None:
        Path(path).write_text(repr(float(obj.degrees)))
        return {"unit": "C"}

    def load(self, path: str, python_type: str) -> Any:
        return Celsius(float(Path(path).read_text()))


class SplitAsText(Materializer):
    """A user materializer for a type that a built-in (dataclass JSON) would also handle."""

    name = "test-split-text"

    def can_handle(self, obj: Any) -> bool:
        return False

    def save(self, obj: Any, path: str) -> dict[str, Any] | None:
        Path(path).write_text(f"{obj.train}|{obj.test}|{obj.seed}")
        return None

    def load(self, path: str, python_type: str) -> Any:
        train, test, seed = Path(path).read_text().split("|")
        return Split(json.loads(train), json.loads(test), int(seed))


# -- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _restore_materializer_registry() -> Iterator[None]:
    registry, by_name, warned = list(mats._registry), dict(mats._by_name), set(mats._warned)
    mats._warned.clear()
    yield
    mats._registry[:] = registry
    mats._by_name.clear()
    mats._by_name.update(by_name)
    mats._warned.clear()
    mats._warned.update(warned)


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


def objects(store: ArtifactStore) -> list[str]:
    root = Path(store.root) / "objects"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def tmp_entries(store: ArtifactStore) -> list[str]:
    return sorted(os.listdir(Path(store.root) / ".tmp"))


def age(path: str, seconds: float = 3600) -> None:
    """Backdate a file's mtime (as if it had been written long ago). Setting it moves the ctime to now, and
    a hash check is remembered only for files whose mtime and ctime are settled: wait that window out."""
    t = time.time() - seconds
    os.utime(path, (t, t))
    settle = os.stat(path).st_ctime_ns / 1e9 + store_module._RACY_NS / 1e9 + 0.01 - time.time()
    if settle > 0:
        time.sleep(settle)


# -- round trips ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, 2.5, True, None, "x"], "b": {"c": {}}},
        [1, [2, [3]], "é", -0.0],
        0,
        2**100,
        1.0,
        0.1 + 0.2,
        True,
        None,
        [],
    ],
)
def test_json_native_values_round_trip_exactly(store: ArtifactStore, value: Any) -> None:
    ref = store.save(value)
    assert ref.materializer == "json@1"
    loaded = store.load(ref)
    assert loaded == value
    assert type(loaded) is type(value)
    assert json.dumps(loaded) == json.dumps(value)


def test_str_round_trips_with_newlines_and_unicode(store: ArtifactStore) -> None:
    text = "line1\r\nline2\n\tü ∑ 🙂"
    ref = store.save(text)
    assert ref.materializer == "str@1"
    assert ref.python_type == "builtins:str"
    assert store.load(ref) == text


def test_bytes_and_bytearray_round_trip(store: ArtifactStore) -> None:
    data = bytes(range(256))
    ref = store.save(data)
    assert ref.materializer == "bytes@1"
    assert ref.size == 256
    assert store.load(ref) == data
    ba = store.load(store.save(bytearray(data)))
    assert type(ba) is bytearray and ba == data


def test_numpy_arrays_round_trip_as_npy(store: ArtifactStore) -> None:
    for arr in (
        np.arange(12, dtype=np.int32).reshape(3, 4),
        np.linspace(0, 1, 7),
        np.zeros((0, 2)),
        np.array([True, False]),
        np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")]),
        np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    ):
        ref = store.save(arr)
        assert ref.materializer == "numpy@1"
        assert ref.metadata == {"shape": list(arr.shape), "dtype": str(arr.dtype)}
        out = store.load(ref)
        assert out.dtype == arr.dtype
        np.testing.assert_array_equal(out, arr)
        with open(store.local_path(ref), "rb") as fh:
            assert fh.read(6) == b"\x93NUMPY"


def test_numpy_scalars_are_not_pickled(store: ArtifactStore) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for value in (np.float64(0.25), np.int32(-7), np.bool_(True), np.datetime64("2024-01-02")):
            ref = store.save(value)
            assert ref.materializer == "numpy@1"
            out = store.load(ref)
            assert type(out) is type(value) and out == value


def test_pandas_dataframe_round_trips_as_parquet(store: ArtifactStore) -> None:
    df = pd.DataFrame(
        {"i": [1, 2, 3], "f": [0.5, None, 2.5], "s": ["a", "b", None], "c": pd.Categorical(["x", "y", "x"])},
        index=pd.Index([10, 20, 30], name="id"),
    )
    ref = store.save(df)
    assert ref.materializer == "pandas-parquet@1"
    assert ref.metadata["rows"] == 3
    assert [c["name"] for c in ref.metadata["columns"]] == ["i", "f", "s", "c"]
    with open(store.local_path(ref), "rb") as fh:
        assert fh.read(4) == b"PAR1"
    pd.testing.assert_frame_equal(store.load(ref), df)


def test_pandas_series_round_trip_named_and_unnamed(store: ArtifactStore) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unnamed Series must not fall back to cloudpickle
        for series in (pd.Series([1.5, 2.5], name="score"), pd.Series([1, 2, 3]), pd.Series(["a"], index=[7])):
            ref = store.save(series)
            assert ref.materializer == "pandas-parquet@1"
            assert ref.python_type == "pandas:Series"
            pd.testing.assert_series_equal(store.load(ref), series)


def test_pyarrow_table_round_trips(store: ArtifactStore) -> None:
    table = pa.table({"a": [1, 2, None], "b": ["x", "y", "z"], "l": [[1], [], [2, 3]]})
    ref = store.save(table)
    assert ref.materializer == "arrow-parquet@1"
    assert ref.metadata["rows"] == 3
    assert store.load(ref).equals(table)


def test_pydantic_model_round_trips_as_json(store: ArtifactStore) -> None:
    model = Settings(name="run", lr=0.01, layers=[3, 4])
    ref = store.save(model)
    assert ref.materializer == "pydantic-json@1"
    assert ref.python_type == f"{__name__}:Settings"
    assert json.loads(Path(store.local_path(ref)).read_text()) == model.model_dump()
    assert store.load(ref) == model


def test_dataclass_round_trips_as_json(store: ArtifactStore) -> None:
    split = Split(train=[1, 2], test=[3], seed=42)
    ref = store.save(split)
    assert ref.materializer == "dataclass-json@1"
    assert json.loads(Path(store.local_path(ref)).read_text()) == {"train": [1, 2], "test": [3], "seed": 42}
    assert store.load(ref) == split


def test_sklearn_estimator_round_trips_with_joblib(store: ArtifactStore) -> None:
    from sklearn.linear_model import LinearRegression

    x = np.arange(20, dtype=float).reshape(10, 2)
    y = x @ np.array([1.5, -2.0]) + 3
    model = LinearRegression().fit(x, y)
    ref = store.save(model)
    assert ref.materializer == "joblib@1"
    loaded = store.load(ref)
    assert type(loaded) is LinearRegression
    np.testing.assert_allclose(loaded.predict(x), model.predict(x))


def test_cloudpickle_fallback_warns_once_per_type(store: ArtifactStore) -> None:
    with pytest.warns(UserWarning) as record:
        ref = store.save(Blob(1), step_name="make", output="blob")
        store.save(Blob(2), step_name="make", output="blob")
        store.save(OtherBlob(3), step_name="make", output="other")
        store.save(Blob(4), step_name="again", output="x")
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    assert sum(f"{__name__}:Blob" in m for m in messages) == 1
    assert sum(f"{__name__}:OtherBlob" in m for m in messages) == 1
    first = next(m for m in messages if ":Blob" in m)
    assert "'make'" in first and "'blob'" in first and "register_materializer" in first
    assert ref.materializer == "cloudpickle@1"
    loaded = store.load(ref)
    assert type(loaded) is Blob and loaded.value == 1


# -- content addressing and atomicity ------------------------------------------------------------------


def test_identical_content_is_stored_once(store: ArtifactStore) -> None:
    a = store.save({"x": 1, "y": [1, 2]})
    b = store.save({"y": [1, 2], "x": 1})  # same JSON bytes (sorted keys)
    assert a == b
    assert a.uri == b.uri
    assert objects(store) == [f"{a.content_hash[7:9]}/{a.content_hash[7:]}"]
    assert store.iter_objects() == [(a.content_hash, a.size)]
    c = store.save({"x": 2})
    assert c.uri != a.uri
    assert len(objects(store)) == 2
    assert tmp_entries(store) == []


def test_ref_points_at_its_bytes(store: ArtifactStore) -> None:
    from isthmus.hashing import hash_file

    ref = store.save([1, 2, 3])
    path = store.local_path(ref)
    assert ref.uri == f"file://{path}"
    assert hash_file(path) == (ref.content_hash, ref.size)
    assert Path(path).read_bytes() == b"[1,2,3]"


def test_concurrent_saves_of_the_same_content(store: ArtifactStore) -> None:
    payload = {"data": list(range(1000))}
    with ThreadPoolExecutor(8) as pool:
        refs = list(pool.map(lambda _: store.save(payload), range(16)))
    assert len({r.uri for r in refs}) == 1
    assert len(objects(store)) == 1
    assert tmp_entries(store) == []
    assert store.load(refs[0]) == payload


def test_writes_stay_in_tmp_until_commit(store: ArtifactStore) -> None:
    seen: dict[str, Any] = {}

    class Spy(Materializer):
        name = "test-spy"

        def can_handle(self, obj: Any) -> bool:
            return False

        def save(self, obj: Any, path: str) -> dict[str, Any] | None:
            with open(path, "wb") as fh:
                fh.write(b"partial")
                fh.flush()
                seen["objects"] = objects(store)
                seen["tmp"] = tmp_entries(store)
                seen["path"] = path
                fh.write(b" and the rest")
            return None

        def load(self, path: str, python_type: str) -> Any:
            return Path(path).read_bytes()

    ref = store.save(b"ignored", materializer=Spy())
    assert seen["objects"] == []
    assert seen["tmp"] == [os.path.basename(seen["path"])]
    assert os.path.dirname(seen["path"]) == os.path.join(store.root, ".tmp")
    assert objects(store) == [f"{ref.content_hash[7:9]}/{ref.content_hash[7:]}"]
    assert tmp_entries(store) == []
    assert store.load(ref) == b"partial and the rest"


def test_a_failed_write_leaves_nothing_behind(store: ArtifactStore) -> None:
    class Crashes(Materializer):
        name = "test-crashes"

        def can_handle(self, obj: Any) -> bool:
            return False

        def save(self, obj: Any, path: str) -> dict[str, Any] | None:
            with open(path, "wb") as fh:
                fh.write(b"half")
            raise OSError("disk full")

        def load(self, path: str, python_type: str) -> Any:
            raise AssertionError

    with pytest.raises(MaterializationError, match=r"'train'.*'model'.*test-crashes.*disk full"):
        store.save({"a": 1}, step_name="train", output="model", materializer=Crashes())
    assert objects(store) == []
    assert tmp_entries(store) == []


def test_clean_tmp_removes_abandoned_parts(store: ArtifactStore) -> None:
    old = Path(store.root) / ".tmp" / "dead.part"
    new = Path(store.root) / ".tmp" / "live.part"
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    age(str(old), 7200)
    assert store.clean_tmp(older_than=3600) == 1
    assert tmp_entries(store) == ["live.part"]


# -- validity ------------------------------------------------------------------------------------------


def test_deleted_object_is_invalid(store: ArtifactStore) -> None:
    ref = store.save({"a": 1})
    assert store.exists(ref) and store.is_valid(ref)
    os.remove(store.local_path(ref))
    assert not store.exists(ref)
    assert not store.is_valid(ref)
    assert not store.is_valid(ref, "size")
    with pytest.raises(ArtifactMissing, match="re-run"):
        store.load(ref)


def test_delete(store: ArtifactStore) -> None:
    ref = store.save("bye")
    store.delete(ref)
    assert not store.exists(ref)
    store.delete(ref)  # idempotent


def corrupt(path: str) -> None:
    data = bytearray(Path(path).read_bytes())
    data[0] ^= 0xFF
    st = os.stat(path)
    with open(path, "r+b") as fh:  # in place: same inode, same size
        fh.write(bytes(data))
    assert os.stat(path).st_size == st.st_size


def test_corrupt_object_is_invalid_and_quarantined(store: ArtifactStore) -> None:
    ref = store.save({"weights": [1, 2, 3]})
    path = store.local_path(ref)
    age(path)
    assert store.is_valid(ref)
    corrupt(path)
    assert store.exists(ref)  # same size: the cheap check cannot tell
    assert store.is_valid(ref, "size")
    assert not store.is_valid(ref)
    assert not os.path.exists(path)  # moved aside, never served
    quarantined = list((Path(store.root) / ".corrupt").iterdir())
    assert len(quarantined) == 1 and quarantined[0].name.startswith(ref.content_hash[7:])
    assert not store.is_valid(ref)
    with pytest.raises(ArtifactMissing):
        store.load(ref, verify=True)
    with pytest.raises(ArtifactMissing):
        store.load(ref)


def test_corruption_within_the_timestamp_granularity_is_caught(store: ArtifactStore) -> None:
    # A coarse filesystem clock can leave mtime unchanged by a write right after the hash check.
    ref = ArtifactStore(store.root).save({"a": list(range(100))})  # written by another process
    path = store.local_path(ref)
    st = os.stat(path)
    assert store.is_valid(ref)
    corrupt(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_mtime_ns == st.st_mtime_ns
    assert not store.is_valid(ref)


def test_saving_again_repairs_a_corrupt_object(store: ArtifactStore) -> None:
    value = {"a": [1, 2, 3]}
    ref = store.save(value)
    path = store.local_path(ref)
    corrupt(path)
    again = ArtifactStore(store.root).save(value)  # e.g. another process recomputed the step
    assert again == ref
    assert store.load(ref, verify=True) == value
    assert ArtifactStore(store.root).is_valid(ref)


def test_verification_is_remembered(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = store.save({"big": list(range(1000))})
    path = store.local_path(ref)
    age(path)
    calls: list[str] = []
    real = store_module.hash_file

    def counting(p: str) -> tuple[str, int]:
        calls.append(p)
        return real(p)

    monkeypatch.setattr(store_module, "hash_file", counting)
    fresh = ArtifactStore(store.root)
    assert fresh.is_valid(ref)
    assert fresh.is_valid(ref)
    assert fresh.is_valid(ref)
    assert calls == [path]
    age(path, 60)  # mtime changed: hash again
    assert fresh.is_valid(ref)
    assert len(calls) == 2
    assert fresh.is_valid(ref, "off") and fresh.is_valid(ref, "size")
    assert len(calls) == 2


def test_a_just_written_file_is_rehashed(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = ArtifactStore(store.root).save([1])  # written by another process moments ago
    calls: list[str] = []
    real = store_module.hash_file
    monkeypatch.setattr(store_module, "hash_file", lambda p: calls.append(p) or real(p))
    assert store.is_valid(ref) and store.is_valid(ref)
    assert len(calls) == 2  # modified moments ago: the memo is not trusted yet


def test_own_commits_are_trusted_without_rehashing(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = store.save([1, 2])  # this store hashed exactly these bytes before the rename
    calls: list[str] = []
    real = store_module.hash_file
    monkeypatch.setattr(store_module, "hash_file", lambda p: calls.append(p) or real(p))
    assert store.quick_check(ref) is True and store.is_valid(ref)
    assert calls == []


def test_load_with_verify(store: ArtifactStore) -> None:
    ref = store.save({"ok": True})
    assert store.load(ref, verify=True) == {"ok": True}


# -- errors --------------------------------------------------------------------------------------------


def gen() -> Iterator[int]:
    yield 1


@pytest.mark.parametrize("value", [threading.Lock(), gen()], ids=["lock", "generator"])
def test_unserializable_output_names_step_output_and_fix(store: ArtifactStore, value: Any) -> None:
    with pytest.raises(MaterializationError) as info:
        store.save(value, step_name="train", output="model")
    message = str(info.value)
    assert "'train'" in message
    assert "'model'" in message
    assert "register_materializer" in message
    assert type(value).__name__ in message
    assert isinstance(info.value, TypeError)
    assert objects(store) == [] and tmp_entries(store) == []


def test_unknown_materializer_on_load(store: ArtifactStore) -> None:
    ref = store.save({"a": 1})
    bogus = dataclasses.replace(ref, materializer="nobody@3")
    with pytest.raises(MaterializationError, match=r"'nobody@3'.*register_materializer"):
        store.load(bogus)


# -- user materializers --------------------------------------------------------------------------------


def test_registered_materializer_is_used_for_its_types(store: ArtifactStore) -> None:
    isthmus.register_materializer(CelsiusMaterializer, types=(Celsius,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ref = store.save(Celsius(21.5))
    assert ref.materializer == "test-celsius@2"
    assert ref.metadata == {"unit": "C"}
    assert ref.python_type == f"{__name__}:Celsius"
    assert store.load(ref).degrees == 21.5


def test_registered_materializer_comes_before_built_ins(store: ArtifactStore) -> None:
    split = Split([1], [2], 3)
    assert store.save(split).materializer == "dataclass-json@1"
    isthmus.register_materializer(SplitAsText(), types=Split)
    ref = store.save(split)
    assert ref.materializer == "test-split-text@1"
    assert Path(store.local_path(ref)).read_text() == "[1]|[2]|3"
    assert store.load(ref) == split
    assert store.save({"a": 1}).materializer == "json@1"  # other types unaffected


def test_register_materializer_as_decorator() -> None:
    @isthmus.register_materializer(types=(Celsius,))
    class Deco(CelsiusMaterializer):
        name = "test-deco"

    assert mats.get_materializer("test-deco").name == "test-deco"
    assert mats.candidates(Celsius(1))[0].name == "test-deco"
    with pytest.raises(ValueError, match="name"):
        isthmus.register_materializer(Materializer())


def test_preferred_materializer_by_name_instance_or_class(store: ArtifactStore) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for: no fallback warning
        assert store.save([1, 2], materializer="cloudpickle").materializer == "cloudpickle@1"
    isthmus.register_materializer(CelsiusMaterializer, types=(Celsius,))
    for choice in ("test-celsius", CelsiusMaterializer, CelsiusMaterializer()):
        ref = store.save(Celsius(5.0), materializer=choice)
        assert ref.materializer == "test-celsius@2"
        assert store.load(ref).degrees == 5.0


def test_preferred_materializer_failure_is_not_silently_replaced(store: ArtifactStore) -> None:
    with pytest.raises(MaterializationError, match=r"'numpy' failed"):
        store.save({"a": object()}, step_name="s", output="o", materializer="numpy")


# -- ArtifactRef ---------------------------------------------------------------------------------------


def make_ref(**kw: Any) -> ArtifactRef:
    fields: dict[str, Any] = {
        "uri": "file:///tmp/objects/ab/abc",
        "content_hash": "blake3:" + "ab" * 32,
        "size": 12,
        "materializer": "json@1",
        "python_type": "builtins:dict",
    }
    fields.update(kw)
    return ArtifactRef(**fields)


def test_ref_json_round_trip() -> None:
    ref = make_ref(metadata={"rows": 3, "columns": [{"name": "a", "type": "int64"}]})
    text = ref.to_json()
    back = ArtifactRef.from_json(text)
    assert back == ref and back.metadata == ref.metadata
    assert json.loads(text)[REF_MARKER] == 1
    plain = make_ref()
    assert "metadata" not in plain.to_dict()
    assert ArtifactRef.from_dict(plain.to_dict()) == plain
    assert plain.short_hash == "ab" * 6
    assert hash(plain) == hash(make_ref(metadata={"x": 1}))


def test_ref_coerce() -> None:
    ref = make_ref(metadata={"rows": 1})
    assert ArtifactRef.coerce(ref) is ref
    assert ArtifactRef.coerce(ref.to_dict()) == ref
    assert ArtifactRef.coerce(ref.to_json()) == ref
    assert ArtifactRef.coerce("  " + ref.to_json()) == ref
    assert ArtifactRef.coerce(json.loads(json.dumps(ref.to_dict()))) == ref
    for other in (None, 1, "plain", {"a": 1}, [ref.to_dict()], "{not json " + REF_MARKER, {REF_MARKER: 1}):
        assert ArtifactRef.coerce(other) is None
    missing = ref.to_dict()
    del missing["size"]
    assert ArtifactRef.coerce(missing) is None


def test_ref_coerce_json_with_the_marker_far_from_the_start() -> None:
    ref = make_ref(metadata={"columns": [{"name": f"col{i}", "type": "int64"} for i in range(50)]})
    data = dict(ref.to_dict())
    marker = data.pop(REF_MARKER)
    data[REF_MARKER] = marker  # as serialized by a tool that keeps its own key order
    text = json.dumps(data)
    assert text.index(REF_MARKER) > 400
    assert ArtifactRef.coerce(text) == ref


def test_ref_to_dict_puts_the_marker_first() -> None:
    assert next(iter(make_ref().to_dict())) == REF_MARKER


# -- fsspec stores -------------------------------------------------------------------------------------


def test_memory_store(tmp_path: Path) -> None:
    root = f"memory://isthmus-test-{uuid.uuid4().hex}"
    mem = ArtifactStore(root, local_cache=str(tmp_path / "cache"))
    assert not mem.local
    ref = mem.save({"x": [1, 2]})
    assert ref.uri.startswith("memory://")
    assert mem.exists(ref) and mem.is_valid(ref)
    assert mem.load(ref) == {"x": [1, 2]}
    assert mem.load(ref, verify=True) == {"x": [1, 2]}
    again = mem.save({"x": [1, 2]})
    assert again == ref
    arr = np.arange(5)
    np.testing.assert_array_equal(mem.load(mem.save(arr)), arr)
    mem.delete(ref)
    assert not mem.exists(ref)
    assert not mem.is_valid(ref)
    other = ArtifactStore(root, local_cache=str(tmp_path / "other-cache"))
    with pytest.raises(ArtifactMissing):
        other.load(ref)


def test_memory_store_detects_corrupt_downloads(tmp_path: Path) -> None:
    mem = ArtifactStore(f"memory://isthmus-test-{uuid.uuid4().hex}", local_cache=str(tmp_path / "cache"))
    ref = mem.save("hello world")
    path = mem.path_for(ref.content_hash)
    mem.fs.pipe_file(path, b"HELLO WORLD")  # same size, other bytes
    with pytest.raises(ArtifactMissing, match="do not match"):
        mem.load(ref, verify=True)


def test_save_after_the_objects_were_removed(store: ArtifactStore) -> None:
    import shutil

    ref = store.save({"a": 1})
    shutil.rmtree(Path(store.root) / "objects")  # e.g. `cache clear` from another process
    (Path(store.root) / "objects").mkdir()
    assert not store.is_valid(ref)
    assert store.save({"a": 1}) == ref
    assert store.load(ref, verify=True) == {"a": 1}
    store.wipe()
    assert objects(store) == []
    assert store.save({"a": 1}) == ref
    assert store.is_valid(ref)
