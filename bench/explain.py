"""Are `/recommend` explanations faithful, and what do they cost? Writes bench/results/explain.json.

    nice -n 10 python bench/explain.py [--project PATH] [--users 200] [--k 10] [--repeats 3] [--train-minutes 3]

PATH is a seqops project with a champion (a PATH that does not exist yet is built there and kept);
without it one is built in a temporary folder like the tests' projects but at
the shipped data and model size (synthetic batch 0: 2000 users, 1000 items, SASRec 64x2, `max_len`
50), trained by the real `seqops retrain` (capped at `--train-minutes`).

Faithfulness, on `--users` seeded random users with history: the engine answers
`{"user_id", "k", "explain": true}` (history from the Feast online store). For every recommended
item whose explanation names an event, the user's stored history is scored again through the
champion (the same `Artifact.scores` path) three times: whole, without the top-attributed event,
and without a random other event the model reads. A case passes when removing the top event lowers
the item's score more (and, separately, its rank among all items more) than removing the random
one. Since the attribution is leave-one-out, the score check passing is close to by construction:
what it verifies end to end is that the served explanation (its `events_ago`, the window handling,
the type alignment) points at the event that matters in the stored history. The rank check and the
baseline "the latest event" (what a recency heuristic would name) put the figure in context.

Latency: the same users, one request at a time, explain false vs true: in-process (`Engine.recommend`,
real Feast read) and through the real BentoML HTTP service; p50/p95 and the added milliseconds.
`/proc/loadavg` is recorded (the machine may be shared: timings are then upper bounds).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from seqops.config import Paths, load_params  # noqa: E402
from seqops.io import tool_env  # noqa: E402
from seqops.serving.engine import Engine  # noqa: E402
from seqops.serving.launch import running_service  # noqa: E402
from seqops.serving.schemas import RecommendRequest  # noqa: E402
from tests.conftest import make_project  # noqa: E402

OUT = REPO / "bench" / "results" / "explain.json"


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "n/a"


def build_project(root: Path, train_minutes: float) -> Path:
    """A project at the shipped sizes (the tests' SMALL overrides undone), trained by `seqops retrain`."""
    shipped = load_params(REPO / "params.yaml")
    overrides = {
        "data": {"synthetic": shipped.data.synthetic.model_dump(mode="json")},
        "features": {"max_len": shipped.features.max_len},
        "model": {k: getattr(shipped.model, k) for k in ("hidden_size", "num_layers", "num_heads")},
        "train": {"epochs": shipped.train.epochs, "patience": shipped.train.patience, "max_minutes": train_minutes},
    }
    project = make_project(root, overrides)
    cmd = [str(Path(sys.executable).parent / "seqops"), "retrain", "--batch", "0", "--project", str(project)]
    env = {**tool_env(), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}  # a busy shared CPU
    done = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"retrain failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return project


def rank_of(row: np.ndarray, item: int) -> int:
    return int((row > row[item]).sum())  # 0 = first (padding is -inf)


def faithfulness(engine: Engine, users: list[str], k: int, rng: np.random.Generator) -> dict:
    champion = engine.current()
    cases = {"score": [], "score_tie": [], "rank": [], "rank_or_tie": [], "latest_score": []}
    items_total = items_explained = 0
    history_lengths = []
    for user in users:
        answer = engine.recommend([RecommendRequest(user_id=user, k=k, explain=True)])[0]
        if not isinstance(answer, dict) or answer["fallback"]:
            continue
        q = engine.resolve(RecommendRequest(user_id=user))
        engine.read_histories([q])
        history = q.items
        types = q.types if q.types and len(q.types) == len(history) else []  # misaligned: unknown types, as served
        readable = [p for p in range(len(history)) if 0 < history[p] <= champion.n_items][-champion.max_len :]
        history_lengths.append(len(readable))
        for explanation in answer["explanations"]:
            items_total += 1
            if not explanation["events"] or len(readable) < 2:
                continue
            items_explained += 1
            top = len(history) - explanation["events"][0]["events_ago"]
            other = int(rng.choice([p for p in readable if p != top]))
            latest = readable[-1]
            rows = [np.delete(history, p) for p in (top, other, latest)]
            kinds = [list(np.delete(np.asarray(types, dtype=object), p)) if types else [] for p in (top, other, latest)]
            scores = champion.next_item_scores([history, *rows], [types, *kinds])
            target = engine.vocab.catalog[explanation["item"]]
            drop = scores[0, target] - scores[1:, target]
            rank = [rank_of(r, target) for r in scores[1:]]
            cases["score"].append(drop[0] > drop[1])
            cases["score_tie"].append(abs(drop[0] - drop[1]) < 1e-4)  # float noise of the batched pass decides
            cases["rank"].append(rank[0] > rank[1])
            cases["rank_or_tie"].append(rank[0] >= rank[1])
            cases["latest_score"].append(drop[2] > drop[1] if latest != other else False)
    return {
        "users": len(history_lengths),
        "history_read_mean": round(float(np.mean(history_lengths)), 1) if history_lengths else 0.0,
        "items": items_total,
        "items_with_reasons": items_explained,
        "cases": len(cases["score"]),
        "top_lowers_score_more_than_random": round(float(np.mean(cases["score"])), 4),
        "top_and_random_within_1e-4": round(float(np.mean(cases["score_tie"])), 4),
        "top_lowers_rank_more_than_random": round(float(np.mean(cases["rank"])), 4),
        "top_lowers_rank_at_least_as_much": round(float(np.mean(cases["rank_or_tie"])), 4),
        "baseline_latest_event_lowers_score_more_than_random": round(float(np.mean(cases["latest_score"])), 4),
    }


def timing(samples_ms: dict[str, list[float]]) -> dict:
    out = {}
    for name, values in samples_ms.items():
        out[f"{name}_p50_ms"] = round(float(np.percentile(values, 50)), 2)
        out[f"{name}_p95_ms"] = round(float(np.percentile(values, 95)), 2)
    out["added_p50_ms"] = round(out["explain_p50_ms"] - out["plain_p50_ms"], 2)
    out["added_p95_ms"] = round(out["explain_p95_ms"] - out["plain_p95_ms"], 2)
    return out


def latency_in_process(engine: Engine, users: list[str], k: int, repeats: int) -> dict:
    samples = {"plain": [], "explain": []}
    for _ in range(repeats):
        for user in users:
            for name, explain in (("plain", False), ("explain", True)):  # interleaved: same load for both
                started = time.perf_counter()
                engine.recommend([RecommendRequest(user_id=user, k=k, explain=explain)])
                samples[name].append((time.perf_counter() - started) * 1000)
    return timing(samples)


def latency_http(project: Path, users: list[str], k: int, repeats: int) -> dict:
    samples = {"plain": [], "explain": []}
    with running_service(project) as url, httpx.Client(timeout=60) as client:
        client.post(f"{url}/recommend", json={"user_id": users[0], "k": k, "explain": True})  # warm-up
        for _ in range(repeats):
            for user in users:
                for name, explain in (("plain", False), ("explain", True)):
                    started = time.perf_counter()
                    response = client.post(f"{url}/recommend", json={"user_id": user, "k": k, "explain": explain})
                    samples[name].append((time.perf_counter() - started) * 1000)
                    response.raise_for_status()
    return timing(samples)


def run(project: Path, args: argparse.Namespace) -> dict:
    paths = Paths(project)
    params = load_params(project / "params.yaml")
    engine = Engine(paths, params)
    engine.wait_for_load()
    counts = pd.read_parquet(paths.events, columns=["user_id"])["user_id"].value_counts()
    vocab = pd.read_parquet(paths.vocab / "users.parquet").set_index("user_id")["raw_id"].astype(str)
    rng = np.random.default_rng(args.seed)
    pool = counts.index[counts >= 3].to_numpy()
    users = vocab.loc[rng.choice(pool, min(args.users, len(pool)), replace=False)].tolist()
    load_before = loadavg()
    started = time.time()
    faithful = faithfulness(engine, users, args.k, rng)
    faith_s = time.time() - started
    in_process = latency_in_process(engine, users[: args.latency_users], args.k, args.repeats)
    http = latency_http(project, users[: args.latency_users], args.k, args.repeats)
    champion = engine.current()
    return {
        "champion": champion.version,
        "model": champion.meta.get("kind"),
        "max_len": champion.max_len,
        "n_items": champion.n_items,
        "k": args.k,
        "faithfulness": {**faithful, "seconds": round(faith_s, 1)},
        "latency_in_process": in_process,
        "latency_http": http,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=None)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--latency-users", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-minutes", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = args.project or Path(tmp) / "project"
        if not (project / "params.yaml").exists():  # a new --project folder is built and kept
            build_project(project, args.train_minutes)
        result = run(project, args)
    faithful, ip, http = result["faithfulness"], result["latency_in_process"], result["latency_http"]
    print(f"{'check':58} {'share':>7}")
    for key in [k for k in faithful if k.startswith(("top_", "baseline_"))]:
        print(f"{key:58} {faithful[key]:7.3f}")
    print(f"over {faithful['cases']} (user, item) cases from {faithful['users']} users")
    print(f"{'latency':12} {'plain p50':>10} {'explain p50':>12} {'added p50':>10} {'added p95':>10}")
    for name, row in (("in-process", ip), ("http", http)):
        print(
            f"{name:12} {row['plain_p50_ms']:10.2f} {row['explain_p50_ms']:12.2f} "
            f"{row['added_p50_ms']:10.2f} {row['added_p95_ms']:10.2f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"machine": platform.platform(), "args": vars(args), **result}, indent=2, default=str) + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
