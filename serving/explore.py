"""Exploration: which k of the model's top candidates an answer shows, and the probability that
each was going to be shown (its propensity), so that logged answers can later evaluate another
policy off-line (models/release/ope.py, docs/exploration-ope.md).

Policies (`serving.explore.policy`) over the K candidates, the model's top max(candidates, k)
items, best first:

  off       the top k: today's answer, nothing logged beyond it;
  epsilon   with probability epsilon the slate is k candidates drawn uniformly, else the top k:
            P(shown) = (1 - epsilon)·[among the top k] + epsilon·k/K;
  softmax   P(shown) = min(1, c·exp(score/temperature)), c such that the K probabilities sum to k
            (the items that reach 1 are capped first); a slate of exactly k items with exactly these
            inclusion probabilities is drawn by systematic sampling. temperature → 0 gives the top k,
            temperature → ∞ k of the K uniformly.

The propensity is an inclusion probability, P(item in the slate): the estimators weight a shown
item's response by P_target(shown) / P_logging(shown), valid when the response to an item does not
depend on which other items are shown or where (the item-level model of slate evaluation). That is
why softmax is not Plackett-Luce (softmax draws without replacement): its inclusion probabilities
have no closed form, these are exact. The shown items keep the model's order (best first).

Everything random comes from one generator per answer, seeded from `serving.explore.seed`, the
request's history and a nonce; the seed is logged with the answer, so any answer can be replayed.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING

import numpy as np

from seqops.config_ope import ExploreParams
from seqops.serving.ranking import recommend_items

if TYPE_CHECKING:
    from seqops.serving.champion import Champion
    from seqops.serving.engine import Query
    from seqops.serving.schemas import RecommendRequest

CAP = 1.0 - 1e-12  # an inclusion probability this close to 1 is 1


def inclusion_probabilities(scores: np.ndarray, k: int | np.ndarray, settings: ExploreParams) -> np.ndarray:
    """P(candidate shown) for [n, K] candidate scores, each row best first (-inf: no candidate); each
    row sums to min(k, its finite candidates). k: one slate size, or one per row."""
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    valid = np.isfinite(scores)
    n_valid = valid.sum(axis=1)
    k = np.minimum(np.broadcast_to(np.asarray(k), n_valid.shape), n_valid)
    greedy = valid & (np.cumsum(valid, axis=1) <= k[:, None])
    if settings.policy == "off":
        return greedy.astype(np.float64)
    if settings.policy == "epsilon":
        uniform = np.where(valid, (k / np.maximum(n_valid, 1))[:, None], 0.0)
        return (1 - settings.epsilon) * greedy + settings.epsilon * uniform
    return _capped_softmax(scores, valid, k, settings.temperature)


def _capped_softmax(scores: np.ndarray, valid: np.ndarray, k: np.ndarray, temperature: float) -> np.ndarray:
    """min(1, c·exp(s/T)) summing to k per row: cap whatever reaches 1, share the rest again."""
    capped = np.zeros_like(valid)
    probs = np.zeros_like(scores)
    for _ in range(int(k.max(initial=0)) + 1):
        free = valid & ~capped
        top = np.where(free, scores, -np.inf).max(axis=1, keepdims=True)
        # relative to the best free score: the best weighs 1, nothing underflows to an all-zero row
        weights = np.exp(np.where(free, scores - np.where(np.isfinite(top), top, 0.0), -np.inf) / temperature)
        left = (k - capped.sum(axis=1))[:, None]
        share = left * weights / np.maximum(weights.sum(axis=1, keepdims=True), np.finfo(float).tiny)
        probs = np.where(capped, 1.0, share)
        over = free & (probs >= CAP)
        if not over.any():
            break
        capped |= over
    return np.where(capped, 1.0, probs)


def sample_slates(
    scores: np.ndarray, k: int, settings: ExploreParams, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one slate per row of [n, K] finite candidate scores (best first), k <= K: the shown
    candidates' column indices [n, k] in the model's order and their propensities [n, k]."""
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    n, width = scores.shape
    if not 0 <= k <= width:
        raise ValueError(f"k={k} but {width} candidates")
    if k == 0:
        return np.zeros((n, 0), np.int64), np.zeros((n, 0))
    probs = inclusion_probabilities(scores, k, settings)
    if settings.policy == "epsilon":
        explore = rng.random(n) < settings.epsilon
        drawn = np.sort(np.argsort(rng.random((n, width)), axis=1)[:, :k], axis=1)
        shown = np.where(explore[:, None], drawn, np.arange(k))
    elif settings.policy == "softmax":
        shown = systematic_sample(probs, k, rng.random(n))
    else:
        shown = np.broadcast_to(np.arange(k), (n, k))
    return shown, np.take_along_axis(probs, shown, axis=1)


def systematic_sample(probs: np.ndarray, k: int, u: np.ndarray) -> np.ndarray:
    """Exactly k distinct columns per row with P(column j) = probs[:, j] (rows sum to k, each <= 1):
    the points u, u+1, ..., u+k-1 fall in the columns' consecutive stretches of the cumulative sum."""
    n, width = probs.shape
    cum = np.minimum(np.cumsum(probs, axis=1), k)
    cum[:, -1] = k
    offset = np.arange(n)[:, None] * (k + 1)  # every row in its own stretch: one flat search for all
    points = u[:, None] + np.arange(k) + offset
    flat = np.searchsorted((cum + offset).ravel(), points.ravel(), side="right").reshape(n, k)
    return np.minimum(flat - np.arange(n)[:, None] * width, width - 1)


def answer_seed(base: int, key: str, nonce: int) -> int:
    """A 63-bit seed for one answer: settings seed, whose history, nonce."""
    digest = hashlib.blake2b(f"{base}|{key}|{nonce}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


LOG_ONLY = "explore"  # what an exploring answer carries for the request log, not for the client


def public_answer(answer: dict) -> dict:
    """The answer as the client gets it: everything but the log-only part."""
    return {key: value for key, value in answer.items() if key != LOG_ONLY} if LOG_ONLY in answer else answer


class Exploring:
    """The engine's choice of the shown items (a mixin of serving.engine.Engine, reading its params)."""

    def slate(
        self,
        champion: Champion,
        scores: np.ndarray,
        exclude: np.ndarray,
        req: RecommendRequest,
        q: Query,
        nonce: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, dict]:
        """(shown dense ids, their scores, extra answer keys): the top k when exploration is off,
        else a draw of the policy with `propensities` (for the client) and `explore` (for the log)."""
        settings = self.params.serving.explore
        if settings.policy == "off":
            return (*recommend_items(scores, exclude, req.k), {})
        pool, pool_scores = recommend_items(scores, exclude, max(req.k, settings.candidates))
        key = q.raw_user if q.raw_user is not None else "items:" + ",".join(map(str, q.items.tolist()))
        seed = answer_seed(settings.seed, key, time.time_ns() if nonce is None else nonce)
        shown, propensity = sample_slates(pool_scores, min(req.k, len(pool)), settings, np.random.default_rng(seed))
        record = {
            "policy": settings.policy,
            "seed": seed,
            "candidates": champion.raw_items[pool].tolist(),
            "category": req.category,
            "exclude_seen": req.exclude_seen,
        }
        return pool[shown[0]], pool_scores[shown[0]], {"propensities": propensity[0].tolist(), LOG_ONLY: record}
