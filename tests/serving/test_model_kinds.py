"""Every model kind the pipeline can train is served by the same engine without code changes:
the artifact names its class, the engine finds its heads."""

import numpy as np
import pandas as pd
import pytest

from seqops.config import ModelParams, Paths, load_params
from seqops.models.nets.zoo import KINDS, build_model
from seqops.serving import engine as engine_module
from seqops.serving.engine import Engine
from seqops.serving.schemas import HistoryRequest, RecommendRequest
from tests.serving.conftest import MAX_LEN, N_ITEMS, mini_project, raw_item, raw_user, register_model

TYPES = ["view", "cart", "purchase"]
TINY = dict(hidden_size=16, num_layers=1, num_heads=2, dropout=0.0)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return mini_project(tmp_path_factory.mktemp("kinds") / "project")


def tiny(kind: str):
    heads = ["next_item"] if kind in ("markov", "popularity") else ["next_item", "next_action", "churn"]
    model = build_model(ModelParams(kind=kind, heads=heads, **TINY), N_ITEMS, MAX_LEN, TYPES)
    if kind in ("markov", "popularity"):
        model.fit([np.arange(1, N_ITEMS + 1), np.arange(N_ITEMS, 0, -1)])
    return model, heads


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_is_served(project, kind, monkeypatch):
    paths = Paths(project)
    model, heads = tiny(kind)
    version = register_model(
        paths, 10 + sorted(KINDS).index(kind), pd.DataFrame({"item_id": np.arange(1, N_ITEMS + 1)}), model=model
    )
    monkeypatch.setattr(engine_module, "CHAMPION_CHECK_S", 0.0)
    engine = Engine(paths, load_params(project / "params.yaml"))
    assert engine.current().version == version and engine.current().heads == tuple(heads)
    by_user, by_items = engine.recommend(
        [
            RecommendRequest(user_id=raw_user(3), k=4),
            RecommendRequest(items=[raw_item(1), raw_item(2)], event_types=["view", "cart"], k=4),
        ]
    )
    for answer in (by_user, by_items):
        assert len(answer["items"]) == 4 and not answer["fallback"] and answer["model_version"] == version
    if "next_action" in heads:
        action = engine.head("next_action", HistoryRequest(user_id=raw_user(3)))
        assert set(action["probabilities"]) == set(TYPES)
        assert 0 <= engine.head("churn", HistoryRequest(user_id=raw_user(3)))["churn_probability"] <= 1
