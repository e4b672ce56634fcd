"""Small JSON, text and bytes values are serialized, hashed and written from memory: the same file, hash
and ref as the materializer's own ``save`` makes, nothing left behind in ``.tmp``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from isthmus.artifacts import materializers as mats
from isthmus.artifacts.store import SMALL_BYTES, ArtifactStore, hash_file

VALUES: list[Any] = [0, -7, 2.5, True, None, "héllo\r\n", "", b"\x00\xff", bytearray(b"ab"), {"b": [1, {"a": None}]}]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_small_values_match_the_materializers_file(tmp_path: Path, value: Any) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    ref = store.save(value)
    mat = mats.get_materializer(ref.materializer)
    reference = tmp_path / "reference"
    mat.save(value, str(reference))
    assert hash_file(str(reference)) == (ref.content_hash, ref.size)
    assert Path(store.local_path(ref)).read_bytes() == reference.read_bytes()
    assert store.load(ref, verify=True) == value
    assert os.listdir(Path(store.root) / ".tmp") == []


def test_a_large_value_takes_the_file_path_with_the_same_hash(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    value = "x" * (SMALL_BYTES + 1)
    ref = store.save(value)
    small = mats.get_materializer(ref.materializer).dumps(value)  # type: ignore[attr-defined]
    from isthmus.hashing import hash_bytes

    assert ref.content_hash == hash_bytes(small) and ref.size == len(small)
    assert store.load(ref, verify=True) == value


def test_saving_twice_replaces_a_corrupted_object(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    ref = store.save({"k": 1})
    Path(store.local_path(ref)).write_bytes(b'{"k":2}')
    again = store.save({"k": 1})
    assert again.content_hash == ref.content_hash
    assert store.load(again, verify=True) == {"k": 1}
