"""The exploration policies (serving/explore.py): propensities by formula, slates drawn with exactly
those propensities, determinism per seed, and the settings' validation."""

import numpy as np
import pytest
import yaml

from seqops.config import ConfigError, load_params
from seqops.config_ope import ExploreParams
from seqops.serving.explore import answer_seed, inclusion_probabilities, public_answer, sample_slates

SCORES = np.array([[5.0, 4.0, 3.0, 2.0, 1.0]])


def settings(policy: str, **extra) -> ExploreParams:
    return ExploreParams(policy=policy, **extra)


def test_off_is_the_top_k():
    assert inclusion_probabilities(SCORES, 2, settings("off")).tolist() == [[1, 1, 0, 0, 0]]
    shown, propensity = sample_slates(SCORES, 2, settings("off"), np.random.default_rng(0))
    assert shown.tolist() == [[0, 1]] and propensity.tolist() == [[1.0, 1.0]]


def test_epsilon_propensities():
    probs = inclusion_probabilities(SCORES, 2, settings("epsilon", epsilon=0.5))
    # top k: (1 - ε) + ε·k/K = 0.5 + 0.5·2/5; the rest ε·k/K
    assert probs == pytest.approx(np.array([[0.7, 0.7, 0.2, 0.2, 0.2]]))
    assert probs.sum() == pytest.approx(2)


def test_softmax_propensities_sum_to_k_capped_at_one():
    probs = inclusion_probabilities(SCORES, 2, settings("softmax", temperature=1.0))[0]
    assert probs.sum() == pytest.approx(2) and (probs <= 1).all() and (np.diff(probs) <= 0).all()
    # 2·e^0 / Σ e^(s-5) > 1: the best is capped, the other slot is shared ∝ e^(s/T) by the rest
    weights = np.exp(SCORES[0] - 5)
    assert probs[0] == 1.0 and probs[1:] == pytest.approx(weights[1:] / weights[1:].sum())
    # one dominant item is capped at 1, the other slot shared equally by the rest
    assert inclusion_probabilities([[10.0, 0, 0, 0]], 2, settings("softmax")) == pytest.approx(
        np.array([[1, 1 / 3, 1 / 3, 1 / 3]])
    )
    # temperature → 0: the top k; → ∞: k of K uniformly
    assert inclusion_probabilities(SCORES, 2, settings("softmax", temperature=1e-6)).tolist() == [[1, 1, 0, 0, 0]]
    assert inclusion_probabilities(SCORES, 2, settings("softmax", temperature=1e9)) == pytest.approx(
        np.full((1, 5), 0.4)
    )


def test_missing_candidates_and_per_row_slate_sizes():
    scores = np.array([[3.0, 2.0, -np.inf], [3.0, 2.0, 1.0]])
    for policy in ("off", "epsilon", "softmax"):
        probs = inclusion_probabilities(scores, np.array([3, 1]), settings(policy))
        assert probs[0, 2] == 0 and probs.sum(axis=1) == pytest.approx([2, 1]), policy


@pytest.mark.parametrize("policy", ["epsilon", "softmax"])
def test_slates_are_drawn_with_their_propensities(policy):
    explore = settings(policy, epsilon=0.3, temperature=1.5)
    n, k = 40_000, 2
    scores = np.repeat(SCORES, n, axis=0)
    shown, propensity = sample_slates(scores, k, explore, np.random.default_rng(7))
    assert shown.shape == (n, k) and (np.diff(shown, axis=1) > 0).all()  # k distinct, in the model's order
    probs = inclusion_probabilities(SCORES, k, explore)[0]
    assert propensity == pytest.approx(probs[shown])
    frequency = np.bincount(shown.ravel(), minlength=5) / n
    assert frequency == pytest.approx(probs, abs=0.01)


def test_the_same_seed_draws_the_same_slate():
    explore = settings("softmax", temperature=3.0)
    scores = np.random.default_rng(0).normal(size=(50, 20))
    scores = -np.sort(-scores, axis=1)
    first = sample_slates(scores, 5, explore, np.random.default_rng(answer_seed(0, "u1", 42)))
    again = sample_slates(scores, 5, explore, np.random.default_rng(answer_seed(0, "u1", 42)))
    other = sample_slates(scores, 5, explore, np.random.default_rng(answer_seed(0, "u1", 43)))
    assert (first[0] == again[0]).all() and (first[1] == again[1]).all()
    assert (first[0] != other[0]).any()
    assert answer_seed(0, "u1", 42) != answer_seed(1, "u1", 42) and 0 <= answer_seed(0, "u1", 42) < 2**63


def test_k_beyond_the_candidates_is_refused_and_zero_is_empty():
    with pytest.raises(ValueError, match="k=6"):
        sample_slates(SCORES, 6, settings("epsilon"), np.random.default_rng(0))
    shown, propensity = sample_slates(SCORES, 0, settings("softmax"), np.random.default_rng(0))
    assert shown.shape == (1, 0) and propensity.shape == (1, 0)


def test_the_log_only_part_never_reaches_the_client():
    answer = {"items": ["a"], "propensities": [0.5], "explore": {"seed": 1}}
    assert public_answer(answer) == {"items": ["a"], "propensities": [0.5]}
    today = {"items": ["a"], "scores": [1.0]}
    assert public_answer(today) is today


BAD_SETTINGS = [
    ({"serving": {"explore": {"policy": "greedy"}}}, "serving.explore.policy"),
    ({"serving": {"explore": {"epsilon": 1.5}}}, "serving.explore.epsilon"),
    ({"serving": {"explore": {"temperature": 0}}}, "serving.explore.temperature"),
    ({"serving": {"explore": {"candidates": 0}}}, "serving.explore.candidates"),
    ({"serving": {"explore": {"surprise": 1}}}, "serving.explore.surprise"),
    ({"gate": {"ope": {"estimator": "magic"}}}, "gate.ope.estimator"),
    ({"gate": {"ope": {"window_s": -1}}}, "gate.ope.window_s"),
]


@pytest.mark.parametrize("raw, key", BAD_SETTINGS, ids=[k for _, k in BAD_SETTINGS])
def test_bad_settings_fail_naming_the_key(tmp_path, raw, key):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_params(path)


def test_a_bare_yaml_off_means_off(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("serving:\n  explore:\n    policy: off\n")
    assert load_params(path).serving.explore.policy == "off"
