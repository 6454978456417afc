"""Off-policy evaluation where the truth is known: a simulator on the synthetic generator's world,
the product's exploration policies (serving/explore.py) and estimators (models/release/ope.py).
Writes bench/results/ope.json (+ ope.png) and prints the table.

The world is features/synthetic.py's, from params.yaml's `data.synthetic`: the catalogue (categories,
Zipf popularity, the item→item successor graph) and each user's interest categories. A context is a
user and the item they just looked at (drawn as the generator draws items: by popularity within one
of the user's interests). A retrieval stage gives each context its `--pool` candidates (by
popularity, interest and the graph edge from the last item). The simulated user responds to each
shown item independently, by latent preferences:

    P(click) = sigmoid(-4 + 1.2·[interest] + 4·edge(last item → item) + 0.4·z(log popularity) + taste(user, item))
    P(purchase | click) = 0.1 + 0.25·[interest]             taste ~ N(0, 0.5²), fixed per user and item

Policies are scorers over the candidates (popularity; graph: edge + popularity, a Markov model;
interest: interest + popularity, a category model) explored as serving.explore does (off = greedy,
epsilon, softmax). Per replica, each logging policy answers `--answers` contexts (k shown each) and
the responses are drawn; every target policy is then estimated from that log with IPS, SNIPS and
DR (cross-fitted per-item rates as the reward model) and their 95% CLT intervals. The truth is the
target run on-policy on `--truth` fresh contexts (its simulated click and purchase rates per shown
item). Reported per estimator, policy pair and reward: truth, mean estimate, bias, relative bias,
mean |relative error|, the share of replicas within 10% of the truth, interval coverage and width.
The last pair explores only the logging policy's own top 10 (`candidates: 10`): partial support,
shown to make the failure visible, not counted in the target.

    nice python bench/ope.py [--replicas 100] [--answers 20000] [--truth 400000] [--k 5] [--pool 30]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqops.config import SyntheticParams, load_params
from seqops.config_ope import OPE_REWARDS, ExploreParams
from seqops.features.synthetic import (
    MAX_INTERESTS,
    SUCCESSOR_WEIGHTS,
    _Sampler,  # the generator's own draw: items by popularity within a category
    base_catalog,
    user_interests,
)
from seqops.models.release.ope import ESTIMATORS, Logged, all_terms, cross_fitted_rates, estimate
from seqops.serving.explore import inclusion_probabilities, sample_slates

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "ope.json"
TARGET_REL_ERROR = 0.10
CHUNK = 4000  # contexts whose full-catalogue retrieval scores are held at once
CLICK = {"bias": -4.0, "interest": 1.2, "edge": 4.0, "popularity": 0.4, "taste_sd": 0.5}
BUY = {"base": 0.1, "interest": 0.25}


@dataclass(frozen=True)
class Policy:
    scorer: str
    explore: ExploreParams

    @property
    def name(self) -> str:
        e = self.explore
        how = {"off": "greedy", "epsilon": f"epsilon {e.epsilon:g}", "softmax": f"softmax T={e.temperature:g}"}
        return f"{how[e.policy]} {self.scorer}" + (f"/{e.candidates}" if e.policy != "off" else "")


def policies(pool: int) -> list[tuple[Policy, Policy, bool]]:
    """(logging, target, full support) pairs; logging policies explore over the whole pool."""
    eps = Policy("popularity", ExploreParams(policy="epsilon", epsilon=0.2, candidates=pool))
    soft = Policy("graph", ExploreParams(policy="softmax", temperature=1.0, candidates=pool))
    narrow = Policy("popularity", ExploreParams(policy="epsilon", epsilon=0.2, candidates=10))
    greedy_graph = Policy("graph", ExploreParams(policy="off"))
    return [
        (eps, greedy_graph, True),
        (eps, Policy("interest", ExploreParams(policy="softmax", temperature=0.5, candidates=pool)), True),
        (soft, Policy("popularity", ExploreParams(policy="off")), True),
        (soft, Policy("interest", ExploreParams(policy="epsilon", epsilon=0.1, candidates=pool)), True),
        (narrow, greedy_graph, False),
    ]


class World:
    """The generator's catalogue and users, the retrieval stage and the users' responses."""

    def __init__(self, p: SyntheticParams, pool: int, seed: int):
        self.catalog = base_catalog(p)
        self.n_items = len(self.catalog.category)
        interests = user_interests(p, self.catalog)
        self.interests = interests
        self.interest = np.zeros((p.n_users, self.n_items), dtype=bool)
        for column in range(MAX_INTERESTS):
            self.interest |= interests[:, column][:, None] == self.catalog.category[None, :]
        log_pop = np.log(self.catalog.popularity)
        self.popz = ((log_pop - log_pop.mean()) / log_pop.std()).astype(np.float32)
        self.log_pop = log_pop.astype(np.float32)
        self.taste = (
            np.random.default_rng([seed, 1]).normal(0, CLICK["taste_sd"], self.interest.shape).astype(np.float32)
        )
        self.sampler = _Sampler(self.catalog.category, self.catalog.popularity, self.catalog.n_categories)
        self.pool = pool

    def contexts(self, n: int, rng: np.random.Generator) -> dict:
        """n (user, last item) contexts, their candidate pools and every feature of the pool items."""
        users = rng.integers(0, len(self.interest), n)
        last = self.sampler.draw(self.interests[users, rng.integers(0, MAX_INTERESTS, n)], rng.random(n))
        pools = np.empty((n, self.pool), dtype=np.int64)
        for start in range(0, n, CHUNK):
            rows = slice(start, start + CHUNK)
            retrieval = self.log_pop + 1.5 * self.interest[users[rows]] + 3 * self._edges(last[rows])
            pools[rows] = np.argpartition(-retrieval, self.pool, axis=1)[:, : self.pool]
        edge = self.catalog.successors[last][:, :, None] == pools[:, None, :]
        features = {
            "interest": self.interest[users[:, None], pools].astype(np.float32),
            "edge": (edge * SUCCESSOR_WEIGHTS[None, :, None]).sum(axis=1).astype(np.float32),
            "popz": self.popz[pools],
            "log_pop": self.log_pop[pools],
        }
        logit = (
            CLICK["bias"]
            + CLICK["interest"] * features["interest"]
            + CLICK["edge"] * features["edge"]
            + CLICK["popularity"] * features["popz"]
            + self.taste[users[:, None], pools]
        )
        click = 1 / (1 + np.exp(-logit))
        return {
            "pool": pools,
            **features,
            "click": click,
            "purchase": click * (BUY["base"] + BUY["interest"] * features["interest"]),
        }

    def _edges(self, last: np.ndarray) -> np.ndarray:
        edges = np.zeros((len(last), self.n_items), dtype=np.float32)
        rows = np.repeat(np.arange(len(last)), len(SUCCESSOR_WEIGHTS))
        np.add.at(edges, (rows, self.catalog.successors[last].ravel()), np.tile(SUCCESSOR_WEIGHTS, len(last)))
        return edges


def scores(scorer: str, ctx: dict) -> np.ndarray:
    if scorer == "popularity":
        return ctx["log_pop"]
    if scorer == "graph":
        return 4 * ctx["edge"] + 0.3 * ctx["log_pop"]
    return 1.2 * ctx["interest"] + 0.5 * ctx["log_pop"]


def probabilities(policy: Policy, ctx: dict, k: int) -> np.ndarray:
    """[n, pool] P(shown) in pool order (the policies want each row best first)."""
    raw = scores(policy.scorer, ctx)
    order = np.argsort(-raw, axis=1, kind="stable")
    ranked = np.take_along_axis(raw, order, axis=1)
    width = min(max(policy.explore.candidates, k), ranked.shape[1])  # as serving: the top max(candidates, k)
    ranked[:, width:] = -np.inf
    probs = np.zeros_like(raw, dtype=np.float64)
    np.put_along_axis(probs, order, inclusion_probabilities(ranked, k, policy.explore), axis=1)
    return probs


def run(policy: Policy, ctx: dict, k: int, rng: np.random.Generator) -> dict:
    """The policy answers every context on-policy: shown pool columns, propensities, responses."""
    raw = scores(policy.scorer, ctx)
    order = np.argsort(-raw, axis=1, kind="stable")[:, : min(max(policy.explore.candidates, k), raw.shape[1])]
    ranked = np.take_along_axis(raw, order, axis=1)
    shown_rank, propensity = sample_slates(ranked, k, policy.explore, rng)
    shown = np.take_along_axis(order, shown_rank, axis=1)
    click = rng.random(shown.shape) < np.take_along_axis(ctx["click"], shown, axis=1)
    bought = click & (rng.random(shown.shape) < np.take_along_axis(ctx["purchase"] / ctx["click"], shown, axis=1))
    return {"shown": shown, "propensity": propensity, "click": click.astype(float), "purchase": bought.astype(float)}


def truth(world: World, policy: Policy, n: int, k: int, seed: int) -> dict:
    """On-policy: the target's simulated rates per shown item (and their expectations) over n contexts."""
    sums = {name: 0.0 for name in OPE_REWARDS} | {f"{name}_expected": 0.0 for name in OPE_REWARDS}
    rng = np.random.default_rng([seed, 2])
    for start in range(0, n, 50_000):
        ctx = world.contexts(min(50_000, n - start), rng)
        logged = run(policy, ctx, k, rng)
        probs = probabilities(policy, ctx, k)
        for name in OPE_REWARDS:
            sums[name] += logged[name].sum()
            sums[f"{name}_expected"] += (probs * ctx[name]).sum()
    return {key: value / (n * k) for key, value in sums.items()}


def estimates(logged: dict, ctx: dict, target: Policy, k: int, n_items: int) -> dict:
    """Per reward and estimator: the estimate of the target's rate from the log, with its interval."""
    n = len(logged["shown"])
    target_probs = probabilities(target, ctx, k)
    slate = np.repeat(np.arange(n), k)
    items = np.take_along_axis(ctx["pool"], logged["shown"], axis=1).ravel()
    out = {}
    for name in OPE_REWARDS:
        reward = logged[name].ravel()
        data = Logged(
            slate,
            reward,
            logged["propensity"].ravel(),
            np.take_along_axis(target_probs, logged["shown"], axis=1).ravel(),
            np.full(n, k, dtype=float),
        )
        fold, tables = cross_fitted_rates(slate, items, reward, n, n_items)
        direct = (target_probs * tables[fold[:, None], ctx["pool"]]).sum(axis=1) / k
        terms = all_terms(data, tables[fold[slate], items], direct)
        out[name] = {e: estimate(terms[e]) for e in ESTIMATORS}
    return out


def summarise(pairs, truths: dict, runs: dict) -> list[dict]:
    rows = []
    for index, (logging, target, support) in enumerate(pairs):
        for reward in OPE_REWARDS:
            true = truths[index][reward]
            for name in ESTIMATORS:
                got = runs[index][reward][name]
                values = np.array([e.value for e in got])
                covered = np.array([e.low <= true <= e.high for e in got])
                rel = np.abs(values - true) / true
                rows.append(
                    {
                        "logging": logging.name,
                        "target": target.name,
                        "full_support": support,
                        "reward": reward,
                        "estimator": name,
                        "truth": true,
                        "truth_expected": truths[index][f"{reward}_expected"],
                        "mean_estimate": float(values.mean()),
                        "bias": float(values.mean() - true),
                        "relative_bias": float((values.mean() - true) / true),
                        "mean_abs_relative_error": float(rel.mean()),
                        "share_within_10pct": float((rel <= TARGET_REL_ERROR).mean()),
                        "coverage": float(covered.mean()),
                        "mean_interval_width": float(np.mean([e.high - e.low for e in got])),
                        "replicas": len(got),
                    }
                )
    return rows


def table(rows: list[dict]) -> str:
    head = (
        f"{'logging → target':<58} {'reward':<8} {'est':<5} {'truth':>7} {'mean':>7} {'bias':>8} "
        f"{'rel.bias':>8} {'|rel.err|':>9} {'≤10%':>5} {'cover':>6} {'width':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        pair = f"{r['logging']} → {r['target']}" + ("" if r["full_support"] else " [partial support]")
        lines.append(
            f"{pair:<58} {r['reward']:<8} {r['estimator']:<5} {r['truth']:7.4f} {r['mean_estimate']:7.4f} "
            f"{r['bias']:+8.4f} {r['relative_bias']:+8.1%} {r['mean_abs_relative_error']:9.1%} "
            f"{r['share_within_10pct']:5.0%} {r['coverage']:6.0%} {r['mean_interval_width']:7.4f}"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, reward in zip(axes, OPE_REWARDS):
        chosen = [r for r in rows if r["reward"] == reward]
        labels = sorted({(r["logging"], r["target"], r["full_support"]) for r in chosen}, key=lambda x: not x[2])
        for offset, name in zip((-0.25, 0, 0.25), ESTIMATORS):
            for i, label in enumerate(labels):
                r = next(
                    x
                    for x in chosen
                    if (x["logging"], x["target"], x["full_support"]) == label and x["estimator"] == name
                )
                ax.errorbar(
                    r["relative_bias"],
                    i + offset,
                    xerr=r["mean_abs_relative_error"],
                    fmt="o",
                    color={"ips": "C0", "snips": "C1", "dr": "C2"}[name],
                    label=name.upper() if i == 0 else None,
                )
        ax.axvspan(-TARGET_REL_ERROR, TARGET_REL_ERROR, color="0.9")
        ax.axvline(0, color="0.5")
        ax.set_yticks(
            range(len(labels)), [f"{a} →\n{b}" + ("" if s else " [partial]") for a, b, s in labels], fontsize=7
        )
        ax.set_title(f"{reward} rate: relative bias (bar: mean |relative error|)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicas", type=int, default=100)
    ap.add_argument("--answers", type=int, default=20_000, help="logged answers per replica and logging policy")
    ap.add_argument("--truth", type=int, default=400_000, help="on-policy contexts per target for the truth")
    ap.add_argument("--k", type=int, default=5, help="items shown per answer")
    ap.add_argument("--pool", type=int, default=30, help="candidates per context from the retrieval stage")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    np.seterr(all="ignore")
    started = time.perf_counter()
    world = World(load_params(REPO / "params.yaml").data.synthetic, args.pool, args.seed)
    pairs = policies(args.pool)
    targets = list(dict.fromkeys(target for _, target, _ in pairs))
    on_policy = [truth(world, target, args.truth, args.k, args.seed + n) for n, target in enumerate(targets)]
    truths = {i: on_policy[targets.index(target)] for i, (_, target, _) in enumerate(pairs)}
    loggers = list(dict.fromkeys(logging for logging, _, _ in pairs))
    runs = {i: {reward: {e: [] for e in ESTIMATORS} for reward in OPE_REWARDS} for i in range(len(pairs))}
    for replica in range(args.replicas):
        for logging in loggers:
            rng = np.random.default_rng([args.seed, 3, replica, loggers.index(logging)])
            ctx = world.contexts(args.answers, rng)
            logged = run(logging, ctx, args.k, rng)
            for i, (source, target, _) in enumerate(pairs):
                if source == logging:
                    for reward, found in estimates(logged, ctx, target, args.k, world.n_items).items():
                        for name, e in found.items():
                            runs[i][reward][name].append(e)
        if (replica + 1) % 10 == 0:
            print(f"  {replica + 1}/{args.replicas} replicas, {time.perf_counter() - started:.0f} s", flush=True)
    rows = summarise(pairs, truths, runs)
    print(table(rows))
    counted = [r for r in rows if r["full_support"]]
    worst = max(abs(r["relative_bias"]) for r in counted)
    result = {
        "command": "nice python bench/ope.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if k not in ("out", "seed")),
        "settings": {
            **{k: v for k, v in vars(args).items() if k != "out"},
            "click_model": CLICK,
            "purchase_model": BUY,
        },
        "rows": rows,
        "target": {
            "rule": "mean estimate within 10% of the simulated truth, every estimator, full-support pairs",
            "worst_relative_bias": worst,
            "met": worst <= TARGET_REL_ERROR,
            "coverage_range": [min(r["coverage"] for r in counted), max(r["coverage"] for r in counted)],
        },
        "seconds": round(time.perf_counter() - started, 1),
        "machine": f"{platform.machine()}, {platform.python_version()}; shared, niced: timings are upper bounds",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    plot(rows, args.out.with_suffix(".png"))
    print(f"worst |relative bias| {worst:.1%} (target ≤ {TARGET_REL_ERROR:.0%}); wrote {args.out}")


if __name__ == "__main__":
    main()
