"""A minimal Parquet writer and reader in pure Python, for the batch runner's results table.

Why: the local engine writes `results.parquet` and must need nothing beyond the pack, so pyarrow stays optional.
What: flat tables of int64, double and UTF-8 string columns. The writer makes every column REQUIRED (no nulls),
one row group, one PLAIN-encoded, uncompressed v1 data page per column, and the footer (FileMetaData) in the Thrift
compact protocol, as parquet-format's parquet.thrift defines it. pyarrow, pandas, DuckDB and Spark read these files.
The reader reads files of that shape (also with several row groups or pages) and refuses anything else, such as
compressed, dictionary-encoded or nullable columns, with a ParquetError that says what it met.
"""
from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

MAGIC = b"PAR1"
COLUMN_TYPES = ("int64", "double", "string")
CREATED_BY = "ipx2p"

# Thrift compact protocol type ids (field headers and list element types).
_T_TRUE, _T_FALSE, _T_BYTE, _T_I16, _T_I32, _T_I64, _T_DOUBLE, _T_BINARY, _T_LIST, _T_SET, _T_MAP, _T_STRUCT = range(1, 13)

# parquet.thrift enums.
_PHYSICAL = {"int64": 2, "double": 5, "string": 6}  # Type: INT64, DOUBLE, BYTE_ARRAY
_PHYSICAL_NAMES = {0: "BOOLEAN", 1: "INT32", 2: "INT64", 3: "INT96", 4: "FLOAT", 5: "DOUBLE", 6: "BYTE_ARRAY", 7: "FIXED_LEN_BYTE_ARRAY"}
_REQUIRED = 0  # FieldRepetitionType
_UTF8, _INT_64 = 0, 18  # ConvertedType
_LOGICAL_STRING, _LOGICAL_INTEGER = 1, 10  # LogicalType union fields
_PLAIN, _RLE = 0, 3  # Encoding
_ENCODING_NAMES = {0: "PLAIN", 2: "PLAIN_DICTIONARY", 3: "RLE", 4: "BIT_PACKED", 5: "DELTA_BINARY_PACKED",
                   6: "DELTA_LENGTH_BYTE_ARRAY", 7: "DELTA_BYTE_ARRAY", 8: "RLE_DICTIONARY", 9: "BYTE_STREAM_SPLIT"}
_UNCOMPRESSED = 0  # CompressionCodec
_CODEC_NAMES = {0: "UNCOMPRESSED", 1: "SNAPPY", 2: "GZIP", 3: "LZO", 4: "BROTLI", 5: "LZ4", 6: "ZSTD", 7: "LZ4_RAW"}
_DATA_PAGE, _DICTIONARY_PAGE = 0, 2  # PageType
_PAGE_NAMES = {0: "DATA_PAGE", 1: "INDEX_PAGE", 2: "DICTIONARY_PAGE", 3: "DATA_PAGE_V2"}

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_I32_MAX = 2**31 - 1

_Field = tuple[int, int, Any]  # (field id, compact type id, value)


class ParquetError(ValueError):
    """A file this module cannot write or read; the message names the file or column and the reason."""


# ---------------------------------------------------------------------------------------------------------------------
# Thrift compact protocol: the encoder writes only what the footer and page headers need; the decoder reads any value
# so it can walk footers written by other tools far enough to say why it refuses them.


def _varint(number: int) -> bytes:
    """Unsigned LEB128, the compact protocol's integer body."""
    out = bytearray()
    while True:
        low = number & 0x7F
        number >>= 7
        if number:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _zigzag(number: int) -> int:
    """Signed to unsigned so small negative numbers stay short (Python ints are unbounded, so no shifts by width)."""
    return number * 2 if number >= 0 else -number * 2 - 1


def _encode(ttype: int, value: Any) -> bytes:
    """One value's body; structs arrive already encoded (bytes from `_struct`), lists as (element type, items)."""
    if ttype in (_T_I16, _T_I32, _T_I64):
        return _varint(_zigzag(int(value)))
    if ttype == _T_BINARY:
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        return _varint(len(data)) + data
    if ttype == _T_STRUCT:
        return bytes(value)
    if ttype == _T_LIST:
        element_type, items = value
        size = len(items)
        head = bytes([size << 4 | element_type]) if size < 15 else bytes([0xF0 | element_type]) + _varint(size)
        return head + b"".join(_encode(element_type, item) for item in items)
    raise ValueError(f"the writer does not encode thrift type {ttype}")


def _struct(fields: Iterable[_Field]) -> bytes:
    """A struct: field headers carry the id as a delta from the previous one when it fits in 4 bits; 0 ends it."""
    out = bytearray()
    last = 0
    for field_id, ttype, value in sorted(fields, key=lambda field: field[0]):
        delta = field_id - last
        if 0 < delta <= 15:
            out.append(delta << 4 | ttype)
        else:
            out.append(ttype)
            out += _varint(_zigzag(field_id))
        out += _encode(ttype, value)
        last = field_id
    out.append(0)
    return bytes(out)


class _Decoder:
    """Reads compact-protocol values from `data` starting at `pos`; structs become {field id: value}."""

    def __init__(self, data: bytes, pos: int, where: str) -> None:
        self.data, self.pos, self.where = data, pos, where

    def _take(self, count: int) -> bytes:
        end = self.pos + count
        if count < 0 or end > len(self.data):
            raise ParquetError(f"{self.where}: metadata runs past the end of the file (truncated or not Parquet)")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def byte(self) -> int:
        return self._take(1)[0]

    def varint(self) -> int:
        result = shift = 0
        while True:
            byte = self.byte()
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 70:
                raise ParquetError(f"{self.where}: malformed integer in the metadata")

    def zigzag(self) -> int:
        number = self.varint()
        return (number >> 1) ^ -(number & 1)

    def value(self, ttype: int) -> Any:
        if ttype in (_T_TRUE, _T_FALSE):  # inside lists a bool is a whole byte
            return self.byte() == _T_TRUE
        if ttype == _T_BYTE:
            return struct.unpack("<b", self._take(1))[0]
        if ttype in (_T_I16, _T_I32, _T_I64):
            return self.zigzag()
        if ttype == _T_DOUBLE:
            return struct.unpack("<d", self._take(8))[0]
        if ttype == _T_BINARY:
            return self._take(self.varint())
        if ttype in (_T_LIST, _T_SET):
            head = self.byte()
            size, element_type = head >> 4, head & 0x0F
            if size == 15:
                size = self.varint()
            return [self.value(element_type) for _ in range(size)]
        if ttype == _T_MAP:
            size = self.varint()
            if not size:
                return {}
            types = self.byte()
            return {self.value(types >> 4): self.value(types & 0x0F) for _ in range(size)}
        if ttype == _T_STRUCT:
            return self.struct()
        raise ParquetError(f"{self.where}: unknown thrift type {ttype} in the metadata (not a Parquet file?)")

    def struct(self) -> dict[int, Any]:
        fields: dict[int, Any] = {}
        last = 0
        while True:
            head = self.byte()
            if head == 0:
                return fields
            ttype, delta = head & 0x0F, head >> 4
            field_id = last + delta if delta else self.zigzag()
            fields[field_id] = (ttype == _T_TRUE) if ttype in (_T_TRUE, _T_FALSE) else self.value(ttype)
            last = field_id


# ---------------------------------------------------------------------------------------------------------------------
# Writer


def _check_columns(columns: Sequence[tuple[str, str]]) -> None:
    names = [name for name, _ in columns]
    if len(set(names)) != len(names):
        raise ParquetError(f"column names repeat: {names}")
    for name, ctype in columns:
        if ctype not in COLUMN_TYPES:
            raise ParquetError(f"column {name!r} has type {ctype!r}; the writer knows {', '.join(COLUMN_TYPES)}")


def _cell(ctype: str, name: str, value: Any, row: int) -> Any:
    """One cell as its column's Python type; None becomes 0, NaN or "" because every column is REQUIRED."""
    if ctype == "int64":
        if value is None:
            return 0
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or not _INT64_MIN <= value <= _INT64_MAX:
            raise ParquetError(f"column {name!r} row {row}: {value!r} is not a 64-bit whole number")
        return int(value)
    if ctype == "double":
        if value is None:
            return math.nan
        if not isinstance(value, (int, float)):
            raise ParquetError(f"column {name!r} row {row}: {value!r} is not a number")
        return float(value)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ParquetError(f"column {name!r} row {row}: {value!r} is not a string")
    return value


def _plain(ctype: str, values: list[Any]) -> bytes:
    """PLAIN encoding: little-endian fixed-width numbers; strings as a 4-byte length then the UTF-8 bytes."""
    if ctype == "int64":
        return struct.pack(f"<{len(values)}q", *values)
    if ctype == "double":
        return struct.pack(f"<{len(values)}d", *values)
    # errors="replace": a path with undecodable bytes (surrogate escapes) must not make the whole table unwritable.
    encoded = [value.encode("utf-8", errors="replace") for value in values]
    return b"".join(struct.pack("<I", len(data)) + data for data in encoded)


def write_table(path: str | Path, columns: Sequence[tuple[str, str]], rows: Iterable[Mapping[str, Any]]) -> None:
    """Write `rows` (dicts by column name; other keys are ignored) as a Parquet file at `path`.

    `columns` is [(name, type)] with type "int64", "double" or "string". Every column is REQUIRED, so a missing
    key or None is stored as 0 (int64), NaN (double) or "" (string). With no rows the file has the schema and no
    row group. The file is written in one piece; callers that need atomic replacement write to a temporary name.
    """
    _check_columns(columns)
    rows = list(rows)
    out = bytearray(MAGIC)
    chunks: list[bytes] = []
    total = 0
    first_offset = len(out)
    if rows:
        for name, ctype in columns:
            values = [_cell(ctype, name, row.get(name), number) for number, row in enumerate(rows)]
            data = _plain(ctype, values)
            if len(data) > _I32_MAX:
                raise ParquetError(f"column {name!r} holds {len(data)} bytes; one page holds at most {_I32_MAX}")
            # REQUIRED columns at the top level have no repetition or definition levels, so the page is just values.
            page_header = _struct([
                (1, _T_I32, _DATA_PAGE), (2, _T_I32, len(data)), (3, _T_I32, len(data)),
                (5, _T_STRUCT, _struct([(1, _T_I32, len(rows)), (2, _T_I32, _PLAIN), (3, _T_I32, _RLE), (4, _T_I32, _RLE)])),
            ])
            offset = len(out)
            out += page_header
            out += data
            size = len(page_header) + len(data)
            total += size
            meta = _struct([
                (1, _T_I32, _PHYSICAL[ctype]), (2, _T_LIST, (_T_I32, [_PLAIN, _RLE])), (3, _T_LIST, (_T_BINARY, [name])),
                (4, _T_I32, _UNCOMPRESSED), (5, _T_I64, len(rows)), (6, _T_I64, size), (7, _T_I64, size), (9, _T_I64, offset),
            ])
            # file_offset 0: the spec asks for 0 when no ColumnMetaData is written outside the footer.
            chunks.append(_struct([(2, _T_I64, 0), (3, _T_STRUCT, meta)]))
    schema = [_struct([(4, _T_BINARY, "schema"), (5, _T_I32, len(columns))])]
    for name, ctype in columns:
        fields: list[_Field] = [(1, _T_I32, _PHYSICAL[ctype]), (3, _T_I32, _REQUIRED), (4, _T_BINARY, name)]
        if ctype == "string":
            # converted_type UTF8 for old readers, logicalType STRING (union field 1, an empty struct) for new ones.
            fields += [(6, _T_I32, _UTF8), (10, _T_STRUCT, _struct([(1, _T_STRUCT, _struct([]))]))]
        schema.append(_struct(fields))
    row_groups = []
    if rows:
        row_groups.append(_struct([
            (1, _T_LIST, (_T_STRUCT, chunks)), (2, _T_I64, total), (3, _T_I64, len(rows)),
            (5, _T_I64, first_offset), (6, _T_I64, total), (7, _T_I16, 0),
        ]))
    footer = _struct([
        (1, _T_I32, 1), (2, _T_LIST, (_T_STRUCT, schema)), (3, _T_I64, len(rows)),
        (4, _T_LIST, (_T_STRUCT, row_groups)), (6, _T_BINARY, CREATED_BY),
    ])
    out += footer
    out += struct.pack("<I", len(footer))
    out += MAGIC
    Path(path).write_bytes(bytes(out))


# ---------------------------------------------------------------------------------------------------------------------
# Reader


def _need(fields: Mapping[int, Any], field_id: int, what: str, where: str) -> Any:
    if field_id not in fields:
        raise ParquetError(f"{where}: the metadata lacks {what}")
    return fields[field_id]


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _schema(elements: list[dict[int, Any]], where: str) -> list[tuple[str, str]]:
    """[(name, type)] from the flattened schema; anything but flat REQUIRED int64/double/string columns is refused."""
    if not elements:
        raise ParquetError(f"{where}: the schema is empty")
    leaves = elements[1:]
    if _need(elements[0], 5, "the schema root's column count", where) != len(leaves):
        raise ParquetError(f"{where}: nested columns are not supported (this reader reads flat tables written by ipx2p)")
    columns = []
    for element in leaves:
        name = _text(_need(element, 4, "a column name", where))
        if element.get(5):
            raise ParquetError(f"{where}: column {name!r} is nested; this reader reads flat tables written by ipx2p")
        repetition: int | None = element.get(3)
        if repetition != _REQUIRED:
            kind = {1: "optional (nullable)", 2: "repeated"}.get(repetition or 0, f"repetition {repetition}")
            raise ParquetError(f"{where}: column {name!r} is {kind}; this reader reads only the REQUIRED columns ipx2p writes")
        physical: int | None = element.get(1)
        converted, logical = element.get(6), element.get(10) or {}
        if physical == _PHYSICAL["int64"] and converted in (None, _INT_64) and set(logical) <= {_LOGICAL_INTEGER}:
            columns.append((name, "int64"))
        elif physical == _PHYSICAL["double"]:
            columns.append((name, "double"))
        elif physical == _PHYSICAL["string"] and (converted == _UTF8 or _LOGICAL_STRING in logical):
            columns.append((name, "string"))
        else:
            kind = _PHYSICAL_NAMES.get(physical, str(physical)) if physical is not None else "none"
            raise ParquetError(f"{where}: column {name!r} has type {kind} (converted type {converted}, logical type fields "
                               f"{sorted(logical)}); "
                               "this reader reads int64, double and UTF-8 string columns")
    return columns


def _values(ctype: str, page: bytes, count: int, name: str, where: str) -> list[Any]:
    """Decode `count` PLAIN values of one column from a page body with no levels."""
    if ctype in ("int64", "double"):
        if len(page) != 8 * count:
            raise ParquetError(f"{where}: column {name!r} page holds {len(page)} bytes for {count} values")
        return list(struct.unpack(f"<{count}{'q' if ctype == 'int64' else 'd'}", page))
    values = []
    pos = 0
    for _ in range(count):
        if pos + 4 > len(page):
            raise ParquetError(f"{where}: column {name!r} page ends inside a string")
        (length,) = struct.unpack_from("<I", page, pos)
        pos += 4
        if pos + length > len(page):
            raise ParquetError(f"{where}: column {name!r} page ends inside a string")
        try:
            values.append(page[pos:pos + length].decode("utf-8"))
        except UnicodeDecodeError as error:
            raise ParquetError(f"{where}: column {name!r} holds text that is not UTF-8 ({error})") from None
        pos += length
    if pos != len(page):
        raise ParquetError(f"{where}: column {name!r} page has {len(page) - pos} bytes after its {count} values")
    return values


def _chunk(data: bytes, chunk: dict[int, Any], name: str, ctype: str, where: str) -> list[Any]:
    """All values of one column chunk: uncompressed PLAIN v1 data pages only."""
    if chunk.get(1) is not None:
        raise ParquetError(f"{where}: column {name!r} keeps its data in another file; not supported")
    meta = _need(chunk, 3, f"column {name!r}'s metadata", where)
    codec = _need(meta, 4, "a codec", where)
    if codec != _UNCOMPRESSED:
        raise ParquetError(f"{where}: column {name!r} is compressed ({_CODEC_NAMES.get(codec, codec)}); this reader reads "
                           "uncompressed files as ipx2p writes them (install pyarrow to read others)")
    if meta.get(11) is not None:
        raise ParquetError(f"{where}: column {name!r} is dictionary-encoded; this reader reads PLAIN pages only "
                           "(install pyarrow to read such files)")
    wanted = _need(meta, 5, "a value count", where)
    pos = _need(meta, 9, "a data page offset", where)
    end = pos + _need(meta, 7, "a chunk size", where)
    values: list[Any] = []
    while len(values) < wanted:
        if pos >= end:
            raise ParquetError(f"{where}: column {name!r} ends after {len(values)} of {wanted} values")
        decoder = _Decoder(data, pos, where)
        header = decoder.struct()
        page_type = _need(header, 1, "a page type", where)
        if page_type != _DATA_PAGE:
            raise ParquetError(f"{where}: column {name!r} has a {_PAGE_NAMES.get(page_type, page_type)} page; "
                               "this reader reads v1 data pages only (install pyarrow to read such files)")
        size = _need(header, 3, "a page size", where)
        page_info = _need(header, 5, "a data page header", where)
        encoding = _need(page_info, 2, "a page encoding", where)
        if encoding != _PLAIN:
            raise ParquetError(f"{where}: column {name!r} uses {_ENCODING_NAMES.get(encoding, encoding)} encoding; "
                               "this reader reads PLAIN only (install pyarrow to read such files)")
        body = data[decoder.pos:decoder.pos + size]
        if len(body) != size:
            raise ParquetError(f"{where}: column {name!r} page runs past the end of the file")
        values += _values(ctype, body, _need(page_info, 1, "a page value count", where), name, where)
        pos = decoder.pos + size
    if len(values) != wanted:
        raise ParquetError(f"{where}: column {name!r} holds {len(values)} values; its metadata says {wanted}")
    return values


def read_table(path: str | Path) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """Read a file `write_table` wrote: ([(name, type)], [row dicts]). Other Parquet files raise ParquetError."""
    where = str(path)
    data = Path(path).read_bytes()
    if len(data) < 12 or data[:4] != MAGIC or data[-4:] != MAGIC:
        hint = " (its footer is encrypted)" if data[-4:] == b"PARE" else ""
        raise ParquetError(f"{where} is not a Parquet file{hint}: it must start and end with PAR1")
    (length,) = struct.unpack("<I", data[-8:-4])
    start = len(data) - 8 - length
    if start < 4:
        raise ParquetError(f"{where}: the footer length {length} does not fit the file (truncated?)")
    meta = _Decoder(data, start, where).struct()
    columns = _schema(_need(meta, 2, "a schema", where), where)
    num_rows = _need(meta, 3, "a row count", where)
    cells: list[list[Any]] = [[] for _ in columns]
    for group in _need(meta, 4, "row groups", where):
        chunks = _need(group, 1, "column chunks", where)
        if len(chunks) != len(columns):
            raise ParquetError(f"{where}: a row group has {len(chunks)} column chunks for {len(columns)} columns")
        group_rows = _need(group, 3, "a row group's row count", where)
        for (name, ctype), chunk, column in zip(columns, chunks, cells):
            values = _chunk(data, chunk, name, ctype, where)
            if len(values) != group_rows:
                raise ParquetError(f"{where}: column {name!r} has {len(values)} values in a row group of {group_rows} rows")
            column += values
    for (name, _), column in zip(columns, cells):
        if len(column) != num_rows:
            raise ParquetError(f"{where}: column {name!r} has {len(column)} values; the file says {num_rows} rows")
    names = [name for name, _ in columns]
    rows = [dict(zip(names, values)) for values in zip(*cells)] if columns else [{} for _ in range(num_rows)]
    return columns, rows
