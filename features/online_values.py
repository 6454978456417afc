"""Feast's online-store serialization, a column at a time: each feature's ValueProto bytes (what
`SerializeToString()` gives for the value Feast's own conversion builds, nulls and NaN included),
the entity keys (Feast's `serialize_entity_key`), event times as Feast stores them. Materialize
writes a batch with these instead of one protobuf object per value (Feast's own path spends most
of its time there)."""

from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType

from seqops.features.byte_rows import ByteRows, concat_rows, const, fixed, from_arrow, take, varints

# value type -> (the Value oneof field Feast sets, the Arrow type of the value or list element)
SCALARS = {
    ValueType.INT32: ("int32_val", pa.int32()),
    ValueType.INT64: ("int64_val", pa.int64()),
    ValueType.BOOL: ("bool_val", pa.bool_()),
    ValueType.FLOAT: ("float_val", pa.float32()),
    ValueType.DOUBLE: ("double_val", pa.float64()),
    ValueType.STRING: ("string_val", pa.string()),
    ValueType.BYTES: ("bytes_val", pa.binary()),
}
LISTS = {
    ValueType.INT32_LIST: ("int32_list_val", pa.int32()),
    ValueType.INT64_LIST: ("int64_list_val", pa.int64()),
    ValueType.BOOL_LIST: ("bool_list_val", pa.bool_()),
    ValueType.FLOAT_LIST: ("float_list_val", pa.float32()),
    ValueType.DOUBLE_LIST: ("double_list_val", pa.float64()),
    ValueType.STRING_LIST: ("string_list_val", pa.string()),
    ValueType.BYTES_LIST: ("bytes_list_val", pa.binary()),
}
TEXT_TYPES = {ValueType.INT32, ValueType.INT64, ValueType.FLOAT, ValueType.DOUBLE, ValueType.BOOL, ValueType.STRING}
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_REPEATED_VAL = b"\x0a"  # field 1 (`val`) of Int64List, StringList, ...: length-delimited


def supported(value_type: ValueType) -> bool:
    return value_type in SCALARS or value_type in LISTS


def _wire_type(element: pa.DataType) -> int:
    if pa.types.is_integer(element) or pa.types.is_boolean(element):
        return _VARINT
    return {pa.float32(): _FIXED32, pa.float64(): _FIXED64}.get(element, _LEN)


def _tag(field: str, wire_type: int) -> bytes:
    number = ValueProto.DESCRIPTOR.fields_by_name[field].number
    return varints(np.array([number << 3 | wire_type])).to_bytes()


def _elements(values: pa.Array, element: pa.DataType) -> ByteRows:
    """Each non-null value in its wire form (with the length prefix for strings and bytes)."""
    wire = _wire_type(element)
    if wire == _VARINT:
        return varints(values.to_numpy(zero_copy_only=False).astype(np.int64))
    if wire in (_FIXED32, _FIXED64):
        return fixed(values.to_numpy(zero_copy_only=False), "<f4" if wire == _FIXED32 else "<f8")
    return _length_delimited(values)


def _length_delimited(values: pa.Array, prefix: bytes = b"") -> ByteRows:
    """`prefix` + varint length + bytes of each string; a column of few distinct values (event
    types) is encoded once per value and gathered."""
    coded = pc.dictionary_encode(values)
    if len(coded.dictionary) * 8 < len(values):
        table = _length_delimited(coded.dictionary, prefix)
        return take(table, coded.indices.to_numpy(zero_copy_only=False))
    raw = from_arrow(values)
    return concat_rows([const(prefix, len(raw)), varints(raw.sizes), raw])


def _default(element: pa.DataType) -> pa.Scalar:
    """What Feast makes of a null inside a list: NaN in a float list (Arrow hands it NaN), False,
    "" or b"" (its defaults); 0 in an integer list, where Feast 0.67 itself raises a TypeError."""
    if pa.types.is_floating(element):
        return pa.scalar(float("nan"), element)
    if pa.types.is_boolean(element):
        return pa.scalar(False)
    if pa.types.is_string(element):
        return pa.scalar("")
    if pa.types.is_binary(element):
        return pa.scalar(b"")
    return pa.scalar(0, element)


def serialized_values(column: pa.Array, value_type: ValueType) -> ByteRows:
    """`ValueProto.SerializeToString()` of each value, as Feast converts it: a null (or NaN) scalar
    and a null list are an empty Value, a null inside a list becomes `_default`."""
    if value_type in SCALARS:
        field, element = SCALARS[value_type]
        values = column.cast(element)
        keep = pc.invert(pc.is_null(values, nan_is_null=True)).to_numpy(zero_copy_only=False)
        if value_type == ValueType.BYTES and not pc.max(pc.binary_length(values)).as_py():
            keep[:] = False  # Feast: a column of only null and b"" has no sample, all values are empty
        encoded = _elements(values.fill_null(_default(element)), element)
        return concat_rows([const(_tag(field, _wire_type(element)), len(values)), encoded], keep)
    field, element = LISTS[value_type]
    lists = column.cast(pa.large_list(element))
    bounds = np.frombuffer(lists.buffers()[1], np.int64)[lists.offset : lists.offset + len(lists) + 1]
    flat = lists.values.slice(bounds[0], bounds[-1] - bounds[0]).fill_null(_default(element))  # this slice's only
    bounds = bounds - bounds[0]
    if _wire_type(element) == _LEN:  # repeated strings: each element is a field-1 entry
        header, body = None, _length_delimited(flat, _REPEATED_VAL).grouped(bounds)
    else:  # packed numbers: one field-1 entry holding them all, absent for an empty list
        body = _elements(flat, element).grouped(bounds)
        header = concat_rows([const(_REPEATED_VAL, len(lists)), varints(body.sizes)], body.sizes > 0)
    inner = [body] if header is None else [header, body]
    keep = pc.is_valid(lists).to_numpy(zero_copy_only=False)
    size = varints(sum(part.sizes for part in inner))
    return concat_rows([const(_tag(field, _LEN), len(lists)), size, *inner], keep)


def value_texts(column: pa.Array, value_type: ValueType) -> list[str | None]:
    """The `value_text` column of Feast's SQLite store: the string or `str()` of a scalar number
    or bool, None for lists, bytes and nulls."""
    if value_type not in TEXT_TYPES:
        return [None] * len(column)
    values = column.cast(SCALARS[value_type][1])
    if value_type == ValueType.STRING:
        return values.to_pylist()
    missing = pc.is_null(values, nan_is_null=True).to_pylist()
    return [None if gone else str(value) for value, gone in zip(values.to_pylist(), missing)]


def int64_key_prefix(join_key: str, version: int) -> bytes:
    """Feast's serialized entity key of a single INT64 join key is a constant prefix and the
    value's 8 little-endian bytes; the prefix comes from Feast's own `serialize_entity_key`."""

    def key(value: int) -> bytes:
        return serialize_entity_key(
            EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(int64_val=value)]), version
        )

    prefix = key(0)[:-8]
    if any(key(v) != prefix + struct.pack("<q", v) for v in (0, 1, -2, 2**40 + 3)):
        raise ValueError(f"unexpected entity key layout (serialization version {version})")
    return prefix


def entity_keys(ids: pa.Array, prefix: bytes) -> ByteRows:
    """Serialized entity keys of INT64 ids (see `int64_key_prefix`)."""
    values = ids.cast(pa.int64()).to_numpy(zero_copy_only=False)
    return concat_rows([const(prefix, len(values)), fixed(values, "<i8")])


def event_micros(column: pa.Array) -> np.ndarray:
    """Event times as UTC microseconds: Feast converts them to Python datetimes (nanoseconds are
    dropped); a naive time is taken as UTC, as Feast does."""
    unit = pa.timestamp("us", column.type.tz) if pa.types.is_timestamp(column.type) else pa.timestamp("us")
    return pc.cast(column, unit, safe=False).cast(pa.int64()).to_numpy(zero_copy_only=False)


def timestamp_protos(micros: np.ndarray) -> ByteRows:
    """`google.protobuf.Timestamp` bytes (seconds, nanos), as Feast's Redis store keeps event times."""
    seconds, rest = np.divmod(micros, 1_000_000)
    nanos = rest * 1000
    n = len(micros)
    return concat_rows(
        [
            concat_rows([const(b"\x08", n), varints(seconds)], seconds != 0),
            concat_rows([const(b"\x10", n), varints(nanos)], nanos != 0),
        ]
    )
