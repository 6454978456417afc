"""Event-log formats → blocks of raw columns, streamed; item metadata where a format has it.

A format says which files of a folder it reads (`plan`) and how their fields are laid out
(`Layout`: field names, separator, which field plays which role, time unit, event names).
`read_blocks` streams one file block by block (memory does not grow with the file); rows with a
wrong number of fields never reach the blocks, they go to `Malformed` with their physical line.

Roles: user, item, time, event, value, category (user, item and time are required).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from seqops.config import INGEST_FORMATS, IngestParams

REQUIRED_ROLES = ("user", "item", "time")
SYNTHETIC_COLUMNS = ["user_id", "item_id", "category", "event_type", "timestamp"]
META_COLUMNS = ["raw_id", "category", "title"]
ML100K_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]
CSV_BLOCK_MB = 4  # larger CSV blocks parse slower (they leave the CPU cache): ingest.block_mb only lowers it
TAOBAO_EVENTS = {"pv": "view", "buy": "purchase", "cart": "cart", "fav": "fav"}
RETAILROCKET_EVENTS = {"view": "view", "addtocart": "cart", "transaction": "purchase"}


class IngestError(ValueError):
    """A source cannot be read as a whole (missing, empty, wrong format or mapping); names the file."""


@dataclass(frozen=True)
class Layout:
    """How the fields of one file are laid out."""

    roles: Mapping[str, str]  # role → field name
    fields: tuple[str, ...] | None = None  # names in file order; None: the header line names them
    delimiter: str = ","
    time_unit: str = "s"  # s | ms | us | iso | row (no times in the file: synthesized from the row order)
    event_map: Mapping[str, str] | None = None  # raw type (lower-case) → canonical; None: as written
    default_event: str | None = None  # every row's type when there is no event field
    encoding: str = "utf-8"
    parquet: bool = False
    integer_ids: bool = False  # ids are integers by the format's definition: "007" is the id 7

    def describe(self) -> str:
        sep = {"\t": "tab", " ": "space"}.get(self.delimiter, repr(self.delimiter))
        return f"{len(self.fields)} fields {self.fields} separated by {sep}" if self.fields else "a header line"


@dataclass(frozen=True)
class Source:
    path: Path
    layout: Layout


@dataclass
class Plan:
    """What one ingest reads: event files, item-metadata files, and how to turn the latter into a table."""

    format: str
    sources: list[Source]
    meta_files: list[Path] = field(default_factory=list)
    load_meta: Callable[[list[Path]], pd.DataFrame] | None = None

    def item_meta(self) -> pd.DataFrame | None:
        """raw_id, category, title per item (strings), or None when the format has no metadata."""
        return self.load_meta(self.meta_files) if self.load_meta and self.meta_files else None


@dataclass
class Malformed:
    """Rows with a wrong number of fields: physical line numbers and text, in file order."""

    lines: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def __call__(self, row) -> str:  # pyarrow's invalid_row_handler
        self.lines.append(int(row.number))
        self.texts.append(row.text)
        return "skip"


# --- formats -------------------------------------------------------------------------------------


def _files(path: Path, pattern: str) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(f for f in path.glob(pattern) if f.is_file())
    if not files:
        raise IngestError(f"{path}: no {pattern} files to ingest")
    return files


def _one_of(path: Path, names: tuple[str, ...], fmt: str) -> Path:
    if path.is_file():
        return path
    for name in names:
        if (path / name).is_file():
            return path / name
    raise IngestError(f"{path}: no {fmt} event file (looked for {', '.join(names)})")


def _synthetic(path: Path, p: IngestParams) -> Plan:
    roles = {"user": "user_id", "item": "item_id", "category": "category", "event": "event_type", "time": "timestamp"}
    return Plan("synthetic", [Source(f, Layout(roles)) for f in _files(path, "*.csv")])


def _taobao(path: Path, p: IngestParams) -> Plan:
    layout = Layout(
        {"user": "user", "item": "item", "category": "category", "event": "behavior", "time": "time"},
        fields=("user", "item", "category", "behavior", "time"),
        event_map=TAOBAO_EVENTS,
        integer_ids=True,
    )
    return Plan("taobao", [Source(f, layout) for f in _files(path, "*.csv")])


def _retailrocket(path: Path, p: IngestParams) -> Plan:
    events = _one_of(path, ("events.csv",), "retailrocket")
    layout = Layout(
        {"user": "visitorid", "item": "itemid", "event": "event", "time": "timestamp"},
        time_unit="ms",
        event_map=RETAILROCKET_EVENTS,
        integer_ids=True,
    )
    meta = sorted(events.parent.glob("item_properties*.csv"))
    return Plan("retailrocket", [Source(events, layout)], meta, _retailrocket_categories)


MOVIELENS = {  # event file → (its layout, the item file beside it)
    "u.data": (
        Layout(
            {"user": "user", "item": "item", "value": "rating", "time": "time"},
            fields=("user", "item", "rating", "time"),
            delimiter="\t",
            default_event="rating",
            integer_ids=True,
        ),
        "u.item",
    ),
    "ratings.dat": (
        Layout(
            {"user": "user", "item": "item", "value": "rating", "time": "time"},
            # `::` as ':' with an empty field between each pair
            fields=("user", "_1", "item", "_2", "rating", "_3", "time"),
            delimiter=":",
            default_event="rating",
            integer_ids=True,
        ),
        "movies.dat",
    ),
    "ratings.csv": (
        Layout(
            {"user": "userId", "item": "movieId", "value": "rating", "time": "timestamp"},
            default_event="rating",
            integer_ids=True,
        ),
        "movies.csv",
    ),
}


def _movielens(path: Path, p: IngestParams) -> Plan:
    events = _one_of(path, tuple(MOVIELENS), "movielens")
    if events.name not in MOVIELENS:
        raise IngestError(f"{events}: a movielens file is named one of {', '.join(MOVIELENS)}")
    layout, meta_name = MOVIELENS[events.name]
    meta = events.parent / meta_name
    return Plan("movielens", [Source(events, layout)], [meta] if meta.is_file() else [], _movielens_meta)


def _sasrec(path: Path, p: IngestParams) -> Plan:
    layout = Layout(
        {"user": "user", "item": "item"},
        fields=("user", "item"),
        delimiter=" ",
        time_unit="row",
        default_event="view",
        integer_ids=True,
    )
    return Plan("sasrec", [Source(f, layout) for f in _files(path, "*.txt")])


def _csv(path: Path, p: IngestParams) -> Plan:
    m = p.csv
    roles = {"user": m.user, "item": m.item, "time": m.time, "event": m.event, "value": m.value, "category": m.category}
    layout = Layout(
        {role: name for role, name in roles.items() if name},
        fields=tuple(m.names) if m.names and not m.header else None,  # a header names the columns
        delimiter=m.separator,
        time_unit=m.time_unit,
        event_map=m.event_map or None,
        default_event=m.default_event,
        encoding=m.encoding,
        parquet=m.pattern.endswith(".parquet"),
    )
    if not m.header and not m.names:
        raise IngestError("ingest.csv: header is false, so ingest.csv.names must list the column names")
    files = _files(path, m.pattern)
    return Plan("csv", [Source(f, _with_suffix(layout, f)) for f in files])


def _with_suffix(layout: Layout, path: Path) -> Layout:
    return replace(layout, parquet=path.suffix == ".parquet")


PLANNERS: dict[str, Callable[[Path, IngestParams], Plan]] = {
    "synthetic": _synthetic,
    "taobao": _taobao,
    "retailrocket": _retailrocket,
    "movielens": _movielens,
    "sasrec": _sasrec,
    "csv": _csv,
}
assert tuple(PLANNERS) == INGEST_FORMATS


def plan(fmt: str, path: Path, p: IngestParams) -> Plan:
    """The files a format reads from `path` (a file or a folder)."""
    if fmt not in PLANNERS:
        raise IngestError(f"unknown format {fmt!r}: one of {', '.join(PLANNERS)}")
    path = Path(path)
    if not path.exists():
        raise IngestError(f"{path}: not found")
    return PLANNERS[fmt](path, p)


# --- item metadata -------------------------------------------------------------------------------


def _meta(raw_id, category, title=None) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "raw_id": pd.Series(raw_id, dtype=object).astype(str).str.strip(),
            "category": pd.Series(category, dtype=object),
            "title": pd.Series(title, dtype=object),
        }
    )
    return frame.drop_duplicates("raw_id", keep="last").reset_index(drop=True)


def _first_genre(genres: pd.Series) -> pd.Series:
    first = genres.fillna("").astype(str).str.split("|").str[0].str.strip()
    return first.mask(first.isin(["", "(no genres listed)"]), None)


def _movielens_meta(files: list[Path]) -> pd.DataFrame:
    path = files[0]
    try:
        if path.name == "u.item":
            return _ml100k_items(path)
        if path.name == "movies.dat":
            lines = path.read_text(encoding="latin-1").splitlines()
            parts = [line.split("::") for line in lines if line.strip()]
            return _meta(
                [q[0] for q in parts],
                _first_genre(pd.Series([q[-1] for q in parts])),
                ["::".join(q[1:-1]) for q in parts],
            )
        movies = pd.read_csv(path, dtype=str, keep_default_na=False)
        return _meta(movies["movieId"], _first_genre(movies["genres"]), movies["title"])
    except (KeyError, IndexError, ValueError, pd.errors.ParserError) as exc:
        raise IngestError(f"{path.name}: not a movielens item file ({exc.__class__.__name__}: {exc})") from None


def _ml100k_items(path: Path) -> pd.DataFrame:
    items = pd.read_csv(path, sep="|", header=None, encoding="latin-1", dtype=str, keep_default_na=False)
    genre_file = path.parent / "u.genre"
    genres = ML100K_GENRES
    if genre_file.is_file():
        table = pd.read_csv(genre_file, sep="|", header=None, encoding="latin-1", dtype=str).dropna()
        genres = list(table.sort_values(1, key=lambda s: s.astype(int))[0])
    flags = items.iloc[:, -len(genres) :].astype(int).to_numpy()
    first = pd.Series([genres[row.argmax()] if row.any() else None for row in flags], dtype=object)
    return _meta(items[0], first, items[1])


def _retailrocket_categories(files: list[Path]) -> pd.DataFrame:
    """The latest `categoryid` property of each item, streamed from item_properties*.csv."""
    parts = []
    layout = Layout({"time": "timestamp", "item": "itemid", "property": "property", "value": "value"})
    for path in files:
        for block in read_blocks(Source(path, layout), Malformed(), block_mb=16):
            keep = pc.equal(block["property"], "categoryid")
            parts.append(pa.table({k: block[k].filter(keep) for k in ("time", "item", "value")}))
    if not parts:
        return _meta([], [])
    props = pa.concat_tables(parts).to_pandas()
    props["time"] = pd.to_numeric(props["time"], errors="coerce")
    latest = props.sort_values("time", kind="stable")
    return _meta(latest["item"], latest["value"])


# --- reading -------------------------------------------------------------------------------------


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
