"""Streaming the sources into compact per-row arrays (`Rows`) with the row checks' reasons.

Each file is read block by block (`blocks.read_blocks`, parsed in a background thread by
`prefetch`); a block's ids become int codes (`vocab.IdEncoder`), its times int64 µs, its event
types small ints, and the rows that fail a row check keep their raw text for the quarantine.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from queue import Empty, Queue

import numpy as np
import pandas as pd
import pyarrow as pa

from seqops.config import IngestParams
from seqops.features import cleaning
from seqops.features.blocks import first_data_line, read_blocks
from seqops.features.cleaning import REASONS
from seqops.features.layouts import IngestError, Source
from seqops.features.quarantine import FileRead, raw_rows
from seqops.features.vocab import IdEncoder
from seqops.io import file_md5

_DONE = object()


def prefetch(blocks: Iterator, depth: int = 2) -> Iterator:
    """Iterate `blocks` in a background thread, `depth` ahead: Arrow parses the next block (without
    the GIL) while the caller cleans this one. Errors surface in the caller, at the same place."""
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for block in blocks:
                if stop.is_set():
                    return
                queue.put(block)
            queue.put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            queue.put(exc)

    thread = threading.Thread(target=produce, name="ingest-reader", daemon=True)
    thread.start()
    try:
        while (item := queue.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                queue.get_nowait()
            except Empty:
                thread.join(0.01)


@dataclass
class Rows:
    """Every parsed row, in file order, as compact arrays (codes index the unique raw values)."""

    user: np.ndarray  # int32 code into user_ids (-1: missing)
    item: np.ndarray  # int32 code into item_ids (-1: missing)
    category: np.ndarray | None  # int32 code into category_names (-1: none); None: no category field
    ts: np.ndarray  # int64 µs since the epoch (NO_TIME: unparseable)
    event: np.ndarray  # int8 index into event_types (-1: unknown)
    value: np.ndarray | None  # float64; None: no value field
    reason: np.ndarray  # int8 reason code, 0 = passes the row checks
    user_ids: pa.Array
    item_ids: pa.Array
    category_names: pa.Array


class Reader:
    """Streams the sources into compact per-row arrays and row-check reasons."""

    def __init__(self, p: IngestParams, latest_us: int, hasher: ThreadPoolExecutor):
        self.p, self.latest_us, self.hasher = p, latest_us, hasher
        self.users, self.items, self.categories = IdEncoder(), IdEncoder(), IdEncoder()
        self.parts: dict[str, list[np.ndarray]] = {"ts": [], "event": [], "value": [], "reason": []}
        self.rejected: list[pa.Table] = []  # row-check rejects: raw text + file + index in file
        self.files: list[FileRead] = []
        self.row_count = 0
        self.start_us = int(pd.Timestamp(p.sasrec_start, tz="UTC").value // 1000)

    def read(self, source: Source) -> None:
        f = FileRead(source.path, first_data_line(source), start=self.row_count)
        f.md5 = self.hasher.submit(file_md5, source.path)
        self.files.append(f)
        for block in prefetch(read_blocks(source, f.malformed, self.p.block_mb)):
            reasons = self._block(block, source, len(self.files) - 1, f.rows)
            if f.rows == 0:
                check_readable(source, f, block, reasons)
            f.rows += len(reasons)
            self.row_count += len(reasons)
        if f.rows == 0:
            check_readable(source, f, {}, np.zeros(0, np.int8))

    def _block(self, block: dict[str, pa.Array], source: Source, file_index: int, offset: int) -> np.ndarray:
        layout, n = source.layout, len(block["user"])
        integer = layout.integer_ids
        missing_user, missing_item = self.users.add(block["user"], integer), self.items.add(block["item"], integer)
        if "category" in block:
            self.categories.add(block["category"])
        if layout.time_unit == "row":  # no times in the file: keep the order, one second apart
            ts = self.start_us + (self.row_count + np.arange(n, dtype=np.int64)) * 1_000_000
        else:
            ts = cleaning.parse_time(block["time"], layout.time_unit)
        event = cleaning.event_codes(block.get("event"), n, self.p.event_types, layout.event_map, layout.default_event)
        value, bad_value = cleaning.parse_value(block.get("value"), n)
        reasons = cleaning.row_reasons(missing_user, missing_item, ts, event, bad_value, self.latest_us)
        for name, array in (
            ("ts", ts),
            ("event", event),
            ("value", value if "value" in block else None),
            ("reason", reasons),
        ):
            if array is not None:
                self.parts[name].append(array)
        bad = np.flatnonzero(reasons)
        if len(bad):
            self.rejected.append(raw_rows(block, bad, reasons[bad], file_index, offset))
        return reasons

    def finish(self) -> Rows:
        (user, user_ids), (item, item_ids) = self.users.finish(), self.items.finish()
        category, names = self.categories.finish() if self.categories.parts else (None, pa.array([], pa.string()))
        value = concat(self.parts["value"], np.float64) if self.parts["value"] else None
        return Rows(
            user,
            item,
            category,
            concat(self.parts["ts"], np.int64),
            concat(self.parts["event"], np.int8),
            value,
            concat(self.parts["reason"], np.int8),
            user_ids,
            item_ids,
            names,
        )


def check_readable(source: Source, f: FileRead, block: dict[str, pa.Array], reasons: np.ndarray) -> None:
    """The first block of a file with no readable row means a wrong format or mapping: fail at once."""
    if (reasons == 0).any() or not (len(reasons) or f.malformed.lines):
        return
    layout, name = source.layout, source.path.name
    hint = "(no row of the first block is readable: wrong --format or ingest.csv mapping?)"
    if not len(reasons):
        line, text = f.malformed.lines[0], f.malformed.texts[0]
        raise IngestError(f"{name} line {line}: expected {layout.describe()}, found {text[:120]!r} {hint}")
    reason = REASONS[reasons[0] - 1]
    role = {
        "missing_user_id": "user",
        "missing_item_id": "item",
        "bad_timestamp": "time",
        "negative_timestamp": "time",
        "future_timestamp": "time",
        "unknown_event_type": "event",
        "bad_value": "value",
    }[reason]
    column = layout.roles.get(role, role)
    value = block[role][0].as_py() if role in block else layout.default_event
    what = {"time": f"a time in unit {layout.time_unit!r}", "event": "an event type in ingest.event_types"}.get(
        role, ""
    )
    line = int(f.lines(np.zeros(1, np.int64))[0])
    raise IngestError(
        f"{name} line {line}: column {column!r}: {value!r} is {reason.replace('_', ' ')}"
        f"{' (expected ' + what + ')' if what else ''} {hint}"
    )


def concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)
