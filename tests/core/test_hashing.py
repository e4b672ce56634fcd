"""Canonical value hashing: equal values hash equal, distinct values never collide, buffers are not copied."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import math
import re
import struct
import tracemalloc
import uuid
from collections import OrderedDict
from pathlib import PurePosixPath
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pydantic
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from isthmus.artifacts.refs import ArtifactRef
from isthmus.errors import IsthmusError
from isthmus.hashing import (
    UnhashableValueError,
    hash_bytes,
    hash_file,
    hash_parts,
    hash_stream,
    hash_value,
)

# conftest's autouse ISTHMUS_HOME fixture is function-scoped; these properties do not touch it.
fast = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None, max_examples=60)

HASH_RE = re.compile(r"^blake3:[0-9a-f]{64}$")

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)


def canon(v: Any) -> Any:
    """The equivalence hash_value promises: floats by their bits, tuple == list, dict order ignored."""
    if v is None or isinstance(v, bool):
        return ("b", v)
    if isinstance(v, int):
        return ("i", v)
    if isinstance(v, float):
        return ("f", struct.pack("<d", v))
    if isinstance(v, str):
        return ("s", v)
    if isinstance(v, (list, tuple)):
        return ("l", tuple(canon(x) for x in v))
    if isinstance(v, dict):
        return ("d", frozenset((canon(k), canon(x)) for k, x in v.items()))
    raise AssertionError(type(v))


def to_tuples(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(to_tuples(x) for x in v)
    if isinstance(v, dict):
        return {k: to_tuples(x) for k, x in v.items()}
    return v


def to_numpy_scalars(v: Any) -> Any:
    if isinstance(v, bool):
        return np.bool_(v)
    if isinstance(v, int) and -(2**63) <= v < 2**63:
        return np.int64(v)
    if isinstance(v, float):
        return np.float64(v)
    if isinstance(v, list):
        return [to_numpy_scalars(x) for x in v]
    if isinstance(v, dict):
        return {k: to_numpy_scalars(x) for k, x in v.items()}
    return v


# -- the format -------------------------------------------------------------------------------------


@fast
@given(json_values)
def test_hash_is_prefixed_blake3_hex_and_deterministic(value: Any) -> None:
    h = hash_value(value)
    assert HASH_RE.match(h)
    assert hash_value(value) == h


def test_other_hash_functions_use_the_same_prefix(tmp_path: Any) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x")
    for h in (hash_bytes(b"x"), hash_file(str(f))[0], hash_parts("a", b"b")):
        assert HASH_RE.match(h)


# -- equal values hash equal ------------------------------------------------------------------------


@fast
@given(st.dictionaries(st.text(max_size=6), json_values, min_size=2, max_size=6), st.randoms(use_true_random=False))
def test_dict_key_order_never_changes_the_hash(d: dict[str, Any], rnd: Any) -> None:
    items = list(d.items())
    rnd.shuffle(items)
    shuffled = dict(items)
    assert hash_value(shuffled) == hash_value(d)
    assert hash_value(OrderedDict(reversed(items))) == hash_value(d)
    assert hash_value({"outer": shuffled, "list": [shuffled]}) == hash_value({"list": [d], "outer": d})


@fast
@given(json_values)
def test_tuple_and_list_hash_equal(value: Any) -> None:
    assert hash_value(to_tuples(value)) == hash_value(value)


@fast
@given(json_values)
def test_numpy_scalars_hash_like_python_scalars(value: Any) -> None:
    assert hash_value(to_numpy_scalars(value)) == hash_value(value)


@fast
@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_numpy_int_scalars(x: int) -> None:
    assert hash_value(np.int64(x)) == hash_value(x)
    if -(2**31) <= x < 2**31:
        assert hash_value(np.int32(x)) == hash_value(x)
    if 0 <= x < 2**64:
        assert hash_value(np.uint64(x)) == hash_value(x)


@fast
@given(st.floats(allow_nan=True))
def test_numpy_float64_equals_python_float(x: float) -> None:
    assert hash_value(np.float64(x)) == hash_value(x)


def test_numpy_bool_scalars() -> None:
    assert hash_value(np.bool_(True)) == hash_value(True)
    assert hash_value(np.bool_(False)) == hash_value(False)
    assert hash_value(np.bool_(True)) != hash_value(np.int64(1))
    assert hash_value(np.int64(3)) == hash_value(3)


def test_numpy_string_scalars() -> None:
    assert hash_value(np.str_("abc")) == hash_value("abc")
    assert hash_value(np.bytes_(b"abc")) == hash_value(b"abc")


def test_negative_zero_and_nan_payloads_are_distinct() -> None:
    # -0.0 == 0.0, yet 1/x, copysign and str() tell them apart: a step may return different results.
    assert hash_value(-0.0) != hash_value(0.0)
    assert hash_value(np.float64(-0.0)) == hash_value(-0.0)
    assert hash_value(np.float64(0.0)) == hash_value(0.0)
    nan = hash_value(float("nan"))
    assert nan == hash_value(float("nan")) == hash_value(np.float64("nan"))  # the same bits: stable
    assert nan != hash_value(-float("nan"))  # sign bit
    payload = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000001))[0]
    assert math.isnan(payload) and hash_value(payload) != nan
    assert nan != hash_value(0.0)
    assert hash_value(math.inf) != hash_value(-math.inf)
    assert hash_value([float("nan")]) == hash_value((float("nan"),))
    # the same holds inside arrays and tables
    assert hash_value(np.array([0.0])) != hash_value(np.array([-0.0]))
    assert hash_value(pd.DataFrame({"v": [0.0]})) != hash_value(pd.DataFrame({"v": [-0.0]}))
    assert hash_value(pd.Series([float("nan")])) != hash_value(pd.Series([payload]))
    assert hash_value(pd.Series([1.0], index=[-0.0])) != hash_value(pd.Series([1.0], index=[0.0]))


def test_floats_are_hashed_by_exact_repr() -> None:
    assert 0.1 + 0.2 != 0.3
    assert hash_value(0.1 + 0.2) != hash_value(0.3)
    assert hash_value(1e16) != hash_value(1e16 + 2)
    assert hash_value(float(repr(0.1 + 0.2))) == hash_value(0.1 + 0.2)


@fast
@given(st.floats(allow_nan=False), st.floats(allow_nan=False))
def test_distinct_floats_hash_distinct(a: float, b: float) -> None:
    assert (hash_value(a) == hash_value(b)) == (struct.pack("<d", a) == struct.pack("<d", b))


def test_int_float_bool_str_bytes_none_are_distinct() -> None:
    values = [1, 1.0, True, "1", b"1", [1], {"1": 1}, None, 0, 0.0, False, "", b"", [], {}, "None", "True", 1 + 0j]
    hashes = [hash_value(v) for v in values]
    assert len(set(hashes)) == len(values)


@fast
@given(st.lists(json_values, min_size=2, max_size=8))
def test_no_collisions_across_distinct_values(values: list[Any]) -> None:
    by_canon: dict[Any, str] = {}
    for v in values:
        by_canon.setdefault(canon(v), hash_value(v))
    for v in values:
        assert hash_value(v) == by_canon[canon(v)]
    assert len(set(by_canon.values())) == len(by_canon)


@fast
@given(json_values, json_values)
def test_distinct_pairs_differ(a: Any, b: Any) -> None:
    assume(canon(a) != canon(b))
    assert hash_value(a) != hash_value(b)
    assert hash_value([a, b]) != hash_value([b, a])
    assert hash_value({"k": a}) != hash_value({"k": b})


def test_nested_structure_boundaries_matter() -> None:
    assert hash_value([[1, 2], [3]]) != hash_value([[1], [2, 3]])
    assert hash_value([[1, 2, 3]]) != hash_value([1, 2, 3])
    assert hash_value(["ab", "c"]) != hash_value(["a", "bc"])
    assert hash_value({"a": {"b": 1}}) != hash_value({"a": {"b": {}}})
    assert hash_value({"a": 1, "b": 2}) != hash_value({"a": 2, "b": 1})
    assert hash_value({"a": [1]}) != hash_value([{"a": 1}])
    assert hash_value({1: "a"}) != hash_value({"1": "a"})
    assert hash_value({True: "a"}) != hash_value({1: "a"})


def test_sets_ignore_order_and_differ_from_lists() -> None:
    assert hash_value({3, 1, 2}) == hash_value({1, 2, 3}) == hash_value(frozenset([2, 3, 1]))
    assert hash_value({1, 2, 3}) != hash_value([1, 2, 3])
    assert hash_value({1, 2}) != hash_value({1, 2, 3})


# -- other value types --------------------------------------------------------------------------------


class Color(enum.Enum):
    RED = 1
    BLUE = 2


class Mode(str, enum.Enum):
    A = "a"


class Point(NamedTuple):
    x: int
    y: int


@dataclasses.dataclass
class Config:
    lr: float
    layers: list[int]


class Model(pydantic.BaseModel):
    name: str
    sizes: tuple[int, ...] = ()


def test_enums_namedtuples_dataclasses_and_pydantic() -> None:
    assert hash_value(Color.RED) == hash_value(Color.RED)
    assert hash_value(Color.RED) != hash_value(Color.BLUE)
    assert hash_value(Color.RED) != hash_value(1)
    assert hash_value(Mode.A) != hash_value("a")
    assert hash_value(Point(1, 2)) == hash_value(Point(x=1, y=2))
    assert hash_value(Point(1, 2)) != hash_value((1, 2))
    assert hash_value(Point(1, 2)) != hash_value(Point(2, 1))
    assert hash_value(Config(0.1, [1, 2])) == hash_value(Config(lr=0.1, layers=[1, 2]))
    assert hash_value(Config(0.1, [1, 2])) != hash_value(Config(0.1, [2, 1]))
    assert hash_value(Config(0.1, [1])) != hash_value({"lr": 0.1, "layers": [1]})
    assert hash_value(Model(name="a", sizes=(1,))) == hash_value(Model(name="a", sizes=[1]))
    assert hash_value(Model(name="a")) != hash_value(Model(name="b"))


def test_dates_decimals_uuids_paths() -> None:
    d = dt.datetime(2024, 1, 2, 3, 4, 5, 6)
    assert hash_value(d) == hash_value(dt.datetime(2024, 1, 2, 3, 4, 5, 6))
    assert hash_value(d) != hash_value(d.replace(microsecond=7))
    assert hash_value(d) != hash_value(d.replace(tzinfo=dt.timezone.utc))
    assert hash_value(dt.date(2024, 1, 2)) != hash_value(dt.datetime(2024, 1, 2))
    assert hash_value(dt.date(2024, 1, 2)) != hash_value("2024-01-02")
    assert hash_value(dt.time(1, 2)) != hash_value(dt.time(1, 3))
    big = dt.timedelta(days=999_999_999)
    assert hash_value(big) != hash_value(big + dt.timedelta(microseconds=1))  # exact, not a float
    assert hash_value(dt.timedelta(seconds=1)) == hash_value(dt.timedelta(milliseconds=1000))
    assert hash_value(decimal.Decimal("1.5")) != hash_value(1.5)
    u = uuid.UUID(int=5)
    assert hash_value(u) == hash_value(uuid.UUID(int=5)) != hash_value(str(u))
    assert hash_value(PurePosixPath("/a/b")) != hash_value("/a/b")
    assert hash_value(np.datetime64("2024-01-02")) != hash_value(np.datetime64("2024-01-03"))
    assert hash_value(np.timedelta64(3, "s")) != hash_value(np.timedelta64(3, "ms"))
    assert hash_value(np.timedelta64(3, "s")) != hash_value(3)
    assert hash_value(pd.Timestamp("2024-01-02")) == hash_value(pd.Timestamp("2024-01-02"))


def test_complex_numbers() -> None:
    assert hash_value(1 + 2j) == hash_value(np.complex128(1 + 2j))
    assert hash_value(1 + 2j) != hash_value(2 + 1j)
    assert hash_value(complex(0.0, -0.0)) != hash_value(0j)
    assert hash_value(complex(0.0, 0.0)) == hash_value(0j)


def test_artifact_refs_hash_by_content_hash_only() -> None:
    a = ArtifactRef("file:///a", "blake3:" + "1" * 64, 3, "json@1", "builtins:dict")
    b = ArtifactRef("s3://b/x", "blake3:" + "1" * 64, 3, "json@1", "builtins:dict")
    c = ArtifactRef("file:///a", "blake3:" + "2" * 64, 3, "json@1", "builtins:dict")
    assert hash_value(a) == hash_value(b) != hash_value(c)


# -- buffers -------------------------------------------------------------------------------------------


def test_bytes_bytearray_memoryview_hash_equal() -> None:
    data = b"hello world"
    assert hash_value(data) == hash_value(bytearray(data)) == hash_value(memoryview(data))
    assert hash_value(data) != hash_value(data + b"\0")
    assert hash_value(b"") != hash_value("")
    strided = memoryview(np.arange(10, dtype=np.uint8))[::2]  # non-contiguous view
    assert hash_value(strided) == hash_value(bytes(strided))
    assert hash_bytes(strided) == hash_bytes(bytes(strided))


@fast
@given(st.binary(max_size=256))
def test_hash_bytes_of_any_buffer_type(data: bytes) -> None:
    assert hash_bytes(data) == hash_bytes(bytearray(data)) == hash_bytes(memoryview(data))


def test_numpy_array_hash_depends_on_dtype_shape_and_content() -> None:
    a = np.arange(6, dtype=np.int64)
    h = hash_value(a)
    assert h == hash_value(np.arange(6, dtype=np.int64))
    assert h != hash_value(a.astype(np.int32))
    assert h != hash_value(a.astype(np.float64))
    assert h != hash_value(a.view(np.float64))  # same bytes, other dtype
    assert h != hash_value(a.reshape(2, 3))
    assert hash_value(a.reshape(2, 3)) != hash_value(a.reshape(3, 2))
    b = a.copy()
    b[5] = 7
    assert h != hash_value(b)
    assert h != hash_value(a.tolist())
    assert hash_value(np.zeros(0)) != hash_value(np.zeros((0, 3)))


def test_structured_dtypes_keep_field_names_and_types() -> None:
    a = np.zeros(2, dtype=[("a", "<i8")])
    assert hash_value(a) == hash_value(np.zeros(2, dtype=[("a", "<i8")]))
    assert hash_value(a) != hash_value(np.zeros(2, dtype=[("b", "<i8")]))
    assert hash_value(a) != hash_value(np.zeros(2, dtype=[("a", "<f8")]))


def test_byte_order_does_not_change_the_hash() -> None:
    a = np.arange(5, dtype="<i4")
    assert hash_value(a.astype(">i4")) == hash_value(a)
    assert hash_value(a.astype(">i4")) != hash_value(a.astype("<i8"))


@fast
@given(hnp.arrays(dtype=hnp.scalar_dtypes(), shape=hnp.array_shapes(min_dims=2, max_dims=3, max_side=5)))
def test_non_contiguous_arrays_equal_their_contiguous_copy(arr: np.ndarray) -> None:
    for view in (arr.T, arr[::-1], arr[:, ::2], np.asfortranarray(arr)):
        assert hash_value(view) == hash_value(np.ascontiguousarray(view))


@fast
@given(hnp.arrays(dtype=st.sampled_from([np.int64, np.float64, np.uint8]), shape=hnp.array_shapes(max_dims=2)))
def test_array_hash_is_content_sensitive(arr: np.ndarray) -> None:
    flat = arr.reshape(-1).copy()
    changed = flat.copy()
    changed[0] = 1 if flat[0] != 1 else 2
    assume(changed.tobytes() != flat.tobytes())
    assert hash_value(changed.reshape(arr.shape)) != hash_value(arr)
    assert hash_value(arr) == hash_value(arr.copy())


def test_object_arrays_hash_their_values() -> None:
    a = np.array([1, "1", None], dtype=object)
    assert hash_value(a) == hash_value(np.array([1, "1", None], dtype=object))
    assert hash_value(a) != hash_value(np.array(["1", 1, None], dtype=object))


def test_hashing_a_large_array_does_not_copy_it() -> None:
    size = 64 << 20
    arr = np.ones(size // 8, dtype=np.float64)  # C-contiguous, 64 MB
    tracemalloc.start()
    try:
        h = hash_value(arr)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert HASH_RE.match(h)
    assert peak < size // 16, f"hashing allocated {peak} bytes for a {size}-byte array"

    # Control: tracemalloc does see numpy copies (a transposed array must be made contiguous).
    small = np.ones((1024, 1024), dtype=np.float64)  # 8 MB
    tracemalloc.start()
    try:
        hash_value(small.T)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak >= small.nbytes


def test_large_buffer_hash_is_content_sensitive() -> None:
    a = np.zeros(8 << 20, dtype=np.uint8)  # above the threaded-hashing threshold
    b = a.copy()
    b[-1] = 1
    assert hash_value(a) != hash_value(b)
    assert hash_value(a) == hash_value(a.copy())
    assert hash_value(a.tobytes()) != hash_value(b.tobytes())


# -- Arrow and pandas ----------------------------------------------------------------------------------


def test_arrow_table_array_chunked_array_are_deterministic_and_content_sensitive() -> None:
    def table(values: list[int]) -> pa.Table:
        return pa.table({"a": values, "s": [str(v) for v in values]})

    assert hash_value(table([1, 2, 3])) == hash_value(table([1, 2, 3]))
    assert hash_value(table([1, 2, 3])) != hash_value(table([1, 2, 4]))
    assert hash_value(table([1, 2, 3])) != hash_value(table([1, 2, 3]).rename_columns(["a", "t"]))
    assert hash_value(pa.array([1, 2])) == hash_value(pa.array([1, 2]))
    assert hash_value(pa.array([1, 2])) != hash_value(pa.array([1, 3]))
    assert hash_value(pa.array([1, 2])) != hash_value(pa.array([1, 2], type=pa.int32()))
    assert hash_value(pa.array([1, None])) != hash_value(pa.array([1, 0]))
    assert hash_value(pa.array(["ab", "c"])) != hash_value(pa.array(["a", "bc"]))
    ca = pa.chunked_array([[1, 2], [3]])
    assert hash_value(ca) == hash_value(pa.chunked_array([[1, 2], [3]]))
    assert hash_value(ca) != hash_value(pa.chunked_array([[1, 2], [4]]))
    batch = pa.record_batch({"a": [1, 2]})
    assert hash_value(batch) == hash_value(pa.table({"a": [1, 2]}))


def test_arrow_dictionary_arrays_include_their_dictionary() -> None:
    d1 = pa.array(["x", "y", "x"]).dictionary_encode()
    d2 = pa.DictionaryArray.from_arrays(d1.indices, pa.array(["p", "q"]))
    assert hash_value(d1) == hash_value(pa.array(["x", "y", "x"]).dictionary_encode())
    assert hash_value(d1) != hash_value(d2)
    assert hash_value(pa.table({"c": d1})) != hash_value(pa.table({"c": d2}))


def test_arrow_nested_arrays_respect_child_offsets() -> None:
    child = pa.array([1, 2, 3, 4])
    s1 = pa.StructArray.from_arrays([child.slice(1, 3)], names=["f"])
    s2 = pa.StructArray.from_arrays([child.slice(0, 3)], names=["f"])
    assert s1.to_pylist() != s2.to_pylist()
    assert hash_value(s1) != hash_value(s2)
    assert hash_value(s1) == hash_value(pa.array([{"f": 2}, {"f": 3}, {"f": 4}]))
    lists = pa.array([[1, 2], [3], [4, 5, 6]])
    assert hash_value(lists) == hash_value(pa.array([[1, 2], [3], [4, 5, 6]]))
    assert hash_value(lists) != hash_value(pa.array([[1], [2, 3], [4, 5, 6]]))
    assert hash_value(lists.slice(1)) != hash_value(lists.slice(0, 2))


@fast
@given(st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), min_size=1, max_size=20), st.data())
def test_arrow_int_arrays_distinct_content_distinct_hash(values: list[int | None], data: Any) -> None:
    other = data.draw(st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), min_size=1, max_size=20))
    same = values == other
    assert (hash_value(pa.array(values, type=pa.int64())) == hash_value(pa.array(other, type=pa.int64()))) == same


def frame(**overrides: Any) -> pd.DataFrame:
    data: dict[str, Any] = {"a": [1, 2, 3], "b": [0.5, 1.5, 2.5], "c": ["x", "y", "z"]}
    data.update(overrides)
    return pd.DataFrame(data)


def test_pandas_dataframe_is_deterministic_and_content_sensitive() -> None:
    h = hash_value(frame())
    assert h == hash_value(frame())
    assert h != hash_value(frame(a=[1, 2, 4]))
    assert h != hash_value(frame(b=[0.5, 1.5, 2.6]))
    assert h != hash_value(frame(c=["x", "y", "q"]))
    assert h != hash_value(frame(a=[1.0, 2.0, 3.0]))  # dtype
    assert h != hash_value(frame().rename(columns={"a": "A"}))
    assert h != hash_value(frame()[["b", "a", "c"]])  # column order
    assert h != hash_value(frame().set_axis([10, 11, 12]))  # index
    assert h != hash_value(frame().rename_axis("idx"))  # index name
    assert h != hash_value(frame().iloc[::-1])
    assert hash_value(pd.DataFrame({1: [1]})) != hash_value(pd.DataFrame({"1": [1]}))


def test_pandas_object_columns_keep_value_types() -> None:
    mixed = pd.DataFrame({"c": pd.Series([1, "a"], dtype=object)})
    strings = pd.DataFrame({"c": pd.Series(["1", "a"], dtype=object)})
    assert hash_value(mixed) != hash_value(strings)
    assert hash_value(pd.Series([1, "a"], dtype=object)) != hash_value(pd.Series(["1", "a"], dtype=object))
    assert hash_value(mixed) == hash_value(pd.DataFrame({"c": pd.Series([1, "a"], dtype=object)}))


def test_pandas_series() -> None:
    s = pd.Series([1.0, 2.0], name="x")
    assert hash_value(s) == hash_value(pd.Series([1.0, 2.0], name="x"))
    assert hash_value(s) != hash_value(pd.Series([1.0, 2.5], name="x"))
    assert hash_value(s) != hash_value(pd.Series([1.0, 2.0], name="y"))
    assert hash_value(pd.Series([1], name=None)) != hash_value(pd.Series([1], name="None"))
    assert hash_value(s) != hash_value(s.to_frame())


@fast
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=10), st.data())
def test_pandas_float_columns_distinct_content_distinct_hash(values: list[float], data: Any) -> None:
    other = data.draw(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=10))
    same = canon(values) == canon(other)
    assert (hash_value(pd.DataFrame({"v": values})) == hash_value(pd.DataFrame({"v": other}))) == same


# -- files ---------------------------------------------------------------------------------------------


@fast
@given(st.binary(max_size=4096))
def test_hash_file_equals_hash_bytes_of_its_content(tmp_path_factory: Any, data: bytes) -> None:
    path = tmp_path_factory.mktemp("h") / "f.bin"
    path.write_bytes(data)
    assert hash_file(str(path)) == (hash_bytes(data), len(data))
    with open(path, "rb") as fh:
        assert hash_stream(fh) == (hash_bytes(data), len(data))


def test_hash_file_large_and_empty(tmp_path: Any) -> None:
    data = np.random.default_rng(0).integers(0, 256, size=(9 << 20) + 7, dtype=np.uint8).tobytes()
    big = tmp_path / "big"
    big.write_bytes(data)
    assert hash_file(str(big)) == (hash_bytes(data), len(data))
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert hash_file(str(empty)) == (hash_bytes(b""), 0)


def test_hash_parts_length_prefixes_each_part() -> None:
    assert hash_parts("ab", "c") != hash_parts("a", "bc")
    assert hash_parts("a", "") != hash_parts("a")
    assert hash_parts("x") == hash_parts(b"x")


def test_one_length_prefixed_helper_for_plain_and_keyed_hashes() -> None:
    from isthmus.hashing import PREFIX, keyed_hash, parts_digest

    assert hash_parts("a", b"b") == PREFIX + parts_digest("a", b"b").hex()
    assert keyed_hash(b"k" * 32, "a") == PREFIX + parts_digest("a", key=b"k" * 32).hex()
    assert keyed_hash(b"k" * 32, "a") != hash_parts("a") != keyed_hash(b"j" * 32, "a")
    assert parts_digest("\udcff") == parts_digest("\udcff".encode("utf-8", "surrogatepass"))  # any str


# -- errors --------------------------------------------------------------------------------------------


class Opaque:
    pass


def test_unhashable_value_error_names_the_type_and_the_fix() -> None:
    with pytest.raises(UnhashableValueError) as info:
        hash_value({"ok": 1, "bad": [Opaque()]})
    message = str(info.value)
    assert f"{__name__}.Opaque" in message
    assert "ignore_inputs" in message
    assert "dataclass" in message
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, IsthmusError)  # one exception tree
    with pytest.raises(UnhashableValueError, match="function"):
        hash_value(lambda: 1)


def test_pandas_range_index_equals_an_equal_integer_index() -> None:
    df = pd.DataFrame({"a": [5, 6, 7]})
    filtered = df[df["a"] > 0]  # same values and index, but not a RangeIndex any more
    assert hash_value(df) == hash_value(pd.DataFrame({"a": [5, 6, 7]}, index=pd.Index([0, 1, 2])))
    assert hash_value(filtered.reset_index(drop=True)) == hash_value(df)
