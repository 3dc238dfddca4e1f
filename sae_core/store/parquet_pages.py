"""Read a store's `act` column straight from its Parquet pages, without Arrow's list decoding.

Arrow reassembles a `fixed_size_list` column from one repetition and one definition level per element:
at d=768 that is ~2.6 µs per token on one core, where the values themselves are a memcpy. The stores
this project writes keep `act` PLAIN and uncompressed, so each data page is its levels followed by the
raw little-endian values; this module parses the page headers (Thrift compact protocol) and returns the
values as one [rows, d_model] array, a zero-copy view of the memory-mapped file when the row group is a
single page. It returns None whenever the column chunk is not in exactly that shape (compressed, a
dictionary page, nulls or lists of another length, an unknown encoding); the caller then reads it with
Arrow. The file's bytes are checked by the store's sha256 before any read.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

# parquet.thrift enums
_DATA_PAGE, _DICTIONARY_PAGE, _DATA_PAGE_V2 = 0, 2, 3
_PLAIN, _RLE = 0, 3
_VALUE_DTYPES: dict[tuple[str, str | None, int], np.dtype] = {
    ("FIXED_LEN_BYTE_ARRAY", "FLOAT16", 2): np.dtype("<f2"),
    ("FLOAT", None, 0): np.dtype("<f4"),
}


class _Unsupported(Exception):
    """The chunk is not PLAIN, uncompressed, dense values: read it with Arrow instead."""


class _Compact:
    """The subset of Thrift's compact protocol that page headers need: structs of integers, with
    everything else (statistics, size histograms, future fields) skipped by type."""

    def __init__(self, buf: memoryview, pos: int) -> None:
        self.buf, self.pos = buf, pos

    def byte(self) -> int:
        value = self.buf[self.pos]
        self.pos += 1
        return value

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise _Unsupported("varint longer than 64 bits")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def struct(self) -> dict[int, object]:
        """Field id → value for integer and struct fields; other types are skipped."""
        fields: dict[int, object] = {}
        last = 0
        while (header := self.byte()) != 0:
            kind, delta = header & 0x0F, header >> 4
            last = last + delta if delta else self.zigzag()
            if kind in (1, 2):  # booleans carry their value in the type nibble
                fields[last] = kind == 1
            elif kind in (4, 5, 6):
                fields[last] = self.zigzag()
            elif kind == 12:
                fields[last] = self.struct()
            else:
                self.skip(kind)
        return fields

    def skip(self, kind: int) -> None:
        if kind in (1, 2):
            return
        if kind == 3:
            self.pos += 1
        elif kind in (4, 5, 6):
            self.varint()
        elif kind == 7:
            self.pos += 8
        elif kind == 8:
            length = self.varint()  # not `self.pos += self.varint()`: that adds to the pos before the read
            self.pos += length
        elif kind in (9, 10):
            header = self.byte()
            size, element = header >> 4, header & 0x0F
            if size == 15:
                size = self.varint()
            for _ in range(size):
                if element in (1, 2):  # booleans in a list are one byte each
                    self.pos += 1
                else:
                    self.skip(element)
        elif kind == 11:
            size = self.varint()
            if size:
                types = self.byte()
                for _ in range(size):
                    self.skip(types >> 4)
                    self.skip(types & 0x0F)
        elif kind == 12:
            self.struct()
        else:
            raise _Unsupported(f"unknown Thrift type {kind}")


def map_file(path: Path) -> memoryview:
    """The whole file, memory-mapped read-only. Keep the mapping while the file is being read rather than
    mapping it per read: unmapping in a threaded process costs TLB shootdowns on every core."""
    with open(path, "rb") as handle:
        return memoryview(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ))


def value_dtype(meta: pq.FileMetaData, column: int) -> np.dtype | None:
    """The numpy dtype of a float16 (FLBA(2) + Float16) or float32 leaf column, else None."""
    desc = meta.schema.column(column)
    logical = None if desc.logical_type.type == "NONE" else str(desc.logical_type.type)
    key = (desc.physical_type, logical, desc.length if desc.physical_type == "FIXED_LEN_BYTE_ARRAY" else 0)
    return _VALUE_DTYPES.get(key)


def read_fixed_size_column(
    buf: memoryview, meta: pq.FileMetaData, group: int, width: int, name: str = "act"
) -> np.ndarray | None:
    """Row group `group`'s values of the fixed-size-list column `name` as a read-only [rows, width]
    array, from the file's bytes `buf` and its metadata `meta`; None when this fast path does not apply."""
    names = [meta.schema.column(j).path.split(".")[0] for j in range(meta.num_columns)]
    if names.count(name) != 1:
        return None
    column = names.index(name)
    dtype = value_dtype(meta, column)
    chunk = meta.row_group(group).column(column)
    rows = meta.row_group(group).num_rows
    if dtype is None or chunk.compression != "UNCOMPRESSED" or chunk.has_dictionary_page:
        return None
    if chunk.num_values != rows * width:
        return None
    desc = meta.schema.column(column)
    try:
        pages = _value_pages(
            buf, chunk.data_page_offset, chunk.total_compressed_size, dtype,
            desc.max_repetition_level > 0, desc.max_definition_level > 0,
        )  # fmt: skip
    except (_Unsupported, IndexError, ValueError):
        return None
    if sum(len(p) for p in pages) != rows * width:
        return None
    if len(pages) == 1:
        values = pages[0]
    else:
        values = np.concatenate(pages)
        for page in pages:
            release_mapped(page)
    values.flags.writeable = False
    return values.reshape(rows, width)


def release_mapped(array: np.ndarray) -> None:
    """Drop the pages of a file mapping under `array` from this process once its values have been
    copied (a no-op for any other array). They stay in the page cache, so reading them again is a minor
    fault; without this, every value read would stay in the process's resident set until the mapping
    closes, and RSS would grow with the tokens read."""
    owner: object = array
    while isinstance(owner, np.ndarray):
        owner = owner.base
    if isinstance(owner, memoryview):
        owner = owner.obj
    if not isinstance(owner, mmap.mmap) or owner.closed or array.nbytes == 0:
        return
    if not hasattr(mmap, "MADV_DONTNEED"):  # Windows has no madvise: the pages stay until unmapped
        return
    start = array.ctypes.data - np.frombuffer(owner, dtype=np.uint8, count=1).ctypes.data
    first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE  # whole pages only: neighbours may share the edges
    last = (start + array.nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
    if last > first:
        owner.madvise(mmap.MADV_DONTNEED, first, last - first)


def _value_pages(
    buf: memoryview, start: int, size: int, dtype: np.dtype, has_rep: bool, has_def: bool
) -> list[np.ndarray]:
    """The values of each data page in the chunk [start, start + size), as views on `buf`."""
    pages: list[np.ndarray] = []
    pos, end = start, start + size
    while pos < end:
        reader = _Compact(buf, pos)
        header = reader.struct()
        body, length = reader.pos, header.get(3)
        if not isinstance(length, int) or header.get(2) != length or body + length > end:
            raise _Unsupported("page sizes: compressed and uncompressed differ, or overrun the chunk")
        kind = header.get(1)
        if kind == _DATA_PAGE:
            values_at, count = _v1_values(buf, body, header.get(5), has_rep, has_def)
        elif kind == _DATA_PAGE_V2:
            values_at, count = _v2_values(body, header.get(8))
        elif kind == _DICTIONARY_PAGE:
            raise _Unsupported("dictionary page")
        else:  # index pages carry no values
            pos = body + length
            continue
        if (body + length - values_at) != count * dtype.itemsize:
            raise _Unsupported("page holds nulls or empty lists")
        pages.append(np.frombuffer(buf, dtype=dtype, count=count, offset=values_at))
        pos = body + length
    return pages


def _v1_values(buf: memoryview, body: int, info: object, has_rep: bool, has_def: bool) -> tuple[int, int]:
    """v1 data page: [rep levels][def levels] each RLE with a 4-byte length prefix, then the values."""
    if not isinstance(info, dict) or info.get(2) != _PLAIN:
        raise _Unsupported("v1 page not PLAIN")
    at = body
    for present, encoding in ((has_rep, info.get(4)), (has_def, info.get(3))):
        if present:
            if encoding != _RLE:
                raise _Unsupported("levels not RLE")
            at += 4 + int.from_bytes(buf[at : at + 4], "little")
    return at, int(info[1])


def _v2_values(body: int, info: object) -> tuple[int, int]:
    """v2 data page: levels uncompressed with their lengths in the header, then the values."""
    if not isinstance(info, dict) or info.get(4) != _PLAIN or info.get(2, 0) != 0:
        raise _Unsupported("v2 page not PLAIN or with nulls")
    return body + int(info[5]) + int(info[6]), int(info[1])
