"""Every model on one dataset, one protocol, one trainer and one evaluator; prints a table and
writes bench/results/models.json.

    python bench/models.py [--data ../shared/datasets/amazon-beauty.txt] [--models sasrec-ce bert4rec ...]
                           [--epochs 30] [--budget-min 20] [--device auto] [--out bench/results/models.json]

Data: a file in the SASRec/BERT4Rec txt format (`user item` per line, a user's lines in time
order) read through seqops' own ingest (`--format sasrec`: vocabularies, k-core ≥ 3 events).
Protocol: leave-one-out (last item = test, second-to-last = validation, the rest trains), histories
cut to the last `--max-len` items, full ranking over all items. Every row is ranked both ways from
the same scores: `ndcg@10`/`hr@10`/`mrr`/`test` with the user's history items excluded (the
published protocol, e.g. Klenitskiy & Vasilev 2023's SASRec on this Beauty file: NDCG@10 0.0327)
and `*_seen_included` with them ranked (params.yaml's `evaluate.exclude_seen: false`, the
product's choice). Rows written before both were kept have only the included numbers (their
`ndcg@10` is the included one; no `ndcg@10_seen_included` key). Early stopping on validation
NDCG@10 (seen excluded unless `--select-include-seen`) over `--valid-users` sampled validation
users; the test metrics use every user, or a fixed sample of `--test-users` (the row's note says
so). Each model trains until early stopping, `--epochs`, or `--budget-min` minutes of training
(mid-epoch), whichever comes first (the JSON says which); `--lr-schedule`, `--warmup-steps`,
`--weight-decay` as in params.yaml's `train:`. Per-epoch rows are printed as they come. Rows are
merged into the JSON at write time, so two bench processes may run side by side. Inference
users/s: test-set scoring (full ranking, both protocols) per second.

The language-model row (`lm`) fine-tunes all-MiniLM-L6-v2 on behaviour rendered as text; one
forward pass per history makes it ~1000× costlier per sequence than the id models on CPU, so it
trains on `--lm-users` users (its test metrics still use every user) — the row says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from seqops.config import EvaluateParams, IngestParams, ModelParams, Paths, TrainParams
from seqops.features.ingest import ingest
from seqops.models.nets.zoo import build_model
from seqops.models.training.evaluate import evaluate_seen_both_ways
from seqops.models.training.train import resolve_device, score_fn_for, train_model

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "amazon-beauty.txt"
OUT = REPO / "bench" / "results" / "models.json"

# name -> (model.kind, ModelParams overrides, TrainParams overrides)
MODELS = {
    "popularity": ("popularity", {}, {}),
    "markov": ("markov", {}, {}),
    "sasrec-ce": ("sasrec", {"loss": "ce"}, {}),
    "sasrec-sampled": ("sasrec", {"loss": "sampled", "n_negatives": 1024, "negatives": "uniform"}, {}),
    "sasrec-sampled-pop": ("sasrec", {"loss": "sampled", "n_negatives": 2048, "negatives": "popularity"}, {}),
    "sasrec-inbatch": ("sasrec", {"loss": "sampled", "negatives": "in_batch"}, {}),
    "sasrec-gbce": ("sasrec", {"loss": "gbce", "n_negatives": 256, "negatives": "uniform", "gbce_t": 0.75}, {}),
    "sasrec-bce": ("sasrec", {"loss": "bce"}, {}),
    "bert4rec": ("bert4rec", {"mask_prob": 0.2}, {}),
    "gru4rec": ("gru4rec", {"loss": "ce", "num_layers": 1}, {}),
    "lstm": ("lstm", {"loss": "ce", "num_layers": 1}, {}),
    "lm": ("lm", {"loss": "ce"}, {"batch_size": 32, "lr": 5e-5}),
}


def load_sequences(data: Path, work: Path) -> tuple[list[np.ndarray], int]:
    """Per-user item sequences (oldest first) through seqops' ingest; returns them and n_items."""
    p = IngestParams(format="sasrec", min_user_events=3, data_report=False)
    events = ingest(data, p, Paths(work)).events
    events = events.sort_values(["user_id", "ts"], kind="stable")
    seqs = [g.to_numpy(np.int64) for _, g in events.groupby("user_id", sort=False)["item_id"]]
    return seqs, int(events["item_id"].max())


def leave_one_out(seqs: list[np.ndarray]) -> dict:
    return {
        "train": [s[:-2] for s in seqs],
        "valid_inputs": [s[:-2] for s in seqs],
        "valid_targets": np.array([s[-2] for s in seqs]),
        "test_inputs": [s[:-1] for s in seqs],
        "test_targets": np.array([s[-1] for s in seqs]),
    }


def run_model(name: str, split: dict, n_items: int, args: argparse.Namespace, rng: np.random.Generator) -> dict:
    kind, model_overrides, train_overrides = MODELS[name]
    model_p = ModelParams(
        **{
            "kind": kind,
            "hidden_size": args.hidden,
            "num_layers": args.layers,
            "num_heads": args.heads,
            "dropout": args.dropout,
            **model_overrides,
        }
    )
    train_p = TrainParams(
        **{
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "patience": args.patience,
            "device": args.device,
            "amp": args.amp,
            "max_minutes": args.budget_min,
            "lr_schedule": args.lr_schedule,
            "warmup_steps": args.warmup_steps,
            "weight_decay": args.weight_decay,
            **train_overrides,
        }
    )
    eval_p = EvaluateParams(
        ks=[5, 10, 20], exclude_seen=args.select_exclude_seen
    )  # the validation (early stopping) protocol
    torch.manual_seed(0)
    model = build_model(model_p, n_items, args.max_len)
    valid = rng.choice(
        len(split["valid_targets"]), size=min(args.valid_users, len(split["valid_targets"])), replace=False
    )
    train_seqs = split["train"]
    note = ""
    if kind == "lm" and args.lm_users < len(train_seqs):
        train_seqs = [train_seqs[i] for i in rng.choice(len(train_seqs), size=args.lm_users, replace=False)]
        note = f"trained on {args.lm_users} sampled users"
    train_seqs = [s for s in train_seqs if len(s) >= 2]
    started = time.perf_counter()
    result = train_model(
        model,
        train_seqs,
        [split["valid_inputs"][i] for i in valid],
        split["valid_targets"][valid],
        train_p,
        eval_p,
        progress=True,
        on_epoch=lambda row: print(f"{name} {row}", file=sys.stderr, flush=True),
    )
    wall = time.perf_counter() - started
    train_s = sum(row["seconds"] for row in result.history)
    score = score_fn_for(model, args.max_len, resolve_device(args.device))
    t0 = time.perf_counter()
    test_users = np.arange(len(split["test_targets"]))
    if args.test_users and args.test_users < len(
        test_users
    ):  # a fixed sample (seed 1): every model ranks the same users
        test_users = np.sort(np.random.default_rng(1).choice(len(test_users), size=args.test_users, replace=False))
        note = "; ".join(filter(None, [note, f"test metrics on {args.test_users} sampled users"]))
    both = evaluate_seen_both_ways(
        score, [split["test_inputs"][i] for i in test_users], split["test_targets"][test_users], eval_p, progress=True
    )
    infer_s = time.perf_counter() - t0
    excluded, included = both[True], both[False]
    return {
        "model": name,
        "kind": kind,
        "loss": loss_label(kind, model_p),
        "ndcg@10": excluded["ndcg@10"],
        "hr@10": excluded["hr@10"],
        "mrr": excluded["mrr"],
        "test": excluded,
        "ndcg@10_seen_included": included["ndcg@10"],
        "hr@10_seen_included": included["hr@10"],
        "mrr_seen_included": included["mrr"],
        "test_seen_included": included,
        "validation_seen_excluded": eval_p.exclude_seen,
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "best_val_ndcg@10": result.best["val_ndcg@10"],
        "train_wall_s": wall,
        "train_s": train_s,
        "train_seq_per_s": float(np.mean([row["seq_per_s"] for row in result.history])),
        "infer_users_per_s": len(test_users) / infer_s,
        "test_users": len(test_users),
        "params": int(sum(p.numel() for p in model.parameters())),
        "note": note,
        "history": result.history,
    }


def loss_label(kind: str, p: ModelParams) -> str:
    if kind in ("popularity", "markov"):
        return "-"
    if p.loss in ("sampled", "gbce"):
        return f"{p.loss} {p.negatives}" + ("" if p.negatives == "in_batch" else f" {p.n_negatives}")
    return p.loss


def table_order(row: dict) -> tuple[int, str]:
    """MODELS order; a suffixed row (another setting) right after its model."""
    base = max((m for m in MODELS if row["model"].startswith(m)), key=len, default=None)
    return (list(MODELS).index(base) if base else len(MODELS), row["model"])


def print_table(rows: list[dict]) -> None:
    """NDCG/HR with seen items excluded (published protocol) | included; rows measured before both
    protocols were kept have the included numbers only (shown as excluded: '-')."""
    head = (
        f"{'model':<22}{'loss':<22}{'NDCG@10 ex|in':>16}{'HR@10 ex|in':>16}{'epochs':>8}{'train s':>9}"
        f"{'train seq/s':>13}{'infer users/s':>15}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        ndcg, hr = protocol_pair(r, "ndcg@10"), protocol_pair(r, "hr@10")
        print(
            f"{r['model']:<22}{r['loss']:<22}{ndcg:>16}{hr:>16}{r['epochs']:>8}"
            f"{r['train_wall_s']:>9.0f}{r['train_seq_per_s']:>13.0f}{r['infer_users_per_s']:>15.0f}  {r['note']}"
        )


def protocol_pair(row: dict, metric: str) -> str:
    if f"{metric}_seen_included" not in row:  # an older row: one protocol, seen items included
        return f"- | {row[metric]:.4f}"
    return f"{row[metric]:.4f} | {row[f'{metric}_seen_included']:.4f}"


def write_row(out: Path, row: dict, header: dict) -> list[dict]:
    """Merge `row` into the results file as it is NOW (another bench process may have written rows
    since this one started) and return the ordered rows."""
    previous = json.loads(out.read_text()) if out.exists() else {}
    rows = {r["model"]: r for r in previous.get("rows", [])} if previous.get("data") == header["data"] else {}
    rows[row["model"]] = row
    ordered = sorted(rows.values(), key=table_order)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({**header, "rows": ordered}, indent=1, default=float))
    tmp.replace(out)
    return ordered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--budget-min", type=float, default=20.0, help="most minutes of training per model")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lr-schedule", default="constant", choices=["constant", "cosine", "linear"])
    parser.add_argument("--warmup-steps", type=int, default=0)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument(
        "--select-include-seen",
        dest="select_exclude_seen",
        action="store_false",
        help="validate (early stopping) with history items ranked; default: excluded, the published protocol",
    )
    parser.add_argument(
        "--name-suffix", default="", help="store the rows as MODEL+SUFFIX (e.g. a second setting of one model)"
    )
    parser.add_argument("--valid-users", type=int, default=5000)
    parser.add_argument(
        "--test-users", type=int, default=None, help="test metrics on this many sampled users (default: all)"
    )
    parser.add_argument("--lm-users", type=int, default=2000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"], help="bf16: bf16 autocast on CPU too")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (1 when another job shares the 2 cores)"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        seqs, n_items = load_sequences(args.data, Path(tmp))
    split = leave_one_out(seqs)
    print(
        f"{args.data.name}: {len(seqs):,} users, {n_items:,} items, {sum(map(len, seqs)):,} events; "
        f"device {resolve_device(args.device)}",
        file=sys.stderr,
    )
    out = args.out if args.out.is_absolute() else REPO / args.out
    header = {
        "data": args.data.name,
        "users": len(seqs),
        "items": n_items,
        "events": int(sum(map(len, seqs))),
        "protocol": "leave-one-out (last item test, second-to-last validation), full ranking over all items; each row's "
        "ndcg@10/hr@10/mrr/test with the user's history items excluded from the ranking (the published "
        "protocol), *_seen_included with them ranked; rows without *_seen_included predate this and "
        "have ranked history items in ndcg@10; early stopping on validation NDCG@10 of sampled users",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "models"},
        "machine": {
            "cpus": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
    }
    for name in args.models:
        print(f"== {name}", file=sys.stderr, flush=True)
        row = run_model(name, split, n_items, args, np.random.default_rng(0))
        row["model"] += args.name_suffix
        row["settings"] = {
            "lr": args.lr,
            "dropout": args.dropout,
            "budget_min": args.budget_min,
            "threads": torch.get_num_threads(),
            "amp": args.amp,
            "patience": args.patience,
            "lr_schedule": args.lr_schedule,
            "warmup_steps": args.warmup_steps,
            "weight_decay": args.weight_decay,
            "load_average": list(os.getloadavg()),
        }
        ordered = write_row(out, row, header)
        print_table(ordered)


if __name__ == "__main__":
    main()
