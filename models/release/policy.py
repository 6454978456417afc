"""The gate's policy: the checks a candidate must pass, the paired bootstrap of candidate vs
champion (or popularity) over the same held-out users, the data-quality rule, and the verdict.

A candidate is rejected when it cannot be evaluated fairly (too few held-out users), when data
quality fails (missing values, too much bad data in the raw files new in its snapshot), or when it
is not good enough: a first model must beat popularity by `min_uplift_vs_baseline` at the
interval's lower bound; a later one must not regress significantly (`non_inferior`) or must improve
significantly (`superior`), as `gate.policy` says. Drift checks never block (see drift.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from seqops.config import GateParams, Paths
from seqops.features.cleaning import DATA_ERRORS, DUPLICATES
from seqops.models.release.registry import Registry
from seqops.models.release.registry_schema import version_number
from seqops.models.training.evaluate import per_user

BOOTSTRAP_SEED = 0  # the same candidate gated twice gets the same interval
BOOTSTRAP_CELLS = 4_000_000  # resample weights held in memory at once


@dataclass
class Check:
    name: str
    value: float
    threshold: float
    passed: bool
    blocking: bool
    sentence: str


# -- candidate vs champion ------------------------------------------------------------------


def bootstrap_means(values: np.ndarray, samples: int, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """[m, n] per-user values → [samples, m] means over users resampled with replacement; the same
    resamples for every row, so differences of rows are paired."""
    n = values.shape[1]
    rng = np.random.default_rng(seed)
    chunk = max(1, BOOTSTRAP_CELLS // max(n, 1))
    means = []
    for start in range(0, samples, chunk):
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=min(chunk, samples - start))
        means.append(weights @ values.T / n)
    return np.concatenate(means)


def compare(candidate_ranks: np.ndarray, reference_ranks: np.ndarray, metrics: list[str], gp: GateParams) -> dict:
    """Per metric: candidate, reference, delta and the paired bootstrap interval of the delta."""
    deltas = np.array([per_user(candidate_ranks, m) - per_user(reference_ranks, m) for m in metrics])
    boot = bootstrap_means(deltas, gp.bootstrap_samples)
    alpha = 1 - gp.confidence
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2], axis=0)
    return {
        m: {
            "candidate": float(per_user(candidate_ranks, m).mean()),
            "reference": float(per_user(reference_ranks, m).mean()),
            "delta": float(deltas[i].mean()),
            "low": float(low[i]),
            "high": float(high[i]),
        }
        for i, m in enumerate(metrics)
    }


def performance_check(comparison: dict, gp: GateParams, against: str, n_users: int) -> Check:
    """Decide on `gp.metric`'s interval: vs popularity for a first model, else vs the champion by policy."""
    c = comparison[gp.metric]
    ci = f"{c['delta']:+.4f} ({gp.confidence:.0%} CI {c['low']:+.4f} … {c['high']:+.4f})"
    if against == "popularity":
        need = gp.min_uplift_vs_baseline * c["reference"]
        ok = c["low"] >= need
        return Check(
            "beats_popularity",
            c["low"],
            need,
            ok,
            True,
            f"First model: {gp.metric} {c['candidate']:.4f} vs popularity {c['reference']:.4f} on the same "
            f"{n_users} users, gain {ci}; its lower bound must reach +{need:.4f} "
            f"({gp.min_uplift_vs_baseline:.0%} of popularity) — {'met' if ok else 'not met'}.",
        )
    head = f"Candidate {gp.metric} {c['candidate']:.4f} vs champion {c['reference']:.4f} on the same {n_users} users: {ci}."
    if gp.policy == "superior":
        ok = c["low"] > gp.min_uplift
        return Check(
            "vs_champion",
            c["low"],
            gp.min_uplift,
            ok,
            True,
            f"{head} Policy superior: the lower bound must exceed +{gp.min_uplift:.4f} — "
            f"{'met, a real improvement' if ok else 'not met, no proven improvement'}.",
        )
    ok = c["high"] >= -gp.max_regression
    bar = f"-{gp.max_regression:.4f}" if gp.max_regression else "zero"
    return Check(
        "vs_champion",
        c["high"],
        -gp.max_regression + 0.0,
        ok,
        True,
        f"{head} Policy non_inferior: reject only if the whole interval lies below {bar} — "
        f"{'no significant regression' if ok else 'a significant regression'}.",
    )


# -- decision -------------------------------------------------------------------------------


def decide(checks: list[Check]) -> tuple[str, list[str]]:
    failed = [c for c in checks if c.blocking and not c.passed]
    verdict = "reject" if failed else "promote"
    reasons = [c.sentence for c in (failed or checks)]
    return verdict, reasons


def ingest_quality(paths: Paths, registry: Registry, version: str) -> dict:
    """The share of raw rows ingest rejected as bad data, over the rows that are new in this
    candidate's snapshot: the raw files in its `sources` (the ingest manifest the train stage
    recorded) that the previous registered version's did not have. Each file is judged once, by the
    first candidate trained on it, so one bad burst blocks that candidate and not every later one
    (the raw folder is append-only); the first version judges every file. Only bad data counts:
    duplicates and near-duplicates (normal in click logs) are reported apart, and rows a cleaning
    policy removed (rating threshold, k-core) are the configuration working. Without per-file counts
    (no manifest recorded) the whole last ingest is judged."""
    sources = registry.get(version).get("sources") or {}
    counts = sources.get("counts") or (
        json.loads(paths.ingest_metrics.read_text()) if paths.ingest_metrics.exists() else {}
    )
    history = _shares(*_bad_rows(counts))
    over_history = {"history_share": history["quarantine_share"], "history_rows": history["rows_read"]}
    files = sources.get("files") or []
    if not files or any("rows_invalid" not in f for f in files):
        return {**history, **over_history, "files_judged": None, "since": None}
    since, seen = _previous_snapshot(registry, version)
    new = [f for f in files if f["md5"] not in seen]
    judged = _shares(*(sum(f[key] for f in new) for key in ("rows_read", "rows_invalid", "rows_duplicate")))
    return {**judged, **over_history, "files_judged": [f["name"] for f in new], "since": since}


def _bad_rows(counts: dict) -> tuple[int, int, int]:
    """(rows read, bad rows, duplicates) from ingest counts (per reason, or the older summary keys)."""
    read = int(counts.get("read", 0))
    if any(reason in counts for reason in DATA_ERRORS):
        return read, sum(int(counts.get(r, 0)) for r in DATA_ERRORS), sum(int(counts.get(r, 0)) for r in DUPLICATES)
    return read, int(counts["invalid"]) if "invalid" in counts else read - int(counts.get("kept", read)), 0


def _shares(read: int, invalid: int, duplicates: int) -> dict:
    return {
        "quarantine_share": invalid / max(read, 1),
        "rows_read": read,
        "rows_invalid": invalid,
        "duplicate_rows": duplicates,
    }


def _previous_snapshot(registry: Registry, version: str) -> tuple[str | None, set[str]]:
    """(the version registered last before `version` with a recorded snapshot, the md5s of its raw files)."""
    earlier = [
        v
        for v in registry.versions()
        if version_number(v["version"]) < version_number(version) and (v.get("sources") or {}).get("files")
    ]
    if not earlier:
        return None, set()
    previous = max(earlier, key=lambda v: version_number(v["version"]))
    return previous["version"], {f["md5"] for f in previous["sources"]["files"]}


def quarantine_check(quality: dict, gp: GateParams) -> Check:
    """Blocks when too much of what is new is bad data; says what was judged and what was not."""
    share, limit, files, since = (
        quality["quarantine_share"],
        gp.max_quarantine_share,
        quality["files_judged"],
        quality["since"],
    )
    if files is None:
        judged = (
            f"Ingest quarantined {share:.2%} of {quality['rows_read']} raw rows as bad data (max {limit:.2%}; "
            f"the whole last ingest: no per-file counts recorded)"
        )
    elif not files:
        judged = f"No raw file is new since {since}: nothing new to judge (max {limit:.2%} bad rows in new files)"
    else:
        names = ", ".join(files[:3]) + (f", … ({len(files) - 3} more)" if len(files) > 3 else "")
        where = (
            f"the {len(files)} raw file(s) new since {since}"
            if since
            else f"all {len(files)} raw file(s) (no earlier version)"
        )
        judged = (
            f"Ingest quarantined {share:.2%} of {quality['rows_read']} raw rows as bad data in {where}: {names} "
            f"(max {limit:.2%}; each file is judged once, by the first candidate trained on it)"
        )
    repeats = f"{quality['duplicate_rows']:,} duplicate or near-duplicate rows (normal in click logs) are counted apart and never block"
    history = (
        f"; all history: {quality['history_share']:.2%} of {quality['history_rows']:,} rows bad"
        if files is not None
        else ""
    )
    return Check("quarantine_share", share, limit, share <= limit, True, f"{judged}; {repeats}{history}.")
