"""A DataFrame loaded from the store is the frame ``pd.read_parquet`` reads from the same file — every dtype,
index and attribute — and an ordinary, writeable frame (no read-only column views of Arrow memory)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from isthmus.artifacts.store import ArtifactStore

N = 300


def _mixed() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "i": np.arange(N),
            "f": rng.random(N),
            "f_nan": np.where(rng.random(N) > 0.5, np.nan, 1.0),
            "f32": rng.random(N).astype("float32"),
            "u8": np.arange(N, dtype="uint8"),
            "flag": rng.random(N) > 0.5,
            "s": [f"x{i}" for i in range(N)],
            "s_null": [None if i % 3 else "a" for i in range(N)],
            "cat": pd.Categorical(rng.choice(["a", "b", "c"], N)),
            "tz": pd.date_range("2020-01-01", periods=N, freq="h", tz="UTC"),
            "naive": pd.date_range("2020-01-01", periods=N, freq="s"),
            "nullable": pd.array([None if i % 5 == 0 else i for i in range(N)], dtype="Int64"),
            "delta": pd.to_timedelta(np.arange(N), unit="s"),
        }
    )
    frame.attrs = {"source": "test"}
    return frame


FRAMES = {
    "mixed dtypes, RangeIndex": _mixed(),
    "string index": _mixed().set_index("s"),
    "duplicate index labels": _mixed().set_index(pd.Index([1, 2] * (N // 2))),
    "MultiIndex": _mixed().set_index(["u8", "cat"]),
    "no rows": _mixed().iloc[:0],
    "one column": pd.DataFrame({"x": np.arange(N, dtype="float64")}),
}


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_a_loaded_frame_is_what_read_parquet_reads(store: ArtifactStore, name: str) -> None:
    ref = store.save(FRAMES[name])
    got = store.load(ref)
    want = pd.read_parquet(store.path_for(ref.content_hash), engine="pyarrow")
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert got.attrs == want.attrs


def test_a_loaded_frame_is_writeable_in_place(store: ArtifactStore) -> None:
    got = store.load(store.save(_mixed()))
    for column in ("i", "f", "f32", "u8", "flag", "naive", "tz", "delta", "nullable"):
        got.iloc[0, got.columns.get_loc(column)] = got[column].iloc[1]
        assert got[column].iloc[0] == got[column].iloc[1], column
    got.loc[got["i"] > 100, "f"] = 0.0
    got["i"] += 1
    assert (got["f"].to_numpy()[101:] == 0.0).all()
    assert got["i"].tolist() == [2, *range(2, N + 1)]  # row 0 took row 1's value, then all went up by one


def test_a_loaded_series_keeps_its_values_and_is_writeable(store: ArtifactStore) -> None:
    series = pd.Series(np.linspace(0, 1, N), name="s")
    got = store.load(store.save(series))
    pd.testing.assert_series_equal(got, series)
    got.iloc[0] = 5.0
    assert got.iloc[0] == 5.0
