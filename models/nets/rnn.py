"""Recurrent next-item models: GRU4Rec (Hidasi et al., 2016) and its LSTM twin. One
implementation, `RNNRecModel`; the `cell` config field is the only difference, and
`GRU4RecModel` / `LSTMRecModel` are thin subclasses with their own `model_type`.

Item embedding -> LayerNorm -> dropout -> a stacked GRU/LSTM (dropout between layers) -> an
optional linear projection from `rnn_size` back to hidden_size -> LayerNorm -> scores against the
tied item table (the base).
The next-item loss is taken at every position (the base forward), as in the session-parallel
training of GRU4Rec, here with the loss of `config.loss`.

Inputs are LEFT-padded. The recurrence must not run over the padding (it would change the state),
so each row's items are rolled to the left, packed with their lengths, run, and the outputs are
rolled back to the right: outputs line up with input_ids, padding outputs are constant (0 before
the projection), and extra left padding never changes a score. All-padding rows run one step over
the (zero) padding embedding, so they stay finite.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqops.models.nets.base import SeqRecConfig, SeqRecModel

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


class RNNRecConfig(SeqRecConfig):
    model_type = "seqops-rnn"

    cell: str = "gru"  # gru | lstm
    num_layers: int = 1
    rnn_size: int | None = None  # width of the recurrent state; None = hidden_size, else projected to it


class GRU4RecConfig(RNNRecConfig):
    model_type = "seqops-gru4rec"
    cell: str = "gru"


class LSTMRecConfig(RNNRecConfig):
    model_type = "seqops-lstm"
    cell: str = "lstm"


class RNNRecModel(SeqRecModel):
    config_class = RNNRecConfig
    base_model_prefix = "rnn"

    def __init__(self, config: RNNRecConfig):
        super().__init__(config)
        if config.cell not in CELLS:
            raise ValueError(f"unknown cell {config.cell!r}: one of {', '.join(CELLS)}")
        rnn_size = config.rnn_size or config.hidden_size
        self.drop = nn.Dropout(config.dropout)
        self.rnn = CELLS[config.cell](
            config.hidden_size,
            rnn_size,
            num_layers=config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.proj = nn.Linear(rnn_size, config.hidden_size) if rnn_size != config.hidden_size else nn.Identity()
        # The tied item table starts tiny (std 0.02): unnormalised, the cell would barely see its input and
        # its tanh-bounded output would give near-uniform scores. LayerNorms on both sides (as SASRec's
        # blocks have) made GRU4Rec learn several times faster on the synthetic data.
        self.in_norm = nn.LayerNorm(config.hidden_size)
        self.out_norm = nn.LayerNorm(config.hidden_size)
        self.post_init()

    def encode(self, input_ids: torch.Tensor, type_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = self.drop(self.in_norm(self.embed(input_ids, type_ids)))
        width = input_ids.shape[1]
        lengths = (input_ids != 0).sum(1)
        shift = (width - lengths)[:, None]  # leading padding columns of each row
        columns = torch.arange(width, device=input_ids.device)
        x = roll_rows(x, (columns + shift) % width)  # items first
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=width)
        return self.out_norm(self.proj(roll_rows(out, (columns - shift) % width)))  # items back on the right


class GRU4RecModel(RNNRecModel):
    config_class = GRU4RecConfig


class LSTMRecModel(RNNRecModel):
    config_class = LSTMRecConfig


def roll_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """[B, L, H] -> [B, L, H] with out[b, t] = x[b, index[b, t]]."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


__all__ = ["GRU4RecConfig", "GRU4RecModel", "LSTMRecConfig", "LSTMRecModel", "RNNRecConfig", "RNNRecModel"]
