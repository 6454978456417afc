"""Serve the candidate as trained, or its refit on every event up to the cut? (issue 19, train.refit)

    python bench/refit.py [--data ../shared/datasets/amazon-beauty.txt] [--models markov sasrec]
                          [--synthetic-days 7] [--budget-min 8] [--out bench/results/refit.json]

(a) Beauty, leave-one-out (its txt has no real times): the candidate trains without each user's last
    two events (early stopping on the second-to-last); the refit trains on everything but the last
    (`train.refit: all`: a fresh model for the candidate's best epoch count; counts for Markov). Both
    score each user's last item, seen items excluded and not.
(b) Synthetic, global temporal split, the way production sees it: `--synthetic-days` day-sized
    batches (drift from day 4 on, which adds new items); train at a cut T (end of a day), serve the
    next day: every event of that day is scored with the user's history just before it (the online
    features move, the model does not). Served-as-trained = the candidate (users' last two events
    before T held out, as the flow's leave-one-out split does); refit = all events before T.

Gain = refit − candidate per user (a) or per scored event (b), with the gate's paired bootstrap CI
(models/release/policy.py `compare`); extra retrain time = the refit's training seconds. Prints a
table and writes bench/results/refit.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from seqops.config import (
    EvaluateParams,
    GateParams,
    IngestParams,
    ModelParams,
    Paths,
    SyntheticParams,
    TrainParams,
)
from seqops.features.ingest import ingest
from seqops.features.synthetic import write_batch
from seqops.models.nets.zoo import build_model
from seqops.models.release.policy import compare
from seqops.models.training.evaluate import metrics_from_ranks, target_ranks
from seqops.models.training.refit import refit_train_params
from seqops.models.training.train import score_fn_for, train_model

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "amazon-beauty.txt"
OUT = REPO / "bench" / "results" / "refit.json"
METRICS = ["ndcg@10", "hr@10"]
MODELS = {
    "markov": {},
    "sasrec": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "loss": "ce"},
    "sasrec-small": {"kind": "sasrec", "hidden_size": 32, "num_layers": 1, "num_heads": 1, "loss": "ce"},
    "gru4rec": {"loss": "ce", "num_layers": 1},
}
BATCH = 1024


def read_events(path: Path, fmt: str, work: Path) -> pd.DataFrame:
    """Canonical events (user_id, item_id, ts) through seqops' own ingest, in (user, time) order."""
    events = ingest(path, IngestParams(format=fmt, min_user_events=3, data_report=False), Paths(work)).events
    return events.sort_values(["user_id", "ts"], kind="stable").reset_index(drop=True)


def sequences(events: pd.DataFrame) -> list[np.ndarray]:
    return [g.to_numpy(np.int64) for _, g in events.groupby("user_id", sort=False)["item_id"]]


def fit(
    name: str,
    train_seqs,
    valid_inputs,
    valid_targets,
    n_items: int,
    max_len: int,
    train_p: TrainParams,
    epochs: int | None = None,
) -> tuple[torch.nn.Module, int, float]:
    """Train model `name`; with `epochs` (the refit) exactly that many, else early stopping. (model, best_epoch, s)."""
    overrides = dict(MODELS[name])
    torch.manual_seed(train_p.seed)
    model = build_model(ModelParams(**{"kind": overrides.pop("kind", name), **overrides}), n_items, max_len)
    start = time.perf_counter()
    result = train_model(
        model,
        train_seqs,
        valid_inputs,
        valid_targets,
        train_p if epochs is None else refit_train_params(train_p, epochs),
        EvaluateParams(),
        progress=False,
    )
    return model.to("cpu"), result.best_epoch, time.perf_counter() - start


def refit(
    name: str,
    mode: str,
    candidate: torch.nn.Module,
    best_epoch: int,
    seqs,
    valid_inputs,
    valid_targets,
    n_items: int,
    max_len: int,
    train_p: TrainParams,
) -> tuple[torch.nn.Module, float]:
    """`train.refit` on `seqs`: all = a fresh model for best_epoch epochs; tail = the candidate fine-tuned one epoch."""
    if mode == "all":
        model, _, seconds = fit(name, seqs, valid_inputs, valid_targets, n_items, max_len, train_p, best_epoch)
        return model, seconds
    model, start = copy.deepcopy(candidate), time.perf_counter()
    train_model(
        model, seqs, valid_inputs, valid_targets, refit_train_params(train_p, 1), EvaluateParams(), progress=False
    )
    return model.to("cpu"), time.perf_counter() - start


def ranks(model: torch.nn.Module, inputs: list[np.ndarray], targets: np.ndarray, max_len: int) -> dict[str, np.ndarray]:
    """Target ranks with the user's history items excluded from the ranking and ranked too (one scoring pass)."""
    score = score_fn_for(model, max_len, "cpu")
    parts: dict[str, list] = {"excluded": [], "ranked": []}
    for i in range(0, len(targets), BATCH):
        scores, batch = score(inputs[i : i + BATCH]), targets[i : i + BATCH]
        parts["excluded"].append(target_ranks(scores, batch, inputs[i : i + BATCH]))
        parts["ranked"].append(target_ranks(scores, batch))
    return {seen: np.concatenate(p) for seen, p in parts.items()}


def gains(cand_model, refit_model, inputs, targets, max_len: int, gp: GateParams) -> dict:
    """Both ways of ranking seen items: metrics of each, and the refit's gain with its paired CI."""
    out, cand_all, refit_all = (
        {},
        ranks(cand_model, inputs, targets, max_len),
        ranks(refit_model, inputs, targets, max_len),
    )
    for seen in ("excluded", "ranked"):
        cand, refit = cand_all[seen], refit_all[seen]
        out[f"seen_{seen}"] = {
            "served_as_trained": metrics_from_ranks(cand, (10,)),
            "refit": metrics_from_ranks(refit, (10,)),
            "gain": compare(refit, cand, METRICS, gp),
        }
    return out


def beauty(args, train_p: TrainParams, gp: GateParams, work: Path) -> list[dict]:
    events = read_events(args.data, "sasrec", work / "beauty")
    seqs, n_items = sequences(events), int(events["item_id"].max())
    rng = np.random.default_rng(0)

    def cap(seq: np.ndarray) -> np.ndarray:
        return seq[-args.max_len :]

    def sample(n: int):
        return sorted(rng.choice(len(seqs), size=n, replace=False)) if n and n < len(seqs) else range(len(seqs))

    tested, validated = sample(args.test_users), sample(args.valid_users)
    test_inputs, test_targets = [cap(seqs[i][:-1]) for i in tested], np.array([seqs[i][-1] for i in tested])
    valid_inputs, valid_targets = [cap(seqs[i][:-2]) for i in validated], np.array([seqs[i][-2] for i in validated])
    rows = []
    for name in args.models:
        cand, best_epoch, cand_s = fit(
            name, [s[:-2] for s in seqs], valid_inputs, valid_targets, n_items, args.max_len, train_p
        )
        for mode in args.modes:
            served, refit_s = refit(
                name,
                mode,
                cand,
                best_epoch,
                [s[:-1] for s in seqs],
                valid_inputs,
                valid_targets,
                n_items,
                args.max_len,
                train_p,
            )
            rows.append(
                {
                    "data": "amazon-beauty (leave-one-out)",
                    "model": name,
                    "refit": mode,
                    "users": len(seqs),
                    "test_users": len(test_targets),
                    "valid_users": len(valid_targets),
                    "best_epoch": best_epoch,
                    "candidate_train_s": cand_s,
                    "refit_train_s": refit_s,
                    **gains(cand, served, test_inputs, test_targets, args.max_len, gp),
                }
            )
            print_row(rows[-1])
    return rows


def synthetic_days(days: int, work: Path) -> pd.DataFrame:
    """`days` day-sized synthetic batches, drift 0.5 (new items) from day 4 on, ingested."""
    landing = work / "landing"
    for day in range(days):
        write_batch(SyntheticParams(days_per_batch=1, drift=0.5 if day >= 4 else 0.0), landing, day)
    return read_events(landing, "synthetic", work / "synthetic")


def next_day_events(events: pd.DataFrame, cut: pd.Timestamp, max_len: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Every event in [cut, cut + 1 day) of a user with history, with that user's history just before it."""
    inputs, targets = [], []
    day = events[events["ts"] < cut + pd.Timedelta(days=1)]
    for _, g in day.groupby("user_id", sort=False):
        items, after = g["item_id"].to_numpy(np.int64), int((g["ts"] < cut).sum())
        for i in range(max(after, 1), len(items)):
            inputs.append(items[max(0, i - max_len) : i])
            targets.append(items[i])
    return inputs, np.array(targets, dtype=np.int64)


def synthetic(args, train_p: TrainParams, gp: GateParams, work: Path) -> list[dict]:
    events = synthetic_days(args.synthetic_days, work / "synthetic-data")
    n_items, start = int(events["item_id"].max()), events["ts"].min().normalize()
    rows = []
    for cut_day in args.cut_days:
        cut = start + pd.Timedelta(days=cut_day)
        before = events[events["ts"] < cut]
        seqs = [s for s in sequences(before) if len(s) >= 2]
        inputs, targets = next_day_events(events, cut, args.max_len)
        last_day = cut - pd.Timedelta(days=1)
        new_items = set(before.loc[before["ts"] >= last_day, "item_id"]) - set(
            before.loc[before["ts"] < last_day, "item_id"]
        )
        for protocol in args.protocols:
            cand_train, valid_inputs, valid_targets = candidate_split(before, seqs, protocol, args.max_len)
            for name in args.synthetic_models:
                cand, best_epoch, cand_s = fit(
                    name, cand_train, valid_inputs, valid_targets, n_items, args.max_len, train_p
                )
                for mode in args.modes:
                    served, refit_s = refit(
                        name, mode, cand, best_epoch, seqs, valid_inputs, valid_targets, n_items, args.max_len, train_p
                    )
                    rows.append(
                        {
                            "data": f"synthetic, candidate split {protocol}, train < day {cut_day}, serve day {cut_day}",
                            "model": name,
                            "refit": mode,
                            "scored_events": len(targets),
                            "targets_new_in_last_day": int(np.isin(targets, list(new_items)).sum()),
                            "candidate_train_events": int(sum(map(len, cand_train))),
                            "refit_train_events": int(sum(map(len, seqs))),
                            "best_epoch": best_epoch,
                            "candidate_train_s": cand_s,
                            "refit_train_s": refit_s,
                            **gains(cand, served, inputs, targets, args.max_len, gp),
                        }
                    )
                    print_row(rows[-1])
    return rows


def candidate_split(before: pd.DataFrame, seqs: list[np.ndarray], protocol: str, max_len: int):
    """The candidate's (train sequences, validation inputs, validation targets) under the flow's
    `evaluate.protocol`: leave_one_out holds out each user's last two events; temporal (share 0.1)
    holds out the last 20% of the time span (validation: each user's first event in its first half)."""
    if protocol == "leave_one_out":
        loo = [s for s in seqs if len(s) >= 3]
        return [s[:-2] for s in loo], [s[:-2][-max_len:] for s in loo], np.array([s[-2] for s in loo])
    start, end = before["ts"].min(), before["ts"].max()
    valid_cut, test_cut = end - (end - start) * 0.2, end - (end - start) * 0.1
    train = [s for s in sequences(before[before["ts"] < valid_cut]) if len(s) >= 2]
    inputs, targets = [], []
    for _, g in before[before["ts"] < test_cut].groupby("user_id", sort=False):
        items, k = g["item_id"].to_numpy(np.int64), int((g["ts"] < valid_cut).sum())
        if 0 < k < len(items):
            inputs.append(items[:k][-max_len:])
            targets.append(items[k])
    return train, inputs, np.array(targets, dtype=np.int64)


def print_row(row: dict) -> None:
    for seen in ("excluded", "ranked"):
        r = row[f"seen_{seen}"]
        g = r["gain"]["ndcg@10"]
        print(
            f"| {row['data']} | {row['model']} | {row.get('refit', 'all')} | seen {seen} | {r['served_as_trained']['ndcg@10']:.4f} | {r['refit']['ndcg@10']:.4f} "
            f"| {g['delta']:+.4f} [{g['low']:+.4f}, {g['high']:+.4f}] | {r['served_as_trained']['hr@10']:.4f} → {r['refit']['hr@10']:.4f} "
            f"| {row['candidate_train_s']:.1f} s + {row['refit_train_s']:.1f} s |",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--models", nargs="*", default=["markov"], choices=list(MODELS))
    ap.add_argument("--synthetic-models", nargs="*", default=["markov", "sasrec-small"], choices=list(MODELS))
    ap.add_argument("--synthetic-days", type=int, default=7)
    ap.add_argument("--cut-days", type=int, nargs="*", default=[5, 6], help="train before day d, serve day d")
    ap.add_argument(
        "--protocols", nargs="*", default=["leave_one_out", "temporal"], help="candidate splits on synthetic"
    )
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument(
        "--modes", nargs="*", default=["all", "tail"], choices=["all", "tail"], help="train.refit modes to compare"
    )
    ap.add_argument(
        "--valid-users", type=int, default=0, help="Beauty: early stopping on this many sampled users (0: all)"
    )
    ap.add_argument("--test-users", type=int, default=0, help="Beauty: score this many sampled users (0: all)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--budget-min", type=float, default=8.0, help="train.max_minutes of each candidate")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train_p = TrainParams(epochs=args.epochs, max_minutes=args.budget_min, device="cpu")
    gp = GateParams()
    print(
        "| data | model | refit | seen | served as trained NDCG@10 | refit NDCG@10 | gain (95% CI) | HR@10 | train + refit time |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        rows = (beauty(args, train_p, gp, Path(tmp)) if args.models else []) + (
            synthetic(args, train_p, gp, Path(tmp)) if args.synthetic_models else []
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "command": "python bench/refit.py " + " ".join(f"{k}={v}" for k, v in vars(args).items()),
                "machine": platform.platform(),
                "threads": args.threads,
                "rows": rows,
            },
            indent=2,
            default=str,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
