"""Canonical, content-based hashing of values and files.

Every hash is a string ``"blake3:<hex>"``: the algorithm is part of the value, so stored hashes stay
meaningful if the default ever changes. Equal values hash equal regardless of dict order, tuple vs list,
or numpy scalar vs Python scalar; buffers (bytes, numpy arrays, Arrow buffers) are hashed in place without
copying. Floats are hashed by their IEEE-754 bits, like the floats inside a numpy array: ``-0.0`` and
``0.0`` (``1/x`` tells them apart) and NaNs with different payloads or signs hash differently.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import mmap
import os
import struct
import uuid
from collections.abc import Mapping, Set
from pathlib import PurePath
from typing import Any, cast

from blake3 import blake3

from isthmus.errors import UnhashableValueError  # raised here; importable from here too

ALGORITHM = "blake3"
PREFIX = ALGORITHM + ":"
# One random key per process, for digests that must never match another process's: a value with no
# canonical state, a file that cannot be read, a secret when no store salt is known.
PROCESS_KEY = os.urandom(32)
# Multi-threaded hashing pays off only for large buffers.
_THREADED_MIN = 4 << 20
_CHUNK = 8 << 20


def _new() -> blake3:
    return blake3()


def hash_bytes(data: bytes | bytearray | memoryview | mmap.mmap) -> str:
    """Hash a buffer without copying it (a non-contiguous view is hashed in its logical C order)."""
    mv = _byte_view(data)
    threads = blake3.AUTO if mv.nbytes >= _THREADED_MIN else 1
    return PREFIX + blake3(mv, max_threads=threads).hexdigest()


def _byte_view(buf: Any) -> memoryview:
    """A flat unsigned-byte view of ``buf``: zero-copy when contiguous, a C-order copy otherwise."""
    mv = memoryview(buf)
    if not mv.c_contiguous:
        mv = memoryview(mv.tobytes())
    if mv.ndim != 1 or mv.format != "B":
        mv = mv.cast("B")
    return mv


def hash_file(path: str) -> tuple[str, int]:
    """Hash a local file (memory-mapped, multi-threaded for large files); returns (hash, size)."""
    import os

    size = os.path.getsize(path)
    h = blake3(max_threads=blake3.AUTO if size >= _THREADED_MIN else 1)
    if size:
        h.update_mmap(path)
    return PREFIX + h.hexdigest(), size


def hash_stream(fileobj: Any) -> tuple[str, int]:
    """Hash a readable binary file object; returns (hash, size)."""
    h = _new()
    size = 0
    while True:
        chunk = fileobj.read(_CHUNK)
        if not chunk:
            break
        size += len(chunk)
        h.update(chunk)
    return PREFIX + h.hexdigest(), size


def hash_value(value: Any) -> str:
    """The canonical hash of a parameter value (see module docstring)."""
    h = _new()
    _feed(h, value)
    return PREFIX + h.hexdigest()


def parts_digest(*parts: str | bytes, key: bytes | None = None) -> bytes:
    """The raw digest of an ordered sequence of strings/bytes, each length-prefixed (so boundaries count);
    with a 32-byte ``key``, BLAKE3 in keyed mode."""
    h = blake3(key=key) if key is not None else _new()
    for part in parts:
        b = part.encode("utf-8", "surrogatepass") if isinstance(part, str) else part
        h.update(struct.pack("<Q", len(b)))
        h.update(b)
    return h.digest()


def hash_parts(*parts: str | bytes) -> str:
    """Hash an ordered sequence of strings/bytes (each length-prefixed, so boundaries count)."""
    return PREFIX + parts_digest(*parts).hex()


def keyed_hash(key: bytes, *parts: str | bytes) -> str:
    """BLAKE3 in keyed mode over length-prefixed ``parts``: without the 32-byte ``key`` the result
    reveals nothing about low-entropy inputs (a short password cannot be recovered by guessing)."""
    return PREFIX + parts_digest(*parts, key=key).hex()


def value_digest(value: Any) -> bytes:
    """The raw 32-byte canonical digest of ``value`` (what :func:`hash_value` prints in hex)."""
    h = _new()
    _feed(h, value)
    return h.digest()


def _tag(h: blake3, tag: bytes, payload: bytes = b"") -> None:
    h.update(tag)
    h.update(struct.pack("<Q", len(payload)))
    h.update(payload)


def _feed_float(h: blake3, x: float) -> None:
    _tag(h, b"f", struct.pack("<d", x))  # the exact bits: no two distinct floats (or NaN payloads) collide


def _feed_buffer(h: blake3, tag: bytes, header: str, buf: Any) -> None:
    mv = _byte_view(buf)
    _tag(h, tag, header.encode())
    h.update(struct.pack("<Q", mv.nbytes))
    if mv.nbytes >= _THREADED_MIN:
        # Hash the large buffer with all cores, then mix its digest in.
        h.update(blake3(mv, max_threads=blake3.AUTO).digest())
    else:
        h.update(mv)


def _feed(h: blake3, v: Any) -> None:  # noqa: C901 - a flat type switch reads best
    if v is None:
        _tag(h, b"N")
    elif v is True or v is False:
        _tag(h, b"b", b"1" if v else b"0")
    elif isinstance(v, enum.Enum):
        _tag(h, b"E", f"{type(v).__module__}.{type(v).__qualname__}".encode())
        _feed(h, v.value)
    elif isinstance(v, int):
        _tag(h, b"i", str(int(v)).encode())
    elif isinstance(v, float):
        _feed_float(h, v)
    elif isinstance(v, complex):
        _tag(h, b"z")
        _feed_float(h, v.real)
        _feed_float(h, v.imag)
    elif isinstance(v, str):
        _tag(h, b"s", v.encode("utf-8", "surrogatepass"))
    elif isinstance(v, (bytes, bytearray, memoryview)):
        _feed_buffer(h, b"B", "", v)
    elif isinstance(v, (list, tuple)) and not hasattr(v, "_fields"):
        _tag(h, b"l", str(len(v)).encode())
        for item in v:
            _feed(h, item)
    elif isinstance(v, Mapping):
        items = sorted((value_digest(k), value_digest(val)) for k, val in v.items())
        _tag(h, b"d", str(len(items)).encode())
        for kd, vd in items:
            h.update(kd)
            h.update(vd)
    elif isinstance(v, Set):
        members = sorted(value_digest(x) for x in v)
        _tag(h, b"S", str(len(members)).encode())
        for d in members:
            h.update(d)
    else:
        _feed_other(h, v)


def _feed_other(h: blake3, v: Any) -> None:
    ref_hash = getattr(v, "content_hash", None)
    if isinstance(ref_hash, str) and type(v).__name__ == "ArtifactRef":
        _tag(h, b"A", ref_hash.encode())
        return
    if hasattr(v, "_fields") and isinstance(v, tuple):  # NamedTuple: by field name
        _tag(h, b"T", f"{type(v).__module__}.{type(v).__qualname__}".encode())
        _feed(h, dict(cast(Any, v)._asdict()))
        return
    if isinstance(v, _dt.timedelta):  # exact: total_seconds() is a float and loses microseconds
        exact = f"{v.days},{v.seconds},{v.microseconds},{getattr(v, 'nanoseconds', 0)}"
        _tag(h, b"t", f"{type(v).__name__}:{exact}".encode())
        return
    if isinstance(v, (_dt.datetime, _dt.date, _dt.time)):
        _tag(h, b"t", f"{type(v).__name__}:{v.isoformat()}".encode())
        return
    if isinstance(v, (decimal.Decimal, uuid.UUID, PurePath)):
        _tag(h, b"x", f"{type(v).__name__}:{v}".encode())
        return
    mod = type(v).__module__.split(".", 1)[0]
    if mod == "numpy":
        _feed_numpy(h, v)
        return
    if mod == "pandas":
        _feed_pandas(h, v)
        return
    if mod == "pyarrow":
        _feed_arrow(h, v)
        return
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        _tag(h, b"D", f"{type(v).__module__}.{type(v).__qualname__}".encode())
        _feed(h, {f.name: getattr(v, f.name) for f in dataclasses.fields(v)})
        return
    dump = getattr(v, "model_dump", None)
    if callable(dump) and hasattr(type(v), "model_fields"):  # pydantic v2
        _tag(h, b"P", f"{type(v).__module__}.{type(v).__qualname__}".encode())
        _feed(h, dump(mode="python"))
        return
    raise UnhashableValueError(
        f"no canonical hash for a value of type {type(v).__module__}.{type(v).__qualname__}; "
        "pass JSON-like values, numpy/pandas/arrow data, dataclasses or pydantic models, "
        "or exclude it with CachePolicy(ignore_inputs=[...])"
    )


def _feed_numpy(h: blake3, v: Any) -> None:
    import numpy as np

    if isinstance(v, np.generic) and not isinstance(v, np.ndarray):
        if isinstance(v, np.bool_):
            _feed(h, bool(v))
        elif isinstance(v, (np.datetime64, np.timedelta64)):  # timedelta64 is an np.integer: test first
            _feed_numpy(h, np.asarray(v))
        elif isinstance(v, np.integer):
            _feed(h, int(v))
        elif isinstance(v, np.floating):
            _feed_float(h, float(v))
        elif isinstance(v, (np.str_, np.bytes_)):
            _feed(h, v.item())
        else:  # complex, void (structured), longdouble...: as a 0-d array
            _feed_numpy(h, np.asarray(v))
        return
    if isinstance(v, np.ndarray):
        if v.dtype.hasobject:
            _tag(h, b"o", f"{v.shape}".encode())
            _feed(h, v.tolist())
            return
        arr = v
        if arr.dtype.fields is None and arr.dtype.byteorder not in ("=", "|"):
            arr = arr.astype(arr.dtype.newbyteorder("="))  # equal values hash equal whatever the byte order
        if not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        # dtype_to_descr is dtype.str for plain dtypes and keeps field names/types for structured ones
        descr = np.lib.format.dtype_to_descr(arr.dtype)
        _feed_buffer(h, b"n", f"{descr}|{arr.shape}", arr.reshape(-1).view(np.uint8))
        return
    raise UnhashableValueError(f"no canonical hash for numpy type {type(v).__qualname__}")


def _label(x: Any) -> list[str]:
    """A column/index label as (type, text): ``1`` and ``"1"`` or ``None`` and ``"None"`` stay distinct."""
    return [type(x).__name__, str(x)]


def _feed_object_values(h: blake3, values: Any) -> None:
    # pandas hashes mixed object columns through str() (so 1 and "1" collide): add the values themselves.
    items = values.tolist()
    try:
        sub = value_digest(items)
    except (UnhashableValueError, RecursionError):
        sub = value_digest([f"{type(x).__module__}.{type(x).__qualname__}" for x in items])
    _tag(h, b"O", sub)


def _feed_pandas(h: blake3, v: Any) -> None:
    import numpy as np
    import pandas as pd

    if isinstance(v, (pd.DataFrame, pd.Series)):
        _tag(h, b"p", type(v).__name__.encode())
        if isinstance(v, pd.DataFrame):
            _feed(h, [_label(c) for c in v.columns])
            dtypes = list(v.dtypes)
            _feed(h, [repr(t) for t in dtypes])
            columns = [v.iloc[:, i] for i, t in enumerate(dtypes) if pd.api.types.is_object_dtype(t)]
        else:
            _feed(h, [_label(v.name), repr(v.dtype)])
            columns = [v] if pd.api.types.is_object_dtype(v.dtype) else []
        index = v.index
        _feed(h, [[_label(n) for n in index.names], repr(index.dtype)])  # RangeIndex == equal Index
        _feed(h, pd.util.hash_pandas_object(v, index=True).to_numpy())
        for col in columns:
            _feed_object_values(h, col)
        # pandas hashes -0.0 like 0.0 and every NaN alike: add the bits of float columns and index.
        frame = v.to_frame() if isinstance(v, pd.Series) else v
        for i, t in enumerate(frame.dtypes):
            if isinstance(t, np.dtype) and t.kind == "f":
                _feed_numpy(h, np.ascontiguousarray(frame.iloc[:, i].to_numpy()))
        if isinstance(index.dtype, np.dtype) and index.dtype.kind == "f":
            _feed_numpy(h, np.ascontiguousarray(index.to_numpy()))
        if pd.api.types.is_object_dtype(index.dtype):
            _feed_object_values(h, index)
        return
    if isinstance(v, pd.Timestamp):
        _tag(h, b"t", v.isoformat().encode())
        return
    raise UnhashableValueError(f"no canonical hash for pandas type {type(v).__qualname__}")


class _HashSink:
    """A write-only file object that feeds what Arrow's IPC writer emits into a hasher."""

    closed = False

    def __init__(self, h: blake3) -> None:
        self._h = h

    def write(self, data: Any) -> int:
        self._h.update(data)
        return memoryview(data).nbytes

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def _arrow_flat(pa: Any, t: Any) -> bool:
    """A type whose array is fully described by its own buffers plus (offset, length)."""
    if isinstance(t, pa.ExtensionType):
        t = t.storage_type
    return t.num_fields == 0 and not pa.types.is_dictionary(t)


def _feed_arrow(h: blake3, v: Any) -> None:
    import pyarrow as pa

    if isinstance(v, pa.RecordBatch):
        v = pa.Table.from_batches([v])
    if isinstance(v, pa.Table):
        _tag(h, b"a", str(v.schema).encode())
        for col in v.columns:
            _feed_arrow(h, col)
        return
    if isinstance(v, pa.ChunkedArray):
        _tag(h, b"c", f"{v.type}|{len(v)}".encode())
        for chunk in v.chunks:
            _feed_arrow(h, chunk)
        return
    if isinstance(v, pa.Array):
        if not _arrow_flat(pa, v.type):
            # Nested and dictionary arrays: buffers() flattens children and drops their offsets and the
            # dictionary, so distinct arrays could share buffers. Arrow's IPC stream is canonical.
            _tag(h, b"R", f"{v.type}|{len(v)}".encode())
            sub = _new()
            schema = pa.schema([pa.field("v", v.type)])
            with pa.ipc.new_stream(_HashSink(sub), schema) as writer:
                writer.write_batch(pa.record_batch([v], schema=schema))
            h.update(sub.digest())
            return
        _tag(h, b"r", f"{v.type}|{v.offset}|{len(v)}".encode())
        for buf in v.buffers():
            if buf is None:
                _tag(h, b"0")
            else:
                _feed_buffer(h, b"u", "", buf)
        return
    raise UnhashableValueError(f"no canonical hash for pyarrow type {type(v).__qualname__}")
