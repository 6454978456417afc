"""How fast is the served API? The real BentoML server on loopback under a bounded async load,
next to the same engine called in-process (the limit). Prints tables, writes bench/results/serve.json.

    python bench/serve.py --project PATH [--duration 10] [--concurrency 1 10 50] [--rate 300]
                          [--variants micro quantized bentoml-batchable no-batching]

PATH is a seqops project with a champion (`seqops retrain` once). For every variant the server is
started fresh (`bentoml serve` in its own process group, loopback, a free port) and driven with
POST /recommend for known users (history from the Feast online store, k=10):

* closed loop: C workers, each sends its next request when the previous one is answered, for
  `--duration` seconds (and at most `--max-requests`). Throughput is the capacity; latency obeys
  Little's law (mean latency = C / throughput), so at C=50 it measures queueing, not service time.
* open loop: requests scheduled at a fixed `--rate` (at most C=50 in flight; a request that finds
  all 50 busy counts as an error), latency measured from the scheduled send time so queueing is
  not hidden (no coordinated omission). This is the "p99 at N req/s" number.

Each worker owns one httpx.AsyncClient with one connection: a single client shared by 50 tasks
spends most of its time in httpx's pool bookkeeping (≈150 req/s on this machine whatever the
server), which would measure the client. Connections are opened before timing starts (a real
client keeps them alive; 50 simultaneous connects otherwise put ~0.5 s on exactly 1% of requests). The in-process rows call `Engine.recommend` directly
(one request per call, and 50 per call = one micro-batch), and the model alone, fp32 and int8.
The quantised model is also scored on the test set (.seqops/models/test_set.parquet) for NDCG.
`cat /proc/loadavg` is recorded before and after every phase (the machine may be shared).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from seqops.serving.launch import SERVICE as DEFAULT_SERVICE
from seqops.serving.launch import Service

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "serve.json"
VARIANTS = {  # every variant names its settings (the project's params.yaml may say otherwise)
    "micro-w2": (DEFAULT_SERVICE, {"workers": 2}),  # the defaults: 2 workers, micro-batcher on the event loop
    "micro-w1": (DEFAULT_SERVICE, {"workers": 1}),
    "int8-w2": (DEFAULT_SERVICE, {"workers": 2, "quantize": True}),
    "nobatch-w1": (DEFAULT_SERVICE, {"workers": 1, "max_batch_size": 1}),
    "wait2ms-w1": (DEFAULT_SERVICE, {"workers": 1, "max_wait_ms": 2.0}),
    "thread-w1": (DEFAULT_SERVICE, {"workers": 1, "engine_thread": True}),
    "thread-w2": (DEFAULT_SERVICE, {"workers": 2, "engine_thread": True}),
    "int8-w1": (DEFAULT_SERVICE, {"workers": 1, "quantize": True}),
    "bentoml-batchable": ("seqops.serving.bento_batched:RecommenderSplit", {"workers": 1}),
}


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "n/a"


def pct(values, q) -> float:
    return round(float(np.percentile(values, q)), 2) if len(values) else float("nan")


def summary(latencies_s: list[float], elapsed: float, errors: int) -> dict:
    ms = np.asarray(latencies_s) * 1000
    return {
        "requests": len(ms),
        "rps": round(len(ms) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": pct(ms, 50),
        "p95_ms": pct(ms, 95),
        "p99_ms": pct(ms, 99),
        "errors": errors,
    }


# -- the server --------------------------------------------------------------------------------
def batch_stats(url: str) -> tuple[float, float]:
    """(sum, count) of the service's seqops_batch_size histogram."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = {m.group(1): float(m.group(2)) for m in re.finditer(r"^seqops_batch_size_(sum|count)\s+(\S+)", text, re.M)}
    return found.get("sum", 0.0), found.get("count", 0.0)


# -- the load ----------------------------------------------------------------------------------
def make_client(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url,
        timeout=10.0,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        headers={"content-type": "application/json"},
    )


async def answered(client: httpx.AsyncClient, body: bytes) -> bool:
    """POST one /recommend; True when it was answered 200."""
    try:
        return (await client.post("/recommend", content=body)).status_code == 200
    except httpx.HTTPError:
        return False


async def closed_loop(url: str, bodies: list[bytes], concurrency: int, duration: float, max_requests: int) -> dict:
    latencies: list[float] = []
    errors = 0
    sent = 0
    deadline = time.perf_counter() + duration

    async def worker(offset: int) -> None:
        nonlocal errors, sent
        async with make_client(url) as client:
            await client.post("/recommend", content=bodies[offset % len(bodies)])  # connect first: not timed
            i = offset
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                body = bodies[i % len(bodies)]
                i += concurrency
                started = time.perf_counter()
                errors += not await answered(client, body)
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return summary(latencies, time.perf_counter() - started, errors)


async def open_loop(url: str, bodies: list[bytes], rate: float, cap: int, duration: float) -> dict:
    latencies: list[float] = []
    errors = 0
    clients = [make_client(url) for _ in range(cap)]
    idle: asyncio.Queue = asyncio.Queue()
    await asyncio.gather(*(c.post("/recommend", content=bodies[0]) for c in clients))  # connect first: not timed
    for client in clients:
        idle.put_nowait(client)

    async def one(client: httpx.AsyncClient, body: bytes, scheduled: float) -> None:
        nonlocal errors
        errors += not await answered(client, body)
        latencies.append(time.perf_counter() - scheduled)
        idle.put_nowait(client)

    tasks = []
    start = time.perf_counter()
    for i in range(int(rate * duration)):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if idle.empty():
            errors += 1  # all `cap` connections busy: the server is not keeping up
            continue
        tasks.append(asyncio.create_task(one(idle.get_nowait(), bodies[i % len(bodies)], scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    for client in clients:
        await client.aclose()
    return summary(latencies, elapsed, errors)


# -- in process --------------------------------------------------------------------------------
def in_process(project: Path, users: list[str], duration: float, quantized: bool) -> list[dict]:
    from seqops.config import Paths, load_params
    from seqops.serving.engine import Engine
    from seqops.serving.schemas import RecommendRequest

    params = load_params(project / "params.yaml")
    engine = Engine(Paths(project), params, quantized=quantized)
    requests = [RecommendRequest(user_id=u, k=10) for u in users]
    rows = []
    for batch in (1, 50):
        engine.recommend(requests[:batch])  # warm-up
        latencies, n, i = [], 0, 0
        started, cpu = time.perf_counter(), time.process_time()
        while time.perf_counter() - started < duration:
            chunk = [requests[(i + j) % len(requests)] for j in range(batch)]
            i += batch
            t0 = time.perf_counter()
            engine.recommend(chunk)
            latencies.append(time.perf_counter() - t0)
            n += batch
        elapsed, cpu_ms = time.perf_counter() - started, (time.process_time() - cpu) * 1000
        row = summary(latencies, elapsed, 0)
        row.update(requests=n, rps=round(n / elapsed, 1), server_cpu_ms_per_req=round(cpu_ms / n, 3))
        rows.append(
            {"variant": "in-process" + (" int8" if quantized else ""), "mode": f"Engine.recommend x{batch}", **row}
        )
    return rows


def model_only(project: Path, repeats: int = 200) -> dict:
    """Forward-pass time fp32 vs int8 at batch 1 and 50, and NDCG on the test set."""
    import torch

    from seqops.config import Paths, load_params
    from seqops.models.release.registry import Registry
    from seqops.models.training.evaluate import rank_metrics
    from seqops.models.training.splits import EvalSet
    from seqops.serving.champion import Champion

    params = load_params(project / "params.yaml")
    torch.set_num_threads(params.serving.torch_threads)
    registry = Registry.of_project(Paths(project))
    version = registry.champion()
    test = EvalSet.from_parquet(project / ".seqops" / "models" / "test_set.parquet")
    out = {"version": version, "test_users": len(test)}
    models = {name: Champion.load(registry, version, quantized=q) for name, q in (("fp32", False), ("int8", True))}
    histories = list(test.inputs[:50])
    rounds: dict[str, list[float]] = {f"{name}_b{b}": [] for name in models for b in (1, 50)}
    for _ in range(5):  # interleaved rounds, median: the machine may be shared, load comes and goes
        for name, champion in models.items():
            for batch in (1, 50):
                champion.next_item_scores(histories[:batch])
                started = time.perf_counter()
                for _ in range(repeats // 5):
                    champion.next_item_scores(histories[:batch])
                rounds[f"{name}_b{batch}"].append((time.perf_counter() - started) / (repeats // 5) * 1000)
    for name, champion in models.items():
        scores = np.concatenate([champion.next_item_scores(test.inputs[i : i + 256]) for i in range(0, len(test), 256)])
        exclude = test.inputs if params.evaluate.exclude_seen else None
        metrics = rank_metrics(scores, test.targets, params.evaluate.ks, exclude)
        out[name] = {f"forward_b{b}_ms": round(float(np.median(rounds[f"{name}_b{b}"])), 3) for b in (1, 50)}
        out[name].update({k: round(v, 5) for k, v in metrics.items() if k.startswith(("ndcg", "hr"))})
    out["ndcg@10_cost"] = round(out["fp32"]["ndcg@10"] - out["int8"]["ndcg@10"], 5)
    return out


# -- main --------------------------------------------------------------------------------------
def print_table(rows: list[dict]) -> None:
    cols = [
        "variant",
        "mode",
        "requests",
        "rps",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "errors",
        "mean_batch",
        "server_cpu_ms_per_req",
        "client_cpu_ms_per_req",
        "loadavg",
    ]
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project", type=Path, required=True, help="seqops project with a champion")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--rate", type=float, default=300.0, help="open-loop request rate (0 = skip)")
    parser.add_argument("--max-requests", type=int, default=200_000, help="cap per closed-loop phase")
    parser.add_argument("--variants", nargs="+", default=["micro-w2", "micro-w1", "int8-w2"], choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    project = args.project.resolve()
    os.environ["SEQOPS_PROJECT"] = str(project)  # the request schemas read the project's params
    users = pd.read_parquet(project / ".seqops" / "events" / "vocab" / "users.parquet")["raw_id"].astype(str).tolist()
    rng = np.random.default_rng(0)
    users = [users[i] for i in rng.permutation(len(users))]
    bodies = [json.dumps({"user_id": u, "k": 10}).encode() for u in users]
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "project": str(project),
        "duration_s": args.duration,
        "loadavg_start": loadavg(),
        "rows": [],
    }
    rows = result["rows"]

    print(f"loadavg before: {result['loadavg_start']}")
    for quantized in (False, True):
        before = loadavg()
        for row in in_process(project, users, args.duration / 2, quantized):
            rows.append({**row, "loadavg": f"{before} → {loadavg()}"})
    result["model"] = model_only(project)

    logs = project / ".seqops" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for variant in args.variants:
        service, overrides = VARIANTS[variant]
        with Service(
            project,
            service=service,
            env={"SEQOPS_SERVING_OVERRIDES": json.dumps(overrides)},
            log_path=logs / f"bench-serve-{variant}.log",
        ) as server:
            for body in bodies[:50]:  # warm-up
                httpx.post(
                    f"{server.url}/recommend", content=body, headers={"content-type": "application/json"}, timeout=30
                )
            phases = [
                (f"closed c={c}", lambda c=c: closed_loop(server.url, bodies, c, args.duration, args.max_requests))
                for c in args.concurrency
            ]
            if args.rate:
                phases.append(
                    (
                        f"open {args.rate:.0f}/s cap 50",
                        lambda: open_loop(server.url, bodies, args.rate, 50, args.duration),
                    )
                )
            for mode, run in phases:
                before, stats, cpu = loadavg(), batch_stats(server.url), server.cpu_seconds()
                client_cpu = time.process_time()
                row = asyncio.run(run())
                server_cpu, client_cpu = server.cpu_seconds() - cpu, time.process_time() - client_cpu
                after = batch_stats(server.url)
                batches = after[1] - stats[1]
                row["mean_batch"] = round((after[0] - stats[0]) / batches, 2) if batches else None
                row["server_cpu_ms_per_req"] = round(server_cpu * 1000 / max(row["requests"], 1), 3)
                row["client_cpu_ms_per_req"] = round(client_cpu * 1000 / max(row["requests"], 1), 3)
                rows.append({"variant": variant, "mode": mode, **row, "loadavg": f"{before} → {loadavg()}"})
                print(f"  {variant:18s} {mode:18s} {row}", flush=True)
    result["loadavg_end"] = loadavg()

    print()
    print_table(rows)
    model = result["model"]
    print(
        f"\nmodel {model['version']} alone (torch threads {os.environ.get('OMP_NUM_THREADS', 'serving.torch_threads')}):"
    )
    for name in ("fp32", "int8"):
        m = model[name]
        print(
            f"  {name}: forward b=1 {m['forward_b1_ms']} ms, b=50 {m['forward_b50_ms']} ms; "
            f"ndcg@10 {m['ndcg@10']:.4f} hr@10 {m['hr@10']:.4f} ({model['test_users']} test users)"
        )
    print(f"  int8 NDCG@10 cost: {model['ndcg@10_cost']:+.4f}")
    print(f"loadavg: start {result['loadavg_start']}, end {result['loadavg_end']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"→ {args.out}")


if __name__ == "__main__":
    main()
