"""The pandas materializer keeps a RangeIndex as parquet metadata, not as a column of n integers, and
still reads artifacts written with the index as a column (as earlier versions wrote every frame)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from isthmus.artifacts import materializers as mats
from isthmus.artifacts.store import ArtifactStore

FRAMES = {
    "default RangeIndex": pd.DataFrame({"a": range(1000), "b": [0.5] * 1000}),
    "shifted RangeIndex": pd.DataFrame({"a": range(10)}, index=pd.RangeIndex(5, 25, 2, name="pos")),
    "integer index": pd.DataFrame({"a": [1, 2, 3]}, index=pd.Index([10, 20, 30], name="id")),
    "string index": pd.DataFrame({"a": [1, 2]}, index=["x", "y"]),
    "unnamed Series": pd.Series([1.5, 2.5, 3.5]),
}


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


def _equal(got: Any, want: Any) -> None:
    if isinstance(want, pd.Series):
        pd.testing.assert_series_equal(got, want)
    else:
        pd.testing.assert_frame_equal(got, want)


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_frames_round_trip_and_a_range_index_is_no_column(store: ArtifactStore, name: str) -> None:
    value = FRAMES[name]
    ref = store.save(value)
    assert ref.materializer == "pandas-parquet@1"
    _equal(store.load(ref), value)
    columns = pq.read_schema(store.local_path(ref)).names
    if isinstance(value.index, pd.RangeIndex):
        assert not any(c.startswith("__index_level") or c == value.index.name for c in columns), columns
    else:
        assert len(columns) == (1 if isinstance(value, pd.Series) else value.shape[1]) + 1


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_artifacts_written_with_the_index_as_a_column_still_load(
    store: ArtifactStore, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_to_parquet = pd.DataFrame.to_parquet

    def as_before(self: pd.DataFrame, path: str, *args: Any, **kwargs: Any) -> Any:
        kwargs["index"] = True  # what earlier versions wrote: every index as a column
        return real_to_parquet(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", as_before)
    value = FRAMES[name]
    old = store.save(value)
    monkeypatch.undo()
    assert "__index_level_0__" in pq.read_schema(store.local_path(old)).names or value.index.name
    _equal(store.load(old), value)
    new = store.save(value)
    if isinstance(value.index, pd.RangeIndex):
        assert new.content_hash != old.content_hash and new.size < old.size
    _equal(store.load(new), value)


def test_the_materializer_is_the_registered_one() -> None:
    assert isinstance(mats.get_materializer("pandas-parquet@1"), mats.PandasMaterializer)
