"""Materialize's online write: batches of latest feature rows into Feast's online store, in the
store's own format, serialized a column at a time (seqops/features/online_values.py) instead of
Feast's one protobuf object and one statement or command per value.

- SQLite: Feast's own upsert statement, one `executemany` and one transaction per batch.
- Redis: Feast's rule kept (a row is written only when its event time is newer than the stored
  one): one pipelined HGET per key of the batch, then one pipelined HSET (and EXPIRE when the
  store sets a TTL) per newer row, each pipeline sent as one packed RESP write.
- Any other online store, a Redis cluster, or a view outside the fast path (several or non-INT64
  join keys, a created-timestamp column, a feature type without an encoder): Feast's own
  `write_to_online_store`, batch by batch.
Online reads (`get_online_features`) see exactly what Feast's own write leaves (tests/features/
test_online_write.py compares both on SQLite and Redis).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import pyarrow as pa
from feast.infra.online_stores.helpers import _mmh3
from feast.infra.online_stores.redis import RedisOnlineStore, RedisType, _versioned_fv_name
from feast.infra.online_stores.sqlite import SqliteOnlineStore, _quote_id, _table_id
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from seqops.features import online_values
from seqops.features.byte_rows import ByteRows, concat_rows, const, decimals
from seqops.io import crash_point

BatchWriter = Callable[[pa.Table], None]


@dataclass(frozen=True)
class RowLayout:
    """What the fast path needs of a view: its single INT64 join key, its features and their types."""

    join_key: str
    key_prefix: bytes  # serialized entity key without the 8 value bytes
    timestamp_field: str
    features: list[tuple[str, ValueType]]

    def keys(self, batch: pa.Table) -> ByteRows:
        return online_values.entity_keys(batch.column(self.join_key).combine_chunks(), self.key_prefix)

    def values(self, batch: pa.Table) -> list[ByteRows]:
        return [online_values.serialized_values(batch.column(name).combine_chunks(), vt) for name, vt in self.features]

    def in_key_order(self, rows: pa.Table) -> pa.Table:
        """The rows sorted by serialized entity key (the 8 little-endian id bytes, compared as
        bytes): SQLite then adds to its indexes' B-trees in order, mostly at the end."""
        ids = rows.column(self.join_key).to_numpy().astype("<i8")
        return rows.take(np.argsort(ids.view(">u8"), kind="stable"))

    def micros(self, batch: pa.Table) -> np.ndarray:
        return online_values.event_micros(batch.column(self.timestamp_field).combine_chunks())


def row_layout(store, view) -> RowLayout | None:
    """The view's layout, or None when the fast path does not cover it."""
    entities = [store.get_entity(name) for name in view.entities]
    features = [(field.name, field.dtype.to_value_type()) for field in view.features]
    source = view.batch_source
    if (
        len(entities) != 1
        or entities[0].value_type != ValueType.INT64
        or source is None
        or source.created_timestamp_column
        or not all(online_values.supported(value_type) for _, value_type in features)
    ):
        return None
    join_key = entities[0].join_key
    prefix = online_values.int64_key_prefix(join_key, store.config.entity_key_serialization_version)
    return RowLayout(join_key, prefix, source.timestamp_field, features)


def write_rows(store, view, rows: pa.Table, batch_rows: int) -> None:
    """Write the rows batch by batch (a crash between batches leaves whole batches written)."""
    with online_writer(store, view) as (write, order):
        rows = order(rows)
        for offset in range(0, rows.num_rows, batch_rows):
            write(rows.slice(offset, batch_rows))
            crash_point("materialize-between-batches")


@contextmanager
def online_writer(store, view) -> Iterator[tuple[BatchWriter, Callable[[pa.Table], pa.Table]]]:
    """A function writing one batch of (join key, event timestamp, features) rows to the view,
    and the order to write the rows in."""
    online_store, layout = store._get_provider().online_store, row_layout(store, view)
    config = store.config.online_store
    if layout is not None and isinstance(online_store, SqliteOnlineStore) and sqlite_layout_ok(config):
        with sqlite_writer(store, view, layout) as write:
            yield write, layout.in_key_order
    elif layout is not None and isinstance(online_store, RedisOnlineStore) and config.redis_type == RedisType.redis:
        yield redis_writer(store, view, layout, online_store._get_client(config)), lambda rows: rows
    else:
        yield lambda batch: store.write_to_online_store(view.name, df=batch.to_pandas()), lambda rows: rows


def sqlite_layout_ok(config) -> bool:
    """The table has Feast's plain columns (no vector or numeric-value column to fill)."""
    return not config.vector_enabled and not getattr(config, "enable_openai_compatible_store", False)


@contextmanager
def sqlite_writer(store, view, layout: RowLayout) -> Iterator[BatchWriter]:
    config = store.config
    table = _quote_id(_table_id(config.project, view, config.registry.enable_online_feature_view_versioning))
    # Feast's statement (SqliteOnlineStore.online_write_batch), sent once per batch.
    upsert = (
        f"INSERT INTO {table} (entity_key, feature_name, value, value_text, event_ts, created_ts) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
        "value = excluded.value, value_text = excluded.value_text, event_ts = excluded.event_ts, "
        "created_ts = excluded.created_ts;"
    )
    names = [name for name, _ in layout.features]
    conn = sqlite3.connect(SqliteOnlineStore._get_db_path(config))
    conn.execute("PRAGMA cache_size = -262144")  # 256 MiB: a large table's indexes stay in memory

    def write(batch: pa.Table) -> None:
        n, width = batch.num_rows, len(names)
        if not n:
            return
        values, texts = np.empty((n, width), object), np.empty((n, width), object)
        for j, ((name, value_type), encoded) in enumerate(zip(layout.features, layout.values(batch))):
            values[:, j] = encoded.to_list()
            texts[:, j] = online_values.value_texts(batch.column(name).combine_chunks(), value_type)
        keys = np.repeat(np.array(layout.keys(batch).to_list(), object), width).tolist()
        stamps = np.repeat(sqlite_event_ts(layout.micros(batch)), width).tolist()
        rows = zip(keys, names * n, values.ravel().tolist(), texts.ravel().tolist(), stamps, repeat(None))
        with conn:  # one transaction per batch, as Feast commits one per write
            conn.executemany(upsert, rows)

    try:
        yield write
    finally:
        conn.close()


def sqlite_event_ts(micros: np.ndarray) -> np.ndarray:
    """Feast's SQLite `event_ts`: `int(naive_utc_datetime.timestamp())` (its registered adapter,
    which reads the naive UTC time in the machine's local zone), computed per row the same way."""
    from feast.infra.online_stores.sqlite import adapt_datetime_epoch

    naive = pa.array(micros, pa.timestamp("us")).to_pylist()
    return np.array([adapt_datetime_epoch(moment) for moment in naive], np.int64)


def redis_writer(store, view, layout: RowLayout, client) -> BatchWriter:
    config = store.config
    view_name = _versioned_fv_name(view, config)
    ts_field = f"_ts:{view_name}".encode()
    fields = [_mmh3(f"{view_name}:{name}") for name, _ in layout.features]
    project, ttl = config.project.encode(), config.online_store.key_ttl_seconds

    def redis_keys(batch: pa.Table) -> ByteRows:  # Feast's _redis_key: entity key + project
        keys = layout.keys(batch)
        return concat_rows([keys, const(project, len(keys))])

    def write(batch: pa.Table) -> None:
        if not batch.num_rows:
            return
        keys, micros = redis_keys(batch), layout.micros(batch)
        if not config.online_store.skip_dedup:
            stored = stored_nanos(pipelined(client, resp_commands([b"HGET", keys, ts_field]), len(keys)))
            newer = (stored == 0) | (micros * 1000 > stored)
            if not newer.all():
                rows = np.flatnonzero(newer)
                batch, micros = batch.take(rows), micros[rows]
                keys = redis_keys(batch)
        if not len(micros):
            return
        args: list[ByteRows | bytes] = [b"HSET", keys, ts_field, online_values.timestamp_protos(micros)]
        for field, encoded in zip(fields, layout.values(batch)):
            args += [field, encoded]
        commands = [resp_commands(args)]
        if ttl:
            commands.append(resp_commands([b"EXPIRE", keys, str(ttl).encode()]))
        pipelined(client, concat_rows(commands), len(micros) * len(commands))

    return write


def stored_nanos(replies: list[bytes | None]) -> np.ndarray:
    """The stored event times (Timestamp protos) in nanoseconds; 0 where the key has none."""
    out = np.zeros(len(replies), np.int64)
    stamp = Timestamp()
    for i, raw in enumerate(replies):
        if raw:
            stamp.ParseFromString(raw)
            out[i] = stamp.seconds * 1_000_000_000 + stamp.nanos
    return out


def resp_commands(args: list[ByteRows | bytes]) -> ByteRows:
    """One Redis command (a RESP array of bulk strings) per row; a `bytes` argument is the same
    in every row, a `ByteRows` one holds each row's own."""
    n = next(len(arg) for arg in args if isinstance(arg, ByteRows))
    parts: list[ByteRows | bytes] = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
        else:
            parts += [b"$", decimals(arg.sizes), b"\r\n", arg, b"\r\n"]
    merged: list[ByteRows] = []
    text = b""
    for part in parts + [None]:  # neighbouring constants become one
        if isinstance(part, bytes):
            text += part
            continue
        if text:
            merged.append(const(text, n))
            text = b""
        if part is not None:
            merged.append(part)
    return concat_rows(merged)


def pipelined(client, commands: ByteRows, replies: int) -> list:
    """Send packed commands in one write on one of the client's connections and read the replies;
    an error reply raises (the connection is then dropped, with the replies still unread)."""
    conn = client.connection_pool.get_connection()
    try:
        conn.send_packed_command([commands.to_bytes()])
        return [conn.read_response() for _ in range(replies)]
    except BaseException:
        conn.disconnect()
        raise
    finally:
        client.connection_pool.release(conn)
