"""The Optuna search over params.yaml's `tune:` ranges (models/training/tune.py) on one dataset,
leave-one-out like bench/models.py; writes the trial table to bench/results/tune.json.

    python bench/tune.py --synthetic [--users 300 --items 200]      # a tiny synthetic project (smoke run)
    python bench/tune.py --data ../shared/datasets/amazon-beauty.txt  # the real thing (hours on a CPU)
           [--params params.yaml] [--n-trials N] [--minutes M] [--trial-minutes T] [--threads 1]

The search space, budget and pruner settings are params.yaml's `tune:` section (the flags
override n_trials / minutes / trial_minutes); the fixed parts (model kind, max_len, batch size,
epochs, patience) are its `model:` and `train:` sections.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from seqops.config import EvaluateParams, SyntheticParams, load_params
from seqops.features.synthetic import generate_batch
from seqops.models.training.tune import tune

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "tune.json"


def synthetic_sequences(users: int, items: int) -> tuple[list[np.ndarray], int]:
    """Per-user item sequences (oldest first) of one synthetic batch, item ids 1..n."""
    events = generate_batch(SyntheticParams(n_users=users, n_items=items)).sort_values(
        ["user_id", "timestamp"], kind="stable"
    )
    codes, _ = pd.factorize(events["item_id"])
    events = events.assign(item=codes + 1)
    seqs = [g.to_numpy(np.int64) for _, g in events.groupby("user_id", sort=False)["item"]]
    return [s for s in seqs if len(s) >= 3], int(codes.max() + 1)


def file_sequences(data: Path) -> tuple[list[np.ndarray], int]:
    """bench/models.py's reader (seqops ingest, sasrec txt format)."""
    spec = importlib.util.spec_from_file_location("bench_models", REPO / "bench" / "models.py")
    bench_models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_models)
    with tempfile.TemporaryDirectory() as tmp:
        return bench_models.load_sequences(data, Path(tmp))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--synthetic", action="store_true", help="a tiny synthetic project")
    source.add_argument("--data", type=Path, help="a SASRec-format txt file (user item per line, in time order)")
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--n-trials", type=int)
    parser.add_argument("--minutes", type=float)
    parser.add_argument("--trial-minutes", type=float)
    parser.add_argument("--valid-users", type=int, default=5000)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    params = load_params(args.params)
    overrides = {
        k: v
        for k, v in {"n_trials": args.n_trials, "minutes": args.minutes, "trial_minutes": args.trial_minutes}.items()
        if v is not None
    }
    space = params.tune.model_copy(update=overrides)
    seqs, n_items = synthetic_sequences(args.users, args.items) if args.synthetic else file_sequences(args.data)
    rng = np.random.default_rng(0)
    valid = rng.choice(len(seqs), size=min(args.valid_users, len(seqs)), replace=False)
    max_len = params.features.max_len
    eval_p = EvaluateParams(ks=[10], exclude_seen=params.evaluate.exclude_seen)
    started = time.perf_counter()
    result = tune(
        [s[:-2] for s in seqs if len(s) >= 4],
        [seqs[i][:-2] for i in valid],
        np.array([seqs[i][-2] for i in valid]),
        n_items,
        max_len,
        params.model,
        params.train,
        eval_p,
        space,
    )
    out = args.out if args.out.is_absolute() else REPO / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "data": "synthetic" if args.synthetic else args.data.name,
                "users": len(seqs),
                "items": n_items,
                "protocol": f"leave-one-out validation (second-to-last item), full ranking, exclude_seen={eval_p.exclude_seen}",
                "space": space.model_dump(),
                "seconds": time.perf_counter() - started,
                "machine": {
                    "cpus": torch.get_num_threads(),
                    "load_average": list(os.getloadavg()),
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                },
                **result,
            },
            indent=1,
            default=float,
        )
    )
    best = result["best"]
    print(
        f"{len(result['trials'])} trials; best {result['metric']} {best['value']:.4f} with {best['params']}"
        if best
        else "no trial completed",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
