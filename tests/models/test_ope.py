"""The off-policy estimators on cases computed by hand, their intervals, and the cross-fitted reward model."""

from statistics import NormalDist

import numpy as np
import pytest

from seqops.models.release.ope import (
    Logged,
    all_terms,
    cross_fitted_rates,
    effective_size,
    estimate,
    item_rates,
)

Z95 = NormalDist().inv_cdf(0.975)


@pytest.fixture
def three_rows() -> Logged:
    """Three answers of one item each: rewards 1, 0, 1; weights 1/0.5 = 2, 0.5/0.25 = 2, 0.5/1 = 0.5."""
    return Logged(
        slate=np.array([0, 1, 2]),
        reward=np.array([1.0, 0.0, 1.0]),
        logging_p=np.array([0.5, 0.25, 1.0]),
        target_p=np.array([1.0, 0.5, 0.5]),
        size=np.array([1, 1, 1]),
    )


REWARD_HAT = np.array([0.5, 0.5, 0.5])
DIRECT = np.array([0.6, 0.4, 0.5])  # the target's model term per answer


def test_ips_snips_dr_by_hand(three_rows):
    terms = all_terms(three_rows, REWARD_HAT, DIRECT)
    assert estimate(terms["logged"]).value == pytest.approx(2 / 3)
    assert estimate(terms["ips"]).value == pytest.approx((2 * 1 + 2 * 0 + 0.5 * 1) / 3)  # 0.8333
    assert estimate(terms["snips"]).value == pytest.approx(2.5 / 4.5)  # Σ w c / Σ w = 0.5556
    # DR: 0.6 + 2(1 - .5) = 1.6; 0.4 + 2(0 - .5) = -0.6; 0.5 + 0.5(1 - .5) = 0.75
    assert estimate(terms["dr"]).value == pytest.approx((1.6 - 0.6 + 0.75) / 3)  # 0.5833


def test_clt_intervals_by_hand(three_rows):
    terms = all_terms(three_rows, REWARD_HAT, DIRECT)
    ips = estimate(terms["ips"])
    per_answer = np.array([2.0, 0.0, 0.5])
    se = per_answer.std(ddof=1) / np.sqrt(3)
    assert ips.se == pytest.approx(se) and ips.n == 3
    assert (ips.low, ips.high) == pytest.approx((2.5 / 3 - Z95 * se, 2.5 / 3 + Z95 * se))
    # SNIPS: delta method, linearised terms (a - R b) / mean(b)
    ratio = 2.5 / 4.5
    linear = (np.array([2.0, 0.0, 0.5]) - ratio * np.array([2.0, 2.0, 0.5])) / 1.5
    assert estimate(terms["snips"]).se == pytest.approx(linear.std(ddof=1) / np.sqrt(3))
    # a paired difference: candidate minus the logged rate, on the same answers
    delta = estimate(terms["ips"], minus=terms["logged"])
    assert delta.value == pytest.approx(2.5 / 3 - 2 / 3)
    assert delta.se == pytest.approx((per_answer - np.array([1.0, 0.0, 1.0])).std(ddof=1) / np.sqrt(3))


def test_slates_average_over_their_items():
    """Two answers of two items: each answer's terms are means over its items."""
    data = Logged(
        slate=np.array([0, 0, 1, 1]),
        reward=np.array([1.0, 0.0, 0.0, 1.0]),
        logging_p=np.array([1.0, 0.5, 0.5, 0.25]),
        target_p=np.array([1.0, 1.0, 0.0, 0.5]),
        size=np.array([2, 2]),
    )
    terms = all_terms(data, np.zeros(4), np.zeros(2))
    assert estimate(terms["logged"]).value == pytest.approx(0.5)
    assert estimate(terms["ips"]).value == pytest.approx(((1 + 0) / 2 + (0 + 2) / 2) / 2)
    assert estimate(terms["snips"]).value == pytest.approx((0.5 + 1.0) / ((1 + 2) / 2 + (0 + 2) / 2))
    assert estimate(terms["dr"]).value == pytest.approx(estimate(terms["ips"]).value)  # r̂ = 0: DR is IPS


def test_on_policy_every_estimator_is_the_logged_mean():
    rng = np.random.default_rng(0)
    n, k = 500, 3
    p = rng.uniform(0.1, 1.0, n * k)
    data = Logged(np.repeat(np.arange(n), k), rng.binomial(1, 0.3, n * k).astype(float), p, p, np.full(n, k))
    terms = all_terms(data, np.full(n * k, 0.3), np.full(n, 0.3))
    logged = estimate(terms["logged"]).value
    for name in ("ips", "snips", "dr"):
        assert estimate(terms[name]).value == pytest.approx(logged)
    assert effective_size(data) == pytest.approx(n)


def test_bootstrap_interval_agrees_with_clt_on_a_large_sample():
    rng = np.random.default_rng(1)
    n = 4000
    logging_p = rng.uniform(0.2, 1.0, n)
    data = Logged(np.arange(n), rng.binomial(1, 0.2, n).astype(float), logging_p, np.full(n, 0.6), np.ones(n))
    terms = all_terms(data, np.full(n, 0.2), np.full(n, 0.12))
    for name in ("ips", "snips", "dr"):
        clt = estimate(terms[name])
        boot = estimate(terms[name], interval="bootstrap", samples=500)
        assert boot.value == clt.value and boot.low < clt.value < boot.high
        assert (boot.high - boot.low) == pytest.approx(clt.high - clt.low, rel=0.15)


def test_too_few_answers_give_no_interval():
    one = Logged(np.array([0]), np.array([1.0]), np.array([0.5]), np.array([0.5]), np.array([1]))
    single = estimate(all_terms(one, np.zeros(1), np.zeros(1))["ips"])
    assert single.value == 1.0 and np.isnan(single.se) and np.isnan(single.low)


def test_item_rates_smooth_toward_the_prior_and_cross_fit():
    rates = item_rates(np.array([0, 0, 1]), np.array([1.0, 1.0, 0.0]), 3, prior=0.1)
    assert rates == pytest.approx([(2 + 20 * 0.1) / 22, (0 + 2) / 21, 0.1])
    slate = np.arange(200)
    items = np.zeros(200, np.int64)
    rewards = (np.arange(200) % 2).astype(float)
    fold, tables = cross_fitted_rates(slate, items, rewards, 200, 1)
    assert set(fold) == {0, 1} and tables.shape == (2, 1)
    for f in (0, 1):  # each fold's rate comes from the other fold's answers only
        other = fold != f
        assert tables[f, 0] == pytest.approx((rewards[other].sum() + 20 * rewards[other].mean()) / (other.sum() + 20))
