"""The erasure list and what ingest does with it; the scrub of text and Parquet files."""

from datetime import datetime, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seqops.config import IngestParams, Paths
from seqops.features import erasure
from seqops.features.ingest import ingest, write_outputs

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
NO_REPORT = IngestParams(data_report=False, min_user_events=2, min_item_events=1)
T0 = 1767225600
HEADER = "user_id,item_id,category,event_type,timestamp"


def rows_of(user: str, n: int) -> list[str]:
    return [f"{user},i{k % 3},c1,view,{T0 + 60 * k}" for k in range(n)]


@pytest.fixture
def raw_with_gone(tmp_path):
    """u1 and u2 stay; `gone` has 4 good rows, one with a bad timestamp and one malformed line."""
    raw = tmp_path / "raw"
    raw.mkdir()
    lines = [
        HEADER,
        *rows_of("u1", 4),
        *rows_of("gone", 4),
        "gone,i1,c1,view,yesterday",
        "gone,i1,c1,view,1,extra",
        *rows_of("u2", 3),
    ]
    (raw / "events.csv").write_text("\n".join(lines) + "\n")
    return raw, Paths(tmp_path)


def test_the_list_holds_salted_hashes_not_ids(tmp_path):
    paths = Paths(tmp_path)
    digest = erasure.add_to_list(paths, "gone")
    erasure.add_to_list(paths, "gone")  # once only
    text = erasure.list_path(paths).read_text()
    assert text == f"{digest}\n" and "gone" not in text
    salt = erasure.salt_path(paths).read_bytes()
    assert len(salt) == erasure.SALT_BYTES and erasure.salt_path(paths).stat().st_mode & 0o077 == 0
    assert digest == erasure.user_hash("gone", salt) != erasure.user_hash("gone", b"other salt")
    erased = erasure.ErasureList.read(paths)
    assert erased.contains(pa.array(["u1", "gone", None])).tolist() == [False, True, False]


def test_ingest_drops_erased_users_and_counts_them_apart(raw_with_gone):
    raw, paths = raw_with_gone
    before = ingest(raw, NO_REPORT, paths, now=NOW)
    assert "gone" in set(before.quarantine["user_id"]) and "gone" in set(before.users["raw_id"])
    write_outputs(before, paths)  # the vocabulary now knows `gone`: a later ingest must still drop it
    erasure.add_to_list(paths, "gone")

    after = ingest(raw, NO_REPORT, paths, now=NOW)
    assert after.counts["erased"] == 5  # 4 good rows + the bad timestamp; the malformed line stays malformed
    assert after.counts["read"] == after.counts["kept"] + after.counts["erased"] + sum(
        n for k, n in after.counts.items() if k not in ("read", "kept", "erased")
    )
    assert after.counts["kept"] == 7 and after.counts["bad_timestamp"] == 0 and after.counts["malformed_row"] == 1
    assert "gone" not in set(after.users["raw_id"]) and set(after.users["raw_id"]) == {"u1", "u2"}
    assert (
        before.users.set_index("raw_id").loc[["u1", "u2"], "user_id"].tolist()
        == after.users.set_index("raw_id").loc[["u1", "u2"], "user_id"].tolist()
    )  # kept users keep their ids
    assert not after.quarantine.astype(str).apply(lambda c: c.str.contains("gone")).any().any()
    assert after.files[0]["rows_erased"] == 5 and after.files[0]["rows_quarantined"] == 1

    write_outputs(after, paths)
    for path in paths.home.rglob("*.parquet"):
        assert b"gone" not in path.read_bytes(), path
    assert '"erased": 5' in paths.ingest_metrics.read_text()


def test_without_a_list_ingest_counts_no_erasure(raw_with_gone):
    raw, paths = raw_with_gone
    assert "erased" not in ingest(raw, NO_REPORT, paths, now=NOW).counts


def test_scrub_text_drops_lines_naming_the_whole_id(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"user_id": "u42"}\n{"user_id": "u420"}\nu42,i1\nxu42,i1\n')
    assert erasure.scrub_text(path, erasure.token_pattern("u42")) == 2
    assert path.read_text() == '{"user_id": "u420"}\nxu42,i1\n'
    assert erasure.scrub_text(path, erasure.token_pattern("u42")) == 0


def test_scrub_parquet_drops_raw_and_vocabulary_ids(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"user_id": [3, 4, 5], "note": ["a", "u42", "b"]}), path)
    assert erasure.scrub_parquet(path, "u42", user_int=5) == 2
    assert pd.read_parquet(path).to_dict("list") == {"user_id": [3], "note": ["a"]}


def test_scrub_listed_finds_later_lines_by_hash(tmp_path):
    """After an erasure, a new drop or a request naming the user is found by hashing tokens."""
    paths = Paths(tmp_path)
    erasure.add_to_list(paths, "gone")
    drop, log = paths.raw / "batch-001.csv", paths.logs / "requests" / "requests-2026-06-01.jsonl"
    for path, text in (
        (drop, f"{HEADER}\ngone,i1,c1,view,{T0}\nu1,i1,c1,view,{T0}\n"),
        (log, '{"user_id":"gone","status":200}\n{"user_id":"gone2","status":200}\n'),
    ):
        path.parent.mkdir(parents=True)
        path.write_text(text)
    touched = erasure.Touched()
    erasure.scrub_listed(paths, touched)
    assert drop.read_text() == f"{HEADER}\nu1,i1,c1,view,{T0}\n"
    assert log.read_text() == '{"user_id":"gone2","status":200}\n'
    assert sorted(touched.files.values()) == [1, 1]
