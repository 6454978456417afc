"""What a format says about its files: `Layout` (field names, separator, which field plays which
role, time unit, event names), `Source` (a file and its layout), `Plan` (what one ingest reads), and
`Malformed` (rows with a wrong number of fields, with their physical line)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

REQUIRED_ROLES = ("user", "item", "time")  # the roles every layout must fill (also event, value, category)


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
