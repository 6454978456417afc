"""The quarantine: every rejected row with its source file, physical line and reason, and the
per-file entries (rows read, kept, quarantined) of the manifest.

Rows rejected by a row check keep their raw text (`raw_rows`, taken while the block is read); rows
rejected by a global step (duplicates, rating threshold, k-core) are written from their parsed
values. `FileRead.lines` maps a row's index among the parsed rows of a file back to its physical
line, skipping the malformed lines that never reached the blocks.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from seqops.features import cleaning
from seqops.features.cleaning import REASONS, code
from seqops.features.layouts import Malformed
from seqops.features.loaders import SYNTHETIC_COLUMNS

if TYPE_CHECKING:
    from seqops.features.reading import Rows

# raw text of the row (parsed values for rows rejected after parsing), where it came from, why
QUARANTINE_COLUMNS = [*SYNTHETIC_COLUMNS, "value", "source_file", "line", "reason", "detail"]
QUARANTINE_ROLES = {
    "user": "user_id",
    "item": "item_id",
    "category": "category",
    "event": "event_type",
    "time": "timestamp",
    "value": "value",
}
QUARANTINE_SCHEMA = pa.schema([(c, pa.int64() if c == "line" else pa.string()) for c in QUARANTINE_COLUMNS])


@dataclass
class FileRead:
    """One source file: where its rows start in the arrays, its malformed lines, its hash."""

    path: Path
    first_line: int
    start: int = 0
    rows: int = 0
    malformed: Malformed = field(default_factory=Malformed)
    md5: Future | None = None

    def lines(self, good_index: np.ndarray) -> np.ndarray:
        """Physical line of the good rows with these indices (within the file)."""
        bad = np.asarray(self.malformed.lines, dtype=np.int64) - self.first_line
        shift = np.searchsorted(bad - np.arange(len(bad)), good_index, side="right")
        return good_index + shift + self.first_line


def raw_rows(
    block: dict[str, pa.Array], rows: np.ndarray, reasons: np.ndarray, file_index: int, offset: int
) -> pa.Table:
    take = pa.array(rows)
    text = {
        column: pc.cast(block[role].take(take), pa.string()) if role in block else pa.nulls(len(rows), pa.string())
        for role, column in QUARANTINE_ROLES.items()
    }
    return pa.table(
        {
            **text,
            "file": pa.array(np.full(len(rows), file_index, np.int32)),
            "index": pa.array(rows + offset),
            "code": pa.array(reasons),
        }
    )


def quarantine_table(
    files: list[FileRead],
    rejected: list[pa.Table],
    rows: Rows,
    names: pa.Array,
    item_cat: np.ndarray,
    event_types: list[str],
) -> pa.Table:
    """Rejected rows of every kind with file, line and reason, sorted by file and line: the malformed
    lines of `files`, the row-check rejects (`rejected`: `raw_rows` tables) and the rows a global
    step rejected (`rows.reason` from `duplicate` on)."""
    parts = []
    for index, f in enumerate(files):
        if f.malformed.lines:
            m = len(f.malformed.lines)
            parts.append(
                pa.table(
                    {
                        "file": np.full(m, index, np.int32),
                        "line": np.asarray(f.malformed.lines, np.int64),
                        "reason": pa.array(["malformed_row"] * m),
                        "detail": pa.array(f.malformed.texts),
                    }
                )
            )
    parts += [_with_lines(table, files) for table in rejected]
    late = np.flatnonzero(rows.reason >= code("duplicate"))  # rejected after parsing: parsed values as text
    if len(late):
        category = item_cat[rows.item[late]]
        if rows.category is not None:
            category = np.where(rows.category[late] >= 0, rows.category[late], category)
        value = rows.value[late] if rows.value is not None else np.full(len(late), np.nan)
        parts.append(
            _with_lines(
                pa.table(
                    {
                        "user_id": rows.user_ids.take(pa.array(rows.user[late])),
                        "item_id": rows.item_ids.take(pa.array(rows.item[late])),
                        "category": names.take(pa.array(category)),
                        "event_type": pa.array(event_types).take(pa.array(rows.event[late])),
                        "timestamp": pc.cast(pa.array(rows.ts[late]).cast(pa.timestamp("us", "UTC")), pa.string()),
                        "value": pc.cast(pa.array(value, from_pandas=True), pa.string()),
                        "file": np.searchsorted([f.start for f in files], late, side="right").astype(np.int32) - 1,
                        "index": late,
                        "code": rows.reason[late],
                    }
                ),
                files,
                global_index=True,
            )
        )
    if not parts:
        return QUARANTINE_SCHEMA.empty_table()
    table = pa.concat_tables(parts, promote_options="default")
    table = table.take(pc.sort_indices(table, [("file", "ascending"), ("line", "ascending")]))
    table = table.append_column("source_file", pa.array([f.path.name for f in files]).take(table["file"]))
    return pa.table(
        {
            c: table[c] if c in table.column_names else pa.nulls(len(table), QUARANTINE_SCHEMA.field(c).type)
            for c in QUARANTINE_COLUMNS
        },
        schema=QUARANTINE_SCHEMA,
    )


def _with_lines(table: pa.Table, files: list[FileRead], global_index: bool = False) -> pa.Table:
    """Replace (file, index) by (file, line); `index` is within the file unless `global_index`."""
    file = table["file"].to_numpy()
    index = table["index"].to_numpy()
    line = np.empty(len(index), np.int64)
    for k in np.unique(file):
        at = file == k
        line[at] = files[k].lines(index[at] - (files[k].start if global_index else 0))
    reasons = np.asarray(REASONS, dtype=object)[table["code"].to_numpy() - 1]
    return (
        table.drop_columns(["index", "code"])
        .append_column("line", pa.array(line))
        .append_column("reason", pa.array(reasons, pa.string()))
    )


def file_entries(files: list[FileRead], kept: np.ndarray, reason: np.ndarray) -> list[dict]:
    """Per source file: what it is (name, path, size, md5) and its rows — read, kept, quarantined, and
    of those the bad data (`rows_invalid`, what the gate judges per new file) and the repeats."""
    invalid, repeats = ([code(r) for r in group] for group in (cleaning.DATA_ERRORS, cleaning.DUPLICATES))
    entries = []
    for f, rows_kept in zip(files, kept.tolist()):
        read = f.rows + len(f.malformed.lines)
        per_reason = np.bincount(reason[f.start : f.start + f.rows], minlength=len(REASONS) + 1)
        entries.append(
            {
                "name": f.path.name,
                "path": str(f.path.resolve()),
                "size": f.path.stat().st_size,
                "md5": f.md5.result(),
                "rows_read": read,
                "rows_kept": rows_kept,
                "rows_quarantined": read - rows_kept,
                "rows_invalid": len(f.malformed.lines) + int(per_reason[invalid].sum()),
                "rows_duplicate": int(per_reason[repeats].sum()),
            }
        )
    return entries


def reason_counts(files: list[FileRead], rows: Rows, n_kept: int) -> dict[str, int]:
    """read, kept and the rows per reason: read == kept + the sum over the reasons."""
    per_reason = np.bincount(rows.reason, minlength=len(REASONS) + 1)[1:]
    per_reason[0] = sum(len(f.malformed.lines) for f in files)  # never reach the arrays
    return {"read": len(rows.reason) + int(per_reason[0]), "kept": n_kept, **dict(zip(REASONS, map(int, per_reason)))}
