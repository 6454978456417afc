"""Off-policy estimators: the response rate a target policy would get, from answers a logging
policy gave while exploring (serving/explore.py) — inverse propensity scoring (IPS), self-normalised
IPS (SNIPS) and doubly robust (DR), each with a normal (CLT; delta method for the ratio) or a
bootstrap interval. Pure numpy; validated against a simulator where the truth is known (bench/ope.py).

What is estimated: the response (click, purchase) rate per shown item,
    V(π) = E_x[ (1/k) Σ_i π(i|x) r(x, i) ],
π(i|x) = P(item i is in the slate for context x), k the slate size, r(x, i) the probability that the
user responds to item i. This is the item-level model of slate evaluation: an item's response does
not depend on what else is shown or where. With w = π_target / π_logging for each shown item and
S_n the n-th logged slate (c: the observed responses, r̂: a reward model):

    IPS    (1/N) Σ_n (1/k_n) Σ_{i∈S_n} w_i c_i
    SNIPS  Σ_n (1/k_n) Σ_{i∈S_n} w_i c_i  /  Σ_n (1/k_n) Σ_{i∈S_n} w_i        (a slate's mean weight is 1 in expectation)
    DR     (1/N) Σ_n [ (1/k_n) Σ_i π_target(i|x_n) r̂(x_n, i)  +  (1/k_n) Σ_{i∈S_n} w_i (c_i − r̂(x_n, i)) ]

IPS and DR are unbiased when every item the target may show had a positive logging propensity
(support); SNIPS is consistent. Items outside the logging policy's candidates are invisible to IPS
and SNIPS; DR's model term still covers them. Every estimate is a ratio of per-answer sums Σa/Σb
(b = 1 but for SNIPS), so one interval routine serves all, and a difference of two estimates on the
same answers (candidate − logged) gets a paired interval.

The reward model for DR: each item's smoothed response rate, cross-fitted (the rates used for an
answer are fitted on the other fold's answers, so its own response does not leak into r̂).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

ESTIMATORS = ("ips", "snips", "dr")
PRIOR_STRENGTH = 20.0  # pseudo-impressions at the overall rate behind each item's smoothed rate
FOLDS = 2

Terms = tuple[np.ndarray, np.ndarray]  # per-answer numerators and denominators: the estimate is Σa / Σb


@dataclass(frozen=True)
class Logged:
    """Logged slates, one row per shown item; `slate` numbers the answers 0..n-1."""

    slate: np.ndarray  # [m] which answer showed the item
    reward: np.ndarray  # [m] the observed response (0/1)
    logging_p: np.ndarray  # [m] P(shown) under the logging policy, as logged
    target_p: np.ndarray  # [m] P(shown) under the target policy in the same context
    size: np.ndarray  # [n] items each answer showed

    @property
    def n(self) -> int:
        return len(self.size)

    @property
    def weight(self) -> np.ndarray:
        return self.target_p / self.logging_p

    def per_answer(self, values: np.ndarray) -> np.ndarray:
        """(1/k_n) Σ over each answer's shown items."""
        return np.bincount(self.slate, weights=values, minlength=self.n) / self.size


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float
    se: float
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


def logged_terms(data: Logged) -> Terms:
    """The logging policy's own rate: the plain mean of what it got."""
    return data.per_answer(data.reward), np.ones(data.n)


def ips_terms(data: Logged) -> Terms:
    return data.per_answer(data.weight * data.reward), np.ones(data.n)


def snips_terms(data: Logged) -> Terms:
    return data.per_answer(data.weight * data.reward), data.per_answer(data.weight)


def dr_terms(data: Logged, reward_hat: np.ndarray, direct: np.ndarray) -> Terms:
    """reward_hat [m]: r̂ of each shown item; direct [n]: (1/k_n) Σ_i π_target(i|x_n) r̂(x_n, i) over
    every item the target may show in answer n's context."""
    return direct + data.per_answer(data.weight * (data.reward - reward_hat)), np.ones(data.n)


def all_terms(data: Logged, reward_hat: np.ndarray, direct: np.ndarray) -> dict[str, Terms]:
    return {
        "logged": logged_terms(data),
        "ips": ips_terms(data),
        "snips": snips_terms(data),
        "dr": dr_terms(data, reward_hat, direct),
    }


def estimate(
    terms: Terms,
    minus: Terms | None = None,
    *,
    confidence: float = 0.95,
    interval: str = "clt",
    samples: int = 1000,
    seed: int = 0,
) -> Estimate:
    """Σa/Σb (minus another such ratio over the same answers: a paired difference) with a two-sided
    interval: normal with the delta method's linearised per-answer terms, or the percentile bootstrap
    over answers."""
    parts = [terms] + ([minus] if minus is not None else [])
    signs = [1.0, -1.0][: len(parts)]
    n = len(terms[0])
    value = sum(s * _ratio(a, b) for s, (a, b) in zip(signs, parts))
    linear = sum(s * (a - _ratio(a, b) * b) / b.mean() for s, (a, b) in zip(signs, parts)) if n else np.zeros(0)
    se = float(np.std(linear, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    if interval == "bootstrap" and n > 1:
        from seqops.models.release.policy import bootstrap_means

        means = bootstrap_means(np.stack([x for part in parts for x in part]), samples, seed)
        ratios = sum(s * means[:, 2 * i] / means[:, 2 * i + 1] for i, s in enumerate(signs))
        low, high = np.quantile(ratios, [(1 - confidence) / 2, (1 + confidence) / 2])
    else:
        z = NormalDist().inv_cdf((1 + confidence) / 2)
        low, high = value - z * se, value + z * se
    return Estimate(float(value), float(low), float(high), se, n)


def _ratio(a: np.ndarray, b: np.ndarray) -> float:
    total = b.sum()
    return float(a.sum() / total) if total > 0 else float("nan")


def effective_size(data: Logged) -> float:
    """Kish's effective number of answers under the per-answer mean weights (n when target = logging)."""
    weights = data.per_answer(data.weight)
    squares = float((weights**2).sum())
    return float(weights.sum() ** 2 / squares) if squares > 0 else 0.0


def item_rates(items: np.ndarray, rewards: np.ndarray, n_items: int, prior: float) -> np.ndarray:
    """[n_items] smoothed response rate per item id: (responses + s·prior) / (impressions + s)."""
    hits = np.bincount(items, weights=rewards, minlength=n_items)[:n_items]
    shows = np.bincount(items, minlength=n_items)[:n_items]
    return (hits + PRIOR_STRENGTH * prior) / (shows + PRIOR_STRENGTH)


def cross_fitted_rates(
    slate: np.ndarray, items: np.ndarray, rewards: np.ndarray, n_slates: int, n_items: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(fold of each answer [n], rate table per fold [FOLDS, n_items]): fold f's rates are fitted on
    the shown items of the answers outside fold f. r̂ for answer n is tables[fold[n], item]."""
    fold = np.random.default_rng(seed).integers(0, FOLDS, n_slates)
    overall = float(rewards.mean()) if len(rewards) else 0.0
    tables = []
    for f in range(FOLDS):
        train = fold[slate] != f
        prior = float(rewards[train].mean()) if train.any() else overall
        tables.append(item_rates(items[train], rewards[train], n_items, prior))
    return fold, np.stack(tables)
