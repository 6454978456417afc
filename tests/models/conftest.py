"""Fixtures the model tests share."""

from __future__ import annotations

import pytest

from seqops.config import Paths
from seqops.models.release.registry import Registry
from tests.models.registry_helpers import drop, open_registry, settings_for


@pytest.fixture(params=["local", "postgres"])
def registry(request, tmp_path, monkeypatch) -> Registry:
    """A registry on each backend, its BentoML store in tmp_path."""
    monkeypatch.setenv("BENTOML_HOME", str(Paths(tmp_path).bentoml_home))
    registry = open_registry(tmp_path, settings_for(request.param))
    yield registry
    drop(registry)


@pytest.fixture
def local(tmp_path, monkeypatch) -> Registry:
    """A registry on local files (the default backend) in tmp_path."""
    monkeypatch.setenv("BENTOML_HOME", str(Paths(tmp_path).bentoml_home))
    return Registry.of_project(Paths(tmp_path))
