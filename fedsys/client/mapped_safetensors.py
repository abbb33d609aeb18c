"""float32 safetensors files read through a memory map and rewritten in place.

A 10M-parameter error-feedback residual is read and rewritten by every client every round.
``safetensors.numpy.load_file`` copies the file into fresh memory and ``save_file`` writes a
new file whose pages the kernel must allocate (and the replaced file's pages free): about
34 ms per 40 MB here. Mapping the file and overwriting an existing file of the same layout
costs about 10 ms. safetensors has no API for either, so this reads the format's header
(8-byte little-endian length, then JSON with each tensor's dtype, shape and byte offsets)
by hand; files are always created by ``safetensors.numpy.save_file``.
"""

from __future__ import annotations

import json
import mmap
import os
from pathlib import Path
from typing import Any

import numpy as np

from fedsys.errors import CodecError

MAX_HEADER_BYTES = 100 << 20  # the format's own limit
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # fault the pages in at once (Linux)


def _layout(view: memoryview | bytes, size: int) -> tuple[int, dict[str, Any]]:
    """(data start, tensor entries) of a safetensors file of ``size`` bytes."""
    if size < 8:
        raise CodecError("file too short for a safetensors header")
    n = int.from_bytes(view[:8], "little")
    if n > MAX_HEADER_BYTES or 8 + n > size:
        raise CodecError("safetensors header length is out of range")
    try:
        header = json.loads(bytes(view[8 : 8 + n]))
    except ValueError:
        raise CodecError("safetensors header is not JSON") from None
    if not isinstance(header, dict):
        raise CodecError("safetensors header is not an object")
    header.pop("__metadata__", None)
    start = 8 + n
    for name, entry in header.items():
        try:
            begin, end = (int(x) for x in entry["data_offsets"])
            shape = [int(d) for d in entry["shape"]]
            dtype = entry["dtype"]
        except (KeyError, TypeError, ValueError):
            raise CodecError(f"safetensors entry {name!r} is malformed") from None
        if dtype != "F32":
            raise CodecError(f"tensor {name!r} is {dtype}, expected F32")
        if not 0 <= begin <= end <= size - start or end - begin != 4 * int(np.prod(shape)):
            raise CodecError(f"tensor {name!r} has offsets outside the file")
    return start, header


def map_arrays(path: Path) -> dict[str, np.ndarray]:
    """The float32 tensors of ``path`` as read-only arrays over a mapping of the file: reads
    come straight from the page cache. (A private writable mapping would copy every page
    when populated, which is the copy this avoids.)"""
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            raise CodecError(f"{path} is empty")
        mm = mmap.mmap(fh.fileno(), size, flags=mmap.MAP_SHARED | _POPULATE, prot=mmap.PROT_READ)
    start, header = _layout(memoryview(mm), size)
    out = {}
    for name, entry in header.items():
        begin, _ = entry["data_offsets"]
        count = int(np.prod(entry["shape"]))
        arr = np.frombuffer(mm, dtype="<f4", count=count, offset=start + int(begin))
        out[name] = arr.reshape(entry["shape"])
    return out


def overwrite_arrays(path: Path, arrays: dict[str, np.ndarray]) -> bool:
    """Write ``arrays`` over the data of ``path`` if it holds exactly these names, shapes and
    float32; False (nothing written) if it does not exist or differs."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return False
        mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | _POPULATE)
    finally:
        os.close(fd)
    try:
        try:
            start, header = _layout(memoryview(mm), size)
        except CodecError:
            return False
        if set(header) != set(arrays) or any(
            list(np.shape(arrays[name])) != list(entry["shape"])
            or np.asarray(arrays[name]).dtype != np.float32
            for name, entry in header.items()
        ):
            return False
        for name, entry in header.items():
            begin, _ = entry["data_offsets"]
            target = np.frombuffer(
                mm, dtype="<f4", count=int(np.prod(entry["shape"])), offset=start + int(begin)
            )
            np.copyto(target, np.asarray(arrays[name]).reshape(-1))
            del target  # the mapping cannot close while a view exports it
        return True
    finally:
        mm.close()
