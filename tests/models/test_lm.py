import shutil

import numpy as np
import pytest
import torch

from seqops.config import EvaluateParams, ModelParams, TrainParams
from seqops.models.nets.lm import LMRecModel
from seqops.models.nets.text import load_tokenizer, render_history
from seqops.models.training.data import pad_left
from seqops.models.training.train import score_fn_for, train_model
from tests.conftest import assert_same_scores

N_ITEMS, MAX_LEN = 20, 8
TYPES = ["view", "cart", "purchase"]
ALL_HEADS = ["next_item", "next_action", "churn"]
TEXTS = [""] + [f"item {i}. category: c{i % 3}" for i in range(1, N_ITEMS + 1)]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one thread, and far faster when other work shares the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_lm(
    text_model: str, n_items: int = N_ITEMS, heads=ALL_HEADS, texts=TEXTS, seed: int = 0, **params
) -> LMRecModel:
    torch.manual_seed(seed)
    p = ModelParams(kind="lm", text_model=text_model, heads=heads, dropout=0.0, lm_events=4, **params)
    return LMRecModel.from_params(
        n_items, MAX_LEN, p, TYPES, item_texts=texts
    ).eval()  # as models/nets/zoo.py builds it


def batch():
    input_ids = torch.from_numpy(pad_left([np.array([1, 2, 3]), np.array([5]), np.arange(1, 12)], MAX_LEN))
    type_ids = torch.where(input_ids > 0, 1 + input_ids % 3, 0)
    return input_ids, type_ids


def all_scores(model, input_ids, type_ids):
    return (
        model.next_item_scores(input_ids, type_ids),
        model.next_action_scores(input_ids, type_ids),
        model.churn_scores(input_ids, type_ids),
    )


def test_overfits_a_deterministic_pattern(text_model):
    # user u walks u+1 -> u+2 -> ...; the next item is always last + 1. One target per row and step
    # (a whole history per encoder pass) learns slower than SASRec's target at every position.
    n_items = 30
    texts = [""] + [f"item {i}. category: c{i % 3}" for i in range(1, n_items + 1)]
    train_seqs = [np.arange(u + 1, u + 8) for u in range(20)]
    valid_inputs = [np.arange(u + 1, u + 7) for u in range(20)]
    valid_targets = np.array([u + 7 for u in range(20)])
    model = tiny_lm(text_model, n_items=n_items, texts=texts, heads=["next_item"])
    p = TrainParams(epochs=60, batch_size=20, lr=1e-2, patience=60, device="cpu")
    result = train_model(model, train_seqs, valid_inputs, valid_targets, p, EvaluateParams(), progress=False)

    losses = [row["train_loss"] for row in result.history]
    assert np.mean(losses[-5:]) < 0.5 * losses[0]
    assert result.best["val_hr@10"] >= 0.9
    scores = score_fn_for(model, MAX_LEN, "cpu")(valid_inputs)
    top3 = np.argsort(-scores, axis=1)[:, :3]
    assert (top3 == valid_targets[:, None]).any(axis=1).mean() >= 0.8
    assert (scores.argmax(axis=1) == valid_targets).mean() >= 0.5


def test_reads_the_rendered_history(text_model):
    model = tiny_lm(text_model)
    input_ids, type_ids = batch()
    newest = torch.full((3,), MAX_LEN - 1)
    tokens, mask, _ = model.render(model.window(input_ids, newest), model.window(type_ids, newest))
    tokenizer = load_tokenizer(text_model)
    for row, (ids, types) in enumerate(zip(input_ids.tolist(), type_ids.tolist())):
        text = render_history(ids[-4:], types[-4:], TEXTS, TYPES)
        expected = tokenizer.tokenize(f"[CLS] {text} [SEP]")
        assert tokenizer.convert_ids_to_tokens(tokens[row][mask[row]].tolist()) == expected
    assert mask[:, 0].all() and not mask[1, -1]  # packed: real tokens first, padding after


def test_heads_have_the_right_shapes(text_model):
    model = tiny_lm(text_model)
    items, actions, churn = all_scores(model, *batch())
    assert items.shape == (3, N_ITEMS + 1) and items.dtype == torch.float32
    assert torch.isneginf(items[:, 0]).all() and torch.isfinite(items[:, 1:]).all()
    assert actions.shape == (3, len(TYPES)) and churn.shape == (3,)
    assert model.item_tokens.shape == (N_ITEMS + 1, model.config.item_text_tokens)


def test_save_and_load_round_trip_needs_no_text_model(tmp_path, text_model):
    own_copy = shutil.copytree(text_model, tmp_path / "text-model")
    model = tiny_lm(str(own_copy))
    model.save_pretrained(tmp_path / "saved")
    shutil.rmtree(own_copy)  # loading must not need the tokenizer or the pretrained weights
    assert {f.name for f in (tmp_path / "saved").iterdir()} == {"config.json", "model.safetensors"}
    loaded = LMRecModel.from_pretrained(tmp_path / "saved").eval()
    input_ids, type_ids = batch()
    for got, want in zip(all_scores(loaded, input_ids, type_ids), all_scores(model, input_ids, type_ids)):
        assert_same_scores(got, want)
    assert torch.equal(loaded.item_tokens, model.item_tokens) and torch.equal(loaded.type_tokens, model.type_tokens)


def test_left_padding_and_old_events_do_not_change_scores(text_model):
    model = tiny_lm(text_model)
    history, types = np.array([6, 4, 9, 2]), np.array([2, 1, 3, 2])
    narrow = all_scores(model, torch.from_numpy(history[None]), torch.from_numpy(types[None]))
    wide = all_scores(model, *(torch.from_numpy(pad_left([x], MAX_LEN)) for x in (history, types)))
    older = all_scores(model, torch.tensor([[7, 6, 4, 9, 2]]), torch.tensor([[1, 2, 1, 3, 2]]))  # lm_events=4
    for a, b, c in zip(narrow, wide, older):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)


def test_training_uses_one_labelled_position_per_row(text_model):
    model = tiny_lm(text_model).train()
    input_ids = torch.tensor([[0, 0, 1, 2, 3], [0, 0, 0, 0, 0], [4, 5, 6, 7, 8]])
    labels = torch.tensor([[0, 0, 2, 3, 0], [0, 0, 0, 0, 0], [5, 6, 7, 8, 9]])
    for _ in range(20):
        at = model.target_positions(input_ids, labels, None, None)
        assert at[0] in (2, 3) and labels[2, at[2]] != 0
    assert model.eval().target_positions(input_ids, labels, None, None).tolist() == [4, 4, 4]
    model.train()
    out = model(
        input_ids,
        labels=labels,
        type_ids=(input_ids > 0).long(),
        action_labels=(labels > 0).long(),
        churn_labels=torch.where(labels > 0, 1.0, -1.0),
    )
    out.loss.backward()
    assert out.last_hidden_state.shape == (3, 1, model.config.hidden_size)
    assert torch.isfinite(out.loss) and out.aux_loss is not None
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_grow_items_keeps_old_rows(tmp_path, text_model):
    model = tiny_lm(text_model)
    old_rows, old_tokens = model.item_emb.weight.detach().clone(), model.item_tokens.clone()
    new_texts = ["item 1. category: c1", "item 99", "item 3. category: c0"]  # a near-copy, a fresh text, a copy
    model.grow_items(N_ITEMS + 3, TEXTS + new_texts)
    table = model.item_emb.weight
    assert table.shape == (N_ITEMS + 4, model.config.hidden_size) and model.config.n_items == N_ITEMS + 3
    assert torch.equal(table[: N_ITEMS + 1], old_rows) and torch.equal(model.item_tokens[: N_ITEMS + 1], old_tokens)
    assert torch.equal(model.item_tokens[N_ITEMS + 3], old_tokens[3])
    # a new item with an old item's text starts next to it in the table
    cosine = torch.nn.functional.cosine_similarity(table[N_ITEMS + 3][None], table[1 : N_ITEMS + 1])
    assert int(cosine.argmax()) + 1 == 3
    assert model.next_item_scores(torch.tensor([[1, N_ITEMS + 2]])).shape == (1, N_ITEMS + 4)
    model.grow_items(N_ITEMS + 5)  # default texts: "item <id>"
    tokenizer = load_tokenizer(text_model)
    row = model.item_tokens[N_ITEMS + 5]
    assert tokenizer.decode(row[row >= 0]) == f"item {N_ITEMS + 5}"
    with pytest.raises(ValueError):
        model.grow_items(N_ITEMS)
    model.save_pretrained(tmp_path)
    assert LMRecModel.from_pretrained(tmp_path).item_tokens.shape == (N_ITEMS + 6, model.config.item_text_tokens)


def test_default_texts_and_width(text_model):
    torch.manual_seed(0)
    p = ModelParams(kind="lm", text_model=text_model, lm_events=4)
    model = LMRecModel.from_params(N_ITEMS, MAX_LEN, p, TYPES).eval()  # no texts, next_item only
    row = model.item_tokens[7]
    assert load_tokenizer(text_model).decode(row[row >= 0]) == "item 7"
    assert model.config.event_types is None and model.config.hidden_size == 32  # the encoder's width
    assert "_name_or_path" not in model.config.encoder_config  # no machine path in config.json
    scores = model.next_item_scores(torch.tensor([[0, 0, 3, 4]]), torch.tensor([[0, 0, 1, 2]]))  # types ignored
    assert scores.shape == (1, N_ITEMS + 1)


def test_all_padding_rows_are_finite(text_model):
    model = tiny_lm(text_model)
    zeros = torch.zeros(2, MAX_LEN, dtype=torch.long)
    items, actions, churn = all_scores(model, zeros, zeros)
    assert torch.isfinite(items[:, 1:]).all() and torch.isfinite(actions).all() and torch.isfinite(churn).all()


def test_untrained_model_ranks_by_text_similarity_with_the_bundled_minilm():
    texts = [
        "",
        "red running shoes",
        "trail running sneakers",
        "chocolate cake",
        "vanilla cupcakes",
        "wireless headphones",
        "bluetooth earbuds",
    ]
    model = LMRecModel.from_params(6, MAX_LEN, ModelParams(kind="lm"), item_texts=texts).eval()
    assert model.config.hidden_size == 384 and model.item_emb.weight.shape == (7, 384)
    scores = model.next_item_scores(torch.tensor([[1], [3], [5]]))
    scores[[0, 1, 2], [1, 3, 5]] = float("-inf")  # not the item just seen
    assert scores.argmax(1).tolist() == [2, 4, 6]
