import time

import numpy as np
import pandas as pd
import pytest

from seqops.config import SyntheticParams
from seqops.features.ingest import RAW_COLUMNS
from seqops.features.synthetic import generate_batch, iter_batch_chunks, write_batch

SMALL = SyntheticParams(n_users=500, seed=7)
DAY = 86_400


def _index(ids: pd.Series) -> np.ndarray:
    return ids.str[1:].astype(int).to_numpy()


def _next_pairs(events: pd.DataFrame) -> pd.DataFrame:
    """(previous item, next item) for consecutive events of a user less than 30 min apart."""
    e = events.sort_values(["user_id", "timestamp"], kind="stable")
    user, ts, item = e["user_id"].to_numpy(), e["timestamp"].to_numpy(), e["item_id"].to_numpy()
    within = (user[1:] == user[:-1]) & (np.diff(ts) < 1800)
    return pd.DataFrame({"prev": item[:-1][within], "next": item[1:][within]})


def _head(events: pd.DataFrame, n: int = 20) -> set[str]:
    return set(events["item_id"].value_counts().index[:n])


def _view_share(events: pd.DataFrame) -> float:
    return float((events["event_type"] == "view").mean())


def test_schema_and_order():
    events = generate_batch(SMALL)
    assert list(events.columns) == RAW_COLUMNS
    assert events["user_id"].str.fullmatch(r"u\d{6}").all()
    assert events["item_id"].str.fullmatch(r"i\d{6}").all()
    assert events["category"].str.fullmatch(r"c\d{2}").all()
    assert set(events["event_type"]) == {"view", "cart", "purchase"}
    assert events["timestamp"].dtype == np.int64
    assert events["timestamp"].is_monotonic_increasing


def test_deterministic_and_catalog_shared_across_batches():
    first, again, later = generate_batch(SMALL, 0), generate_batch(SMALL, 0), generate_batch(SMALL, 1)
    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(later)
    category = pd.concat([first, later]).groupby("item_id")["category"].nunique()
    assert (category == 1).all()


def test_batches_cover_consecutive_windows():
    start = int(pd.Timestamp(SMALL.start, tz="UTC").timestamp())
    span = SMALL.days_per_batch * DAY
    first, later = generate_batch(SMALL, 0), generate_batch(SMALL, 1)
    assert first["timestamp"].between(start, start + span - 1).all()
    assert later["timestamp"].between(start + span, start + 2 * span - 1).all()
    # sessions: consecutive events of a session are tens of seconds apart, sessions hours apart
    gaps = first.groupby("user_id")["timestamp"].diff().dropna()
    assert 10 < gaps[gaps < 1800].mean() < 60
    assert (gaps > 3600).sum() > 0.5 * first["user_id"].nunique()


def test_default_size_and_speed():
    p = SyntheticParams()
    started = time.perf_counter()
    events = generate_batch(p)
    assert time.perf_counter() - started < 2.0
    expected = p.n_users * p.sessions_per_user * p.session_length
    assert 0.8 * expected < len(events) < 1.2 * expected


def test_popularity_is_skewed():
    events = generate_batch(SMALL)
    counts = events["item_id"].value_counts()
    assert counts.iloc[: SMALL.n_items // 10].sum() > 0.4 * len(events)


def test_transitions_beat_popularity():
    train, test = _next_pairs(generate_batch(SMALL, 0)), _next_pairs(generate_batch(SMALL, 1))
    most_frequent_next = (
        train.value_counts(["prev", "next"]).reset_index().drop_duplicates("prev").set_index("prev")["next"]
    )
    markov_hits = (test["prev"].map(most_frequent_next) == test["next"]).mean()
    top_item = generate_batch(SMALL, 0)["item_id"].value_counts().index[0]
    popularity_hits = (test["next"] == top_item).mean()
    assert markov_hits >= 3 * popularity_hits


def test_drift_adds_new_items_and_shifts_type_mix():
    drifted = SMALL.model_copy(update={"drift": 0.5})
    calm, moved = generate_batch(SMALL, 1), generate_batch(drifted, 1)
    assert _index(calm["item_id"]).max() < SMALL.n_items
    new = _index(moved["item_id"]) >= SMALL.n_items
    assert new.mean() > 0.05
    assert len(np.unique(_index(moved["item_id"])[new])) <= round(0.5 * 0.2 * SMALL.n_items)
    assert _view_share(moved) < _view_share(calm) - 0.1
    # head items change
    assert len(_head(calm) & _head(moved)) < 15
    # the old catalogue stays: known items keep their category
    both = pd.concat([calm, moved[~new]]).groupby("item_id")["category"].nunique()
    assert (both == 1).all()


def test_churned_users_drop_off_early():
    def early_share(churn_rate: float) -> float:
        events = generate_batch(SMALL.model_copy(update={"churn_rate": churn_rate}))
        cutoff = events["timestamp"].min() + SMALL.days_per_batch * DAY / 3
        return float((events.groupby("user_id")["timestamp"].max() < cutoff).mean())

    assert early_share(0.5) > early_share(0.0) + 0.3


@pytest.mark.parametrize("batch", [0, 3])
def test_write_batch(tmp_path, batch):
    path = write_batch(SMALL, tmp_path / "raw", batch)
    assert path == tmp_path / "raw" / f"batch-{batch:03d}.csv"
    assert path.read_text().splitlines()[0] == ",".join(RAW_COLUMNS)
    pd.testing.assert_frame_equal(pd.read_csv(path), generate_batch(SMALL, batch))


def test_type_funnel_makes_carts_lead_to_purchases_and_zero_changes_nothing():
    plain = generate_batch(SMALL)
    assert generate_batch(SMALL.model_copy(update={"type_funnel": 0.0})).equals(plain)

    def purchase_after_cart(events) -> float:
        events = events.sort_values(["user_id", "timestamp"], kind="stable")
        prev = events.groupby("user_id")["event_type"].shift()
        return float((events.loc[prev == "cart", "event_type"] == "purchase").mean())

    funnel = generate_batch(SMALL.model_copy(update={"type_funnel": 0.8}))
    assert purchase_after_cart(funnel) > 0.3 > purchase_after_cart(plain)


def test_chunks_stream_a_large_batch_and_one_chunk_is_the_whole_batch(tmp_path):
    (whole,) = iter_batch_chunks(SMALL, 1, chunk_users=SMALL.n_users)
    pd.testing.assert_frame_equal(whole, generate_batch(SMALL, 1))

    chunks = list(iter_batch_chunks(SMALL, 1, chunk_users=120))
    assert len(chunks) == 5 and all(c["timestamp"].is_monotonic_increasing for c in chunks)
    users = [set(c["user_id"]) for c in chunks]
    assert all(a.isdisjoint(b) for i, a in enumerate(users) for b in users[i + 1 :])
    assert 0.8 < sum(map(len, chunks)) / len(whole) < 1.2  # same structure, other draws
    pd.testing.assert_frame_equal(
        pd.concat(chunks, ignore_index=True), pd.concat(iter_batch_chunks(SMALL, 1, chunk_users=120), ignore_index=True)
    )

    path = write_batch(SMALL, tmp_path / "raw", 1, chunk_users=120)
    pd.testing.assert_frame_equal(pd.read_csv(path), pd.concat(chunks, ignore_index=True))
