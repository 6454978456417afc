"""Cleaning on compact arrays: row checks, duplicates, rating threshold, k-core, sessions, statistics.

Row checks run block by block on raw columns (`parse_time`, `parse_value`, `event_codes`,
`row_reasons`); the global steps run once on int arrays of every valid row (`duplicates`,
`kcore`, `sessions`, `statistics`). A rejected row gets the first reason of `REASONS` that applies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# In priority order: a row is quarantined under the first reason that applies.
REASONS = (
    "malformed_row",  # wrong number of fields
    "missing_user_id",
    "missing_item_id",
    "bad_timestamp",  # not a time in the layout's unit
    "negative_timestamp",
    "future_timestamp",  # later than now + future_tolerance_s
    "unknown_event_type",  # not one of ingest.event_types (after the format's mapping)
    "bad_value",  # a rating that is not a number
    "duplicate",  # same user, item, type and time as an earlier row
    "near_duplicate",  # same user, item and type within duplicate_window_s of the previous one
    "below_rating_threshold",
    "too_few_user_events",  # k-core
    "too_few_item_events",  # k-core
)
ROW_CHECKS = REASONS[1:8]  # decided per row while reading
FILTERS = ("below_rating_threshold", "too_few_user_events", "too_few_item_events")  # policy, not bad data
DUPLICATES = ("duplicate", "near_duplicate")  # repeats: normal in click logs, reported apart, not bad data
DATA_ERRORS = tuple(r for r in REASONS if r not in FILTERS + DUPLICATES)  # what the gate's quarantine share counts
NO_TIME = np.iinfo(np.int64).min
UNIT_US = {"s": 1_000_000, "ms": 1_000, "us": 1}
_INT64_SAFE = 9.2e18
GAP_SAMPLE = 1_000_000
MIN_RUN = 4  # rows per run of one user (on average) for the run-by-run order
RUN_CHUNK = 1 << 12  # rows sorted at once within runs: small sorts stay in the cache


def code(reason: str) -> int:
    """Reason → its int code (0 = kept)."""
    return REASONS.index(reason) + 1


# --- per block -----------------------------------------------------------------------------------


def _cast(column: pa.Array, to: pa.DataType) -> pa.Array | None:
    try:
        return pc.cast(column, to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def to_float(column: pa.Array) -> np.ndarray:
    """Numbers as float64; NaN where the text is not a number (surrounding blanks allowed)."""
    fast = _cast(column, pa.float64())
    if fast is not None:
        return fast.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    text = pd.Series(column.to_numpy(zero_copy_only=False), dtype=object).str.strip()
    return pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def parse_time(column: pa.Array, unit: str) -> np.ndarray:
    """Microseconds since the epoch (int64) per row; NO_TIME where the value is not a time."""
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        us = pc.cast(pc.cast(column, pa.timestamp("us", getattr(column.type, "tz", None))), pa.int64())
        return us.fill_null(NO_TIME).to_numpy()
    if unit == "iso":
        text = pd.Series(column.to_numpy(zero_copy_only=False), dtype=object)
        stamps = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
        return pd.DatetimeIndex(stamps).as_unit("us").asi8  # NaT is NO_TIME
    factor = UNIT_US[unit]
    ints = _cast(column, pa.int64()) if not pa.types.is_floating(column.type) else None
    if ints is not None and ints.null_count == 0:
        values = ints.to_numpy()
        if len(values) == 0 or np.abs(values).max() < _INT64_SAFE / factor:
            return values * factor
    us = to_float(column) * factor
    out = np.full(len(us), NO_TIME, dtype=np.int64)
    finite = np.isfinite(us)
    out[finite] = np.clip(us[finite], -_INT64_SAFE, _INT64_SAFE).round().astype(np.int64)
    return out


def parse_value(column: pa.Array | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(value, bad): a blank value is NaN (no rating), text that is not a finite number is bad."""
    if column is None:
        return np.full(n, np.nan), np.zeros(n, dtype=bool)
    value = to_float(column)
    bad = ~np.isfinite(value)
    if bad.any() and pa.types.is_string(column.type):
        bad &= ~pc.equal(pc.utf8_trim_whitespace(column.fill_null("")), "").to_numpy(zero_copy_only=False)
    elif bad.any():
        bad &= ~column.is_null().to_numpy(zero_copy_only=False)
    return value, bad


def event_codes(
    column: pa.Array | None,
    n: int,
    event_types: Sequence[str],
    event_map: Mapping[str, str] | None,
    default: str | None,
) -> np.ndarray:
    """Index into `event_types` per row (int8), -1 for a type that is not there."""

    def index(raw: str | None) -> int:
        if raw is None:
            return -1
        name = raw.strip().lower()
        name = event_map.get(name, name) if event_map else name
        return event_types.index(name) if name in event_types else -1

    if column is None:
        return np.full(n, index(default), dtype=np.int8)
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column if pa.types.is_string(column.type) else pc.cast(column, pa.string()))
    encoded = (
        column
        if pa.types.is_string(column.dictionary.type)
        else pa.DictionaryArray.from_arrays(column.indices, pc.cast(column.dictionary, pa.string()))
    )
    lut = np.array([index(raw) for raw in encoded.dictionary.to_pylist()] + [-1], dtype=np.int8)
    return lut[encoded.indices.fill_null(len(lut) - 1).to_numpy()]


def row_reasons(
    missing_user: np.ndarray,
    missing_item: np.ndarray,
    ts: np.ndarray,
    event: np.ndarray,
    bad_value: np.ndarray,
    latest_us: int,
) -> np.ndarray:
    """Reason code per row (int8, 0 = passes) from the row checks, first failing check wins."""
    out = np.zeros(len(ts), dtype=np.int8)
    bad = np.flatnonzero(missing_user | missing_item | (ts < 0) | (ts > latest_us) | (event < 0) | bad_value)
    if len(bad):  # ts < 0 covers NO_TIME
        t = ts[bad]
        conditions = [
            missing_user[bad],
            missing_item[bad],
            t == NO_TIME,
            t < 0,
            t > latest_us,
            event[bad] < 0,
            bad_value[bad],
        ]
        out[bad] = np.select(conditions, [code(r) for r in ROW_CHECKS], 0)
    return out


# --- global steps --------------------------------------------------------------------------------


def _sort_packed(major: np.ndarray, minor_bits: int) -> np.ndarray | None:
    """Positions sorted by (major, position), as one value sort of `major << bits | position`
    (much faster than a stable argsort); None when the pair does not fit in 63 bits."""
    n = len(major)
    if n == 0 or int(major.max()).bit_length() + minor_bits > 63 or major.min() < 0:
        return None
    key = (major.astype(np.int64) << minor_bits) | np.arange(n, dtype=np.int64)
    key.sort()
    return key & ((1 << minor_bits) - 1)


def _time_steps(ts: np.ndarray) -> tuple[np.ndarray, int] | None:
    """Times as small non-negative ints (whole seconds or ms since the earliest when every time is
    one) and their bit width; None when no such unit fits in 40 bits."""
    if len(ts) == 0:
        return None
    low = int(ts.min())
    for unit in (1_000_000, 1_000):
        span = (int(ts.max()) - low) // unit
        if span.bit_length() <= 40 and not (ts % unit).any():
            steps = (ts - low) // unit
            return steps, max(span.bit_length(), 1)
    return None


def user_time_order(user: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Positions sorted by (user, time); ties keep file order.

    Logs mostly come grouped: one user's rows after another's (Taobao's file), or one visit's rows
    together. Then only the rows within each run of one user are sorted, in small sorts that stay in
    the cache, and the runs are put in user order: the work grows with the rows, not faster. A user
    whose runs overlap in time is merged by a sort of that user's rows only; a log with no runs
    (users interleaved row by row) takes one sort of every row."""
    by_runs = _order_by_runs(user, ts)
    return by_runs if by_runs is not None else _order_all(user, ts)


def _order_all(user: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """`user_time_order` as one sort of every row."""
    position_bits = max(len(ts) - 1, 1).bit_length()
    steps = _time_steps(ts)
    if steps is not None:  # one value sort of user | time | position, when the three fit in 63 bits
        ranked = _sort_packed((user.astype(np.int64) << steps[1]) | steps[0], position_bits)
        if ranked is not None:
            return ranked
    by_time = np.arange(len(ts)) if len(ts) < 2 or (ts[1:] >= ts[:-1]).all() else np.argsort(ts, kind="stable")
    ranked = _sort_packed(user[by_time], position_bits)
    return by_time[ranked] if ranked is not None else np.lexsort((ts, user))


def _order_by_runs(user: np.ndarray, ts: np.ndarray) -> np.ndarray | None:
    """`user_time_order` run by run; None when the rows do not come in runs of one user."""
    n = len(user)
    if n < 2:
        return None
    starts = np.flatnonzero(user[1:] != user[:-1]) + 1
    if len(starts) + 1 > n // MIN_RUN:
        return None
    starts = np.concatenate(([0], starts))
    ends = np.append(starts[1:], n)
    within = _sort_within_runs(ts, starts)
    run_order = _stable_order(user[starts])  # runs by user; one user's runs in file order
    lengths = (ends - starts)[run_order]
    # the output takes the runs one after another: shift each run's positions to its new place
    moved = np.repeat(starts[run_order] - (np.cumsum(lengths) - lengths), lengths) + np.arange(n)
    order = within[moved]
    first, last = ts[within[starts]][run_order], ts[within[ends - 1]][run_order]
    run_user = user[starts][run_order]
    overlapping = (run_user[1:] == run_user[:-1]) & (last[:-1] > first[1:])
    if overlapping.any():
        _merge_users(order, user, ts, np.unique(run_user[1:][overlapping]))
    return order


def _sort_within_runs(ts: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Positions with each run (from `starts`) sorted by time, stable: chunks of whole runs of about
    RUN_CHUNK rows sorted one at a time, each as one value sort of run | time | position."""
    n = len(ts)
    falls = ts[1:] < ts[:-1]
    falls[starts[1:] - 1] = False  # a new run may start earlier
    if not falls.any():
        return np.arange(n)
    run_of_row = np.zeros(n, dtype=np.int64)
    run_of_row[starts[1:]] = 1
    np.cumsum(run_of_row, out=run_of_row)
    edges = np.unique(starts[np.minimum(np.searchsorted(starts, np.arange(0, n, RUN_CHUNK)), len(starts) - 1)])
    out = np.empty(n, dtype=np.int64)
    for a, b in zip(edges, [*edges[1:], n]):
        out[a:b] = a + _chunk_order(run_of_row[a:b] - run_of_row[a], ts[a:b])
    return out


def _chunk_order(run: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Positions of one chunk sorted by (run, time, position)."""
    t = ts - ts.min()
    position_bits, time_bits = max(len(t) - 1, 1).bit_length(), int(t.max()).bit_length()
    if int(run[-1]).bit_length() + time_bits + position_bits <= 63:
        return _sort_packed((run << time_bits) | t, position_bits)
    return np.lexsort((t, run))


def _stable_order(values: np.ndarray) -> np.ndarray:
    """Positions sorted by value, ties in position order."""
    ranked = _sort_packed(values, max(len(values) - 1, 1).bit_length())
    return ranked if ranked is not None else np.argsort(values, kind="stable")


def _merge_users(order: np.ndarray, user: np.ndarray, ts: np.ndarray, users: np.ndarray) -> None:
    """Re-sort, in place, the stretches of `order` that hold `users` (each user's rows already side by
    side, in user order): by time, ties in file order."""
    chosen = np.zeros(int(user.max()) + 1, dtype=bool)
    chosen[users] = True
    slots = np.flatnonzero(chosen[user[order]])
    rows = np.sort(order[slots])  # file order
    order[slots] = rows[_order_all(user[rows], ts[rows])]


def duplicates(user: np.ndarray, item: np.ndarray, event: np.ndarray, ts: np.ndarray, window_us: int) -> np.ndarray:
    """Reason code per row sorted by (user, time): `duplicate` (same user, item, type and time as
    an earlier row) or `near_duplicate` (same user, item and type at most `window_us` after the
    previous such row, so a burst collapses to its first event); 0 otherwise."""
    if window_us > 0:
        return _duplicates(user, item, event, ts, window_us)
    # exact duplicates share (user, time): only rows in such ties need the (user, item, type) grouping
    tie = np.zeros(len(ts), dtype=bool)
    same = (user[1:] == user[:-1]) & (ts[1:] == ts[:-1])
    tie[1:] |= same
    tie[:-1] |= same
    out = np.zeros(len(ts), dtype=np.int8)
    at = np.flatnonzero(tie)
    out[at] = _duplicates(user[at], item[at], event[at], ts[at], 0)
    return out


def _duplicates(user: np.ndarray, item: np.ndarray, event: np.ndarray, ts: np.ndarray, window_us: int) -> np.ndarray:
    n_types = int(event.max(initial=0)) + 1
    # by (item, type, position): rows of one (user, item, type) end up next to each other, in time order
    by = _sort_packed(item.astype(np.int64) * n_types + event, max(len(ts) - 1, 1).bit_length())
    if by is None:
        by = np.lexsort((np.arange(len(ts)), event, item, user))
    u, i, e, t = user[by], item[by], event[by], ts[by]
    same = (u[1:] == u[:-1]) & (i[1:] == i[:-1]) & (e[1:] == e[:-1])
    gap = t[1:] - t[:-1]
    out = np.zeros(len(user), dtype=np.int8)
    out[by[1:][same & (gap == 0)]] = code("duplicate")
    if window_us > 0:
        out[by[1:][same & (gap > 0) & (gap <= window_us)]] = code("near_duplicate")
    return out


def kcore(user: np.ndarray, item: np.ndarray, min_user: int, min_item: int, iterative: bool) -> np.ndarray:
    """Reason code per row: users with < min_user rows, then items with < min_item rows, removed
    (repeatedly when `iterative`, until both hold for every remaining row); 0 for rows kept."""
    out = np.zeros(len(user), dtype=np.int8)
    alive, u, i = None, user, item  # alive: positions still in (None: all of them)
    while len(u):
        low_user = np.bincount(u)[u] < min_user if min_user > 1 else np.zeros(len(u), dtype=bool)
        low_item = (np.bincount(i)[i] < min_item) & ~low_user if min_item > 1 else np.zeros(len(u), dtype=bool)
        if not (low_user.any() or low_item.any()):
            break
        positions = np.arange(len(user)) if alive is None else alive
        out[positions[low_user]] = code("too_few_user_events")
        out[positions[low_item]] = code("too_few_item_events")
        keep = ~(low_user | low_item)
        alive, u, i = positions[keep], u[keep], i[keep]
        if not iterative:
            break
    return out


def sessions(user: np.ndarray, ts: np.ndarray, gap_s: int) -> np.ndarray:
    """Session ids from 1, unique across users, for rows sorted by (user, time)."""
    new = np.ones(len(user), dtype=bool)
    new[1:] = (user[1:] != user[:-1]) | (np.diff(ts) > gap_s * 1_000_000)
    return np.cumsum(new, dtype=np.int64)


def _spread(counts: np.ndarray, prefix: str) -> dict[str, float]:
    if len(counts) == 0:
        return {}
    p50, p90 = np.percentile(counts[:: max(len(counts) // GAP_SAMPLE, 1)], [50, 90])  # of an even sample
    return {
        f"{prefix}_mean": round(float(counts.mean()), 3),
        f"{prefix}_p50": float(p50),
        f"{prefix}_p90": float(p90),
        f"{prefix}_max": float(counts.max()),
    }


def statistics(
    user: np.ndarray,
    item: np.ndarray,
    ts: np.ndarray,
    event: np.ndarray,
    session: np.ndarray,
    event_types: Sequence[str],
    gap_s: int,
) -> dict:
    """Frequency and time-gap figures of the kept events (sorted by user, time): the DVC metric's `stats`."""
    per_user = np.bincount(user)
    per_item = np.bincount(item)
    per_session = np.bincount(session)
    at = np.arange(0, max(len(ts) - 1, 0), max(len(ts) // GAP_SAMPLE, 1))  # an even sample of neighbours
    gaps = (ts[at + 1] - ts[at])[user[at + 1] == user[at]] / 1e6
    types = np.bincount(event, minlength=len(event_types)) / max(len(event), 1)
    stats = {
        "events": int(len(user)),
        "users": int((per_user > 0).sum()),
        "items": int((per_item > 0).sum()),
        "sessions": int((per_session > 0).sum()),
        **_spread(per_user[per_user > 0], "events_per_user"),
        **_spread(per_item[per_item > 0], "events_per_item"),
        **_spread(per_session[per_session > 0], "events_per_session"),
        "type_share": {name: round(float(share), 5) for name, share in zip(event_types, types)},
    }
    if len(gaps):
        p50, p90 = np.percentile(gaps, [50, 90])
        stats |= {
            "gap_s_p50": float(p50),
            "gap_s_p90": float(p90),
            "gap_over_session_share": round(float((gaps > gap_s).mean()), 5),
        }
    if len(ts):
        stats |= {
            "first_ts": int(ts.min() // 1_000_000),
            "last_ts": int(ts.max() // 1_000_000),
            "span_days": round(float(ts.max() - ts.min()) / 86_400e6, 3),
        }
    return stats
