"""Rollback restores the exact previous model: two tiny real SASRec artifacts go through the
registry (BentoML store) and the champion after a rollback scores like the first one, bit for bit."""

import numpy as np
import pytest

from seqops.config import Paths
from seqops.models.training.artifact import Artifact
from tests.models.registry_helpers import approve, drop, open_registry, settings_for, tiny_artifact

N_ITEMS = 30


HISTORIES = [np.array([1, 2, 3]), np.array([7, 8, 9, 10, 11]), np.array([30])]


@pytest.mark.parametrize("backend", ["local", "postgres"])
def test_rollback_restores_the_exact_previous_model(tmp_path, monkeypatch, backend):
    monkeypatch.setenv("BENTOML_HOME", str(Paths(tmp_path).bentoml_home))
    registry = open_registry(tmp_path, settings_for(backend))
    try:
        first, second = (tiny_artifact(tmp_path / f"artifact-{seed}", seed, N_ITEMS) for seed in (1, 2))
        expected = Artifact.load(first).scores(HISTORIES)
        v1, v2 = registry.register(first, {}), registry.register(second, {})
        for v in (v1, v2):
            approve(registry, v)
            registry.promote(v)
        served = Artifact.load(registry.model_dir(registry.champion())).scores(HISTORIES)
        assert not np.allclose(served, expected)  # the second model really is another model

        assert registry.rollback(reason="second model misbehaves") == v1
        restored = Artifact.load(registry.model_dir(registry.champion()))
        np.testing.assert_array_equal(restored.scores(HISTORIES), expected)
        assert restored.meta == {"seed": 1, "model_class": "seqops.models.nets.sasrec:SASRecModel"}
    finally:
        drop(registry)
