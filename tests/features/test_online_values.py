"""Column-at-a-time serialization (seqops/features/online_values.py, byte_rows.py) byte for byte
against Feast's own per-value conversion, entity keys and timestamps."""

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import extract_text_and_num
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType as V
from google.protobuf.timestamp_pb2 import Timestamp

from seqops.features import online_values
from seqops.features.byte_rows import decimals, varints
from tests.features.conftest import entity_key

NAN = float("nan")
CASES = {
    V.INT64: pa.array([1, None, -5, 0, 2**40, 127, 128, -1]),  # with a null Feast goes through float64
    V.INT32: pa.array([1, None, -5, 0, 2**30, 300], pa.int32()),
    V.DOUBLE: pa.array([1.5, None, NAN, 0.0, -2.25, float("inf"), 1e-300]),
    V.FLOAT: pa.array([1.1, None, NAN, 0.0, -2.25], pa.float32()),
    V.STRING: pa.array(["a", None, "", "héllo", "x" * 300]),
    V.BYTES: pa.array([b"a", None, b"", b"\x00\xff" * 100]),
    V.BOOL: pa.array([True, None, False, True]),
    # Feast 0.67 raises on a null inside an integer list; none here.
    V.INT64_LIST: pa.array([[1, 2, -3], None, [], [4, 5], [2**60] * 70, [-1]]),
    V.INT32_LIST: pa.array([[1, 2, -3], None, [], [300, 5]], pa.list_(pa.int32())),
    V.DOUBLE_LIST: pa.array([[1.5, NAN], None, [], [None, 2.0]]),
    V.FLOAT_LIST: pa.array([[1.5, 0.1], None, [], [None, 2.0]], pa.list_(pa.float32())),
    V.STRING_LIST: pa.array([["view", "cart"], None, [], [None, "x"], ["é" * 200]]),
    V.BYTES_LIST: pa.array([[b"a", b""], None, [], [None, b"x"]]),
    V.BOOL_LIST: pa.array([[True, False], None, [], [None, True]]),
}
rng = np.random.default_rng(0)
# Many rows of a few values: the string encoder's category path (equal- and unequal-sized values).
CASES_MANY = {
    V.STRING_LIST: pa.array([list(rng.choice(["view", "cart"], int(rng.integers(0, 6)))) for _ in range(300)]),
    V.BYTES_LIST: pa.array([list(rng.choice([b"view", b"purchase"], int(rng.integers(0, 6)))) for _ in range(300)]),
    V.STRING: pa.array(list(rng.choice(["view", "purchase", None], 300))),
    V.INT64_LIST: pa.array([list(rng.integers(-(2**40), 2**40, int(rng.integers(0, 6)))) for _ in range(300)]),
}


def feast_bytes(column: pa.Array, value_type: V) -> tuple[list[bytes], list]:
    protos = python_values_to_proto_values(column.to_numpy(zero_copy_only=False), value_type)
    return [p.SerializeToString() for p in protos], [extract_text_and_num(p, False)[0] for p in protos]


@pytest.mark.parametrize(
    "value_type, column",
    [(vt, c) for vt, c in CASES.items()] + [(vt, c) for vt, c in CASES_MANY.items()],
    ids=[f"{vt.name}" for vt in CASES] + [f"{vt.name}-many" for vt in CASES_MANY],
)
def test_values_serialize_as_feast_serializes_them(value_type, column):
    for part in (column, column.slice(1), column.slice(1, len(column) - 2)):  # Arrow slices too
        values, texts = feast_bytes(part, value_type)
        assert online_values.serialized_values(part, value_type).to_list() == values
        assert online_values.value_texts(part, value_type) == texts


def test_entity_keys_timestamps_and_numbers_match_feast_and_protobuf():
    ids = np.array([1, 2, 255, 256, 2**40, -3, 0])
    prefix = online_values.int64_key_prefix("user_id", 3)
    keys = online_values.entity_keys(pa.array(ids), prefix).to_list()
    assert keys == [serialize_entity_key(entity_key(int(u)), 3) for u in ids]

    moments = [datetime(2026, 1, 1, 12, 0, 5, 123456, tzinfo=timezone.utc), datetime(1970, 1, 2, tzinfo=timezone.utc)]
    micros = online_values.event_micros(pa.array(moments, pa.timestamp("ns", tz="UTC")))
    expected = []
    for moment in moments:
        stamp = Timestamp()
        stamp.FromDatetime(moment)
        expected.append(stamp.SerializeToString())
    assert online_values.timestamp_protos(micros).to_list() == expected

    numbers = np.array([0, 9, 10, 99, 100, 12345, 10**12])
    assert decimals(numbers).to_list() == [str(n).encode() for n in numbers]
    from feast.protos.feast.types.Value_pb2 import Value

    assert varints(np.array([0, 1, 127, 128, -1, 2**63 - 1])).to_list() == [
        Value(int64_val=int(n)).SerializeToString()[1:] for n in [0, 1, 127, 128, -1, 2**63 - 1]
    ]
