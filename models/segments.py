"""Segments of the user profiles: clustering (scikit-learn) and a description of each segment in
words, from what distinguishes it from everyone else.

What is clustered: four blocks of standardised columns — activity (log recency, events, sessions,
sessions per week, monetary where the data has it, event-type shares), session habits (log events
and minutes per session, weekend share), interests (shares of the most frequent categories) and the
model's sequence embedding (its first `profile.embedding_dims` principal components). Each block is
scaled by 1/sqrt(its width), so every block weighs the same whatever its number of columns: twenty
category shares do not drown four activity columns, and a 64-wide embedding does not drown both.

How many segments: k-means for every k in [k_min, k_max], keeping the k with the highest mean
silhouette (on a seeded sample of `silhouette_sample` users) — the stated criterion, recorded with
every k's score; or HDBSCAN (scikit-learn's), density-based, whose noise points are segment -1.
Segments are numbered by size, 0 the largest; the numbers are per run, the words say what each is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.cluster import HDBSCAN, KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score
from sklearn.neighbors import KNeighborsClassifier
from threadpoolctl import threadpool_limits

from seqops.config_profile import ProfileParams
from seqops.features.profiles import RFM_LEVELS, BehaviourProfiles

NOISE = -1
MIN_Z = 0.5  # a feature distinguishes a segment when its mean is this many standard deviations from everyone's
MIN_LIFT = 1.5  # a category distinguishes a segment when its share there is this many times its share overall
MIN_CATEGORY_SHARE = 0.05
N_REASONS = 3
LABEL_WORDS = 2  # a label: the words of the two features furthest from everyone's, then the categories it is into
# feature → (what it is, word when high, word when low); `share:<type>` columns are added per event type
FEATURES: dict[str, tuple[str, str, str]] = {
    "recency_days": ("days since the last event", "lapsed", "recently active"),
    "n_sessions": ("sessions", "frequent visitors", "rare visitors"),
    "monetary": ("spent on purchases", "big spenders", "small spenders"),
    "sessions_per_week": ("sessions per week", "regulars", "occasional"),
    "events_per_session": ("events per session", "long sessions", "short sessions"),
    "session_minutes": ("minutes per session", "lingering", "quick visits"),
    "weekend_share": ("share of weekend events", "weekend users", "weekday users"),
    "churned": ("churned share", "churning", "retained"),
}


@dataclass
class Segmentation:
    labels: np.ndarray  # segment per user (NOISE: unclustered), 0 = largest
    method: str
    criterion: str
    scores: dict[int, float] = field(default_factory=dict)  # kmeans: silhouette per k tried
    silhouette: float | None = None
    coords: np.ndarray | None = None  # [n, 2] projection of the clustered matrix (PCA)
    blocks: dict[str, int] = field(default_factory=dict)  # block → its width in the clustered matrix


def _standardised(frame: pd.DataFrame) -> np.ndarray:
    x = frame.to_numpy(dtype=np.float64)
    std = x.std(axis=0)
    return np.nan_to_num((x - x.mean(axis=0)) / np.where(std > 0, std, 1.0))


def type_share_columns(table: pd.DataFrame) -> pd.DataFrame:
    """The per-user event-type share lists as `share:<type>` columns."""
    names = table["event_types"].iloc[0] if len(table) else []
    return pd.DataFrame(table["event_type_shares"].tolist(), index=table.index, columns=[f"share:{t}" for t in names])


def clustering_blocks(
    behaviour: BehaviourProfiles, embedding: np.ndarray | None, params: ProfileParams
) -> dict[str, np.ndarray]:
    """The standardised blocks described in the module docstring (empty blocks left out)."""
    t = behaviour.table
    activity = pd.DataFrame(
        {
            name: np.log1p(t[name].astype(float))
            for name in ("recency_days", "n_events", "n_sessions", "sessions_per_week")
        }
    )
    if behaviour.has_monetary:
        activity["monetary"] = np.log1p(t["monetary"])
    activity = activity.join(type_share_columns(t))
    habits = pd.DataFrame(
        {
            "events_per_session": np.log1p(t["events_per_session"]),
            "session_minutes": np.log1p(t["session_minutes"]),
            "weekend_share": t["weekend_share"],
        }
    )
    blocks = {"activity": _standardised(activity), "habits": _standardised(habits)}
    if behaviour.category_shares.shape[1] > 1:
        blocks["interests"] = _standardised(behaviour.category_shares)
    dims = min(params.embedding_dims, len(t) - 1, 0 if embedding is None else embedding.shape[1])
    if dims > 0:
        pcs = PCA(dims, random_state=params.seed).fit_transform(embedding.astype(np.float64))
        blocks["embedding"] = _standardised(pd.DataFrame(pcs))
    return {name: x for name, x in blocks.items() if x.shape[1]}


def weighted_matrix(blocks: dict[str, np.ndarray]) -> np.ndarray:
    return np.hstack([x / np.sqrt(x.shape[1]) for x in blocks.values()])


def _by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber so that segment 0 is the largest (ties: the lower old number); noise stays NOISE."""
    found = [s for s in np.unique(labels) if s != NOISE]
    order = sorted(found, key=lambda s: (-(labels == s).sum(), s))
    mapping = {old: new for new, old in enumerate(order)}
    return np.array([mapping.get(s, NOISE) for s in labels], dtype=np.int64)


def _kmeans(x: np.ndarray, fit: np.ndarray, params: ProfileParams) -> tuple[np.ndarray, dict[int, float]]:
    rng = np.random.default_rng(params.seed)
    scored = fit if len(fit) <= params.silhouette_sample else np.sort(rng.choice(fit, params.silhouette_sample, False))
    best, scores = None, {}
    for k in range(params.k_min, min(params.k_max, len(fit) - 1) + 1):
        model = KMeans(k, n_init=4, random_state=params.seed).fit(x[fit])
        labels = model.predict(x[scored])
        if len(np.unique(labels)) < 2:
            continue
        scores[k] = round(float(silhouette_score(x[scored], labels)), 4)
        if best is None or scores[k] > scores[best[0]]:
            best = (k, model)
    if best is None:  # too few distinct users to split
        return np.zeros(len(x), dtype=np.int64), scores
    return best[1].predict(x), scores


def _hdbscan(x: np.ndarray, fit: np.ndarray, params: ProfileParams) -> np.ndarray:
    """HDBSCAN on the fit sample; every other user takes the segment of its nearest fitted user."""
    fitted = HDBSCAN(min_cluster_size=min(params.min_cluster_size, len(fit)), copy=True).fit_predict(x[fit])
    if len(fit) == len(x):
        return fitted
    return KNeighborsClassifier(1).fit(x[fit], fitted).predict(x)


def segment(behaviour: BehaviourProfiles, embedding: np.ndarray | None, params: ProfileParams) -> Segmentation:
    """Cluster the profiles (see the module docstring); a 2-D PCA projection for the report. On one
    BLAS/OpenMP thread: k-means' threads spin-wait for busy cores (seven k on 2,000 users took 23 s
    on a loaded 2-core machine instead of 1.3 s)."""
    with threadpool_limits(1):
        return _segment(behaviour, embedding, params)


def _segment(behaviour: BehaviourProfiles, embedding: np.ndarray | None, params: ProfileParams) -> Segmentation:
    blocks = clustering_blocks(behaviour, embedding, params)
    x = weighted_matrix(blocks)
    n = len(x)
    rng = np.random.default_rng(params.seed)
    fit = np.arange(n) if n <= params.max_fit_users else np.sort(rng.choice(n, params.max_fit_users, False))
    coords = PCA(2, random_state=params.seed).fit_transform(x) if n > 2 and x.shape[1] >= 2 else np.zeros((n, 2))
    if params.method == "hdbscan" and n > 2:
        labels = _hdbscan(x, fit, params)
        clustered = labels != NOISE
        silhouette = (
            round(float(silhouette_score(x[clustered], labels[clustered])), 4)
            if len(np.unique(labels[clustered])) > 1
            else None
        )
        return Segmentation(_by_size(labels), "hdbscan", "density (HDBSCAN)", {}, silhouette, coords, _widths(blocks))
    labels, scores = _kmeans(x, fit, params) if n > 2 else (np.zeros(n, dtype=np.int64), {})
    best = max(scores, key=scores.get) if scores else None
    return Segmentation(
        _by_size(labels),
        "kmeans",
        f"k in [{params.k_min}, {params.k_max}] with the highest silhouette",
        scores,
        scores.get(best),
        coords,
        _widths(blocks),
    )


def _widths(blocks: dict[str, np.ndarray]) -> dict[str, int]:
    return {name: int(x.shape[1]) for name, x in blocks.items()}


def described_features(behaviour: BehaviourProfiles) -> pd.DataFrame:
    """The per-user columns segments are described by (FEATURES and the event-type shares)."""
    t = behaviour.table
    names = [f for f in FEATURES if f != "monetary" or behaviour.has_monetary]
    return t[names].astype(float).join(type_share_columns(t))


def _feature_words(name: str) -> tuple[str, str, str]:
    if name.startswith("share:"):
        kind = name.split(":", 1)[1]
        return f"share of {kind} events", f"more {kind}", f"less {kind}"
    return FEATURES[name]


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def _level(score: float) -> str:
    return "high" if score >= 0.7 * RFM_LEVELS else "low" if score <= 0.5 * RFM_LEVELS else "mid"


def describe(behaviour: BehaviourProfiles, labels: np.ndarray) -> list[dict]:
    """Per segment: size, share, churn rate, RFM levels, top categories, the features that most
    set it apart (sentences) and a short label made of their words."""
    values = described_features(behaviour)
    mean, std = values.mean(), values.std(ddof=0).replace(0.0, np.nan)
    overall_categories = behaviour.category_shares.mean()
    out = []
    for seg in sorted(np.unique(labels), key=lambda s: (s == NOISE, s)):
        members = labels == seg
        seg_mean = values[members].mean()
        z = ((seg_mean - mean) / std).dropna()
        reasons = [name for name in z.abs().sort_values(ascending=False).index if abs(z[name]) >= MIN_Z][:N_REASONS]
        words = [_feature_words(name)[1 if z[name] > 0 else 2] for name in reasons][:LABEL_WORDS]
        sentences = [
            f"{_feature_words(name)[0]}: {_number(seg_mean[name])} vs {_number(mean[name])} overall" for name in reasons
        ]
        categories = _top_segment_categories(behaviour.category_shares[members].mean(), overall_categories)
        lifted = [c for c in categories if c["share"] >= MIN_LIFT * max(c["overall"], 1e-9)][:2]
        if lifted:
            words.append("into " + " & ".join(c["category"] for c in lifted))
            sentences += [f"{c['category']}: {c['share']:.0%} of events vs {c['overall']:.0%} overall" for c in lifted]
        out.append(
            {
                "segment": int(seg),
                "label": ("unclustered: " if seg == NOISE else "") + (", ".join(words) or "typical users"),
                "size": int(members.sum()),
                "share": round(float(members.mean()), 4),
                "churn_rate": round(float(behaviour.table["churned"][members].mean()), 4),
                "rfm": _rfm_levels(behaviour, members),
                "top_categories": categories,
                "description": sentences,
            }
        )
    return out


def _top_segment_categories(segment: pd.Series, overall: pd.Series, n: int = 3) -> list[dict]:
    shares = segment.drop("cat:other", errors="ignore").sort_values(ascending=False)
    return [
        {"category": name.removeprefix("cat:"), "share": round(float(v), 4), "overall": round(float(overall[name]), 4)}
        for name, v in shares.head(n).items()
        if v >= MIN_CATEGORY_SHARE
    ]


def _rfm_levels(behaviour: BehaviourProfiles, members: np.ndarray) -> dict:
    t = behaviour.table[members]
    parts = {"r": t["rfm_r"].mean(), "f": t["rfm_f"].mean()}
    if behaviour.has_monetary:
        parts["m"] = t["rfm_m"].mean()
    return {key: {"score": round(float(v), 2), "level": _level(v)} for key, v in parts.items()}
