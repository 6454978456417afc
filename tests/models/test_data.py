import numpy as np
import torch

from seqops.config import EvaluateParams, TrainParams
from seqops.models.nets.sasrec import SASRecConfig, SASRecModel
from seqops.models.training.data import (
    NextItemDataset,
    churn_flags,
    collate_left_padded,
    make_loader,
    pad_left,
    type_ids,
)
from seqops.models.training.train import train_model


def test_pad_left_keeps_the_newest_items_on_the_right():
    out = pad_left([np.array([1, 2, 3, 4, 5]), np.array([7]), np.array([], dtype=np.int64)], 3)
    assert out.dtype == np.int64
    assert out.tolist() == [[3, 4, 5], [0, 0, 7], [0, 0, 0]]


def test_dataset_shifts_by_one_and_collate_trims_padding():
    ds = NextItemDataset([np.array([1, 2, 3, 4, 5, 6]), np.array([8, 9]), np.array([5])], max_len=4)
    assert len(ds) == 2  # the 1-item user gives no pair
    assert ds.columns["input_ids"].tolist() == [[2, 3, 4, 5], [0, 0, 0, 8]]
    assert ds.columns["labels"].tolist() == [[3, 4, 5, 6], [0, 0, 0, 9]]
    batch = collate_left_padded([ds[1], ds[1]])
    assert batch["input_ids"].tolist() == [[8], [8]] and batch["labels"].tolist() == [[9], [9]]


def test_side_columns_follow_the_items():
    ds = NextItemDataset(
        [np.array([1, 2, 3]), np.array([4, 5])],
        max_len=3,
        types=[np.array([1, 2, 3]), np.array([1, 1])],
        churn=[np.array([0, 1, -1]), np.array([1, 0])],
    )
    batch = collate_left_padded([ds[0], ds[1]])
    assert batch["input_ids"].tolist() == [[1, 2], [0, 4]]
    assert batch["type_ids"].tolist() == [[1, 2], [0, 1]]
    assert batch["action_labels"].tolist() == [[2, 3], [0, 1]]  # the type of the next event
    assert batch["churn_labels"].tolist() == [[0.0, 1.0], [-1.0, 1.0]]  # padding is -1 (unknown)


def test_churn_flags_and_type_ids():
    flags = churn_flags(np.array([0, 10, 100, 105]), horizon_s=50)
    assert flags.tolist() == [0.0, 1.0, 0.0, -1.0]  # the last event: unknown without a data end
    assert churn_flags(np.array([0, 10]), 50, data_end_s=100).tolist() == [0.0, 1.0]
    assert type_ids(["view", "cart", "odd"], ["view", "cart"]).tolist() == [1, 2, 0]


def _leaky_setup():
    rng = np.random.default_rng(0)
    train_seqs = [rng.integers(1, 10, size=6) for _ in range(16)]  # items 1..9 only
    valid_inputs = [np.concatenate([s, [rng.integers(1, 10)]]) for s in train_seqs]
    valid_targets = np.full(len(train_seqs), 10)  # item 10 never appears in training data
    return train_seqs, valid_inputs, valid_targets


def test_training_labels_never_contain_validation_targets():
    train_seqs, valid_inputs, valid_targets = _leaky_setup()
    labels = torch.cat([batch["labels"].flatten() for batch in make_loader(train_seqs, max_len=8, batch_size=4)])
    assert not torch.isin(labels, torch.from_numpy(valid_targets)).any()

    model = SASRecModel(SASRecConfig(n_items=10, max_len=8, hidden_size=8, num_layers=1, num_heads=1))
    seen_labels = []
    forward = model.forward
    model.forward = lambda input_ids, labels=None, **side: (
        seen_labels.append(labels),
        forward(input_ids, labels, **side),
    )[1]
    p = TrainParams(epochs=2, batch_size=4, device="cpu")
    train_model(model, train_seqs, valid_inputs, valid_targets, p, EvaluateParams(), progress=False)
    seen = torch.cat([lab.flatten() for lab in seen_labels if lab is not None])
    assert len(seen) and not (seen == 10).any()
