from pathlib import Path

import pytest

from seqops.config import ConfigError, Params, load_params

REPO = Path(__file__).resolve().parents[2]


def test_repo_params_load_and_match_the_typed_defaults():
    assert load_params(REPO / "params.yaml") == Params()


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"train\.epochz"):
        load_params(path)


def test_wrong_type_is_named(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("model:\n  hidden_size: big\n")
    with pytest.raises(ConfigError, match=r"model\.hidden_size"):
        load_params(path)


def test_missing_file_says_where(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
