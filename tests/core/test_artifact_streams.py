"""Artifacts hashed while they are written or read (one pass over the bytes), and what still catches a bad file."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from isthmus import ArtifactMissing, ArtifactStore, Materializer
from isthmus.artifacts import materializers as mats
from isthmus.artifacts import store as store_module
from isthmus.artifacts import streams
from isthmus.hashing import hash_bytes

from .test_artifacts import age, corrupt


@pytest.fixture(autouse=True)
def _restore_materializer_registry() -> Iterator[None]:
    registry, by_name = list(mats._registry), dict(mats._by_name)
    yield
    mats._registry[:] = registry
    mats._by_name.clear()
    mats._by_name.update(by_name)


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


@pytest.fixture
def small_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash in steps of two pages, so a small file spans many steps."""
    monkeypatch.setattr(streams, "_STEP", 2 * streams._GRANULE)


def npy_bytes(value: Any) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(value), allow_pickle=False)
    return buf.getvalue()


ARRAYS = [
    np.arange(12.0).reshape(3, 4),
    np.asfortranarray(np.arange(12).reshape(3, 4)),
    np.arange(40)[::3],  # not contiguous
    np.array(5),
    np.zeros((0, 3)),
    np.array(["a", "bc"]),
    np.arange(10).astype("datetime64[s]"),
    np.zeros(3, dtype=[("a", "i4"), ("b", "f8")]),
    np.arange(6, dtype=">i2").reshape(2, 3),
    np.random.default_rng(0).random(70_000),  # several hashing steps
]


@pytest.mark.parametrize("value", ARRAYS, ids=lambda v: f"{v.dtype}-{v.shape}")
def test_an_array_is_stored_as_np_save_writes_it_and_loads_back(
    store: ArtifactStore, value: np.ndarray, small_steps: None
) -> None:
    ref = store.save(value)
    assert ref.content_hash == hash_bytes(npy_bytes(value))
    assert Path(store.local_path(ref)).read_bytes() == npy_bytes(value)
    out = ArtifactStore(store.root).load(ref)  # another process: nothing remembered, checked by hash
    expected = np.load(io.BytesIO(npy_bytes(value)))
    assert out.dtype == expected.dtype and out.shape == expected.shape and out.strides == expected.strides
    np.testing.assert_array_equal(out, value)
    assert out.flags.writeable


def test_a_numpy_scalar_comes_back_a_scalar(store: ArtifactStore) -> None:
    ref = store.save(np.float32(2.5))
    out = ArtifactStore(store.root).load(ref)
    assert type(out) is np.float32 and out == np.float32(2.5)


def test_a_tampered_array_is_caught_by_a_fresh_reader(store: ArtifactStore, small_steps: None) -> None:
    value = np.arange(50_000, dtype=np.int64)
    ref = store.save(value)
    path = store.local_path(ref)
    data = bytearray(Path(path).read_bytes())
    data[-3] ^= 0x01  # one bit of the last element: the header still parses, the array still builds
    Path(path).write_bytes(bytes(data))
    fresh = ArtifactStore(store.root)
    with pytest.raises(ArtifactMissing, match="do not match"):
        fresh.load(ref)
    assert not os.path.exists(path)  # moved aside, never served
    assert len(list((Path(store.root) / ".corrupt").iterdir())) == 1
    assert store.save(value) == ref  # recomputing repairs it
    np.testing.assert_array_equal(ArtifactStore(store.root).load(ref), value)


def test_a_tampered_array_is_caught_by_the_process_that_wrote_it(store: ArtifactStore) -> None:
    value = np.arange(1000.0)
    ref = store.save(value)  # trusted at once by this store
    path = store.local_path(ref)
    age(path)
    np.testing.assert_array_equal(store.load(ref), value)
    corrupt(path)  # in place: same inode and size, but ctime moves
    with pytest.raises(ArtifactMissing):
        store.load(ref)


def test_a_header_claiming_more_data_than_the_file_holds_is_missing(store: ArtifactStore) -> None:
    ref = store.save(np.arange(1000, dtype=np.uint8))
    path = store.local_path(ref)
    data = Path(path).read_bytes()
    old = b"(1000,), }" + b" " * 10  # the header is padded with spaces: room for a longer shape
    assert old in data
    huge = data.replace(old, b"(10000000000000,), }", 1)
    assert len(huge) == len(data)
    Path(path).write_bytes(huge)
    with pytest.raises(ArtifactMissing):  # not a MemoryError: nothing that large is allocated
        ArtifactStore(store.root).load(ref)


def test_a_file_that_grew_or_shrank_is_missing(store: ArtifactStore) -> None:
    value = np.arange(100)
    for change in (lambda b: b + b"\0" * 8, lambda b: b[:-8]):
        ref = store.save(value)
        path = store.local_path(ref)
        Path(path).write_bytes(change(Path(path).read_bytes()))
        with pytest.raises(ArtifactMissing):
            ArtifactStore(store.root).load(ref)
        with pytest.raises(ArtifactMissing):
            store.load(ref)


def test_a_load_checked_by_hash_is_remembered(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    value = np.arange(10_000)
    ref = store.save(value)
    age(store.local_path(ref))
    readers: list[int] = []
    real = store_module.HashingReader

    def counting(fd: int, size: int) -> streams.HashingReader:
        readers.append(fd)
        return real(fd, size)

    monkeypatch.setattr(store_module, "HashingReader", counting)
    monkeypatch.setattr(store_module, "hash_file", lambda p: pytest.fail("a second pass over the file"))
    fresh = ArtifactStore(store.root)
    for _ in range(3):
        np.testing.assert_array_equal(fresh.load(ref), value)
    assert len(readers) == 1  # read and hashed once; then the verdict stands while the file is unchanged
    assert fresh.quick_check(ref) is True


def test_the_other_verify_modes_read_the_file_as_before(store: ArtifactStore) -> None:
    value = np.arange(10.0)
    ref = store.save(value)
    for mode in ("size", "off"):
        np.testing.assert_array_equal(ArtifactStore(store.root, verify=mode).load(ref), value)
    np.testing.assert_array_equal(ArtifactStore(store.root, verify="off").load(ref, verify=True), value)


class Upper(Materializer):
    """A streaming user materializer whose load fails on text that is not upper case."""

    name = "test-upper"
    needs_verified_bytes = False
    writes_stream = True
    reads_stream = True

    def can_handle(self, obj: Any) -> bool:
        return False

    def save(self, obj: Any, path: str) -> dict[str, Any] | None:
        raise AssertionError("save_to is used")

    def save_to(self, obj: Any, out: io.RawIOBase) -> dict[str, Any] | None:
        for word in obj.split(" "):
            out.write(word.encode() + b" ")
        return {"words": len(obj.split(" "))}

    def load(self, path: str, python_type: str) -> Any:
        raise AssertionError("load_from is used")

    def load_from(self, source: io.RawIOBase, python_type: str) -> Any:
        text = source.read(4).decode()  # reads only part: the store reads and hashes the rest
        if not text.isupper():
            raise ValueError(f"not upper case: {text!r}")
        return text


def test_a_streaming_materializer_errors_on_good_bytes_only(store: ArtifactStore) -> None:
    ref = store.save("HELLO big world", materializer=Upper())
    assert ref.metadata == {"words": 3}
    assert ref.content_hash == hash_bytes(b"HELLO big world ")
    assert ArtifactStore(store.root).load(ref) == "HELL"
    path = store.local_path(ref)
    Path(path).write_bytes(b"HELLO big wOrld ")  # after what the materializer reads: still caught
    with pytest.raises(ArtifactMissing):
        ArtifactStore(store.root).load(ref)
    bad = store.save("hello", materializer=Upper())
    with pytest.raises(ValueError, match="not upper case"):  # its bytes match: the materializer's own error
        ArtifactStore(store.root).load(bad)
    Path(store.local_path(bad)).write_bytes(b"hellO ")
    with pytest.raises(ArtifactMissing):  # tampered: the store says so, not the materializer
        ArtifactStore(store.root).load(bad)


class Failing(Upper):
    name = "test-failing-stream"

    def save_to(self, obj: Any, out: io.RawIOBase) -> dict[str, Any] | None:
        out.write(b"partial")
        raise RuntimeError("disk of the mind is full")


def test_a_failed_streaming_write_leaves_nothing_behind(store: ArtifactStore) -> None:
    with pytest.raises(Exception, match="disk of the mind"):
        store.save("x", materializer=Failing())
    assert os.listdir(Path(store.root) / ".tmp") == []
    assert list((Path(store.root) / "objects").rglob("*.*")) == []


def test_the_writer_is_append_only_and_survives_a_library_closing_it(tmp_path: Path, small_steps: None) -> None:
    path = str(tmp_path / "part")
    out = streams.HashingWriter(path)
    try:
        payload = os.urandom(5 * streams._STEP + 123)
        out.write(payload[:100])
        assert out.tell() == 100 and out.seek(0, io.SEEK_CUR) == 100
        with pytest.raises(io.UnsupportedOperation):
            out.seek(0)
        with pytest.raises(io.UnsupportedOperation):
            out.fileno()
        out.write(memoryview(payload)[100:])
        out.close()  # pyarrow closes the file it wrote to
        assert out.finish() == (hash_bytes(payload), len(payload))
    finally:
        out.discard()
    assert Path(path).read_bytes() == payload
    with pytest.raises(FileExistsError):
        streams.HashingWriter(path)  # never writes into a file it did not create


def test_pandas_and_arrow_files_are_what_their_writers_make(store: ArtifactStore) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pd.DataFrame({"a": np.arange(5), "b": list("vwxyz"), "c": np.linspace(0, 1, 5)})
    ref = store.save(frame)
    peer = io.BytesIO()
    frame.to_parquet(peer, engine="pyarrow", index=None)
    assert ref.content_hash == hash_bytes(peer.getvalue())
    out = ArtifactStore(store.root).load(ref)
    pd.testing.assert_frame_equal(out, frame)
    out.iloc[0, 0] = 42  # a loaded frame is an ordinary, writable one
    out["c"] *= 2
    assert out.iloc[0, 0] == 42 and out["c"].iloc[-1] == 2.0
    table = pa.table({"x": [1, 2, 3]})
    tref = store.save(table)
    peer = io.BytesIO()
    pq.write_table(table, peer)
    assert tref.content_hash == hash_bytes(peer.getvalue())
    assert ArtifactStore(store.root).load(tref).equals(table)


def test_a_remote_store_streams_through_its_checked_local_copy(tmp_path: Path) -> None:
    root = f"memory://isthmus-test-{uuid.uuid4().hex}"
    cache = str(tmp_path / "cache")
    value = np.arange(20_000)
    ref = ArtifactStore(root, local_cache=cache).save(value)
    fresh = ArtifactStore(root, local_cache=cache)
    np.testing.assert_array_equal(fresh.load(ref), value)  # downloaded through a hash check
    local = fresh._cache_path(ref)
    corrupt(local)
    np.testing.assert_array_equal(ArtifactStore(root, local_cache=cache).load(ref), value)  # bad copy: fetched again
    assert Path(local).read_bytes() == npy_bytes(value)
    fresh.fs.pipe_file(fresh.path_for(ref.content_hash), b"\0" * ref.size)  # the remote object itself goes bad
    os.remove(local)
    with pytest.raises(ArtifactMissing):
        ArtifactStore(root, local_cache=cache).load(ref)


def test_a_hashing_failure_is_the_stores_error_not_a_fallback(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from isthmus.artifacts.errors import ArtifactStoreError

    def broken(self: Any, fd: int, start: int, end: int) -> None:
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(streams._Hasher, "_hash_region", broken)
    with pytest.raises(ArtifactStoreError, match="cannot hash"):
        store.save(np.arange(10))  # never stored with cloudpickle instead
    assert os.listdir(Path(store.root) / ".tmp") == []
