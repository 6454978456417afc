"""The global steps on arrays (features/cleaning.py): the (user, time) order that ingest sorts by."""

import numpy as np
import pytest

from seqops.features import cleaning


def full_sort(user: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """The reference: every row sorted by (user, time), ties in file order."""
    return np.lexsort((np.arange(len(user)), ts, user))


def grouped(rng, n: int, sorted_times: bool = False, unit: int = 1_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Rows grouped by user (users in random id order, as in Taobao's file), random times in a user."""
    user = rng.permutation(n)[np.sort(rng.integers(0, max(n // 50, 1), n))]
    ts = rng.integers(1_500_000_000, 1_500_000_000 + 9 * 86_400, n) * unit
    if sorted_times:
        ts = np.sort(ts)
    return user, ts


def split_users(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Grouped, but some users' rows come in two runs far apart, overlapping in time; many ties."""
    user, _ = grouped(rng, n)
    k = n // 10
    if k:
        user[-k:] = user[:k]
    return user, rng.integers(0, 50, n) * 1_000_000


def interleaved(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Users interleaved row by row, times increasing (a RetailRocket-like log)."""
    return rng.integers(0, 300, n), np.sort(rng.integers(0, 10**12, n))


SHAPES = {
    "grouped": lambda rng, n: grouped(rng, n),
    "grouped, sorted times": lambda rng, n: grouped(rng, n, sorted_times=True),
    "grouped, µs times over a century": lambda rng, n: (grouped(rng, n)[0], rng.integers(0, 2**52, n)),
    "users in overlapping runs": split_users,
    "interleaved": interleaved,
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("n", [1, 2, 7, 1_000, 30_000])
def test_user_time_order_is_the_full_sort(shape, n):
    rng = np.random.default_rng(n)
    user, ts = SHAPES[shape](rng, n)
    assert np.array_equal(cleaning.user_time_order(user, ts), full_sort(user, ts))


def test_grouped_rows_are_never_sorted_all_at_once(monkeypatch):
    """Issue 12: the order of a log grouped by user comes from small sorts within runs, so its cost
    grows with the rows; no sort sees more than a chunk of them."""
    sizes = []
    sort_packed = cleaning._sort_packed

    def recording(major, minor_bits):
        sizes.append(len(major))
        return sort_packed(major, minor_bits)

    monkeypatch.setattr(cleaning, "_sort_packed", recording)
    user, ts = grouped(np.random.default_rng(0), 200_000)
    assert np.array_equal(cleaning.user_time_order(user, ts), full_sort(user, ts))
    assert max(sizes) < 200_000 // 10, max(sizes)
