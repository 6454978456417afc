import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from seqops.features.ingest import RAW_COLUMNS
from seqops.serving.batcher import MicroBatcher
from seqops.serving.logs import EventLanding, Housekeeper, RequestLog


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


def test_request_log_is_buffered_then_appended(tmp_path):
    log = RequestLog(tmp_path, max_buffer=3)
    log.add({"user_id": "a"})
    log.add({"user_id": "b"})
    assert not list(tmp_path.glob("*.jsonl"))  # buffered: nothing written per request
    log.add({"user_id": "c"})  # the buffer is full: one append
    log.add({"user_id": "d"})
    assert log.flush() == 1
    (path,) = tmp_path.glob("requests-*.jsonl")
    assert [json.loads(line)["user_id"] for line in path.read_text().splitlines()] == ["a", "b", "c", "d"]


def test_landing_file_is_hidden_until_closed_and_ingestible(tmp_path):
    landing = EventLanding(tmp_path, rotate_s=3600)
    row = {"user_id": "u1", "item_id": "i1", "category": "c1", "event_type": "view", "timestamp": "1767225600.000"}
    landing.append([row, {**row, "item_id": "i,2"}])
    assert not list(tmp_path.glob("*.csv"))  # collect_landing and the monitor see complete files only
    keeper = Housekeeper(RequestLog(tmp_path / "logs"), landing).start()
    keeper.stop()  # shutdown closes the file
    (path,) = tmp_path.glob("*.csv")
    assert path.name.startswith("serving-")
    frame = pd.read_csv(path, dtype=str)
    assert list(frame.columns) == RAW_COLUMNS and frame["item_id"].tolist() == ["i1", "i,2"]
    landing.append([row])
    assert landing.rotate() is None and landing.rotate(force=True).exists()
