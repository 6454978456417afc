"""The retrain flow with `train.refit: all`: the approved candidate is served as its refit on every
event up to the cut; the gate's decision still names the evaluated candidate."""

import pandas as pd
import pytest

from seqops.config import Paths
from seqops.features.lineage import lineage, render_lineage
from seqops.models.release.registry import Registry
from tests.conftest import make_project

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_the_champion_is_the_refit_of_the_gated_candidate(tmp_path, seqops):
    project = make_project(tmp_path / "project", {"model": {"kind": "markov"}, "train": {"refit": "all"}})
    paths = Paths(project)
    seqops(project, "retrain", "--batch", "0")
    registry = Registry.of_project(paths)
    candidate, refit = registry.versions()[-2:]

    assert candidate["decision"]["candidate"] == candidate["version"]  # the gate evaluated the candidate
    assert candidate["decision"]["verdict"] == "promote" and candidate["served_as"] == refit["version"]
    assert refit["refit_of"] == candidate["version"] and refit["refit_mode"] == "all"
    assert (
        refit["decision"]["candidate"] == candidate["version"]
        and refit["decision"]["adopted_from"] == candidate["version"]
    )
    assert registry.champion() == refit["version"]
    # the refit trained on every event up to the cut (each history as long as the features keep)
    sizes = pd.read_parquet(paths.events, columns=["user_id"]).value_counts()
    assert refit["n_train_events"] == int(sizes[sizes >= 2].clip(upper=20).sum())  # features.max_len: 20 in tests
    assert refit["eval_metrics"] == candidate["eval_metrics"]  # the candidate's; the refit's own come next batch
    assert "refit of" in render_lineage(lineage(registry, refit["version"], paths))
    promote = [e for e in registry.history() if e["action"] == "promote"][-1]
    assert promote["version"] == refit["version"]
