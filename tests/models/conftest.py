"""Fixtures the model tests share."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel

from seqops.models.nets.text import load_tokenizer


@pytest.fixture(scope="session")
def text_model(tmp_path_factory) -> str:
    """A random 2-layer BERT with the bundled MiniLM tokenizer: a local text model that loads in ms."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=256)
    BertModel(config).save_pretrained(folder)
    load_tokenizer("all-MiniLM-L6-v2").save_pretrained(folder)
    return str(folder)
