"""How often is the gate wrong? Two measurements, printed as tables and written to bench/results/gate.json.

1. The drift decision (`seqops.models.release.drift.behaviour_drift`, Evidently): K replicas of a champion
   batch and a next batch from the synthetic generator with no drift (a "drift" verdict there is a
   false alarm — a false block had drift been allowed to block) and K with drift of increasing
   size (a "drift" verdict is a detection). Each replica runs the real path: raw CSVs → ingest →
   per-event features → user summaries of the champion's data and of the candidate's, the
   champion's catalogue counts. Several Evidently stattest settings are compared with the one
   params.yaml chooses.
   `--day-sized`: the monitor's case instead — the fresh events are one day of the next batch
   (`behaviour_drift(..., same_span=True)`, as flows/monitor.py calls it), also without the fix
   (whole-history reference) for comparison; rows with "day-sized" in their config.
2. The performance check (paired bootstrap over held-out users): two equally good models (one
   next-item scorer with independent noise of the same size; any block is a false block) and a
   worse one (more noise; a block is a detection), at the test-suite size and the default size.

    python bench/gate.py [--replicas 40] [--perf-replicas 200] [--drifts 0.05 0.1 0.2 0.3]
    python bench/gate.py --day-sized [--replicas 20] [--drifts 0.1]   # adds/replaces the day-sized rows only
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from seqops.config import GateParams, Paths, SyntheticParams, load_params
from seqops.features.ingest import ingest
from seqops.features.synthetic import write_batch
from seqops.models.release.drift import behaviour_drift
from seqops.models.release.policy import compare

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "gate.json"
# Drift settings compared with params.yaml's: Evidently's own choice, and two effect-size measures.
OLD_FLOOR = 0.005  # the gate before the bootstrap: point estimates, candidate >= champion - 0.005
ALTERNATIVES = {"evidently auto": ("auto", 0.0), "wasserstein 0.1": ("wasserstein", 0.1), "psi 0.1": ("psi", 0.1)}


# -- 1. drift decision ----------------------------------------------------------------------


def replica(p: SyntheticParams, drift: float, work: Path) -> tuple[pd.DataFrame, pd.Series, np.ndarray]:
    """Champion = batch 0; candidate = batch 0 + batch 1 (with `drift`), as the retrain flow sees
    them: all events, how many of each user's events the champion saw, the champion's item counts."""
    raw = work / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    write_batch(p, raw, 0)
    write_batch(p.model_copy(update={"drift": drift}), raw, 1)
    events = ingest(raw, load_params(REPO / "params.yaml").ingest, Paths(work)).events
    old = events[events["ts"] < pd.Timestamp(p.start, tz="UTC") + pd.Timedelta(days=p.days_per_batch)]
    return events, old.groupby("user_id").size(), np.bincount(old["item_id"], minlength=int(old["item_id"].max()) + 1)


def day_replica(p: SyntheticParams, drift: float, work: Path) -> tuple[pd.DataFrame, pd.Series, np.ndarray]:
    """Champion = batch 0; fresh = one day (the 4th) of batch 1, as the monitor sees a day of landed events."""
    events, seen, counts = replica(p, drift, work)
    day = pd.Timestamp(p.start, tz="UTC") + pd.Timedelta(days=p.days_per_batch + 3)
    old_or_day = (events["ts"] < day - pd.Timedelta(days=3)) | (
        (events["ts"] >= day) & (events["ts"] < day + pd.Timedelta(days=1))
    )
    return events[old_or_day], seen, counts


def day_sized_bench(replicas: int, drifts: list[float], gp: GateParams) -> list[dict]:
    """False alarms and detections of the monitor's drift check on day-sized batches: as it runs now
    (same-length stretches of the champion's data) and with the whole-history reference it had before."""
    params = load_params(REPO / "params.yaml")
    variants = {"day-sized (monitor)": True, "day-sized, whole-history reference (old)": False}
    hits = {(name, d): 0 for name in variants for d in [0.0, *drifts]}
    for r in range(replicas):
        for d in [0.0, *drifts]:
            p = params.data.synthetic.model_copy(update={"seed": 2000 + r})
            with tempfile.TemporaryDirectory() as tmp:
                events, seen, counts = day_replica(p, d, Path(tmp))
            for name, same_span in variants.items():
                hits[name, d] += behaviour_drift(events, seen, counts, gp, same_span=same_span)["dataset_drift"]
        print(f"  day-sized replica {r + 1}/{replicas}", file=sys.stderr, flush=True)
    return drift_rows(hits, {name: gp for name in variants}, replicas)


def record_day_sized(out: Path, rows: list[dict], seconds: float) -> None:
    """Replace the day-sized rows of an existing gate.json (the other rows are kept) and its day-sized targets."""
    results = json.loads(out.read_text()) if out.exists() else {}
    results["drift"] = [r for r in results.get("drift", []) if not r["config"].startswith("day-sized")] + rows
    monitor = {r["drift"]: r["rate"] for r in rows if r["config"] == "day-sized (monitor)"}
    results["day_sized_targets"] = {
        "false_alarm": monitor[0.0],
        "detection_at_0.1": monitor.get(0.1),
        "met": monitor[0.0] <= 0.05 and (monitor.get(0.1) or 0) >= 0.9,
        "replicas": rows[0]["replicas"],
        "seconds": seconds,
    }
    out.write_text(json.dumps(results, indent=2))


def drift_rows(hits: dict[tuple[str, float], int], configs: dict[str, GateParams], replicas: int) -> list[dict]:
    """One row per (config, drift): how many replicas the drift check flagged, and the rate."""
    return [
        {
            "config": name,
            "method": configs[name].drift_method,
            "threshold": configs[name].drift_threshold,
            "share_threshold": configs[name].drift_share_threshold,
            "drift": d,
            "flagged": flagged,
            "replicas": replicas,
            "rate": flagged / replicas,
        }
        for (name, d), flagged in hits.items()
    ]


def drift_bench(replicas: int, drifts: list[float], configs: dict[str, GateParams]) -> list[dict]:
    params = load_params(REPO / "params.yaml")
    hits = {(name, d): 0 for name in configs for d in [0.0, *drifts]}
    for r in range(replicas):
        for d in [0.0, *drifts]:
            p = params.data.synthetic.model_copy(update={"seed": 1000 + r})
            with tempfile.TemporaryDirectory() as tmp:
                events, seen, counts = replica(p, d, Path(tmp))
            for name, gp in configs.items():
                hits[name, d] += behaviour_drift(events, seen, counts, gp)["dataset_drift"]
        print(f"  drift replica {r + 1}/{replicas}", file=sys.stderr, flush=True)
    return drift_rows(hits, configs, replicas)


def markov_scorer(events: pd.DataFrame, n_items: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Leave-one-out on one batch: histories, targets, and next-item scores of a first-order Markov
    model with a popularity prior fit on everything but the targets — a reasonable, cheap recommender."""
    events = events.sort_values(["user_id", "ts"], kind="stable")
    groups = [g.to_numpy() for _, g in events.groupby("user_id")["item_id"] if len(g) >= 3]
    histories, targets = [g[:-1] for g in groups], np.array([g[-1] for g in groups])
    transitions = np.zeros((n_items + 1, n_items + 1))
    for h in histories:
        np.add.at(transitions, (h[:-1], h[1:]), 1.0)
    popularity = np.bincount(np.concatenate(histories), minlength=n_items + 1).astype(float)
    last = np.array([h[-1] for h in histories])
    scores = np.log1p(transitions[last]) + 0.3 * np.log1p(popularity)[None, :]
    scores[:, 0] = -np.inf
    return histories, targets, scores


def ranks_of(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    rows = np.arange(len(targets))
    return (scores >= scores[rows, targets][:, None]).sum(axis=1)


def perf_bench(replicas: int, user_counts: list[int], noise: dict[str, float], gp: GateParams) -> list[dict]:
    """Champion = Markov scores + N(0, noise["equal"]); candidates = the same + independent noise
    of each case's size: "equal" is equally good, "worse" / "better" have more / less noise."""
    params = load_params(REPO / "params.yaml")
    p = params.data.synthetic
    with tempfile.TemporaryDirectory() as tmp:
        write_batch(p, Path(tmp) / "raw", 0)
        events = ingest(Path(tmp) / "raw", params.ingest, Paths(tmp)).events
    _, targets, base = markov_scorer(events, int(events["item_id"].max()))
    rng = np.random.default_rng(7)
    rules = {
        f"point floor -{OLD_FLOOR} (old)": lambda c: c["delta"] >= -OLD_FLOOR,
        "non_inferior": lambda c: c["high"] >= -gp.max_regression,
        "superior": lambda c: c["low"] > gp.min_uplift,
    }
    rows = []
    for n_users in user_counts:
        blocked = {(case, rule): 0 for case in noise for rule in rules}
        true_delta = {case: [] for case in noise}
        for _ in range(replicas):
            users = rng.choice(len(targets), size=min(n_users, len(targets)), replace=False)
            s, t = base[users], targets[users]
            champion = ranks_of(s + rng.normal(0, noise["equal"], s.shape), t)
            for case, sigma in noise.items():
                candidate = ranks_of(s + rng.normal(0, sigma, s.shape), t)
                c = compare(candidate, champion, [gp.metric], gp)[gp.metric]
                true_delta[case].append(c["delta"])
                for rule, passes in rules.items():
                    blocked[case, rule] += not passes(c)
        for (case, rule), n in blocked.items():
            rows.append(
                {
                    "case": case,
                    "rule": rule,
                    "n_users": int(len(users)),
                    "blocked": n,
                    "replicas": replicas,
                    "rate": n / replicas,
                    "mean_delta": float(np.mean(true_delta[case])),
                }
            )
    return rows


# -- report ---------------------------------------------------------------------------------


def drift_table(rows: list[dict], drifts: list[float], significant: float) -> str:
    head = f"{'drift setting':<26}{'false alarm @0':>15}" + "".join(
        f"{'detect @' + format(d, 'g'):>13}" for d in drifts
    )
    lines = [head, "-" * len(head)]
    for name in dict.fromkeys(r["config"] for r in rows):
        rate = {r["drift"]: r for r in rows if r["config"] == name}
        first = rate[0.0]
        label = f"{name}" + (f" ({first['method']} {first['threshold']:g})" if name == "params.yaml" else "")
        cells = "".join(f"{rate[d]['rate']:>12.0%}{'*' if d == significant else ' '}" for d in drifts)
        lines.append(f"{label:<26}{first['rate']:>15.0%}{cells}")
    lines.append(
        f"(* = gate.significant_drift; dataset drift when ≥ {rows[0]['share_threshold']:.0%} of the features drift)"
    )
    return "\n".join(lines)


def perf_table(rows: list[dict]) -> str:
    head = f"{'rule':<24}{'users':>7}{'false block (equal)':>21}{'block (worse)':>15}{'block (better)':>16}"
    lines = [head, "-" * len(head)]
    for n_users in dict.fromkeys(r["n_users"] for r in rows):
        for rule in dict.fromkeys(r["rule"] for r in rows):
            rate = {r["case"]: r["rate"] for r in rows if (r["n_users"], r["rule"]) == (n_users, rule)}
            lines.append(f"{rule:<24}{n_users:>7}{rate['equal']:>21.1%}{rate['worse']:>15.1%}{rate['better']:>16.1%}")
    deltas = {
        case: np.mean([r["mean_delta"] for r in rows if r["case"] == case])
        for case in dict.fromkeys(r["case"] for r in rows)
    }
    lines.append("(true mean Δ candidate - champion: " + ", ".join(f"{c} {d:+.4f}" for c, d in deltas.items()) + ")")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=40, help="drift replicas per drift size")
    parser.add_argument("--perf-replicas", type=int, default=200)
    parser.add_argument("--drifts", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3])
    parser.add_argument(
        "--users", type=int, nargs="+", default=[300, 2000], help="held-out users per performance replica"
    )
    parser.add_argument(
        "--noise", type=float, default=1.0, help="score noise of the champion and the equally good candidate"
    )
    parser.add_argument("--worse-noise", type=float, default=1.1, help="score noise of the worse candidate")
    parser.add_argument("--better-noise", type=float, default=0.9, help="score noise of the better candidate")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--day-sized", action="store_true", help="only the monitor's day-sized drift replicas (rows merged into --out)"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    np.seterr(all="ignore")

    gp = load_params(REPO / "params.yaml").gate
    if args.day_sized:
        started = time.perf_counter()
        rows = day_sized_bench(args.replicas, args.drifts, gp)
        print("\nMonitor drift check on day-sized batches (share of replicas flagged as dataset drift)")
        print(drift_table(rows, args.drifts, gp.significant_drift))
        record_day_sized(args.out, rows, time.perf_counter() - started)
        print(f"wrote {args.out}")
        return
    configs = {
        "params.yaml": gp,
        **{
            name: gp.model_copy(update={"drift_method": m, "drift_threshold": t or gp.drift_threshold})
            for name, (m, t) in ALTERNATIVES.items()
        },
    }
    started = time.perf_counter()
    drift_rows = drift_bench(args.replicas, args.drifts, configs)
    drift_s = time.perf_counter() - started
    noise = {"equal": args.noise, "worse": args.worse_noise, "better": args.better_noise}
    perf_rows = perf_bench(args.perf_replicas, args.users, noise, gp)
    print("\nDrift decision (Evidently, share of replicas flagged as dataset drift)")
    print(drift_table(drift_rows, args.drifts, gp.significant_drift))
    print(
        f"\nPerformance check ({gp.metric}, paired bootstrap {gp.bootstrap_samples}×, {gp.confidence:.0%} CI, "
        f"max_regression {gp.max_regression}, min_uplift {gp.min_uplift}; {args.perf_replicas} replicas)"
    )
    print(perf_table(perf_rows))

    chosen = {r["drift"]: r["rate"] for r in drift_rows if r["config"] == "params.yaml"}
    equal_ni = [r["rate"] for r in perf_rows if (r["case"], r["rule"]) == ("equal", gp.policy)]
    targets = {
        "drift_false_block": chosen[0.0],
        "drift_detection_at_significant": chosen.get(gp.significant_drift),
        "perf_false_block_max": max(equal_ni),
        "met": chosen[0.0] < 0.05 and (chosen.get(gp.significant_drift) or 0) >= 0.95 and max(equal_ni) < 0.05,
    }
    print(f"\ntargets (false block < 5%, detection ≥ 95% at drift {gp.significant_drift:g}): {targets}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "gate_params": gp.model_dump(),
                "replicas": args.replicas,
                "perf_replicas": args.perf_replicas,
                "noise": noise,
                "drift": drift_rows,
                "performance": perf_rows,
                "targets": targets,
                "seconds": {"drift": drift_s, "total": time.perf_counter() - started},
                "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
