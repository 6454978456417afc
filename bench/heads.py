"""Multi-task models and the language-model path on synthetic behaviour (which has event types,
times and item categories, unlike the Beauty file): next item, next event type and churn, per
head, on the real pipeline path; prints a table and writes bench/results/heads.json.

    python bench/heads.py [--users 2000] [--epochs 20] [--lm-epochs 4] [--lm-users 1000] [--models ...]

Data: two batches of `seqops generate` (the default generator with `--users` users and a purchase
funnel, `type_funnel`, so the next event type has something to learn) → ingest →
sequence features → Feast → `build_splits` (leave-one-out; point-in-time histories). Heads: next
event type (view / cart / purchase) and churn (no event within `model.churn_horizon_days` after the
last one). Baselines for the heads: a first-order Markov chain over event types (next type given
the last type) and the class prior (churn). Item metrics: full ranking over all items.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from seqops.config import EvaluateParams, Paths, TrainParams, load_params  # noqa: E402
from seqops.features import store  # noqa: E402
from seqops.features.ingest import ingest, write_outputs  # noqa: E402
from seqops.features.sequences import write_user_features  # noqa: E402
from seqops.features.synthetic import write_batch  # noqa: E402
from seqops.models.nets.baselines import PopularityModel  # noqa: E402
from seqops.models.nets.zoo import build_model  # noqa: E402
from seqops.models.training.artifact import Artifact  # noqa: E402
from seqops.models.training.evaluate import classification_metrics, evaluate, head_metrics  # noqa: E402
from seqops.models.training.splits import Splits, build_splits  # noqa: E402
from seqops.models.training.stages import item_texts_for  # noqa: E402
from seqops.models.training.train import score_fn_for, train_model  # noqa: E402

OUT = REPO / "bench" / "results" / "heads.json"
HEADS = ["next_item", "next_action", "churn"]
MODELS = {  # name -> ModelParams overrides
    "sasrec": {"kind": "sasrec"},
    "sasrec+text-init": {"kind": "sasrec", "item_text": "init"},
    "gru4rec": {"kind": "gru4rec", "num_layers": 1},
    "bert4rec": {"kind": "bert4rec"},
    "lm": {"kind": "lm"},
}


def bench_project(root: Path) -> Path:
    """The repo's params.yaml and Feast repo in a scratch folder (state goes to its .seqops/)."""
    root.mkdir(parents=True)
    shutil.copytree(REPO / "feature_repo", root / "feature_repo", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    return root


def pipeline_splits(project: Path, users: int, funnel: float) -> tuple[Splits, Paths, object]:
    params = load_params(project / "params.yaml")
    synthetic = params.data.synthetic.model_copy(update={"n_users": users, "type_funnel": funnel})
    paths = Paths(project)
    for batch in (0, 1):
        write_batch(synthetic, paths.raw, batch)
    result = ingest(paths.raw, params.ingest.model_copy(update={"data_report": False}), paths)
    write_outputs(result, paths)
    write_user_features(paths.events, paths.user_features, params.features.max_len)
    store.apply(paths)
    splits = build_splits(
        paths, "local", params.evaluate, params.ingest.event_types, params.model.churn_horizon_days * 86400
    )
    return splits, paths, params


def type_markov(splits: Splits, n_types: int) -> np.ndarray:
    """Logits of the next type given the last type, counted on the training sequences."""
    counts = np.ones((n_types + 1, n_types))  # add-one smoothing
    for types in splits.train_types:
        for a, b in zip(types[:-1], types[1:]):
            if b > 0:
                counts[a, b - 1] += 1
    last = np.array([t[-1] if len(t) else 0 for t in splits.test.types])
    return np.log(counts[last] / counts[last].sum(1, keepdims=True))


def baseline_rows(splits: Splits, params, event_types: list[str]) -> list[dict]:
    horizon = params.model.churn_horizon_days * 86400
    known = splits.test.target_types > 0
    action = classification_metrics(
        type_markov(splits, len(event_types))[known], splits.test.target_types[known] - 1, event_types
    )
    churn_labels = splits.test.churn_labels(horizon)
    train_churn = np.concatenate([c[:-1] for c in splits.train_churn])
    prior = float((train_churn[train_churn >= 0]).mean())
    churn = classification_metrics(np.full(len(churn_labels), np.log(prior / (1 - prior))), churn_labels)
    counts = np.bincount(np.concatenate(splits.train_seqs), minlength=splits.n_items + 1)
    pop = evaluate(
        PopularityModel(counts).next_item_scores,
        splits.test.inputs,
        splits.test.targets,
        EvaluateParams(),
        progress=False,
    )
    return [
        {
            "model": "baselines (popularity / type-markov / churn prior)",
            "item": pop,
            "heads": {"next_action": action, "churn": churn},
            "train_s": 0.0,
        }
    ]


def run(name: str, splits: Splits, paths: Paths, params, args) -> dict:
    overrides = MODELS[name]
    model_p = params.model.model_copy(update={"heads": HEADS, "aux_weight": 1.0, **overrides})
    lm = overrides["kind"] == "lm"
    train_p = TrainParams(
        epochs=args.lm_epochs if lm else args.epochs,
        batch_size=32 if lm else 128,
        lr=5e-5 if lm else 1e-3,
        patience=3,
        device="cpu",
    )
    texts = item_texts_for(params.model_copy(update={"model": model_p}), paths)
    torch.manual_seed(0)
    model = build_model(model_p, splits.n_items, params.features.max_len, params.ingest.event_types, texts)
    seqs, types, churn = splits.train_seqs, splits.train_types, splits.train_churn
    if lm and args.lm_users < len(seqs):
        keep = np.random.default_rng(0).choice(len(seqs), args.lm_users, replace=False)
        seqs, types, churn = [seqs[i] for i in keep], [types[i] for i in keep], [churn[i] for i in keep]
    started = time.perf_counter()
    result = train_model(
        model,
        seqs,
        splits.valid.inputs,
        splits.valid.targets,
        train_p,
        EvaluateParams(),
        train_types=types,
        train_churn=churn,
        valid_types=splits.valid.types,
        progress=True,
    )
    train_s = time.perf_counter() - started
    score = score_fn_for(model, params.features.max_len, "cpu")
    item = evaluate(
        score, splits.test.inputs, splits.test.targets, EvaluateParams(), types=splits.test.types, progress=False
    )
    artifact = Artifact(Path("."), model, PopularityModel(np.ones(splits.n_items + 1)), {})
    heads = head_metrics(artifact, splits.test, params.ingest.event_types, params.model.churn_horizon_days * 86400)
    note = f"trained on {len(seqs)} users" if lm and len(seqs) < len(splits.train_seqs) else ""
    return {
        "model": name,
        "item": item,
        "heads": heads,
        "train_s": train_s,
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "note": note,
    }


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'model':<52}{'NDCG@10':>8}{'HR@10':>7}{'act acc':>8}{'act F1':>7}{'act AUC':>8}"
        f"{'churn F1':>9}{'churn AUC':>10}{'train s':>8}"
    )
    print(head + "\n" + "-" * len(head))
    for r in rows:
        a, c = r["heads"].get("next_action", {}), r["heads"].get("churn", {})
        print(
            f"{r['model']:<52}{r['item']['ndcg@10']:>8.4f}{r['item']['hr@10']:>7.4f}{a.get('accuracy', float('nan')):>8.3f}"
            f"{a.get('f1', float('nan')):>7.3f}{a.get('auc', float('nan')):>8.3f}{c.get('f1', float('nan')):>9.3f}"
            f"{c.get('auc', float('nan')):>10.3f}{r['train_s']:>8.0f}  {r.get('note', '')}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--funnel", type=float, default=0.7, help="data.synthetic.type_funnel: signal for next_action")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lm-epochs", type=int, default=4)
    parser.add_argument("--lm-users", type=int, default=1000)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is faster on 2 shared cores)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        project = bench_project(Path(tmp) / "project")
        splits, paths, params = pipeline_splits(project, args.users, args.funnel)
        horizon = params.model.churn_horizon_days * 86400
        print(
            f"{len(splits.train_seqs)} training users, {len(splits.test)} test users, {splits.n_items} items; "
            f"test churn share {splits.test.churn_labels(horizon).mean():.2f}",
            file=sys.stderr,
        )
        data = f"synthetic, 2 batches, {args.users} users, type_funnel {args.funnel}"
        previous = json.loads(args.out.read_text()) if args.out.exists() else {}
        by_name = {r["model"]: r for r in previous.get("rows", [])} if previous.get("data") == data else {}
        for row in baseline_rows(splits, params, params.ingest.event_types):
            by_name[row["model"]] = row
        for name in args.models:  # rows of models not run now are kept from the last run on the same data
            print(f"== {name}", file=sys.stderr, flush=True)
            by_name[name] = run(name, splits, paths, params, args)
            rows = sorted(
                by_name.values(), key=lambda r: -1 if r["model"] not in MODELS else list(MODELS).index(r["model"])
            )
            print_table(rows)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(
                json.dumps(
                    {
                        "data": data,
                        "protocol": "leave-one-out, full ranking over all items",
                        "heads": HEADS,
                        "churn_horizon_days": params.model.churn_horizon_days,
                        "settings": {k: str(v) for k, v in vars(args).items()},
                        "machine": {
                            "python": platform.python_version(),
                            "torch": torch.__version__,
                            "threads": args.threads,
                        },
                        "rows": rows,
                    },
                    indent=1,
                    default=float,
                )
            )


if __name__ == "__main__":
    main()
