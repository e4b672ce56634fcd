"""Canonical, content-based hashing of values and files.

Every hash is a string ``"blake3:<hex>"``: the algorithm is part of the value, so stored hashes stay
meaningful if the default ever changes. Equal values hash equal regardless of dict order, tuple vs list,
numpy scalar vs Python scalar, or ``-0.0`` vs ``0.0``; buffers (bytes, numpy arrays, Arrow buffers) are
hashed in place without copying.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import math
import struct
import uuid
from collections.abc import Mapping, Set
from pathlib import PurePath
from typing import Any

from blake3 import blake3

ALGORITHM = "blake3"
PREFIX = ALGORITHM + ":"
# Multi-threaded hashing pays off only for large buffers.
_THREADED_MIN = 4 << 20
_CHUNK = 8 << 20


class UnhashableValueError(TypeError):
    """A value has no canonical hash (and so cannot be part of a cache key)."""


def _new() -> blake3:
    return blake3()


def hash_bytes(data: bytes | bytearray | memoryview) -> str:
    """Hash a buffer without copying it."""
    threads = blake3.AUTO if memoryview(data).nbytes >= _THREADED_MIN else 1
    return PREFIX + blake3(data, max_threads=threads).hexdigest()


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


def hash_parts(*parts: str | bytes) -> str:
    """Hash an ordered sequence of strings/bytes (each length-prefixed, so boundaries count)."""
    h = _new()
    for part in parts:
        b = part.encode() if isinstance(part, str) else part
        h.update(struct.pack("<Q", len(b)))
        h.update(b)
    return PREFIX + h.hexdigest()


def _digest(value: Any) -> bytes:
    h = _new()
    _feed(h, value)
    return h.digest()


def _tag(h: blake3, tag: bytes, payload: bytes = b"") -> None:
    h.update(tag)
    h.update(struct.pack("<Q", len(payload)))
    h.update(payload)


def _feed_float(h: blake3, x: float) -> None:
    if math.isnan(x):
        _tag(h, b"f", b"nan")
    elif x == 0.0:
        _tag(h, b"f", b"0.0")  # -0.0 == 0.0
    else:
        _tag(h, b"f", repr(float(x)).encode())


def _feed_buffer(h: blake3, tag: bytes, header: str, buf: Any) -> None:
    mv = memoryview(buf).cast("B") if memoryview(buf).ndim != 1 or memoryview(buf).format != "B" else memoryview(buf)
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
    elif isinstance(v, str):
        _tag(h, b"s", v.encode("utf-8", "surrogatepass"))
    elif isinstance(v, (bytes, bytearray, memoryview)):
        _feed_buffer(h, b"B", "", v)
    elif isinstance(v, (list, tuple)) and not hasattr(v, "_fields"):
        _tag(h, b"l", str(len(v)).encode())
        for item in v:
            _feed(h, item)
    elif isinstance(v, Mapping):
        items = sorted((_digest(k), _digest(val)) for k, val in v.items())
        _tag(h, b"d", str(len(items)).encode())
        for kd, vd in items:
            h.update(kd)
            h.update(vd)
    elif isinstance(v, Set):
        members = sorted(_digest(x) for x in v)
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
        _tag(h, b"T", type(v).__qualname__.encode())
        _feed(h, dict(v._asdict()))
        return
    if isinstance(v, (_dt.datetime, _dt.date, _dt.time, _dt.timedelta)):
        _tag(h, b"t", f"{type(v).__name__}:{v.isoformat() if hasattr(v, 'isoformat') else v.total_seconds()}".encode())
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
        elif isinstance(v, np.integer):
            _feed(h, int(v))
        elif isinstance(v, np.floating):
            _feed_float(h, float(v))
        elif isinstance(v, (np.str_, np.bytes_)):
            _feed(h, v.item())
        else:
            _feed_buffer(h, b"n", f"{v.dtype.str}|()", np.ascontiguousarray(v))
        return
    if isinstance(v, np.ndarray):
        if v.dtype.hasobject:
            _tag(h, b"o", f"{v.shape}".encode())
            _feed(h, v.tolist())
            return
        arr = v if v.flags.c_contiguous else np.ascontiguousarray(v)
        _feed_buffer(h, b"n", f"{arr.dtype.str}|{arr.shape}", arr.reshape(-1).view(np.uint8))
        return
    raise UnhashableValueError(f"no canonical hash for numpy type {type(v).__qualname__}")


def _feed_pandas(h: blake3, v: Any) -> None:
    import pandas as pd

    if isinstance(v, (pd.DataFrame, pd.Series)):
        _tag(h, b"p", type(v).__name__.encode())
        if isinstance(v, pd.DataFrame):
            _feed(h, [str(c) for c in v.columns])
            _feed(h, [str(t) for t in v.dtypes])
        else:
            _feed(h, [str(v.name), str(v.dtype)])
        _feed(h, pd.util.hash_pandas_object(v, index=True).to_numpy())
        return
    if isinstance(v, pd.Timestamp):
        _tag(h, b"t", v.isoformat().encode())
        return
    raise UnhashableValueError(f"no canonical hash for pandas type {type(v).__qualname__}")


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
        _tag(h, b"r", f"{v.type}|{v.offset}|{len(v)}".encode())
        for buf in v.buffers():
            if buf is None:
                _tag(h, b"0")
            else:
                _feed_buffer(h, b"u", "", buf)
        return
    raise UnhashableValueError(f"no canonical hash for pyarrow type {type(v).__qualname__}")
