"""Does an abusive client hurt everyone else? The real BentoML server on loopback, normal traffic
(POST /recommend for known users at a fixed rate, from 127.0.0.1) alone and then beside an abusive
client on another loopback address (127.0.0.2) that sends oversized bodies (POST /events of
`--oversized-mb` MiB, refused with 413 by the guard before parsing) and floods POST /recommend for
random unknown users (429 past its rate). Prints normal traffic's p50/p99 both times, the abuser's
answers by status, and the workers' memory; writes bench/results/abuse.json.

    python bench/abuse.py [--project PATH] [--duration 10] [--rate 20] [--client-rate 25] [--flood 8]

Bounded: two phases of `--duration` seconds, loopback only. Without --project a small servable
project is built like the serving tests' (tests/serving/conftest.py). The service runs with
params.yaml's guard settings except the rate, which `--client-rate` sets (an internet-facing value;
the shipped 2000/s per worker is for one trusted caller).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "abuse.json"
NORMAL, ABUSER = "127.0.0.1", "127.0.0.2"


def client_from(address: str, connections: int = 1) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=address, limits=httpx.Limits(max_connections=connections))
    return httpx.AsyncClient(transport=transport, timeout=30)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


async def normal_traffic(url: str, users: list[str], rate: float, duration: float) -> dict:
    """Open loop at `rate` req/s (latency from the scheduled send time: queueing is not hidden)."""
    latencies, statuses = [], Counter()
    async with client_from(NORMAL, 50) as client:

        async def one(i: int, scheduled: float) -> None:
            try:
                response = await client.post(f"{url}/recommend", json={"user_id": users[i % len(users)]})
                statuses[response.status_code] += 1
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1
            latencies.append(time.perf_counter() - scheduled)

        start, tasks = time.perf_counter(), []
        for i in range(int(rate * duration)):
            scheduled = start + i / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            tasks.append(asyncio.create_task(one(i, scheduled)))
        await asyncio.gather(*tasks)
    return {
        "requests": len(latencies),
        "p50_ms": pct(latencies, 50),
        "p99_ms": pct(latencies, 99),
        "statuses": {str(k): v for k, v in statuses.items()},
    }


async def abuser(url: str, duration: float, flood: int, oversized: bytes) -> dict:
    """`flood` workers asking for random unknown users as fast as answered, and one sending oversized bodies."""
    statuses: dict[str, Counter] = {"flood": Counter(), "oversized": Counter()}
    deadline = time.perf_counter() + duration

    async def flooder(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            try:
                response = await client.post(f"{url}/recommend", json={"user_id": f"unknown-{uuid.uuid4().hex[:12]}"})
                statuses["flood"][str(response.status_code)] += 1
            except httpx.HTTPError as exc:
                statuses["flood"][type(exc).__name__] += 1

    async def big_bodies(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            try:
                response = await client.post(
                    f"{url}/events", content=oversized, headers={"content-type": "application/json"}
                )
                statuses["oversized"][str(response.status_code)] += 1
            except httpx.HTTPError as exc:  # the server closes after its 413, perhaps while the body still streams
                statuses["oversized"][type(exc).__name__] += 1

    async with client_from(ABUSER, flood + 1) as client:
        await asyncio.gather(*(flooder(client) for _ in range(flood)), big_bodies(client))
    return {kind: dict(counts) for kind, counts in statuses.items()}


def workers_rss_mb(service) -> float:
    import psutil

    root = psutil.Process(service.proc.pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


async def phases(url: str, users: list[str], args) -> dict:
    oversized = b'{"events": "' + b"x" * (args.oversized_mb * 2**20) + b'"}'
    calm = await normal_traffic(url, users, args.rate, args.duration)
    beside, abuse = await asyncio.gather(
        normal_traffic(url, users, args.rate, args.duration), abuser(url, args.duration, args.flood, oversized)
    )
    return {"normal_alone": calm, "normal_beside_abuser": beside, "abuser": abuse}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--project", type=Path, help="a seqops project with a champion (default: a small one built here)"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--rate", type=float, default=20.0, help="normal requests per second")
    parser.add_argument("--flood", type=int, default=8, help="the abuser's concurrent /recommend workers")
    parser.add_argument("--oversized-mb", type=int, default=16, help="size of each oversized body")
    parser.add_argument(
        "--client-rate", type=float, default=25.0, help="serving.rate_limit_per_s for the run (burst 2×)"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from seqops.config import load_params
    from seqops.serving.launch import Service

    with tempfile.TemporaryDirectory() as tmp:
        if args.project is None:
            from tests.serving.conftest import N_USERS, mini_project, raw_user

            project, users = mini_project(Path(tmp) / "project"), [raw_user(i) for i in range(1, N_USERS + 1)]
        else:
            import pandas as pd

            from seqops.config import project_paths

            project = args.project
            users = (
                pd.read_parquet(project_paths(project).vocab / "users.parquet")["raw_id"].astype(str).head(500).tolist()
            )
        overrides = {"workers": 1, "rate_limit_per_s": args.client_rate, "rate_burst": int(2 * args.client_rate)}
        with Service(project, env={"SEQOPS_SERVING_OVERRIDES": json.dumps(overrides)}) as service:
            rss_before = workers_rss_mb(service)
            started = time.perf_counter()
            result = asyncio.run(phases(service.url, users, args))
            rss_after = workers_rss_mb(service)
        guard = load_params(project / "params.yaml").serving.model_dump(
            include={"max_body_bytes", "auth", "request_timeout_s"}
        )
    result |= {
        "seconds": time.perf_counter() - started,
        "rss_mb": {"before": rss_before, "after": rss_after},
        "settings": {
            **vars(args) | {"project": str(args.project), "out": str(args.out)},
            "serving": {**guard, **overrides},
        },
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "loadavg": os.getloadavg()},
    }
    alone, beside = result["normal_alone"], result["normal_beside_abuser"]
    print(
        f"normal traffic {args.rate:g} req/s  p50 {alone['p50_ms']:.1f} ms  p99 {alone['p99_ms']:.1f} ms  alone  {alone['statuses']}"
    )
    print(
        f"normal traffic {args.rate:g} req/s  p50 {beside['p50_ms']:.1f} ms  p99 {beside['p99_ms']:.1f} ms  beside the abuser  {beside['statuses']}"
    )
    print(
        f"abuser: flood {result['abuser']['flood']}, oversized {args.oversized_mb} MiB bodies {result['abuser']['oversized']}"
    )
    print(f"service RSS {rss_before:.0f} → {rss_after:.0f} MiB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
