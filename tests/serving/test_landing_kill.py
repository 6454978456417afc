"""Acknowledged means landed: events /events answered 200 reach the next ingest exactly once, even
when a worker is SIGKILLed under traffic and the whole service then dies uncleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest
from prefect.logging import disable_run_logger

from seqops.config import Paths
from seqops.flows.retrain import collect_landing
from seqops.serving.launch import Service
from seqops.serving.logs import landed_events
from tests.serving.conftest import N_ITEMS, ingested_rows, mini_project, raw_item

EVENTS_PER_REQUEST = 5  # one fresh user per request, enough events for ingest's k-core to keep them


def collect(paths: Paths) -> list[str]:
    with disable_run_logger():
        return collect_landing.fn(paths)


def test_collect_landing_adopts_a_dead_workers_part_file(tmp_path):
    paths = Paths(tmp_path)
    paths.landing.mkdir(parents=True)
    orphan = paths.landing / ".serving-20260101T000000000000-4242.csv.part"
    orphan.write_text("user_id,item_id,category,event_type,timestamp\nu1,i1,c1,view,1767225600.000\n")
    assert collect(paths) == ["serving-20260101T000000000000-4242.csv"]
    assert (paths.raw / "serving-20260101T000000000000-4242.csv").exists() and not orphan.exists()


def test_the_monitor_counts_a_dead_workers_events(tmp_path):
    orphan = tmp_path / ".serving-20260101T000000000000-4242.csv.part"
    orphan.write_text("user_id,item_id,category,event_type,timestamp\nu1,i1,c1,view,1767225600.000\n")
    files, raw = landed_events(tmp_path)
    assert [f.name for f in files] == ["serving-20260101T000000000000-4242.csv"] and raw["user_id"].tolist() == ["u1"]


def worker_pids(landing: Path) -> set[int]:
    """Workers that have landed events: their pid ends the part file's name."""
    return {int(part.name.removesuffix(".csv.part").rsplit("-", 1)[1]) for part in landing.glob(".serving-*.csv.part")}


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL `bentoml serve` and every process it started (its workers run in sessions of their own)."""
    pids = [proc.pid, *(child.pid for child in psutil.Process(proc.pid).children(recursive=True))]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    proc.wait()


async def post_events(url: str, client_id: int, stop: asyncio.Event, acknowledged: list[str]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        n = 0
        while not stop.is_set():
            user = f"kill-{client_id}-{n}"
            n += 1
            events = [
                {"user_id": user, "item_id": raw_item(1 + (n + j) % N_ITEMS), "event_type": "view"}
                for j in range(EVENTS_PER_REQUEST)
            ]
            try:
                response = await client.post("/events", json={"events": events})
            except httpx.HTTPError:
                continue  # the worker died with this request: not acknowledged
            if response.status_code == 200:
                acknowledged.append(user)


async def traffic_with_a_kill(url: str, landing: Path, acknowledged: list[str], seconds_after: float = 4) -> int:
    """Events from 4 clients; SIGKILL one worker once it has landed some; keep going a while."""
    stop = asyncio.Event()
    clients = [asyncio.create_task(post_events(url, i, stop, acknowledged)) for i in range(4)]
    deadline = time.monotonic() + 60
    while len(acknowledged) < 40 or not worker_pids(landing):
        assert time.monotonic() < deadline, "no events landed"
        await asyncio.sleep(0.1)
    victim = min(worker_pids(landing))
    os.kill(victim, signal.SIGKILL)
    await asyncio.sleep(seconds_after)
    stop.set()
    await asyncio.gather(*clients)
    return victim


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_acknowledged_events_survive_a_killed_worker_exactly_once(tmp_path):
    project = mini_project(tmp_path / "project")
    paths = Paths(project)
    acknowledged: list[str] = []
    with Service(project) as service:
        victim = asyncio.run(traffic_with_a_kill(service.url, paths.landing, acknowledged))
        kill_tree(service.proc)  # then the whole service ends uncleanly: no shutdown hook runs
    assert any(part.name.endswith(f"-{victim}.csv.part") for part in paths.landing.glob(".serving-*.csv.part"))

    with Service(project):  # the next start adopts what the dead workers left
        assert not list(paths.landing.glob(".serving-*.csv.part"))
    collect(paths)
    rows = ingested_rows(paths.raw, paths)
    counts = rows.loc[rows["user_id"].str.startswith("kill-"), "user_id"].value_counts()
    lost = [user for user in acknowledged if counts.get(user, 0) == 0]
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged requests never reached ingest: {lost[:5]}"
    assert (counts[acknowledged] == EVENTS_PER_REQUEST).all() and counts.max() <= EVENTS_PER_REQUEST, (
        counts.value_counts()
    )

    answered = [r for r in request_lines(paths) if r["endpoint"] == "events" and r["status"] == 200]
    assert len(answered) >= len(acknowledged)  # the request log is written before the answer, too


def request_lines(paths: Paths) -> list[dict]:
    lines = [line for f in (paths.logs / "requests").glob("*.jsonl") for line in f.read_text().splitlines()]
    return [json.loads(line) for line in lines if line.endswith("}")]  # a kill can cut the last line
