"""Anomaly detection with labelled, injected anomalies; writes bench/results/anomaly.json.

    nice -n 10 python bench/anomaly.py [--data ../shared/datasets/amazon-beauty.txt] [--datasets synthetic beauty]
                                       [--train-minutes 5.0] [--beauty-users 8000] [--per-type 100] [--fit-users N]

Per dataset: events through seqops' own ingest (synthetic: `features/synthetic.py` batch 0; Beauty:
`--format sasrec`), users split 80/20; a SASRec champion trained briefly on the 80% and saved as an
artifact whose reference (the detector's fit set) is those users' latest feature rows; the detector
(models/anomaly.py, params.yaml `anomaly:`) fitted on it exactly as the service fits it. Held-out
users are the normals; copies of `--per-type` held-out users per type get, through `next_row` (what the online
store does with pushed events):

  bot       `window` uniformly random items, one a second
  loop      `window` events cycling over 2-4 items, a minute apart
  scraper   `window` items walking the catalogue in (dense) id order, 5 s apart
  takeover  `window // 2` events of another held-out user (their items and gaps): the switch falls
            inside the scored window

Reported per type: ROC AUC (that type vs the normals), precision and recall at the default
threshold (normals + that type), and the normals' false-positive rate at the threshold. Beauty has
no timestamps (ingest gives row k the time start + k s): the speed features (events per session,
last gap) would be artefacts there, so its detector leaves them out (`timed=False`).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from seqops.config import AnomalyParams, EvaluateParams, IngestParams, ModelParams, Paths, TrainParams, load_params
from seqops.features.ingest import ingest
from seqops.features.sequences import next_row
from seqops.features.synthetic import write_batch
from seqops.models.anomaly import AnomalyModel, UserWindow
from seqops.models.nets.baselines import PopularityModel
from seqops.models.nets.zoo import build_model
from seqops.models.training.artifact import Artifact, save_artifact
from seqops.models.training.train import train_model

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "amazon-beauty.txt"
OUT = REPO / "bench" / "results" / "anomaly.json"
MAX_LEN, SESSION_GAP_S = 50, 1800
SAMPLED_LOSS_ITEMS = 20_000  # larger catalogues train the champion with a sampled softmax (model.loss)
TYPES = ("bot", "loop", "scraper", "takeover")
Event = tuple[int, str, float]


def load_events(dataset: str, work: Path, data: Path, beauty_users: int, seed: int) -> pd.DataFrame:
    if dataset == "synthetic":
        raw = work / "raw"
        write_batch(load_params(REPO / "params.yaml").data.synthetic, raw, 0)
        events = ingest(raw, IngestParams(format="synthetic", data_report=False), Paths(work)).events
    else:
        events = ingest(data, IngestParams(format="sasrec", min_user_events=3, data_report=False), Paths(work)).events
        users = events["user_id"].unique()
        if len(users) > beauty_users:  # a seeded sample keeps the run within minutes on a shared CPU
            keep = np.random.default_rng(seed).choice(users, beauty_users, replace=False)
            events = events[events["user_id"].isin(keep)]
    return events.sort_values(["user_id", "ts"], kind="stable")


def user_events(events: pd.DataFrame) -> dict[int, list[Event]]:
    ts = events["ts"].astype("int64").to_numpy() / 1e6
    frame = pd.DataFrame(
        {
            "user": events["user_id"].to_numpy(),
            "item": events["item_id"].to_numpy(),
            "type": events["event_type"].astype(str).to_numpy(),
            "ts": ts,
        }
    )
    return {
        int(u): list(zip(g["item"].astype(int), g["type"], g["ts"].astype(float)))
        for u, g in frame.groupby("user", sort=False)
    }


def row_of(evs: list[Event]) -> dict:
    return next_row(None, evs, MAX_LEN, SESSION_GAP_S)


def train_champion(
    train: list[list[Event]], items: pd.DataFrame, n_items: int, work: Path, minutes: float, seed: int
) -> Artifact:
    """A briefly trained SASRec saved as an artifact whose reference is the training users' rows."""
    torch.manual_seed(seed)
    seqs = [np.asarray([e[0] for e in evs], dtype=np.int64) for evs in train]
    # a full softmax over Beauty's 54k items trains one epoch in minutes on a shared CPU: sampled softmax there
    loss = "sampled" if n_items > SAMPLED_LOSS_ITEMS else "ce"
    model = build_model(
        ModelParams(kind="sasrec", hidden_size=64, num_layers=2, num_heads=2, loss=loss), n_items, MAX_LEN
    )
    valid = [s for s in seqs if len(s) >= 3][:500]
    trained = train_model(
        model,
        [s[:-1] for s in seqs],
        [s[:-1] for s in valid],
        np.asarray([s[-1] for s in valid]),
        TrainParams(epochs=30, batch_size=128, patience=2, max_minutes=minutes, seed=seed, device="cpu"),
        EvaluateParams(),
        progress=False,
    )
    rows = [row_of(evs) for evs in train]
    reference = pd.DataFrame(
        {
            "user_id": np.arange(1, len(rows) + 1),
            "n_events": [r["n_events"] for r in rows],
            "n_sessions": [r["n_sessions"] for r in rows],
            "log_gap_s": [np.log1p(r["secs_since_prev"]) for r in rows],
            "share_cart": 0.0,
            "share_purchase": 0.0,
            "last_items": [r["last_items"] for r in rows],
        }
    )
    counts = np.bincount(np.concatenate(seqs), minlength=n_items + 1)
    items.to_parquet(work / "items.parquet", index=False)
    save_artifact(
        work / "champion",
        model,
        PopularityModel.from_counts(counts),
        {
            "kind": "sasrec",
            "loss": loss,
            "epochs": len(trained.history),
            "best_epoch": trained.best_epoch,
            "val_ndcg@10": round(max(r["val_ndcg@10"] for r in trained.history), 4),
            "stopped": trained.stopped,
        },
        work / "items.parquet",
        reference,
    )
    return Artifact.load(work / "champion")


def inject(
    kind: str, evs: list[Event], other: list[Event], n: int, n_items: int, rng: np.random.Generator
) -> list[Event]:
    """`evs` continued by `n` events of the anomaly `kind`."""
    t0 = evs[-1][2]
    if kind == "bot":
        return evs + [(int(i), "view", t0 + 1 + k) for k, i in enumerate(rng.integers(1, n_items + 1, n))]
    if kind == "loop":
        cycle = rng.integers(1, n_items + 1, int(rng.integers(2, 5)))
        return evs + [(int(cycle[k % len(cycle)]), "view", t0 + 60 * (k + 1)) for k in range(n)]
    if kind == "scraper":
        start = int(rng.integers(1, max(2, n_items - n)))
        return evs + [(start + k, "view", t0 + 5 * (k + 1)) for k in range(n)]
    tail = other[-(n // 2) :]  # takeover: another person's latest events, their own gaps
    shift = t0 + 600 - tail[0][2]
    return evs + [(i, t, ts + shift) for i, t, ts in tail]


def evaluate(detector: AnomalyModel, normals: list[UserWindow], injected: dict[str, list[UserWindow]]) -> dict:
    normal_scores = np.asarray([a["score"] for a in detector.score(normals)])
    threshold = detector.detector.threshold
    fpr = float((normal_scores > threshold).mean())
    out = {"threshold": round(threshold, 5), "n_normal": len(normals), "normal_fpr": round(fpr, 4), "types": {}}
    for kind, windows in injected.items():
        answers = detector.score(windows)
        scores = np.asarray([a["score"] for a in answers])
        flagged = scores > threshold
        tp, fp = int(flagged.sum()), int((normal_scores > threshold).sum())
        reasons = pd.Series([r["feature"] for a in answers for r in a["reasons"][:1]]).value_counts()
        out["types"][kind] = {
            "n": len(windows),
            "roc_auc": round(
                float(
                    roc_auc_score(
                        np.r_[np.zeros(len(normal_scores)), np.ones(len(scores))], np.r_[normal_scores, scores]
                    )
                ),
                4,
            ),
            "precision": round(tp / max(1, tp + fp), 4),
            "recall": round(tp / len(windows), 4),
            "top_reasons": {k: int(v) for k, v in reasons.head(3).items()},
        }
    return out


def run_dataset(dataset: str, args: argparse.Namespace, params: AnomalyParams) -> dict:
    started = time.time()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        events = load_events(dataset, work, args.data, args.beauty_users, args.seed)
        n_items = int(events["item_id"].max())
        items = events.groupby("item_id", as_index=False).first()[
            ["item_id"] + (["category"] if "category" in events else [])
        ]
        items.insert(0, "raw_id", items["item_id"].astype(str))
        by_user = [evs for evs in user_events(events).values() if len(evs) >= 3]
        order = rng.permutation(len(by_user))
        cut = int(0.8 * len(by_user))
        train, held = [by_user[i] for i in order[:cut]], [by_user[i] for i in order[cut:]]
        artifact = train_champion(train, items, n_items, work, args.train_minutes, args.seed)
        timed = dataset == "synthetic"
        fit_started = time.time()
        detector = AnomalyModel.for_artifact(artifact, params, timed=timed)
        fit_s = time.time() - fit_started
        # victims are copies of held-out users (each normal user also stays in the normals, untouched)
        victims = [held[i] for i in rng.choice(len(held), min(len(held), args.per_type * len(TYPES)), replace=False)]
        per_type = len(victims) // len(TYPES)
        normals = [UserWindow.from_row(row_of(evs)) for evs in held]
        injected = {
            kind: [
                UserWindow.from_row(
                    row_of(inject(kind, evs, held[int(rng.integers(len(held)))], params.window, n_items, rng))
                )
                for evs in victims[k * per_type : (k + 1) * per_type]
            ]
            for k, kind in enumerate(TYPES)
        }
        result = evaluate(detector, normals, injected)
    return {
        "dataset": dataset,
        "users": len(by_user),
        "fit_users": min(len(train), params.max_fit_users),
        "items": n_items,
        "features": detector.names,
        "timed": timed,
        "champion": {k: artifact.meta.get(k) for k in ("loss", "epochs", "best_epoch", "val_ndcg@10", "stopped")},
        "fit_seconds": round(fit_s, 1),
        "seconds": round(time.time() - started, 1),
        **result,
    }


def print_table(rows: list[dict]) -> None:
    print(f"{'dataset':10} {'type':9} {'AUC':>6} {'prec':>6} {'recall':>6} {'FPR':>6}  top reason")
    for row in rows:
        for kind, r in row["types"].items():
            print(
                f"{row['dataset']:10} {kind:9} {r['roc_auc']:6.3f} {r['precision']:6.3f} {r['recall']:6.3f} "
                f"{row['normal_fpr']:6.3f}  {next(iter(r['top_reasons']), '-')}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--datasets", nargs="+", default=["synthetic", "beauty"], choices=["synthetic", "beauty"])
    parser.add_argument("--train-minutes", type=float, default=5.0)
    parser.add_argument("--beauty-users", type=int, default=8000)
    parser.add_argument("--per-type", type=int, default=100)
    parser.add_argument("--fit-users", type=int, default=None, help="override anomaly.max_fit_users (time)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    params = load_params(REPO / "params.yaml").anomaly
    if args.fit_users:
        params = params.model_copy(update={"max_fit_users": args.fit_users})
    rows = []
    for dataset in args.datasets:
        if dataset == "beauty" and not args.data.exists():
            print(f"skipping beauty: {args.data} not found", file=sys.stderr)
            continue
        rows.append(run_dataset(dataset, args, params))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "types"}), flush=True)
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "params": params.model_dump(),
                "train_minutes": args.train_minutes,
                "machine": platform.platform(),
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
