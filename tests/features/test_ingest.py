import json
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from seqops.config import IngestParams, Paths, SyntheticParams
from seqops.features.ingest import (
    EVENT_COLUMNS,
    QUARANTINE_COLUMNS,
    REASONS,
    IngestError,
    counts_table,
    ingest,
    write_outputs,
)
from seqops.features.synthetic import write_batch

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
NO_REPORT = IngestParams(data_report=False)  # write_outputs skips the Evidently summary: fast
T0 = 1767225600  # 2026-01-01T00:00:00Z
HEADER = "user_id,item_id,category,event_type,timestamp"
# line number → expected reason; the header is line 1
BAD_ROWS = {
    5: ("u1,i1,c1,view,1767225600,extra", "malformed_row"),
    6: (",i1,c1,view,1767225800", "missing_user_id"),
    7: ("u1, ,c1,view,1767225800", "missing_item_id"),
    8: ("u1,i1,c1,view,yesterday", "bad_timestamp"),
    9: ("u1,i1,c1,view,-5", "negative_timestamp"),
    10: ("u1,i1,c1,view,1893456000", "future_timestamp"),
    11: ("u1,i1,c1,click,1767225900", "unknown_event_type"),
    12: ("u1,i2,c1,view,1767225660", "duplicate"),
    13: ("u2,i1,c1,view,1767225600", "too_few_user_events"),
    14: ("u2,i2,c1,view,1767225700", "too_few_user_events"),
}
GOOD_ROWS = {
    2: "u1,i1,c1,view,1767225600",
    3: "u1,i2,c1,view,1767225660",
    4: "u1,i3,c1,cart,1767225720",
    15: "u1,i4,c2,purchase,1767300000",  # > 30 min later: a new session
}


@pytest.fixture
def hand_written(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    rows = {**{line: text for line, (text, _) in BAD_ROWS.items()}, **GOOD_ROWS}
    (raw / "events.csv").write_text("\n".join([HEADER, *(rows[i] for i in sorted(rows))]) + "\n")
    return raw, Paths(tmp_path)


def _ingest(raw, paths):
    return ingest(raw, NO_REPORT, paths, now=NOW)


def test_each_bad_row_is_quarantined_with_reason_and_line(hand_written):
    result = _ingest(*hand_written)
    q = result.quarantine
    assert list(q.columns) == QUARANTINE_COLUMNS
    assert dict(zip(q["line"], q["reason"])) == {line: reason for line, (_, reason) in BAD_ROWS.items()}
    assert (q["source_file"] == "events.csv").all()
    bad_ts = q.set_index("reason").loc["bad_timestamp"]
    assert (bad_ts["user_id"], bad_ts["timestamp"]) == ("u1", "yesterday")


def test_counts_add_up(hand_written):
    counts = _ingest(*hand_written).counts
    assert counts["read"] == 14
    assert counts["kept"] == len(GOOD_ROWS)
    assert counts["read"] == counts["kept"] + sum(counts[r] for r in REASONS)
    assert counts["too_few_user_events"] == 2 and counts["duplicate"] == 1
    assert "too_few_user_events" in counts_table(counts)


def test_canonical_events_contract(hand_written):
    events = _ingest(*hand_written).events
    assert list(events.columns) == EVENT_COLUMNS
    dtypes = events.dtypes.astype(str).to_dict()
    assert dtypes["user_id"] == dtypes["item_id"] == dtypes["session_id"] == "int64"
    assert dtypes["ts"] == "datetime64[us, UTC]"
    assert events["value"].isna().all()
    assert events["event_type"].tolist() == ["view", "view", "cart", "purchase"]
    assert events["ts"].iloc[0] == pd.Timestamp(T0, unit="s", tz="UTC")
    # a gap above session_gap_s starts a new session
    assert events["session_id"].tolist() == [1, 1, 1, 2]


def test_vocab_counts_quarantined_users_but_not_invalid_rows(hand_written):
    result = _ingest(*hand_written)
    # u2 has too few events but keeps an id, so a later batch cannot shift the ids after it
    assert dict(zip(result.users["raw_id"], result.users["user_id"])) == {"u1": 1, "u2": 2}
    assert result.items["raw_id"].tolist() == ["i1", "i2", "i3", "i4"]
    assert result.items["item_id"].tolist() == [1, 2, 3, 4]


def test_sessions_are_unique_across_users(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    rows = [f"u{u},i{k},c1,view,{T0 + 60 * k}" for u in (1, 2) for k in range(3)]
    (raw / "a.csv").write_text("\n".join([HEADER, *rows]))
    events = ingest(raw, IngestParams(), Paths(tmp_path), now=NOW).events
    assert events.groupby("user_id")["session_id"].nunique().tolist() == [1, 1]
    assert events["session_id"].nunique() == 2


def test_ids_stable_when_a_batch_is_appended(tmp_path):
    p = SyntheticParams(n_users=200, n_items=150, seed=3)
    raw, paths = tmp_path / "raw", Paths(tmp_path)
    write_batch(p, raw, 0)
    first = ingest(raw, NO_REPORT, paths, now=NOW)
    write_outputs(first, paths)
    write_batch(p.model_copy(update={"drift": 0.5}), raw, 1)  # brings new items
    both = ingest(raw, NO_REPORT, paths, now=NOW)

    for before, after, id_col in ((first.users, both.users, "user_id"), (first.items, both.items, "item_id")):
        merged = before.merge(after, on="raw_id", suffixes=("_before", ""))
        assert len(merged) == len(before)
        assert (merged[f"{id_col}_before"] == merged[id_col]).all()
        assert after[id_col].tolist() == list(range(1, len(after) + 1))
    assert len(both.items) > len(first.items)


def test_write_outputs_round_trip(hand_written):
    raw, paths = hand_written
    result = _ingest(raw, paths)
    write_outputs(result, paths)
    pd.testing.assert_frame_equal(pd.read_parquet(paths.events), result.events)
    pd.testing.assert_frame_equal(pd.read_parquet(paths.quarantine), result.quarantine)
    assert list(pd.read_parquet(paths.vocab / "users.parquet").columns) == ["raw_id", "user_id"]
    assert list(pd.read_parquet(paths.vocab / "items.parquet").columns) == ["raw_id", "item_id", "category", "title"]
    metrics = json.loads(paths.ingest_metrics.read_text())
    assert metrics == {**result.counts, "invalid": 7, "duplicates": 1, "filtered": 2, "stats": result.stats}


def test_events_file_keeps_statistics_only_for_numeric_columns(hand_written):
    """Issue 12: min/max of the dictionary-encoded text columns cost Arrow a pass over every row's
    text (most of the write at 10^7 rows) and no reader prunes on them; ids and times keep theirs."""
    import pyarrow.parquet as pq

    raw, paths = hand_written
    write_outputs(_ingest(raw, paths), paths)
    group = pq.ParquetFile(paths.events).metadata.row_group(0)
    with_stats = {group.column(k).path_in_schema for k in range(group.num_columns) if group.column(k).is_stats_set}
    assert with_stats == {"user_id", "item_id", "ts", "value", "session_id"}


def test_duplicates_are_counted_apart_from_bad_rows_in_each_file(hand_written):
    """Repeats are normal in click logs: neither bad data (`invalid`) nor a policy (`filtered`)."""
    (entry,) = _ingest(*hand_written).files
    assert (entry["rows_invalid"], entry["rows_duplicate"], entry["rows_quarantined"]) == (7, 1, 10)
    assert entry["rows_read"] == entry["rows_kept"] + entry["rows_quarantined"]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"user_id,item_id,event_type,timestamp\nu1,i1,view,1\n", "'category'"),
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "UTF-8"),
        (HEADER.encode() + b"\nu1,\xff\xfe,c1,view,1\n", "'item_id'"),
    ],
)
def test_unreadable_file_raises_ingest_error(tmp_path, content, message):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "broken.csv").write_bytes(content)
    with pytest.raises(IngestError, match="broken.csv") as err:
        ingest(raw, IngestParams(), Paths(tmp_path), now=NOW)
    assert message in str(err.value)


def test_no_files_raises(tmp_path):
    with pytest.raises(IngestError, match="no \\*.csv"):
        ingest(tmp_path, IngestParams(), Paths(tmp_path), now=NOW)


def test_header_only_file_adds_nothing(hand_written):
    raw, paths = hand_written
    (raw / "zz-empty.csv").write_text(HEADER + "\n")
    result = _ingest(raw, paths)
    assert result.counts["read"] == 14 and result.counts["kept"] == len(GOOD_ROWS)


def test_no_valid_rows_gives_empty_typed_events(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.csv").write_text(f"{HEADER}\nu1,i1,c1,view,{T0}\n")  # one event: too few
    result = ingest(raw, IngestParams(), Paths(tmp_path), now=NOW)
    assert len(result.events) == 0 and result.counts["too_few_user_events"] == 1
    assert result.events["user_id"].dtype == np.int64
    assert str(result.events["ts"].dtype) == "datetime64[us, UTC]"


def _write(tmp_path, rows: list[str]):
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    (raw / "a.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    return raw


def test_near_duplicates_collapse_a_burst_within_the_window(tmp_path):
    raw = _write(
        tmp_path,
        [
            f"u1,i1,c1,view,{T0}",
            f"u1,i1,c1,view,{T0 + 3}",
            f"u1,i1,c1,cart,{T0 + 4}",
            f"u1,i2,c1,view,{T0 + 5}",
            f"u1,i1,c1,view,{T0 + 6}",
            f"u1,i1,c1,view,{T0 + 100}",
        ],
    )
    burst = ingest(raw, IngestParams(duplicate_window_s=5), Paths(tmp_path), now=NOW)
    q = burst.quarantine
    assert dict(zip(q["line"], q["reason"])) == {3: "near_duplicate", 6: "near_duplicate"}  # 3 s after the previous
    assert burst.events["event_type"].tolist() == ["view", "cart", "view", "view"]
    exact_only = ingest(raw, IngestParams(), Paths(tmp_path), now=NOW)
    assert exact_only.counts["kept"] == 6


def test_kcore_repeats_until_users_and_items_both_hold(tmp_path):
    history = {"a": ["i1", "i2", "i3"], "b": ["i1", "i2", "i4"], "c": ["i1", "i2", "i3"]}
    raw = _write(
        tmp_path, [f"{u},{i},c1,view,{T0 + 60 * k}" for u, items in history.items() for k, i in enumerate(items)]
    )
    p = IngestParams(min_user_events=3, min_item_events=2)
    result = ingest(raw, p, Paths(tmp_path), now=NOW)
    # i4 has one event → out; then b has two → out; what is left is a 3-core
    assert result.counts["too_few_item_events"] == 1 and result.counts["too_few_user_events"] == 2
    assert result.counts["kept"] == 6
    once = ingest(raw, p.model_copy(update={"kcore_iterative": False}), Paths(tmp_path), now=NOW)
    assert once.counts["too_few_item_events"] == 1 and once.counts["too_few_user_events"] == 0


def test_statistics_of_the_kept_events(hand_written):
    stats = _ingest(*hand_written).stats
    assert stats["events"] == 4 and stats["users"] == 1 and stats["items"] == 4 and stats["sessions"] == 2
    assert stats["events_per_user_max"] == 4 and stats["type_share"]["view"] == 0.5
    assert stats["gap_s_p50"] == 60.0 and stats["first_ts"] == T0
