"""Segments of user profiles (models/segments.py), the model's sequence embedding
(Artifact.embeddings) and the whole profile stage (models/profiles.py) on small frames."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from seqops.config import ModelParams, Params, Paths
from seqops.config_profile import ProfileParams
from seqops.features.profiles import behaviour_profiles
from seqops.models.nets.baselines import PopularityModel
from seqops.models.nets.sasrec import SASRecModel
from seqops.models.nets.zoo import build_model
from seqops.models.profiles import profile_stage, user_embeddings
from seqops.models.segments import NOISE, describe, segment
from seqops.models.training.artifact import Artifact, save_artifact
from seqops.models.training.data import type_ids

START = pd.Timestamp("2026-01-01", tz="UTC")
N_ITEMS = 40


def two_groups(n: int = 30, seed: int = 0) -> pd.DataFrame:
    """Users 1..n: frequent, recent, long weekday sessions of purchases in `books` (items 1-20);
    users n+1..2n: a single short session of views in `toys` (items 21-40), two weeks ago."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(1, 2 * n + 1):
        buyer = user <= n
        sessions = 6 if buyer else 1
        for s in range(sessions):
            day = START + pd.Timedelta(days=int(s * 2 + 3 if buyer else rng.integers(0, 2)), hours=10)
            for e in range(8 if buyer else 2):
                item = int(rng.integers(1, 21) if buyer else rng.integers(21, 41))
                rows.append(
                    {
                        "user_id": user,
                        "item_id": item,
                        "ts": day + pd.Timedelta(minutes=3 * e + int(rng.integers(0, 3))),
                        "event_type": "purchase" if buyer and e % 2 else "view",
                        "value": 20.0 if buyer and e % 2 else np.nan,
                        "category": "books" if item <= 20 else "toys",
                        "session_id": user * 100 + s,
                    }
                )
    events = pd.DataFrame(rows)
    events["ts"] = events["ts"].astype("datetime64[us, UTC]")
    return events


def test_kmeans_finds_the_two_groups_and_says_what_they_are():
    behaviour = behaviour_profiles(two_groups(), churn_days=3.0, top_categories=3)
    params = ProfileParams(k_min=2, k_max=5)
    seg = segment(behaviour, None, params)
    assert seg.method == "kmeans" and max(seg.scores, key=seg.scores.get) == 2 == len(set(seg.labels))
    assert set(seg.scores) == {2, 3, 4, 5} and seg.silhouette == seg.scores[2]
    buyers = seg.labels[:30]
    assert len(set(buyers)) == 1 and not set(buyers) & set(seg.labels[30:])
    assert seg.coords.shape == (60, 2)
    described = {s["segment"]: s for s in describe(behaviour, seg.labels)}
    books, toys = described[int(buyers[0])], described[int(seg.labels[-1])]
    assert "into books" in books["label"] and "into toys" in toys["label"]
    assert books["churn_rate"] == 0.0 and toys["churn_rate"] == 1.0
    assert books["rfm"]["r"]["level"] == "high" and toys["rfm"]["m"]["level"] == "low"
    assert books["size"] == toys["size"] == 30 and books["description"]
    assert books["top_categories"][0] == {"category": "books", "share": 1.0, "overall": 0.5}


def test_hdbscan_and_the_numbering_by_size():
    events = two_groups()
    events = events[events["user_id"] <= 50]  # 30 buyers, 20 browsers
    behaviour = behaviour_profiles(events, churn_days=3.0, top_categories=3)
    seg = segment(behaviour, None, ProfileParams(method="hdbscan", min_cluster_size=10))
    assert seg.method == "hdbscan" and seg.scores == {}
    assert set(seg.labels) - {NOISE} == {0, 1}
    assert (seg.labels == 0).sum() >= (seg.labels == 1).sum()  # 0 = the largest
    assert (seg.labels[:30] == 0).mean() > 0.9


KINDS = {  # kind → model params beyond the small defaults
    "sasrec": {},
    "sasrec-types": {"kind": "sasrec", "heads": ["next_item", "next_action"]},
    "bert4rec": {"kind": "bert4rec"},
    "gru4rec": {"kind": "gru4rec"},
    "markov": {"kind": "markov"},
    "popularity": {"kind": "popularity"},
}


@pytest.mark.parametrize("name", KINDS)
def test_embedding_is_the_state_the_scores_are_read_from(tmp_path, name):
    torch.manual_seed(0)
    p = ModelParams(**{"hidden_size": 16, "num_layers": 1, "num_heads": 2, "kind": name, **KINDS[name]})
    model = build_model(p, N_ITEMS, 10, ["view", "cart", "purchase"]).eval()
    artifact = Artifact(tmp_path, model, PopularityModel.from_counts(np.ones(N_ITEMS + 1)), {})
    histories = [np.array([1, 2, 3]), np.array([5]), np.arange(7, 19)]
    types = [["view", "cart", "view"], ["purchase"], ["view"] * 12]
    emb = user_embeddings(artifact, histories, types)
    if p.kind in ("markov", "popularity"):  # no sequence encoder: profiles without an embedding
        assert emb is None
        return
    assert emb.shape == (3, 16) and emb.dtype == np.float32
    ids = [type_ids(t, ["view", "cart", "purchase"]) for t in types] if artifact.reads_types else None
    assert artifact.reads_types == (name == "sasrec-types")
    with torch.no_grad():
        want = emb @ model.item_table()[1:].numpy().T
    np.testing.assert_allclose(artifact.scores(histories, types=ids)[:, 1:], want, rtol=1e-4, atol=1e-4)


def candidate_project(root) -> Paths:
    """Events of `two_groups` and a tiny SASRec saved as the candidate (no registry, no champion)."""
    paths = Paths(root)
    events = two_groups()
    paths.events.parent.mkdir(parents=True)
    events.to_parquet(paths.events)
    items = pd.DataFrame({"raw_id": [f"i{i}" for i in range(1, N_ITEMS + 1)], "item_id": range(1, N_ITEMS + 1)})
    items.to_parquet(root / "items.parquet")
    torch.manual_seed(0)
    model = SASRecModel.from_params(N_ITEMS, 10, ModelParams(hidden_size=16, num_layers=1, num_heads=2))
    counts = np.bincount(events["item_id"], minlength=N_ITEMS + 1)
    meta = {"kind": "sasrec", "data_version": "d" * 32}
    save_artifact(
        paths.candidate, model, PopularityModel.from_counts(counts), meta, root / "items.parquet", pd.DataFrame()
    )
    return paths


def test_the_stage_writes_profiles_segments_report_and_history(tmp_path):
    paths = candidate_project(tmp_path)
    params = Params(profile=ProfileParams(model="candidate", k_max=4))
    summary = profile_stage(params, paths)
    assert summary["model_version"] == "candidate:dddddddddddd" and summary["embedding_dim"] == 16
    assert summary["users"] == 60 and summary["k"] == len(summary["segments"]) >= 2
    table = pd.read_parquet(paths.home / "profiles" / "profiles.parquet")
    assert len(table) == 60 and table["user_id"].is_monotonic_increasing
    assert table["embedding"].map(len).eq(16).all() and table["event_timestamp"].nunique() == 1
    assert json.loads((paths.home / "profiles" / "segments.json").read_text())["segments"] == summary["segments"]
    metrics = json.loads((paths.home / "profiles" / "metrics.json").read_text())
    assert metrics["users"] == 60 and metrics["segments"] == summary["k"]
    report = (tmp_path / summary["report"]).read_text()
    assert report.count("data:image/png;base64") == 4 and summary["segments"][0]["label"] in report

    history = (paths.reports / "profiles" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["sizes"] for line in history] == [
        {str(s["segment"]): s["size"] for s in summary["segments"]}
    ]


def test_no_champion_and_no_candidate_is_a_clear_error(tmp_path):
    paths = Paths(tmp_path)
    paths.events.parent.mkdir(parents=True)
    two_groups().to_parquet(paths.events)
    with pytest.raises(FileNotFoundError, match="seqops train"):
        profile_stage(Params(profile=ProfileParams(model="candidate")), paths)
