import asyncio
import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from seqops.config import Paths
from seqops.features.ingest import RAW_COLUMNS
from seqops.serving.batcher import MicroBatcher
from seqops.serving.logs import EventLanding, Housekeeper, RequestLog, adopt_orphans
from tests.serving.conftest import ingested_rows

ROW = {"user_id": "u1", "item_id": "i1", "category": "c1", "event_type": "view", "timestamp": "1767225600.000"}
HEADER = ",".join(RAW_COLUMNS) + "\n"


@pytest.mark.parametrize("threaded", [False, True])
def test_concurrent_requests_share_batches_and_get_their_own_answers(threaded):
    seen = []

    def double(items):
        seen.append(len(items))
        return [2 * i for i in items]

    async def main():
        executor = ThreadPoolExecutor(1) if threaded else None
        batcher = MicroBatcher(double, executor, max_batch_size=8)
        results = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
        return results, batcher

    results, batcher = asyncio.run(main())
    assert results == [2 * i for i in range(20)]
    assert max(seen) == 8 and sum(seen) == 20 and batcher.mean_batch_size > 1


def test_a_failing_batch_fails_its_requests_only():
    calls = []

    def flaky(items):
        calls.append(list(items))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return items

    async def main():
        batcher = MicroBatcher(flaky, max_batch_size=2)
        first = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
        second = await batcher.submit(3)
        return first, second

    first, second = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in first) and second == 3


def test_request_log_lines_are_on_disk_when_add_returns(tmp_path):
    """Write-through: a worker killed right after answering has lost no line of the request log."""
    log = RequestLog(tmp_path)
    log.add({"user_id": "a"})
    (path,) = tmp_path.glob("requests-*.jsonl")
    assert [json.loads(line)["user_id"] for line in path.read_text().splitlines()] == ["a"]
    log.add({"user_id": "b"})
    assert [json.loads(line)["user_id"] for line in path.read_text().splitlines()] == ["a", "b"]
    log.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_000():
    """The most permissive umask there is: files must still come out 0644."""
    before = os.umask(0)
    yield
    os.umask(before)


def test_log_files_are_0644_whatever_the_umask(tmp_path, umask_000):
    log = RequestLog(tmp_path / "logs")
    log.add({"user_id": "a"})
    landing = EventLanding(tmp_path / "landing", rotate_s=3600)
    landing.append([ROW])
    (request_file,) = (tmp_path / "logs").glob("*.jsonl")
    (part,) = (tmp_path / "landing").glob(".serving-*.csv.part")
    assert mode(request_file) == 0o644 and mode(part) == 0o644
    assert mode(landing.rotate(force=True)) == 0o644
    log.close()


def write_orphan(directory: Path, pid: int, text: str) -> Path:
    """A part file as a worker killed mid-write leaves it: nobody holds its lock."""
    directory.mkdir(parents=True, exist_ok=True)
    orphan = directory / f".serving-20260101T000000000000-{pid}.csv.part"
    orphan.write_text(text)
    return orphan


def test_an_orphaned_part_file_is_adopted_without_its_half_written_line(tmp_path):
    write_orphan(tmp_path, 4242, HEADER + "u1,i1,c1,view,1767225600.000\nu2,i2,c1,vi")
    (adopted,) = adopt_orphans(tmp_path)
    assert adopted.name == "serving-20260101T000000000000-4242.csv" and not list(tmp_path.glob(".serving-*"))
    frame = pd.read_csv(adopted, dtype=str)
    assert frame["user_id"].tolist() == ["u1"]  # the cut row was never acknowledged: its write did not finish
    assert adopt_orphans(tmp_path) == []  # adopting twice changes nothing


def test_an_orphan_without_one_complete_line_is_removed(tmp_path):
    orphan = write_orphan(tmp_path, 4243, HEADER[:7])
    assert adopt_orphans(tmp_path) == [] and not orphan.exists()


def test_a_live_workers_part_file_is_never_touched(tmp_path):
    """The writer holds a lock on its part file for as long as it is open (another process's
    adopt_orphans, or this one's, cannot take it), whatever its PID says."""
    live = EventLanding(tmp_path, rotate_s=3600)
    live.append([ROW])
    (part,) = tmp_path.glob(".serving-*.csv.part")
    assert adopt_orphans(tmp_path) == [] and part.exists()
    live.append([{**ROW, "user_id": "u2"}])
    final = live.rotate(force=True)
    assert pd.read_csv(final, dtype=str)["user_id"].tolist() == ["u1", "u2"]


def test_landing_file_is_hidden_until_closed_and_ingestible(tmp_path):
    landing = EventLanding(tmp_path, rotate_s=3600)
    row = ROW
    landing.append([row, {**row, "item_id": "i,2"}, {**row, "item_id": 'say "i3"'}])
    assert not list(tmp_path.glob("*.csv"))  # collect_landing and the monitor see complete files only
    keeper = Housekeeper(RequestLog(tmp_path / "logs"), landing).start()
    keeper.stop()  # shutdown closes the file
    (path,) = tmp_path.glob("*.csv")
    assert path.name.startswith("serving-")
    frame = pd.read_csv(path, dtype=str)
    assert list(frame.columns) == RAW_COLUMNS and frame["item_id"].tolist() == ["i1", "i,2", 'say "i3"']
    landing.append([row])
    assert landing.rotate() is None and landing.rotate(force=True).exists()


def test_awkward_ids_round_trip_through_ingest(tmp_path):
    """Commas, quotes and non-ASCII text are quoted in the landing CSV and read back as sent by the real ingest."""
    awkward = ["a,b", 'say "hi"', "ünï cödé", "semi;colon", "'quoted'"]
    landing = EventLanding(tmp_path / "landing", rotate_s=3600)
    landing.append(
        [
            {**ROW, "user_id": user, "item_id": f"item-{i % 2}", "timestamp": f"{1767225600 + i}.000"}
            for i, user in enumerate(awkward * 3)
        ]
    )
    landing.rotate(force=True)
    rows = ingested_rows(tmp_path / "landing", Paths(tmp_path))
    assert sorted(rows["user_id"]) == sorted(awkward * 3)
