"""Fixtures the model tests share."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel

from seqops.config import Paths
from seqops.models.nets.text import load_tokenizer
from seqops.models.release.registry import Registry
from tests.models.registry_helpers import drop, open_registry, settings_for


@pytest.fixture(scope="session")
def text_model(tmp_path_factory) -> str:
    """A random 2-layer BERT with the bundled MiniLM tokenizer: a local text model that loads in ms."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    BertModel(config).save_pretrained(folder)
    load_tokenizer("all-MiniLM-L6-v2").save_pretrained(folder)
    return str(folder)


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
