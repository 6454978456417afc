"""Stream one event file block by block (memory does not grow with the file): CSV through
pyarrow's streaming reader, Parquet by row groups. Rows with a wrong number of fields never reach
the blocks; they go to `Malformed` with their physical line."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from seqops.features.layouts import IngestError, Malformed, Source

CSV_BLOCK_MB = 4  # larger CSV blocks parse slower (they leave the CPU cache): ingest.block_mb only lowers it


def _first_line(path: Path, encoding: str) -> str:
    try:
        with path.open("rb") as fh:
            raw = fh.readline()
    except OSError as exc:
        raise IngestError(f"{path.name}: cannot read ({exc.strerror})") from None
    try:
        return raw.decode("utf-8-sig" if encoding.lower().replace("_", "-") == "utf-8" else encoding)
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path.name} line 1: cannot read as {encoding.upper()} text (byte {exc.start})") from None


def field_names(source: Source) -> list[str]:
    """The file's field names (from the layout or its header line); checks the roles are there."""
    layout, path = source.layout, source.path
    if layout.parquet:
        names = pq.read_schema(path).names
    elif layout.fields:
        if not _first_line(path, layout.encoding):
            raise IngestError(f"{path.name}: empty file")
        names = list(layout.fields)
    else:
        first = _first_line(path, layout.encoding)
        if not first.strip():
            raise IngestError(f"{path.name}: empty file (no header row)")
        names = [name.strip().strip('"') for name in first.rstrip("\r\n").split(layout.delimiter)]
    missing = [name for role, name in layout.roles.items() if name not in names]
    if missing:
        where = "header" if not layout.fields else "layout"
        raise IngestError(f"{path.name}: missing required column {', '.join(map(repr, missing))} ({where}: {names})")
    return names


def first_data_line(source: Source) -> int:
    """Physical line number of the first data row (1 without a header, 2 with one; Parquet: row 1)."""
    return 2 if not source.layout.fields and not source.layout.parquet else 1


def read_blocks(source: Source, malformed: Malformed, block_mb: float) -> Iterator[dict[str, pa.Array]]:
    """Blocks of the role columns (raw text for CSV, as stored for Parquet), in file order."""
    names = field_names(source)
    wanted = list(dict.fromkeys(source.layout.roles.values()))
    by_name = {name: role for role, name in source.layout.roles.items()}
    types = {
        name: pa.dictionary(pa.int32(), pa.string()) if by_name[name] == "event" else pa.string() for name in wanted
    }
    try:
        for batch in _batches(source, names, types, malformed, block_mb):
            yield {by_name[name]: _flat(batch.column(name)) for name in wanted}
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError) as exc:
        raise IngestError(
            f"{source.path.name}: not readable as {source.layout.describe()}: {_name_column(str(exc), names)}"
        ) from None


def _flat(column) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _batches(source: Source, names: list[str], types: dict[str, pa.DataType], malformed: Malformed, block_mb: float):
    """Record batches of the wanted columns (`types`: text, the event type dictionary-encoded)."""
    layout = source.layout
    if layout.parquet:
        yield from pq.ParquetFile(source.path).iter_batches(
            batch_size=max(int(block_mb * 32_768), 1), columns=list(types)
        )
        return
    reader = pacsv.open_csv(
        source.path,
        # single-threaded: invalid rows then carry their physical line number
        read_options=pacsv.ReadOptions(
            use_threads=False,
            column_names=names,
            skip_rows=0 if layout.fields else 1,
            block_size=max(int(min(block_mb, CSV_BLOCK_MB) * (1 << 20)), 1 << 10),
            encoding=layout.encoding,
        ),
        parse_options=pacsv.ParseOptions(
            delimiter=layout.delimiter, invalid_row_handler=malformed, ignore_empty_lines=False
        ),
        # an empty field is null (a missing id, time, value), nothing else is: "NA" or "null" stay text
        convert_options=pacsv.ConvertOptions(
            include_columns=list(types),
            column_types=types,
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )
    yield from reader


def _name_column(message: str, names: list[str]) -> str:
    """Arrow reports 'CSV column #k'; say which column that is."""
    found = re.search(r"column #(\d+)", message)
    if found and int(found.group(1)) < len(names):
        return f"column {names[int(found.group(1))]!r}: {message}"
    return message
