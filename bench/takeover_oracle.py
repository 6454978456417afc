"""How well could anyone detect bench/anomaly.py's synthetic account takeovers? An oracle that knows
the generator (features/synthetic.py: the item graph, popularity, every user's interest categories)
scores each window by the likelihood ratio "the latest events are another user's" vs "they continue
this user's history"; its ROC AUC is a ceiling for any detector that sees only the events. Writes
bench/results/takeover_oracle.json.

    nice -n 10 python bench/takeover_oracle.py [--pairs 400] [--mixture-users 400] [--seed 0]

Normals are users' own last `n` events (n = window // 2 = 5, as injected takeovers), takeovers a
user's history followed by another user's last n events, the first one 600 s after (bench/anomaly.py
`inject`). Per event, within a session (gap ≤ 30 min): P(item | previous item, interests) =
transition_strength · edge weight + (1 − transition_strength) · P_pop(item | interests); a session's
first event: P_pop(item | interests) = ANY_CATEGORY · popularity + (1 − ANY_CATEGORY) · share of the
user's interests in its category · popularity within the category; non-view events repeat the item
(no information). "Another user" is a mixture over `--mixture-users` users' interests.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from seqops.config import load_params
from seqops.features import synthetic as S

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "takeover_oracle.json"
SESSION_GAP_S, SWITCH_S, TAIL = 1800, 600, 5


class Oracle:
    def __init__(self, p):
        self.p, self.catalog = p, S.base_catalog(p)
        self.interests = S.user_interests(p, self.catalog)
        c = self.catalog
        self.mass = np.bincount(c.category, weights=c.popularity, minlength=c.n_categories)
        self.edge = S.SUCCESSOR_WEIGHTS / S.SUCCESSOR_WEIGHTS.sum()

    def p_pop(self, user: int) -> np.ndarray:
        c = self.catalog
        share = np.bincount(self.interests[user], minlength=c.n_categories) / S.MAX_INTERESTS
        within = share[c.category] * c.popularity / self.mass[c.category]
        return S.ANY_CATEGORY * c.popularity + (1 - S.ANY_CATEGORY) * within

    def loglik(self, events, user: int, prev: tuple | None) -> float:
        """log P(events | user), continuing after `prev` (item, type, ts) or starting afresh."""
        pop, out = self.p_pop(user), 0.0
        for item, kind, ts in events:
            start = prev is None or ts - prev[2] > SESSION_GAP_S
            if start:
                out += np.log(pop[item])
            elif kind == S.BROWSE_TYPE:
                graph = self.edge[self.catalog.successors[prev[0]] == item].sum()
                out += np.log(self.p.transition_strength * graph + (1 - self.p.transition_strength) * pop[item])
            prev = (item, kind, ts)
        return out

    def score(self, history: list, tail: list, user: int, mixture: np.ndarray) -> float:
        """log P(tail | someone else) − log P(tail | this user after their history)."""
        other = np.logaddexp.reduce([self.loglik(tail, u, None) for u in mixture]) - np.log(len(mixture))
        return other - self.loglik(tail, user, history[-1] if history else None)


def users_events(p) -> dict[int, list]:
    raw = S.generate_batch(p, 0)
    raw = raw.assign(u=raw["user_id"].str[1:].astype(int), i=raw["item_id"].str[1:].astype(int))
    raw = raw.sort_values(["u", "timestamp"], kind="stable")
    return {
        int(u): list(zip(g["i"], g["event_type"], g["timestamp"].astype(float)))
        for u, g in raw.groupby("u")
        if len(g) >= 3
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=400)
    parser.add_argument("--mixture-users", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    p = load_params(REPO / "params.yaml").data.synthetic
    oracle, events = Oracle(p), users_events(p)
    rng = np.random.default_rng(args.seed)
    users = np.asarray(sorted(events))
    mixture = rng.choice(users, min(args.mixture_users, len(users)), replace=False)
    rows = []
    for _ in range(args.pairs):
        victim, other = (int(u) for u in rng.choice(users, 2, replace=False))
        own, theirs = events[victim], events[other][-TAIL:]
        shift = own[-1][2] + SWITCH_S - theirs[0][2]
        taken = [(i, k, ts + shift) for i, k, ts in theirs]
        normal = oracle.score(own[:-TAIL], own[-TAIL:], victim, mixture)  # a history shorter than TAIL: none before
        rows.append((len(own), normal, oracle.score(own, taken, victim, mixture)))
    result = {"pairs": args.pairs, "mixture_users": len(mixture), "roc_auc": {}}
    for label, least in (("victims with >= 3 events", 3), ("victims with >= 6 events", 6)):
        normals = [n for length, n, _ in rows if length >= least]
        taken = [t for length, _, t in rows if length >= least]
        y = np.r_[np.zeros(len(normals)), np.ones(len(taken))]
        result["roc_auc"][label] = round(float(roc_auc_score(y, np.r_[normals, taken])), 4)
    print(json.dumps(result, indent=2))
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
