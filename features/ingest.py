"""Event logs → the canonical events table, id vocabularies and a quarantine of rejected rows.

Files are streamed block by block (`loaders`) into compact arrays (int codes, int64 µs times);
the global steps (duplicates, vocabularies, rating threshold, k-core, sessions) then run once on
those arrays (`cleaning`). Every row read ends up either in the events or in the quarantine with a
reason, its source file and line, so `counts["read"] == counts["kept"] + sum(counts[r] for r in REASONS)`.

Ids are dense ints from 1 (0 is padding). Vocabularies only grow: a raw id an earlier ingest wrote
(under `paths.vocab`) keeps its id whatever this run reads (a one-off `--path` file, late data), and
new raw ids get the ids after the largest, in order of first appearance (timestamp, then raw id).

This module is the pipeline (`ingest`, then `write_outputs` to publish); its parts live beside it:
`loaders` (formats → blocks of raw columns), `reading` (blocks → compact per-row arrays and the row
checks), `vocab` (raw ids → codes → vocabulary ids, the vocabulary tables), `cleaning` (the checks
and global steps on arrays), `quarantine` (rejected rows with file and line, per-file entries) and
`lineage` (the manifest and data report).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from seqops.config import IngestParams, Paths
from seqops.features import cleaning, erasure, lineage
from seqops.features.cleaning import REASONS, code
from seqops.features.layouts import IngestError, Plan
from seqops.features.loaders import SYNTHETIC_COLUMNS, plan
from seqops.features.quarantine import QUARANTINE_COLUMNS, file_entries, quarantine_table, reason_counts
from seqops.features.reading import Reader, Rows
from seqops.features.vocab import Known, first_row_category, item_categories, items_table, vocab_ids, vocab_table
from seqops.io import file_md5
from seqops.publish import publishing, settle

__all__ = [
    "EVENT_COLUMNS",
    "QUARANTINE_COLUMNS",
    "RAW_COLUMNS",
    "REASONS",
    "IngestError",
    "IngestResult",
    "counts_table",
    "ingest",
    "write_outputs",
]

RAW_COLUMNS = SYNTHETIC_COLUMNS  # the synthetic layout (what `seqops generate` writes)
EVENT_COLUMNS = ["user_id", "item_id", "ts", "event_type", "value", "category", "session_id"]
TEXT_EVENT_COLUMNS = ["event_type", "category"]  # dictionary-encoded

EVENTS_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("item_id", pa.int64()),
        ("ts", pa.timestamp("us", "UTC")),
        ("event_type", pa.string()),
        ("value", pa.float64()),
        ("category", pa.string()),
        ("session_id", pa.int64()),
    ]
)


def ingest(
    path: Path, p: IngestParams, paths: Paths, now: datetime | None = None, fmt: str | None = None
) -> IngestResult:
    """Read every source of `path` in format `fmt` (default `p.format`); clean; build the outputs.

    `now` (default: the wall clock) is the reference for `future_timestamp`. The vocabularies of a
    previous run (under `paths.vocab`) are grown: every id they hold is kept (IngestError when they
    cannot be, e.g. a raw id under two ids).
    """
    the_plan = plan(fmt or p.format, Path(path), p)
    settle_snapshot(paths)  # the vocabularies read next are one snapshot's
    erased = erasure.ErasureList.read(paths)  # users forgotten (`seqops forget-user`): dropped, not quarantined
    known = Known.read(paths)
    known = Known(erasure.known_users_without(known.users, erased), known.items)
    now_us = int(pd.Timestamp(now or datetime.now(timezone.utc)).value // 1000)
    with ThreadPoolExecutor(max_workers=1) as hasher:  # hashing overlaps parsing
        reader = Reader(p, now_us + p.future_tolerance_s * 1_000_000, hasher)
        for source in the_plan.sources:
            reader.read(source)
        result = _build(reader, the_plan, p, known, erased)
        result.meta_files = [
            {"name": f.name, "path": str(f.resolve()), "size": f.stat().st_size, "md5": file_md5(f)}
            for f in the_plan.meta_files
        ]
    return result


def write_outputs(result: IngestResult, paths: Paths) -> dict:
    """Publish one ingest, all or nothing; return its manifest.

    A result that kept no event is refused (IngestError) before anything is written. Events,
    quarantine, vocabularies, the metrics JSON (counts + stats), the manifest and, when
    `ingest.data_report`, the Evidently data summary are written to a staging folder and published
    together (`seqops.publish`): a failure or a kill before the commit point leaves the previous
    snapshot as it was, one after it is completed by the next ingest (`settle_snapshot`).
    """
    _check_publishable(result, paths)
    with publishing(staging_dir(paths), "ingest") as publication:
        events = publication.stage(paths.events)
        # dictionary-encoded types stay in the file, not in its schema: readers get plain strings
        # no min/max statistics for the text columns: arrow computes them from every row's value
        pq.write_table(
            result.events_table,
            events,
            store_schema=False,
            use_dictionary=TEXT_EVENT_COLUMNS,
            write_statistics=[c for c in EVENT_COLUMNS if c not in TEXT_EVENT_COLUMNS],
            column_encoding={c: "DELTA_BINARY_PACKED" for c in ("user_id", "ts", "session_id")},
        )
        pq.write_table(result.quarantine_table, publication.stage(paths.quarantine))
        pq.write_table(result.users_table, publication.stage(paths.vocab / "users.parquet"))
        pq.write_table(result.items_table, publication.stage(paths.vocab / "items.parquet"))
        publication.stage(paths.ingest_metrics).write_text(json.dumps(metrics_of(result), indent=2) + "\n")
        manifest = lineage.manifest_of(result, paths, result.params, file_md5(events))
        if result.params.data_report:
            html, json_path = lineage.report_files(paths, manifest["events_md5"])
            lineage.write_data_report(events, publication.stage(html), publication.stage(json_path))
        lineage.dump_manifest(manifest, publication.stage(lineage.manifest_path(paths)))  # last: it names the events
    return manifest


def staging_dir(paths: Paths) -> Path:
    """Where an ingest stages its outputs: beside the state folders, inside no DVC-tracked one."""
    return paths.home / "staging" / "ingest"


def settle_snapshot(paths: Paths) -> None:
    """Complete an ingest publication a kill interrupted after its commit point (and drop what one
    killed before it left), so what the next step reads is one whole snapshot."""
    settle(staging_dir(paths))


@dataclass
class IngestResult:
    """Canonical events, quarantine, vocabularies, counts per reason and statistics of one ingest."""

    events_table: pa.Table
    quarantine_table: pa.Table
    counts: dict[str, int]
    users_table: pa.Table
    items_table: pa.Table
    stats: dict = field(default_factory=dict)
    files: list[dict] = field(default_factory=list)  # per source file: name, path, size, md5, rows
    meta_files: list[dict] = field(default_factory=list)
    format: str = "synthetic"
    params: IngestParams = field(default_factory=IngestParams)  # what it ran with (manifest, data report)

    @cached_property
    def events(self) -> pd.DataFrame:
        return self.events_table.cast(EVENTS_SCHEMA).to_pandas()

    @cached_property
    def quarantine(self) -> pd.DataFrame:
        return self.quarantine_table.to_pandas()

    @cached_property
    def users(self) -> pd.DataFrame:
        return self.users_table.to_pandas()

    @cached_property
    def items(self) -> pd.DataFrame:
        return self.items_table.to_pandas()


def _build(
    r: Reader, the_plan: Plan, p: IngestParams, known: Known, erased: erasure.ErasureList = erasure.ErasureList()
) -> IngestResult:
    rows = r.finish()
    erased_rows, r.rejected = erasure.mark_erased(rows, r.rejected, r.files, erased)
    n_valid = _park_invalid(rows)
    uid_of, iid_of = vocab_ids(rows, known)
    meta = the_plan.item_meta()
    row_cat = None if rows.category is None else first_row_category(rows.item, rows.category, len(rows.item_ids))
    names, item_cat = item_categories(rows, row_cat, meta)
    item_cat = np.append(item_cat, -1)  # the spare code

    kept = _clean(rows, n_valid, uid_of, iid_of, p)
    rows.reason[erased_rows] = 0  # neither kept nor quarantined: counted apart as `erased`
    session = cleaning.sessions(kept.user, kept.ts, p.session_gap_s)
    events = _events_table(rows, kept, iid_of, names, item_cat, session, p.event_types)
    stats = cleaning.statistics(kept.user, kept.item, kept.ts, kept.event, session, p.event_types, p.session_gap_s)
    kept_per_file = np.bincount(
        np.searchsorted([f.start for f in r.files], kept.at, side="right") - 1, minlength=len(r.files)
    )
    counts = reason_counts(r.files, rows, len(kept.at))
    files = file_entries(r.files, kept_per_file, rows.reason)
    if erased:
        counts["erased"] = int(erased_rows.sum())  # read == kept + the reasons + erased
        for f, entry in zip(r.files, files):
            entry["rows_erased"] = int(erased_rows[f.start : f.start + f.rows].sum())
            entry["rows_quarantined"] -= entry["rows_erased"]
    return IngestResult(
        events,
        quarantine_table(r.files, r.rejected, rows, names, item_cat, p.event_types),
        counts,
        vocab_table(uid_of[:-1], rows.user_ids, "user_id", known.users),
        items_table(iid_of[:-1], rows, names, item_cat, meta, known.items),
        stats=stats,
        files=files,
        format=the_plan.format,
        params=p,
    )


def _park_invalid(rows: Rows) -> int:
    """Give rows that failed a row check a spare user and item code (one past the last) and a
    harmless time, so the vocabulary and category steps run on whole arrays; returns the number of
    valid rows. (Their raw text is already kept for the quarantine.)"""
    invalid = rows.reason != 0
    n_valid = len(invalid) - int(invalid.sum())
    if n_valid < len(invalid):
        rows.user[invalid], rows.item[invalid] = len(rows.user_ids), len(rows.item_ids)
        rows.ts[invalid] = rows.ts[~invalid].min() if n_valid else 0
        if rows.category is not None:
            rows.category[invalid] = -1
    return n_valid


@dataclass
class Kept:
    """The kept events, sorted by (user id, time): row positions and their canonical columns."""

    at: np.ndarray  # row positions (into `Rows`)
    user: np.ndarray  # user ids (vocabulary)
    item: np.ndarray  # item ids (vocabulary)
    ts: np.ndarray
    event: np.ndarray


def _clean(rows: Rows, n_valid: int, uid_of: np.ndarray, iid_of: np.ndarray, p: IngestParams) -> Kept:
    """Duplicates, rating threshold and k-core on the valid rows; their reasons land in `rows.reason`."""
    # only the valid rows are ordered: a parked row inside a user's run would split the run
    valid = np.flatnonzero(rows.reason == 0) if n_valid < len(rows.reason) else None
    valid_user = uid_of[rows.user if valid is None else rows.user[valid]]
    valid_ts = rows.ts if valid is None else rows.ts[valid]
    order = cleaning.user_time_order(valid_user, valid_ts)
    at = order if valid is None else valid[order]
    user, ts, item, event = valid_user[order], valid_ts[order], iid_of[rows.item[at]], rows.event[at]
    reason = cleaning.duplicates(user, item, event, ts, int(p.duplicate_window_s * 1e6))
    if rows.value is not None and p.rating_threshold is not None and p.below_threshold == "quarantine":
        reason[(reason == 0) & (rows.value[at] < p.rating_threshold)] = code("below_rating_threshold")
    if (reason == 0).all():
        reason = cleaning.kcore(user, item, p.min_user_events, p.min_item_events, p.kcore_iterative)
    else:
        alive = np.flatnonzero(reason == 0)
        reason[alive] = cleaning.kcore(
            user[alive], item[alive], p.min_user_events, p.min_item_events, p.kcore_iterative
        )
    rows.reason[at] = reason
    keep = reason == 0
    if keep.all():
        return Kept(at, user, item, ts, event)
    return Kept(at[keep], user[keep], item[keep], ts[keep], event[keep])


def _events_table(
    rows: Rows,
    kept: Kept,
    iid_of: np.ndarray,
    names: pa.Array,
    item_cat: np.ndarray,
    session: np.ndarray,
    event_types: list[str],
) -> pa.Table:
    """The canonical events (EVENT_COLUMNS); event type and category dictionary-encoded."""
    by_iid = np.zeros(int(iid_of.max(initial=0)) + 1, dtype=np.int64)
    by_iid[iid_of] = item_cat  # category code by item id (unused id 0 takes the codes without an id)
    category = by_iid[kept.item]
    if rows.category is not None:  # the row's own category where it has one
        own = rows.category[kept.at]
        category = own if (own >= 0).all() else np.where(own >= 0, own, category)
    value = rows.value[kept.at] if rows.value is not None else np.full(len(kept.ts), np.nan)
    return pa.table(
        {
            "user_id": pa.array(kept.user, pa.int64()),
            "item_id": pa.array(kept.item, pa.int64()),
            "ts": pa.array(kept.ts, pa.int64()).cast(pa.timestamp("us", "UTC")),
            "event_type": pa.DictionaryArray.from_arrays(pa.array(kept.event), pa.array(event_types, pa.string())),
            "value": pa.array(value),
            "category": pa.DictionaryArray.from_arrays(pa.array(category.astype(np.int32)), names),
            "session_id": pa.array(session),
        }
    )


def _check_publishable(result: IngestResult, paths: Paths) -> None:
    """An ingest that kept no event would replace the project's data with nothing: refuse it."""
    counts = result.counts
    if counts["kept"]:
        return
    why = ", ".join(f"{counts[r]:,} {r}" for r in REASONS if counts.get(r)) or "no data rows"
    if counts.get("too_few_user_events"):
        why += f" (k-core: ingest.min_user_events is {result.params.min_user_events})"
    read = counts["read"]
    raise IngestError(
        f"no event kept of {read:,} row{'' if read == 1 else 's'} read ({why}); nothing was written: "
        f"the previous snapshot in {paths.events.parent} is unchanged"
    )


def metrics_of(result: IngestResult) -> dict:
    """The DVC metric: counts per reason at the top (what `dvc metrics diff` compares), then the rows
    rejected as bad data (`invalid`) apart from repeats (`duplicates`: exact and near duplicates,
    normal in click logs) and from those a cleaning policy removed (`filtered`: rating threshold,
    k-core), then the statistics of the kept events."""
    counts = result.counts
    return {
        **counts,
        "invalid": sum(counts[r] for r in cleaning.DATA_ERRORS),
        "duplicates": sum(counts[r] for r in cleaning.DUPLICATES),
        "filtered": sum(counts[r] for r in cleaning.FILTERS),
        "stats": result.stats,
    }


def counts_table(counts: dict[str, int]) -> str:
    """A small aligned text table: read, kept, then each reason that rejected rows."""
    read = max(counts.get("read", 0), 1)
    rows = [("read", counts.get("read", 0)), ("kept", counts.get("kept", 0))]
    rows += [(f"  {r}", counts[r]) for r in REASONS if counts.get(r)]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {n:>12,}  {n / read:6.1%}" for name, n in rows)
