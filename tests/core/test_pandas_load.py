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


def _numeric(rows: int = N) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    return pd.DataFrame(
        {
            "f": rng.random(rows),
            "i": np.arange(rows),
            "f32": rng.random(rows).astype("float32"),
            "flag": rng.random(rows) > 0.5,
            "f_nan": np.where(rng.random(rows) > 0.5, np.nan, 2.0),
            "u8": (np.arange(rows) % 256).astype("uint8"),
            "i2": -np.arange(rows),
        }
    )


def _with_attrs() -> pd.DataFrame:
    frame = _numeric()
    frame.attrs = {"source": "numeric", "n": 3}
    return frame


NUMERIC = {
    "interleaved dtypes": _numeric(),
    "named RangeIndex with a start and a step": _numeric().set_index(pd.RangeIndex(10, 10 + 3 * N, 3, name="row")),
    "one dtype": pd.DataFrame(np.arange(3 * N, dtype="float64").reshape(N, 3), columns=["a", "b", "c"]),
    "attrs": _with_attrs(),
    "no rows": _numeric(0),
    "several row groups": _numeric(1_100_000)[["f", "i"]],
    "a strided RangeIndex (stop is not start + rows x step)": _numeric().iloc[::3],
    "a negative step": _numeric().iloc[::-2],
    "wide": pd.DataFrame(np.random.default_rng(3).random((50, 700)), columns=[f"c{i}" for i in range(700)]),
}


@pytest.mark.parametrize("name", sorted(NUMERIC))
def test_a_numeric_frame_is_read_into_its_blocks_and_is_what_read_parquet_reads(
    store: ArtifactStore, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from isthmus.artifacts import materializers
    from isthmus.artifacts.materializers import _read_numeric_frame

    monkeypatch.setattr(materializers, "_NUMERIC_READ_MIN_BYTES", 0)  # these frames are small

    ref = store.save(NUMERIC[name])
    path = store.path_for(ref.content_hash)
    assert _read_numeric_frame(pd, path) is not None  # the column-by-column read, not the fallback
    got = store.load(ref)
    want = pd.read_parquet(path, engine="pyarrow")
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    pd.testing.assert_index_equal(got.columns, want.columns, exact=True)
    pd.testing.assert_index_equal(got.index, want.index, exact=True)
    assert (got.index.start, got.index.stop, got.index.step) == (want.index.start, want.index.stop, want.index.step)
    assert got.attrs == want.attrs
    assert store.save(got).content_hash == ref.content_hash  # loaded and saved again: the same artifact
    assert got._mgr.nblocks == len(set(got.dtypes))  # one block per dtype, as pandas builds a frame
    if len(got):
        got.iloc[0, 0] = -1.0
        got.loc[got.index[1:], got.columns[-1]] = 7
        assert got.iloc[0, 0] == -1.0 and (got[got.columns[-1]].iloc[1:] == 7).all()


def _with_strings(rows: int = N) -> pd.DataFrame:
    frame = _numeric(rows)
    frame.insert(1, "s", pd.array([f"x{i}" for i in range(rows)], dtype="str"))
    frame["s_null"] = pd.array([None if i % 3 else "é✓" for i in range(rows)], dtype="str")
    frame["empty"] = pd.array([""] * rows, dtype="str")
    return frame


STRINGS = {
    "numeric and str columns": _with_strings(),
    "only str columns": _with_strings()[["s", "s_null"]],
    "str columns over several row groups": _with_strings(1_100_000)[["f", "s", "s_null"]],
    "str under a strided RangeIndex": _with_strings().iloc[::3],
    "string[pyarrow] (NA semantics)": _with_strings().astype({"s": "string[pyarrow]", "s_null": "string[pyarrow]"}),
    "datetime64 and timedelta64 with NaT": _with_strings().assign(
        when=pd.date_range("2020-01-01", periods=N, freq="s").where(np.arange(N) % 7 != 0),
        day=pd.date_range("2020-01-01", periods=N, freq="D").astype("datetime64[s]"),
        took=pd.to_timedelta(np.arange(N), unit="ms").where(np.arange(N) % 5 != 0),
    ),
}


@pytest.mark.parametrize("name", sorted(STRINGS))
def test_arrow_string_columns_keep_their_arrow_buffers_and_are_what_read_parquet_reads(
    store: ArtifactStore, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from isthmus.artifacts import materializers
    from isthmus.artifacts.materializers import _read_numeric_frame

    monkeypatch.setattr(materializers, "_NUMERIC_READ_MIN_BYTES", 0)
    ref = store.save(STRINGS[name])
    path = store.path_for(ref.content_hash)
    assert _read_numeric_frame(pd, path) is not None
    got = store.load(ref)
    want = pd.read_parquet(path, engine="pyarrow")
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert list(got.dtypes) == list(want.dtypes) and got.columns.tolist() == STRINGS[name].columns.tolist()
    pd.testing.assert_index_equal(got.index, want.index, exact=True)
    assert (
        store.save(got).content_hash == store.save(want).content_hash
    )  # (seconds come back as ms, as parquet keeps them)
    got.iloc[0, 0] = got.iloc[1, 0]  # writeable, strings included
    got.loc[got.index[2], "s_null" if "s_null" in got else got.columns[-1]] = "changed"
    assert got.iloc[0, 0] == got.iloc[1, 0]


def test_string_columns_written_by_hand_as_string_and_large_string_read_as_read_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from isthmus.artifacts.materializers import _read_numeric_frame

    table = pa.Table.from_pandas(_with_strings(1000), preserve_index=None)
    for kind in (pa.string(), pa.large_string()):
        cast = table.cast(
            pa.schema(
                [
                    f.with_type(kind) if pa.types.is_string(f.type) or pa.types.is_large_string(f.type) else f
                    for f in table.schema
                ],
                metadata=table.schema.metadata,
            )
        )
        path = tmp_path / f"{kind}.parquet"
        pq.write_table(cast, path, row_group_size=97)
        got = _read_numeric_frame(pd, str(path))
        assert got is not None, kind
        pd.testing.assert_frame_equal(got, pd.read_parquet(path, engine="pyarrow"), check_exact=True)


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_other_frames_take_the_usual_read(store: ArtifactStore, name: str) -> None:
    from isthmus.artifacts.materializers import _read_numeric_frame

    ref = store.save(FRAMES[name])
    expected = None if name != "one column" else pd.DataFrame  # "one column" is numeric under a RangeIndex
    got = _read_numeric_frame(pd, store.path_for(ref.content_hash))
    assert (got is None) if expected is None else isinstance(got, pd.DataFrame)


def test_a_nullable_integer_column_takes_the_usual_read(store: ArtifactStore) -> None:
    from isthmus.artifacts.materializers import _read_numeric_frame

    frame = pd.DataFrame({"x": pd.array([1, None, 3], dtype="Int64"), "y": [1.0, 2.0, 3.0]})
    ref = store.save(frame)
    assert _read_numeric_frame(pd, store.path_for(ref.content_hash)) is None
    pd.testing.assert_frame_equal(store.load(ref), frame)


def test_a_file_of_many_row_groups_and_a_range_that_does_not_fit_reads_as_read_parquet(tmp_path: Path) -> None:
    """Files written by hand (not by the store): uneven row groups, a null in an int column's last row
    group (the usual read), and range metadata that does not fit the rows (pyarrow's default index)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from isthmus.artifacts.materializers import _read_numeric_frame

    frame = _numeric(1000)
    table = pa.Table.from_pandas(frame, preserve_index=None)
    uneven = tmp_path / "uneven.parquet"
    pq.write_table(table, uneven, row_group_size=97)
    assert pq.ParquetFile(uneven).num_row_groups > 10
    got = _read_numeric_frame(pd, str(uneven))
    pd.testing.assert_frame_equal(got, pd.read_parquet(uneven, engine="pyarrow"), check_exact=True)

    meta = json.loads(table.schema.metadata[b"pandas"])
    meta["index_columns"] = [{"kind": "range", "name": "r", "start": 7, "stop": 5010, "step": 5}]
    unfit = tmp_path / "unfit.parquet"
    pq.write_table(table.replace_schema_metadata({b"pandas": json.dumps(meta).encode()}), unfit)
    got = _read_numeric_frame(pd, str(unfit))
    want = pd.read_parquet(unfit, engine="pyarrow")
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    pd.testing.assert_index_equal(got.index, want.index, exact=True)

    ints = pa.Table.from_pandas(pd.DataFrame({"f": np.arange(200.0), "i": np.arange(200)}), preserve_index=None)
    ints = ints.set_column(1, "i", pa.array([*range(199), None], type=pa.int64()))
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(ints, nulls, row_group_size=50)
    assert _read_numeric_frame(pd, str(nulls)) is None
    assert pd.read_parquet(nulls, engine="pyarrow")["i"].dtype == "float64"  # what the usual read makes of it


def test_a_small_numeric_frame_takes_the_usual_read(store: ArtifactStore) -> None:
    from isthmus.artifacts.materializers import _NUMERIC_READ_MIN_BYTES, _read_numeric_frame

    path = store.path_for(store.save(_numeric()).content_hash)
    assert _read_numeric_frame(pd, path) is not None
    assert _read_numeric_frame(pd, path, min_bytes=_NUMERIC_READ_MIN_BYTES) is None
