"""Materializers turn step outputs into files and back.

Built in: JSON-native values, str, bytes, numpy arrays (.npy), pandas and pyarrow tables (parquet),
pydantic models and dataclasses (JSON), sklearn-style estimators (joblib), ``pathlib.Path`` and file
objects by their contents (:mod:`isthmus.artifacts.files`), and cloudpickle as a last resort (with a
one-time warning per type). Register your own with :func:`register_materializer`.

A materializer whose ``load`` can execute code carried in the bytes (pickle: joblib, cloudpickle, and
any user materializer that does not say otherwise) has ``needs_verified_bytes = True``. The store then
loads it through :meth:`Materializer.load_bytes` with exactly the bytes it read and hashed (whatever
``ISTHMUS_VERIFY`` says), and only bytes the store recorded as written by that very materializer: a ref
cannot relabel text written by ``str`` as a pickle.

Typed JSON loaders (pydantic, dataclasses) build the class named by the ref's ``python_type`` only through
:func:`isthmus.artifacts.types.resolve_type`, which never imports a module outside the user's project.

Pickles name classes and functions instead of holding their code, so the pickle materializers list the
project code an artifact refers to in its metadata (``code``): a step that receives the artifact runs that
code, and its cache key includes it (see ``isthmus.fingerprint.arguments``).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import io
import json
import math
import os
import re
import shutil
import tempfile
import types
import warnings
from collections.abc import Callable
from typing import Any

from isthmus.artifacts.types import resolve_type
from isthmus.errors import MaterializationError
from isthmus.fingerprint.arguments import INCOMPLETE, NotListed, code_metadata, code_of_value, project_code

_MAX_COLUMNS = 500  # columns described in a table's metadata (refs stay small; the count is kept)


def type_path(tp: type) -> str:
    return f"{tp.__module__}:{tp.__qualname__}"


def _resolved(python_type: str, what: str, accept: Callable[[type], bool]) -> type[Any]:
    cls = resolve_type(python_type)
    if cls is None or not accept(cls):
        module = python_type.partition(":")[0]
        raise MaterializationError(
            f"{what} artifact: python_type {python_type!r:.200} is not {_ARTICLE[what]} class of an imported module "
            f"or of this project; import {module!r:.100} before loading it, or pass the ref exactly as isthmus wrote it"
        )
    return cls


_ARTICLE = {"pydantic-json": "a pydantic model", "dataclass-json": "a dataclass"}


def _columns(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    """A table's column description for its ref: the first columns (names cut to 200 characters)."""
    shown = [{"name": str(name)[:200], "type": str(kind)[:100]} for name, kind in pairs[:_MAX_COLUMNS]]
    out: dict[str, Any] = {"columns": shown}
    if len(pairs) > _MAX_COLUMNS:
        out["columns_total"] = len(pairs)
    return out


class Materializer:
    """Base class. Subclasses set ``name``/``version`` and implement ``can_handle``, ``save``, ``load``.

    ``save`` writes exactly one local file at ``path`` and may return metadata (shape, columns, ...).
    Bump ``version`` whenever the on-disk format changes: it is part of downstream cache keys.
    Set ``needs_verified_bytes = False`` only if ``load`` can never execute code from the file (no pickle).
    """

    name: str = ""
    version: str = "1"
    needs_verified_bytes: bool = True

    def can_handle(self, obj: Any) -> bool:
        raise NotImplementedError

    def save(self, obj: Any, path: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def load(self, path: str, python_type: str) -> Any:
        raise NotImplementedError

    #: True when :meth:`save_to` writes the file in order through a file object, so the store hashes it
    #: as it is written instead of reading it back.
    writes_stream: bool = False
    #: True when :meth:`load_from` builds the value from the file read in order, so a load checked by
    #: hash reads the file once (the bytes it builds from are the bytes hashed).
    reads_stream: bool = False

    def save_to(self, obj: Any, out: io.RawIOBase) -> dict[str, Any] | None:
        """Write the file :meth:`save` writes to ``out``, in order (``out`` cannot seek); only called
        when ``writes_stream`` is set. Returns the same metadata as :meth:`save`."""
        raise NotImplementedError

    def load_from(self, source: io.RawIOBase, python_type: str) -> Any:
        """Build the value from ``source``, the file read from its start (it cannot seek; a buffer passed
        to its ``readinto`` must stay unchanged until the load returns); only called when
        ``reads_stream`` is set. What it leaves unread is still read and hashed by the store."""
        raise NotImplementedError

    def contents_secret(self, obj: Any, secrets: frozenset[str]) -> str | None:
        """Where the contents :meth:`save` would store hold one of ``secrets`` although the value itself does
        not show it (a file's bytes behind a path), or None. The runner refuses such an output."""
        return None

    def load_bytes(self, data: Any, python_type: str) -> Any:
        """Load from ``data``, exactly the bytes the store verified (used when ``needs_verified_bytes``): a
        bytes-like object (``bytes``, or a read-only ``mmap`` that is also a file object), valid only during
        the call. The default writes them to a private temporary file (a new 0700 directory) and calls
        :meth:`load`; override it to load from memory."""
        directory = tempfile.mkdtemp(prefix="isthmus-verified-")
        try:
            path = os.path.join(directory, "artifact")
            with open(path, "xb") as fh:
                fh.write(data)
            return self.load(path, python_type)
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"


def _json_exact(obj: Any) -> bool:
    """Whether ``obj`` survives a JSON round trip unchanged (types included)."""
    if obj is None or isinstance(obj, (bool, str)):
        return True
    if isinstance(obj, int):
        return type(obj) is int
    if isinstance(obj, float):
        return type(obj) is float and math.isfinite(obj)
    if type(obj) is list:
        return all(_json_exact(x) for x in obj)
    if type(obj) is dict:
        return all(type(k) is str and _json_exact(v) for k, v in obj.items())
    return False


class JsonMaterializer(Materializer):
    needs_verified_bytes = False
    writes_stream = True
    name = "json"

    def can_handle(self, obj: Any) -> bool:
        return not isinstance(obj, str) and _json_exact(obj)

    def save(self, obj: Any, path: str) -> dict[str, Any] | None:
        with open(path, "wb") as fh:
            fh.write(self.dumps(obj))
        return None

    def dumps(self, obj: Any) -> bytes:
        """The file's bytes (the store writes small values from memory, hashed before they are written)."""
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def save_to(self, obj: Any, out: io.RawIOBase) -> dict[str, Any] | None:
        out.write(self.dumps(obj))
        return None

    def load(self, path: str, python_type: str) -> Any:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)


class StrMaterializer(Materializer):
    needs_verified_bytes = False
    writes_stream = True
    name = "str"

    def can_handle(self, obj: Any) -> bool:
        return type(obj) is str

    def save(self, obj: Any, path: str) -> dict[str, Any] | None:
        with open(path, "wb") as fh:
            fh.write(self.dumps(obj))
        return None

    def dumps(self, obj: Any) -> bytes:
        """The file's bytes (see :meth:`JsonMaterializer.dumps`)."""
        return obj.encode("utf-8")

    def save_to(self, obj: Any, out: io.RawIOBase) -> dict[str, Any] | None:
        out.write(self.dumps(obj))
        return None

    def load(self, path: str, python_type: str) -> Any:
        with open(path, encoding="utf-8", newline="") as fh:
            return fh.read()


class BytesMaterializer(Materializer):
    needs_verified_bytes = False
    name = "bytes"
    writes_stream = True

    def can_handle(self, obj: Any) -> bool:
        return type(obj) in (bytes, bytearray)

    def save(self, obj: Any, path: str) -> dict[str, Any] | None:
        with open(path, "wb") as fh:
            fh.write(obj)
        return None

    def dumps(self, obj: Any) -> bytes:
        """The file's bytes (see :meth:`JsonMaterializer.dumps`)."""
        return bytes(obj)

    def save_to(self, obj: Any, out: io.RawIOBase) -> dict[str, Any] | None:
        out.write(obj)
        return None

    def load(self, path: str, python_type: str) -> Any:
        with open(path, "rb") as fh:
            data = fh.read()
        return bytearray(data) if python_type.endswith(":bytearray") else data


class NumpyMaterializer(Materializer):
    """numpy arrays and scalars (``np.float64`` from a metric, say) as ``.npy``, never pickled."""

    name = "numpy"
    needs_verified_bytes = False  # np.load(allow_pickle=False)
    writes_stream = True
    reads_stream = True

    def can_handle(self, obj: Any) -> bool:
        np = _maybe("numpy")
        if np is None:
            return False
        if type(obj) is np.ndarray:
            return not obj.dtype.hasobject
        return isinstance(obj, np.generic) and not obj.dtype.hasobject

    def save(self, obj: Any, path: str) -> dict[str, Any] | None:
        import numpy as np

        arr = np.asarray(obj)
        with open(path, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
        return {"shape": list(arr.shape), "dtype": str(arr.dtype)}

    def save_to(self, obj: Any, out: io.RawIOBase) -> dict[str, Any] | None:
        import numpy as np

        arr = np.asarray(obj)
        data = _npy_data(arr)
        header = io.BytesIO()
        try:
            np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(arr))
        except ValueError:  # a header too long for format 1.0: numpy's writer picks the version
            data = None
        if data is None:  # not contiguous (or an unusual header): numpy's own writer, in pieces
            np.lib.format.write_array(out, arr, allow_pickle=False)
        else:  # the same bytes as np.save, written from the array's memory without a copy
            out.write(header.getbuffer())
            for start in range(0, data.nbytes, _PIECE):
                out.write(data[start : start + _PIECE])
        return {"shape": list(arr.shape), "dtype": str(arr.dtype)}

    def load(self, path: str, python_type: str) -> Any:
        import numpy as np

        return _scalar_if(np.load(path, allow_pickle=False), python_type)

    def load_from(self, source: io.RawIOBase, python_type: str) -> Any:
        import numpy as np

        fmt = np.lib.format
        head = source.read(8)
        if len(head) < 8 or head[:6] != fmt.MAGIC_PREFIX or head[6:8] not in (b"\x01\x00", b"\x02\x00"):
            rest = source.read()  # format 3.0 (or not .npy at all): numpy's reader, from memory
            return _scalar_if(np.load(io.BytesIO(head + rest), allow_pickle=False), python_type)
        width = 2 if head[6] == 1 else 4
        length = source.read(width)
        header = source.read(int.from_bytes(length, "little"))
        parse = fmt.read_array_header_1_0 if head[6] == 1 else fmt.read_array_header_2_0
        shape, fortran_order, dtype = parse(io.BytesIO(length + header))
        if dtype.hasobject:
            raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
        count = 1
        for dim in shape:
            count *= dim
        want = count * dtype.itemsize
        if want > getattr(source, "expected_size", want):  # a header claiming more than the file holds
            raise ValueError(f"the array header claims {want} bytes of data, more than the file holds")
        arr = np.empty(count, dtype=dtype)
        if want and source.readinto(arr.view(np.uint8).data) != want:
            raise ValueError(f"EOF: reading array data, expected {want} bytes")
        if fortran_order:
            arr = arr.reshape(shape[::-1]).transpose()
        else:
            arr = arr.reshape(shape)
        return _scalar_if(arr, python_type)


_PIECE = 32 << 20  # bytes of an array handed to the file at a time


def _npy_data(arr: Any) -> Any:
    """The bytes of ``arr`` in the order ``np.save`` writes them (a flat uint8 view, no copy), or None when
    its memory is not in one piece."""
    import numpy as np

    if arr.flags.c_contiguous:
        flat = arr.reshape(-1)
    elif arr.flags.f_contiguous:
        flat = arr.T.reshape(-1)
    else:
        return None
    try:
        return memoryview(flat.view(np.uint8))
    except (TypeError, ValueError):
        return None


def _scalar_if(arr: Any, python_type: str) -> Any:
    if python_type != "numpy:ndarray" and arr.ndim == 0:
        return arr[()]  # the numpy scalar it was
    return arr


_SERIES_COLUMN = "__isthmus_series__"  # the parquet column of an unnamed Series


class PandasMaterializer(Materializer):
    needs_verified_bytes = False
    name = "pandas-parquet"
    writes_stream = True

    def can_handle(self, obj: Any) -> bool:
        pd = _maybe("pandas")
        return pd is not None and _maybe("pyarrow") is not None and type(obj) in (pd.DataFrame, pd.Series)

    def save(self, obj: Any, path: str) -> dict[str, Any] | None:
        import pandas as pd

        if isinstance(obj, pd.Series):
            frame = obj.to_frame(name=_SERIES_COLUMN if obj.name is None else obj.name)
        else:
            frame = obj
        if not all(isinstance(c, str) for c in frame.columns):
            raise TypeError("parquet needs string column names")
        # index=None: a RangeIndex is kept as metadata (start, stop, step), not written as a column of
        # n integers; any other index is a column, as before. Files written with index=True read the same.
        frame.to_parquet(path, engine="pyarrow", index=None)
        return {**_columns(list(frame.dtypes.items())), "rows": len(frame), "series": isinstance(obj, pd.Series)}

    def save_to(self, obj: Any, out: io.RawIOBase) -> dict[str, Any] | None:
        return self.save(obj, out)  # type: ignore[arg-type]  # to_parquet writes a file object in order

    def load(self, path: str, python_type: str) -> Any:
        import pandas as pd

        frame = _read_parquet(pd, path)
        if python_type.endswith(":Series"):
            series = frame.iloc[:, 0]
            return series.rename(None) if series.name == _SERIES_COLUMN else series
        return frame


def _read_parquet(pd: Any, path: str) -> Any:
    """``pd.read_parquet(path)``: the same frame (tested), with less memory on the way.

    A frame of 64 MiB or more under a RangeIndex whose columns are numeric, boolean, naive datetime or
    timedelta (a feature matrix, the usual large frame) is read a row group (and a batch of columns) at a
    time straight into the frame's final, writeable blocks (:func:`_read_numeric_frame`): at the peak the
    process holds the frame and about 16 MiB of Arrow buffers. Arrow-backed string columns (pandas 3's
    ``str``) there are read whole and keep the Arrow memory they were read into. Any other frame is read by
    ``pd.read_parquet``, a column chunk at a time (the file is local: ``pre_buffer`` would hold all of its
    bytes in memory first); the Arrow table and the frame then coexist (about twice the data at the peak).

    Either way, Arrow's memory pool then gives back to the system what the read left unused: the pool
    (mimalloc or jemalloc) keeps freed memory for reuse, and the frame's columns are numpy memory.
    (Converting with ``split_blocks``/``self_destruct`` frees the table during the conversion but hands out
    read-only columns that pandas refuses to write to, and copying them back costs the time and memory it
    saved.)"""
    import pyarrow as pa

    frame = _read_numeric_frame(pd, path, min_bytes=_NUMERIC_READ_MIN_BYTES)
    if frame is None:
        frame = pd.read_parquet(path, engine="pyarrow", pre_buffer=False)
    pa.default_memory_pool().release_unused()
    return frame


def _read_numeric_frame(pd: Any, path: str, min_bytes: int = 0) -> Any:
    """The frame of a parquet file pandas wrote under a RangeIndex from numeric, boolean, datetime64 and
    timedelta64 numpy columns and Arrow-backed string columns (pandas 3's default ``str``); None for any
    other file, one whose data is smaller than ``min_bytes``, or a pandas without
    ``pandas.api.internals.create_dataframe_from_blocks``: the caller reads those the usual way. Numpy
    columns are read a row group and a batch of columns at a time into preallocated blocks; the string
    columns are read whole and converted as ``read_parquet`` converts them (their arrays keep the Arrow
    buffers: nothing is copied into a second frame)."""
    import json

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:  # (by name: pandas-stubs does not describe these modules)
        create_dataframe_from_blocks = importlib.import_module("pandas.api.internals").create_dataframe_from_blocks
    except (ImportError, AttributeError):  # pandas before 3.0
        return None
    parquet = pq.ParquetFile(path, pre_buffer=False)
    data = parquet.metadata
    if sum(data.row_group(g).total_byte_size for g in range(data.num_row_groups)) < min_bytes:
        return None
    schema = parquet.schema_arrow
    meta = schema.pandas_metadata
    if not meta:
        return None
    ranges = meta.get("index_columns") or []
    if len(ranges) != 1 or not isinstance(ranges[0], dict) or ranges[0].get("kind") != "range":
        return None
    # What read_parquet makes of the schema (column labels, their Index, each column's dtype), from no rows.
    empty = _empty_frame(schema)
    if empty is None or len(empty.columns) != len(schema) or not empty.columns.is_unique:
        return None
    dtypes = list(empty.dtypes)
    strings = [p for p, dtype in enumerate(dtypes) if _arrow_string(pd, dtype)]
    numeric = [p for p, dtype in enumerate(dtypes) if isinstance(dtype, np.dtype) and dtype.kind in "biufMm"]
    if len(strings) + len(numeric) != len(dtypes):
        return None
    names = schema.names
    if len(set(names)) != len(names):
        return None
    rows = parquet.metadata.num_rows
    r = ranges[0]
    index = pd.RangeIndex(r["start"], r["stop"], r["step"], name=r.get("name"))
    if len(index) != rows:  # as pyarrow reads a range that does not fit the rows
        index = pd.RangeIndex(rows)
    groups: dict[Any, list[int]] = {}
    for position in numeric:
        groups.setdefault(dtypes[position], []).append(position)
    if _has_nulls(parquet, [p for p in numeric if dtypes[p].kind not in _NULL_AS_VALUE]):
        return None  # (a float's null reads as NaN, a time's as NaT, as in read_parquet; any other: another dtype)
    blocks = {dtype: np.empty((len(positions), rows), dtype=dtype) for dtype, positions in groups.items()}
    targets = [blocks[dtype][i] for dtype, positions in groups.items() for i in range(len(positions))]
    order = [p for positions in groups.values() for p in positions]
    target_of = dict(zip(order, targets, strict=True))
    start = 0
    for group in range(parquet.num_row_groups):  # a row group at a time, its columns in batches of ~16 MiB
        meta_group = parquet.metadata.row_group(group)
        count = meta_group.num_rows
        per_column = max(1, meta_group.total_byte_size // max(1, len(names)))
        batch = max(1, _NUMERIC_READ_BYTES // per_column)
        for first in range(0, len(numeric), batch):
            positions = numeric[first : first + batch]
            table = parquet.read_row_group(group, columns=[names[p] for p in positions], use_pandas_metadata=False)
            for j, position in enumerate(positions):
                column = table.column(j)
                if len(column) != count or (column.null_count and dtypes[position].kind not in _NULL_AS_VALUE):
                    return None
                offset = start
                for chunk in column.chunks:
                    values = chunk.to_numpy(zero_copy_only=False)
                    if values.dtype != dtypes[position]:
                        return None
                    target_of[position][offset : offset + len(values)] = values
                    offset += len(values)
            table = column = values = None
        start += count
    if start != rows:
        return None
    arrays: list[tuple[Any, Any]] = []
    if strings:  # whole, in one read (columns decoded in parallel); their arrays hold the Arrow buffers read
        read = parquet.read(columns=[names[p] for p in strings], use_pandas_metadata=False)  # (pandas metadata kept)
        converted = _to_pandas(read)
        read = None
        if converted is None or len(converted) != rows or list(converted.dtypes) != [dtypes[p] for p in strings]:
            return None
        for j, position in enumerate(strings):
            arrays.append((converted.iloc[:, j].array, np.asarray([position], dtype=np.intp)))
        converted = None
    pa.default_memory_pool().release_unused()
    frame = create_dataframe_from_blocks(
        [(blocks[dtype], np.asarray(positions, dtype=np.intp)) for dtype, positions in groups.items()] + arrays,
        index=index,
        columns=empty.columns,
    )
    attrs = (schema.metadata or {}).get(b"PANDAS_ATTRS")
    if attrs is not None:
        frame.attrs = json.loads(attrs)
    return frame


def _arrow_string(pd: Any, dtype: Any) -> bool:
    """Whether ``dtype`` is a string dtype whose array keeps Arrow memory (pandas 3's default ``str``)."""
    string_dtype = getattr(pd, "StringDtype", None)
    return string_dtype is not None and isinstance(dtype, string_dtype) and dtype.storage == "pyarrow"


_NULL_AS_VALUE = "fMm"  # numpy kinds with a value for null (NaN, NaT): float, datetime64, timedelta64
_NUMERIC_READ_BYTES = 16 << 20  # what one read of a numeric frame's columns may decode at once
# Smaller frames are read by read_parquet: faster there (columns decoded in parallel), and their memory is small.
_NUMERIC_READ_MIN_BYTES = 64 << 20


def _has_nulls(parquet: Any, positions: list[int]) -> bool:
    """Whether the row groups' statistics count a null in any column at ``positions`` (unknown: False;
    the read checks each column again)."""
    for group in range(parquet.num_row_groups):
        meta = parquet.metadata.row_group(group)
        for position in positions:
            stats = meta.column(position).statistics
            if stats is not None and stats.has_null_count and stats.null_count:
                return True
    return False


def _empty_frame(schema: Any) -> Any:
    """``schema`` with no rows, converted by the function ``read_parquet`` converts a table with (labels,
    their Index, dtypes); None where this pandas has no such function or cannot convert it."""
    return _to_pandas(schema.empty_table())


def _to_pandas(table: Any) -> Any:
    """``table`` converted to a frame by the function ``read_parquet`` converts with; None where this
    pandas has no such function or cannot convert it."""
    try:
        return importlib.import_module("pandas.io._util").arrow_table_to_pandas(table)
    except Exception:  # the usual read decides
        return None


class ArrowMaterializer(Materializer):
    needs_verified_bytes = False
    name = "arrow-parquet"
    writes_stream = True

    def can_handle(self, obj: Any) -> bool:
        pa = _maybe("pyarrow")
        return pa is not None and isinstance(obj, pa.Table)

    def save(self, obj: Any, path: str) -> dict[str, Any] | None:
        import pyarrow.parquet as pq

        pq.write_table(obj, path)
        return {**_columns([(f.name, f.type) for f in obj.schema]), "rows": obj.num_rows}

    def save_to(self, obj: Any, out: io.RawIOBase) -> dict[str, Any] | None:
        return self.save(obj, out)  # type: ignore[arg-type]  # write_table writes a file object in order

    def load(self, path: str, python_type: str) -> Any:
        import pyarrow.parquet as pq

        return pq.read_table(path)


class PydanticMaterializer(Materializer):
    needs_verified_bytes = False
    name = "pydantic-json"

    def can_handle(self, obj: Any) -> bool:
        return (
            hasattr(type(obj), "model_fields")
            and hasattr(obj, "model_dump_json")
            and "<locals>" not in type(obj).__qualname__
        )

    def save(self, obj: Any, path: str) -> dict[str, Any] | None:
        data = obj.model_dump_json()
        if type(obj).model_validate_json(data) != obj:  # e.g. a tuple in an Any field comes back a list
            raise TypeError("model does not round-trip through JSON")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(data)
        return None

    def load(self, path: str, python_type: str) -> Any:
        from pydantic import BaseModel

        model = _resolved(python_type, self.name, lambda cls: issubclass(cls, BaseModel))
        with open(path, encoding="utf-8") as fh:
            return model.model_validate_json(fh.read())


class DataclassMaterializer(Materializer):
    needs_verified_bytes = False
    name = "dataclass-json"

    def can_handle(self, obj: Any) -> bool:
        return dataclasses.is_dataclass(obj) and not isinstance(obj, type) and "<locals>" not in type(obj).__qualname__

    def save(self, obj: Any, path: str) -> dict[str, Any] | None:
        from pydantic import TypeAdapter

        adapter = TypeAdapter(type(obj))
        data = adapter.dump_json(obj)
        if adapter.validate_json(data) != obj:
            raise TypeError("dataclass does not round-trip through JSON")
        with open(path, "wb") as fh:
            fh.write(data)
        return None

    def load(self, path: str, python_type: str) -> Any:
        from pydantic import TypeAdapter

        cls = _resolved(python_type, self.name, dataclasses.is_dataclass)
        with open(path, "rb") as fh:
            return TypeAdapter(cls).validate_json(fh.read())


class EstimatorMaterializer(Materializer):
    name = "joblib"

    def can_handle(self, obj: Any) -> bool:
        return (
            callable(getattr(obj, "fit", None)) and callable(getattr(obj, "get_params", None)) and _importable("joblib")
        )

    def save(self, obj: Any, path: str) -> dict[str, Any] | None:
        import joblib

        joblib.dump(obj, path)
        try:
            return code_metadata(code_of_value(obj))
        except NotListed:
            return {INCOMPLETE: True}

    def load(self, path: str, python_type: str) -> Any:
        import joblib

        return joblib.load(path)

    def load_bytes(self, data: Any, python_type: str) -> Any:
        import joblib

        return joblib.load(data if hasattr(data, "read") else io.BytesIO(data))


class CloudpickleMaterializer(Materializer):
    name = "cloudpickle"

    def can_handle(self, obj: Any) -> bool:
        return True

    def save(self, obj: Any, path: str) -> dict[str, Any] | None:
        seen: set[Any] = set()
        buffer = io.BytesIO()
        _recording_pickler()(buffer, seen).dump(obj)
        with open(path, "wb") as fh:
            fh.write(buffer.getbuffer())
        code = {c for c in map(project_code, seen) if c is not None}
        return code_metadata(code)

    def load(self, path: str, python_type: str) -> Any:
        import cloudpickle

        with open(path, "rb") as fh:
            return cloudpickle.load(fh)

    def load_bytes(self, data: Any, python_type: str) -> Any:
        import cloudpickle

        return cloudpickle.loads(data)


@functools.cache
def _recording_pickler() -> type:
    import cloudpickle

    class RecordingPickler(cloudpickle.Pickler):
        """cloudpickle's pickler, noting every class, function and object type it pickles."""

        def __init__(self, file: Any, seen: set[Any]) -> None:
            super().__init__(file, protocol=cloudpickle.DEFAULT_PROTOCOL)
            self._seen = seen

        def reducer_override(self, obj: Any) -> Any:
            self._seen.add(obj if isinstance(obj, (type, types.FunctionType)) else type(obj))
            return super().reducer_override(obj)

    return RecordingPickler


def _maybe(module: str) -> Any:
    """The module if it is already imported: an object of its types cannot exist otherwise."""
    import sys

    return sys.modules.get(module)


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# files.py subclasses Materializer (defined above): imported here, once the base class exists
from isthmus.artifacts.files import FileObjectMaterializer, PathMaterializer  # noqa: E402

_FALLBACK = CloudpickleMaterializer()
_registry: list[Materializer] = [
    StrMaterializer(),
    BytesMaterializer(),
    JsonMaterializer(),
    NumpyMaterializer(),
    PandasMaterializer(),
    ArrowMaterializer(),
    PydanticMaterializer(),
    DataclassMaterializer(),
    EstimatorMaterializer(),
    PathMaterializer(),
    FileObjectMaterializer(),
]
_by_name: dict[str, Materializer] = {m.name: m for m in [*_registry, _FALLBACK]}
_warned: set[str] = set()


def register_materializer(
    materializer: Materializer | type[Materializer] | None = None,
    *,
    types: tuple[type, ...] | type | None = None,
) -> Any:
    """Register a materializer (instance or class; usable as a class decorator).

    With ``types=``, it handles exactly those types (and subclasses) before any built-in one.
    """

    def _do(m: Materializer | type[Materializer]) -> Any:
        inst = m() if isinstance(m, type) else m
        if not inst.name:
            raise ValueError(f"materializer {m!r} needs a unique 'name'")
        if not _NAME.fullmatch(f"{inst.name}@{inst.version}"):
            raise ValueError(
                f"materializer {m!r}: name {inst.name!r} and version {inst.version!r} must be letters, digits and "
                "'_.+-' (name up to 128 characters, version up to 64), e.g. name='my-type', version='1'"
            )
        if types is not None:
            handled = types if isinstance(types, tuple) else (types,)

            def can_handle(obj: Any, _t: tuple[type, ...] = handled) -> bool:
                return isinstance(obj, _t)

            inst.can_handle = can_handle  # type: ignore[method-assign]
        _registry[:] = [x for x in _registry if x.name != inst.name]
        _registry.insert(0, inst)
        _by_name[inst.name] = inst
        return m

    return _do if materializer is None else _do(materializer)


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}@[A-Za-z0-9_.+-]{1,64}")


def executes_code(name: str) -> bool:
    """Whether the materializer called ``name`` (``name@version``) is registered and could run code
    carried in its bytes (False for an unknown one: it cannot load anything here)."""
    found = _by_name.get(name.split("@", 1)[0])
    return found is not None and found.needs_verified_bytes


def get_materializer(name: str) -> Materializer:
    try:
        return _by_name[name.split("@", 1)[0]]
    except KeyError:
        raise MaterializationError(
            f"no materializer named {name!r} is registered in this process; import the module that "
            "registers it (register_materializer) before loading the artifact"
        ) from None


def candidates(obj: Any, preferred: Materializer | str | None = None) -> list[Materializer]:
    """Materializers to try for ``obj``, best first; cloudpickle last."""
    out: list[Materializer] = []
    if isinstance(preferred, str):
        out.append(get_materializer(preferred))
    elif isinstance(preferred, type):  # a Materializer class: its registered instance, or a new one
        registered = _by_name.get(preferred.name)
        out.append(registered if type(registered) is preferred else preferred())
    elif preferred is not None:
        out.append(preferred)
    if out:
        _by_name.setdefault(out[0].name, out[0])  # so what it writes can be loaded by name
    out.extend(m for m in _registry if m not in out and m.can_handle(obj))
    out.append(_FALLBACK)
    return out


def warn_fallback(obj: Any, step_name: str, output: str) -> None:
    tp = type_path(type(obj))
    if tp not in _warned:
        _warned.add(tp)
        warnings.warn(
            f"step {step_name!r} output {output!r}: no materializer for {tp}; storing it with cloudpickle, "
            "which may not load under other library versions. Register one with "
            "isthmus.register_materializer(MyMaterializer, types=...)",
            stacklevel=3,
        )


MaterializerLike = Materializer | type[Materializer] | str | Callable[..., Any]
