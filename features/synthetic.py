"""Synthetic user-behaviour events with structure a sequence model can learn.

The catalogue (item categories, Zipf popularity, an item→item transition graph) and the users'
interest categories depend on `p.seed` only; the events of a batch depend on `(p.seed, batch)`.
Within a session the next item follows the graph with probability `transition_strength`,
otherwise it is drawn by popularity within one of the user's interests. `drift` reshuffles part
of the popularity ranking, adds new popular items and moves the type mix toward cart/purchase.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from seqops.config import SyntheticParams
from seqops.io import atomic_path, crash_point

BROWSE_TYPE = "view"  # the other event types act on the item the user is looking at

N_SUCCESSORS = 5
# Edge weights of an item's successors, strongest first: the top successor is item-specific and
# clearly more likely than the rest, which is what makes the next item predictable.
SUCCESSOR_WEIGHTS = np.array([0.5, 0.2, 0.14, 0.1, 0.06])
EDGE_POPULARITY_POWER = 0.5
SAME_CATEGORY_EDGE = 0.8  # share of graph edges that stay within the item's category
ANY_CATEGORY = 0.15  # chance a popularity draw ignores the user's interests
MAX_INTERESTS = 3
CATEGORY_SKEW = 1.0  # category size weights ∝ 1 / rank**CATEGORY_SKEW

MEAN_GAP_S = 30.0  # in-session gap between events
SESSION_SPACING_S = 2 * 3600  # minimum distance between session starts (less if the window is tight)
CHURN_WINDOW = 1 / 3  # churned users only have sessions in this leading share of the batch
NEW_ITEMS_PER_DRIFT = 0.2  # new items = round(drift * this * n_items)
NEW_ITEM_HEAD = 0.05  # new items get popularity ranks within this top share of the catalogue
DRIFT_VIEW_SHIFT = 0.5  # at drift=1 the view share halves, the rest goes to cart/purchase

# After a cart or a purchase, the next event's type (with probability `type_funnel`): carts lead to
# purchases, purchases back to browsing. Other types, and the rest of the time, follow the type mix.
FUNNEL = {"cart": {"purchase": 0.5, "cart": 0.1, "view": 0.4}, "purchase": {"view": 0.9, "cart": 0.1}}

_CATALOG, _USERS, _EVENTS, _DRIFT, _FUNNEL = range(5)  # independent random streams
_DAY_S = 86_400


@dataclass(frozen=True)
class Catalog:
    category: np.ndarray  # category index per item
    popularity: np.ndarray  # probability per item, sums to 1
    successors: np.ndarray  # (n_items, N_SUCCESSORS) item indices
    n_categories: int


class _Sampler:
    """Draw items ∝ popularity, either within a category or from the whole catalogue."""

    def __init__(self, category: np.ndarray, popularity: np.ndarray, n_categories: int):
        self.order = np.argsort(category, kind="stable")
        self.cum = np.cumsum(popularity[self.order])
        # category n_categories stands for "any category"
        bounds = np.searchsorted(category[self.order], np.arange(n_categories + 1))
        self.start = np.r_[bounds[:-1], 0]
        self.end = np.r_[bounds[1:], len(self.order)]
        before = np.r_[0.0, self.cum]
        self.low = before[self.start]
        self.mass = before[self.end] - self.low
        self.any = n_categories

    def draw(self, cats: np.ndarray, u: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(self.cum, self.low[cats] + u * self.mass[cats], side="right")
        return self.order[np.clip(idx, self.start[cats], self.end[cats] - 1)]


def _rng(p: SyntheticParams, stream: int, batch: int = 0, chunk: int = 0) -> np.random.Generator:
    # Chunk 0 keeps the seed sequence of a whole batch, so a batch that fits in one chunk is the
    # batch generate_batch always gave; later chunks get streams of their own.
    key = [p.seed % 2**63, stream, batch] + ([chunk] if chunk else [])
    return np.random.default_rng(key)


def _zipf(ranks: np.ndarray, a: float) -> np.ndarray:
    return (ranks + 1.0) ** -a


def _category_share(category: np.ndarray, n_categories: int) -> np.ndarray:
    sizes = np.bincount(category, minlength=n_categories)
    return sizes / sizes.sum()


def _successors(
    items: np.ndarray, category: np.ndarray, popularity: np.ndarray, n_categories: int, rng: np.random.Generator
) -> np.ndarray:
    """N_SUCCESSORS popularity-weighted successors per item, mostly in the item's own category."""
    # Tempered, so that not every item leads to its category's head item.
    sampler = _Sampler(category, popularity**EDGE_POPULARITY_POWER, n_categories)
    same = rng.random((len(items), N_SUCCESSORS)) < SAME_CATEGORY_EDGE
    cats = np.where(same, category[items][:, None], sampler.any)
    succ = sampler.draw(cats, rng.random(cats.shape))
    loops = succ == items[:, None]  # a lone item in its category would point at itself
    succ[loops] = sampler.draw(np.full(loops.sum(), sampler.any), rng.random(loops.sum()))
    return succ


def base_catalog(p: SyntheticParams) -> Catalog:
    """The undrifted catalogue: a function of `p.seed` (and sizes) only."""
    rng = _rng(p, _CATALOG)
    cat_weights = _zipf(rng.permutation(p.n_categories), CATEGORY_SKEW)
    category = rng.choice(p.n_categories, p.n_items, p=cat_weights / cat_weights.sum())
    score = _zipf(rng.permutation(p.n_items), p.zipf_a)
    popularity = score / score.sum()
    successors = _successors(np.arange(p.n_items), category, popularity, p.n_categories, rng)
    return Catalog(category, popularity, successors, p.n_categories)


def drifted_catalog(base: Catalog, p: SyntheticParams, batch: int) -> Catalog:
    """Swap the popularity ranks of a `drift` share of items and add new popular items."""
    if p.drift == 0:
        return base
    rng = _rng(p, _DRIFT, batch)
    n_items = len(base.category)
    ranks = np.argsort(np.argsort(-base.popularity, kind="stable"), kind="stable").astype(float)
    moved = rng.choice(n_items, round(p.drift * n_items), replace=False)
    ranks[moved] = ranks[rng.permutation(moved)]

    n_new = round(p.drift * NEW_ITEMS_PER_DRIFT * n_items)
    new_category = rng.choice(base.n_categories, n_new, p=_category_share(base.category, base.n_categories))
    category = np.r_[base.category, new_category]
    ranks = np.r_[ranks, rng.random(n_new) * max(1.0, NEW_ITEM_HEAD * n_items)]
    score = _zipf(ranks, p.zipf_a)
    popularity = score / score.sum()

    new = np.arange(n_items, n_items + n_new)
    successors = np.r_[base.successors, _successors(new, category, popularity, base.n_categories, rng)]
    return Catalog(category, popularity, successors, base.n_categories)


def user_interests(p: SyntheticParams, catalog: Catalog) -> np.ndarray:
    """(n_users, MAX_INTERESTS) category indices; users with fewer interests repeat their first."""
    rng = _rng(p, _USERS)
    share = _category_share(catalog.category, catalog.n_categories)  # big categories draw more users
    picks = rng.choice(catalog.n_categories, size=(p.n_users, MAX_INTERESTS), p=share)
    n_interests = rng.integers(1, MAX_INTERESTS + 1, p.n_users)
    return np.where(np.arange(MAX_INTERESTS) < n_interests[:, None], picks, picks[:, :1])


def type_mix(p: SyntheticParams) -> tuple[list[str], np.ndarray]:
    """Event types and their probabilities, with `drift` moving view share to the other types."""
    names = list(p.type_mix)
    probs = np.array([p.type_mix[n] for n in names], dtype=float)
    probs /= probs.sum()
    others = np.array(names) != BROWSE_TYPE
    if others.all() or probs[others].sum() == 0:
        return names, probs
    view = names.index(BROWSE_TYPE)
    shift = probs[view] * p.drift * DRIFT_VIEW_SHIFT
    probs[others] += shift * probs[others] / probs[others].sum()
    probs[view] -= shift
    return names, probs


def _funnel_types(
    p: SyntheticParams, names: list[str], types: np.ndarray, step: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Re-draw, session step by session step, the types of events that follow a cart or purchase
    through FUNNEL with probability p.type_funnel (its own random stream: 0 changes nothing)."""
    rows = {i: np.array([FUNNEL[name].get(n, 0.0) for n in names]) for i, name in enumerate(names) if name in FUNNEL}
    rows = {i: row / row.sum() for i, row in rows.items() if row.sum() > 0}
    follow = rng.random(len(types)) < p.type_funnel
    u = rng.random(len(types))
    for t in range(1, int(step.max(initial=0)) + 1):
        idx = np.flatnonzero((step == t) & follow)
        prev = types[idx - 1]
        for i, row in rows.items():
            at = idx[prev == i]
            types[at] = np.searchsorted(np.cumsum(row), u[at], side="right").clip(max=len(names) - 1)
    return types


def _group_starts(lengths: np.ndarray) -> np.ndarray:
    """Index of the first element of each group, for groups laid out back to back."""
    return np.cumsum(lengths) - lengths


def _within(lengths: np.ndarray) -> np.ndarray:
    """Position of each element inside its group."""
    return np.arange(lengths.sum()) - np.repeat(_group_starts(lengths), lengths)


def _session_starts(p: SyntheticParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per session: user, start offset (s) in the batch window, and the user's window end."""
    n_sessions = 1 + rng.poisson(max(p.sessions_per_user - 1.0, 0.0), p.n_users)
    window = p.days_per_batch * _DAY_S
    churned = rng.random(p.n_users) < p.churn_rate
    user_end = np.where(churned, int(window * CHURN_WINDOW), window)

    user = np.repeat(np.arange(p.n_users), n_sessions)
    k, end = n_sessions[user], user_end[user]
    spacing = np.minimum(SESSION_SPACING_S, end / (k + 1))
    # k sorted uniform points in the window shrunk by k*spacing, then spread apart again:
    # uniform placement with a guaranteed gap between consecutive session starts.
    offset = rng.random(len(user)) * (end - k * spacing)
    offset = offset[np.lexsort((offset, user))] + _within(n_sessions) * spacing
    return user, offset.astype(np.int64), end


def _walk(
    p: SyntheticParams,
    catalog: Catalog,
    interests: np.ndarray,
    user: np.ndarray,
    step: np.ndarray,
    repeat: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Items for events laid out session by session (`step` = position in the session)."""
    n = len(user)
    sampler = _Sampler(catalog.category, catalog.popularity, catalog.n_categories)
    cats = interests[user, rng.integers(0, MAX_INTERESTS, n)]
    cats[rng.random(n) < ANY_CATEGORY] = sampler.any
    items = sampler.draw(cats, rng.random(n))  # the "not following the graph" choice

    follow = rng.random(n) < p.transition_strength
    edge = np.searchsorted(np.cumsum(SUCCESSOR_WEIGHTS), rng.random(n) * SUCCESSOR_WEIGHTS.sum(), side="right")
    edge = np.minimum(edge, N_SUCCESSORS - 1)
    # A session's next item depends on its previous one, so walk all sessions in step lockstep.
    for t in range(1, int(step.max(initial=0)) + 1):
        idx = np.flatnonzero(step == t)
        prev = items[idx - 1]
        nxt = items[idx]
        graph = follow[idx]
        nxt[graph] = catalog.successors[prev[graph], edge[idx][graph]]
        stay = repeat[idx]
        nxt[stay] = prev[stay]
        items[idx] = nxt
    return items


def _ids(prefix: str, width: int, index: np.ndarray) -> np.ndarray:
    names = np.array([f"{prefix}{i:0{width}d}" for i in range(int(index.max(initial=0)) + 1)], dtype=object)
    return names[index]


def _event_offsets(
    session_start: np.ndarray, user_end: np.ndarray, lengths: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Seconds into the batch window per event: session start plus exponential in-session gaps."""
    step = _within(lengths)
    gaps = np.where(step == 0, 0, 1 + np.floor(rng.exponential(MEAN_GAP_S - 1, len(step)))).astype(np.int64)
    elapsed = np.cumsum(gaps)
    elapsed -= np.repeat(elapsed[_group_starts(lengths)], lengths)
    return np.minimum(np.repeat(session_start, lengths) + elapsed, np.repeat(user_end, lengths) - 1)


DEFAULT_CHUNK_USERS = 50_000  # users generated together: ~1.2M events, a few hundred MB at most


def generate_batch(p: SyntheticParams, batch: int = 0) -> pd.DataFrame:
    """One batch of raw events (the RAW_COLUMNS layout ingest reads), sorted by timestamp."""
    return pd.concat(list(iter_batch_chunks(p, batch, chunk_users=max(p.n_users, 1))), ignore_index=True)


def iter_batch_chunks(
    p: SyntheticParams, batch: int = 0, chunk_users: int = DEFAULT_CHUNK_USERS
) -> Iterator[pd.DataFrame]:
    """A batch as consecutive user chunks (each sorted by timestamp), so 10^7 events never sit in
    memory at once. The catalogue and the users' interests are shared; with one chunk
    (n_users <= chunk_users) the batch is exactly `generate_batch`'s."""
    base = base_catalog(p)
    catalog = drifted_catalog(base, p, batch)
    interests = user_interests(p, base)
    window_start = int(pd.Timestamp(p.start, tz="UTC").timestamp()) + batch * p.days_per_batch * _DAY_S
    for chunk, first in enumerate(range(0, p.n_users, chunk_users)):
        users = np.arange(first, min(first + chunk_users, p.n_users))
        yield _chunk_events(p, catalog, interests, users, window_start, batch, chunk)


def _chunk_events(
    p: SyntheticParams,
    catalog: Catalog,
    interests: np.ndarray,
    users: np.ndarray,
    window_start: int,
    batch: int,
    chunk: int,
) -> pd.DataFrame:
    """Events of the users `users` (consecutive global indices), sorted by timestamp."""
    rng = _rng(p, _EVENTS, batch, chunk)
    session_user, session_start, user_end = _session_starts(p.model_copy(update={"n_users": len(users)}), rng)
    session_user = session_user + users[0]
    lengths = rng.geometric(min(1.0, 1.0 / p.session_length), len(session_user))
    user, step = np.repeat(session_user, lengths), _within(lengths)
    offset = _event_offsets(session_start, user_end, lengths, rng)

    names, probs = type_mix(p)
    types = rng.choice(len(names), len(user), p=probs)
    if p.type_funnel > 0:
        types = _funnel_types(p, names, types, step, _rng(p, _FUNNEL, batch, chunk))
    type_names = np.asarray(names, dtype=object)[types]
    repeat = (step > 0) & (type_names != BROWSE_TYPE)
    items = _walk(p, catalog, interests, user, step, repeat, rng)

    order = np.argsort(offset, kind="stable")
    return pd.DataFrame(
        {
            "user_id": _ids("u", 6, user[order]),
            "item_id": _ids("i", 6, items[order]),
            "category": _ids("c", 2, catalog.category[items[order]]),
            "event_type": type_names[order],
            "timestamp": window_start + offset[order],
        }
    )


def write_batch(p: SyntheticParams, raw_dir: Path, batch: int = 0, chunk_users: int = DEFAULT_CHUNK_USERS) -> Path:
    """Generate a batch and write it to `raw_dir/batch-NNN.csv` chunk by chunk (memory stays at one
    chunk whatever the size); returns the path. Rows are in time order within each user chunk."""
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    path = raw_dir / f"batch-{batch:03d}.csv"
    # hidden until whole: a kill mid-write must not leave a partial batch for `retrain` to collect
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        for i, chunk in enumerate(iter_batch_chunks(p, batch, chunk_users)):
            chunk.to_csv(fh, index=False, header=i == 0)
            crash_point("land-between-chunks")
    return path
