"""Seeded fuzz of malformed CSV lines: every valid row kept, every bad one quarantined at its line
with the reason it was built to trigger, no crash, and kept + quarantined = read."""

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from seqops.config import IngestParams, Paths
from seqops.features.ingest import REASONS, ingest

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
T0 = 1767225600  # 2026-01-01
HEADER = "user_id,item_id,category,event_type,timestamp"
USERS = ["1", "2", "3", "007", "ü-ser", "用户", '"u,9"', "u1"]  # numeric, leading zero, unicode, quoted comma
ITEMS = ["10", "11", "i-1", "İtem", '"a,b"']

# corruption → (builder(user, item, ts) → line, expected reason)
BAD = {
    "extra_field": (lambda u, i, t: f"{u},{i},c1,view,{t},x", "malformed_row"),
    "missing_field": (lambda u, i, t: f"{u},{i},view,{t}", "malformed_row"),
    "one_field": (lambda u, i, t: "garbage", "malformed_row"),
    "empty_line": (lambda u, i, t: "", "missing_user_id"),
    "blank_user": (lambda u, i, t: f"  ,{i},c1,view,{t}", "missing_user_id"),
    "blank_item": (lambda u, i, t: f"{u},,c1,view,{t}", "missing_item_id"),
    "text_time": (lambda u, i, t: f"{u},{i},c1,view,12:30pm", "bad_timestamp"),
    "blank_time": (lambda u, i, t: f"{u},{i},c1,view,", "bad_timestamp"),
    "inf_time": (lambda u, i, t: f"{u},{i},c1,view,1e400", "bad_timestamp"),
    "nan_time": (lambda u, i, t: f"{u},{i},c1,view,nan", "bad_timestamp"),
    "negative_time": (lambda u, i, t: f"{u},{i},c1,view,-{t}", "negative_timestamp"),
    "future_time": (lambda u, i, t: f"{u},{i},c1,view,{t + 10**9}", "future_timestamp"),
    "huge_time": (lambda u, i, t: f"{u},{i},c1,view,99999999999999999999", "future_timestamp"),
    "unknown_type": (lambda u, i, t: f"{u},{i},c1,click,{t}", "unknown_event_type"),
    "blank_type": (lambda u, i, t: f"{u},{i},c1,,{t}", "unknown_event_type"),
}


def pad(field: str) -> str:
    """Blanks around a field; a quoted field must start with its quote, so it stays as it is."""
    return field if field.startswith('"') else f" {field} "


GOOD = {  # variants of a valid row, all kept
    "plain": lambda u, i, t: f"{u},{i},c1,view,{t}",
    "padded": lambda u, i, t: f"{pad(u)},{pad(i)},c1, Cart ,  {t} ",
    "float_time": lambda u, i, t: f"{u},{i},c2,purchase,{t}.25",
    "no_category": lambda u, i, t: f"{u},{i},,view,{t}",
}


def fuzz_file(
    path, seed: int, n: int = 600, bad_share: float = 0.3
) -> tuple[dict[int, str], list[tuple[str, str, int]]]:
    """Write `n` data lines; return {line: expected reason} and the valid rows (user, item, µs)."""
    rng = np.random.default_rng(seed)
    lines, expected, valid = [HEADER], {}, []
    for k in range(n):
        user, item = rng.choice(USERS), rng.choice(ITEMS)
        ts = T0 + 7 * k  # unique per row: no valid row duplicates another
        if rng.random() < bad_share:
            build, reason = BAD[rng.choice(list(BAD))]
            expected[len(lines) + 1] = reason
            lines.append(build(user, item, ts))
        else:
            kind = rng.choice(list(GOOD))
            lines.append(GOOD[kind](user, item, ts))
            valid.append((user.strip('"'), item.strip('"'), ts * 10**6 + (250_000 if kind == "float_time" else 0)))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return expected, valid


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("block_mb", [16, 0.002])  # 0.002 MiB: many small blocks, ids cross block borders
def test_fuzzed_lines(tmp_path, seed, block_mb):
    raw = tmp_path / "raw"
    raw.mkdir()
    expected, valid = fuzz_file(raw / "fuzz.csv", seed)
    p = IngestParams(min_user_events=1, block_mb=block_mb)
    result = ingest(raw, p, Paths(tmp_path), now=NOW)

    counts, q = result.counts, result.quarantine
    assert counts["read"] == len(expected) + len(valid)
    assert counts["read"] == counts["kept"] + sum(counts[r] for r in REASONS)
    assert counts["kept"] == len(valid) == len(result.events)
    assert dict(zip(q["line"], q["reason"])) == expected
    assert (q["source_file"] == "fuzz.csv").all()

    # the kept rows are exactly the valid rows, ids and times intact
    users = dict(zip(result.users["user_id"], result.users["raw_id"]))
    items = dict(zip(result.items["item_id"], result.items["raw_id"]))
    events = result.events
    got = sorted(
        zip(
            events["user_id"].map(users),
            events["item_id"].map(items),
            (events["ts"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1),
        )
    )
    assert got == sorted(valid)
    assert set(events["event_type"]) <= {"view", "cart", "purchase"}


def test_same_id_in_int_and_text_blocks_gets_one_id(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    rows = [f"1,{k},c,view,{T0 + k}" for k in range(200)] + [f" 1 ,{k}, c ,view,{T0 + 500 + k}" for k in range(200)]
    (raw / "a.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    result = ingest(raw, IngestParams(block_mb=0.002), Paths(tmp_path), now=NOW)
    assert result.users["raw_id"].tolist() == ["1"] and result.counts["kept"] == 400
    assert result.items["item_id"].max() == 200 and set(result.events["category"]) == {"c"}
