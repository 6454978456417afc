"""Event-log formats → blocks of raw columns, streamed; item metadata where a format has it.

A format says which files of a folder it reads (`plan`) and how their fields are laid out
(`Layout`: field names, separator, which field plays which role, time unit, event names).
The types live in layouts.py; `blocks.read_blocks` streams one file block by block.

Roles: user, item, time, event, value, category (user, item and time are required).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from seqops.config import INGEST_FORMATS, IngestParams
from seqops.features.blocks import read_blocks
from seqops.features.layouts import IngestError, Layout, Malformed, Plan, Source

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

TAOBAO_EVENTS = {"pv": "view", "buy": "purchase", "cart": "cart", "fav": "fav"}
RETAILROCKET_EVENTS = {"view": "view", "addtocart": "cart", "transaction": "purchase"}


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
