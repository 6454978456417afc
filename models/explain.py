"""Why the model scores an item high: leave-one-out (occlusion) attribution over the history it reads.

Each event the model actually reads (a known item, among the last `max_len`: what `Artifact.scores`
keeps) is removed in turn, and the history without it is scored again; the attribution of event e to
item j is `score_j(history) - score_j(history without e)`: positive when the event raised the item.
All the histories (the whole one and one per removed event, at most `max_len + 1` rows) go through
`Artifact.scores` in one forward pass, so the explanation is computed by the same scoring path as
the answer it explains, and removing the top event is, by construction, what lowers that item's
score most (bench/explain.py checks this end to end, and also by rank, against a random event).

Why occlusion and not attention weights: attention says where a layer looked, not what changed the
output (values, later layers and the output projection all intervene); a removed event's effect on
the score is the quantity a reader means by "because you viewed X". Removing an event rather than
masking it keeps the input a history the model could have seen (positions are counted from the right).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seqops.models.training.artifact import Artifact


@dataclass
class Attribution:
    """Leave-one-out attributions of some target items to the events of one history."""

    positions: np.ndarray  # [E] index in the given history of each event the model reads
    scores: np.ndarray  # [T] each target's score with the whole history
    drops: np.ndarray  # [T, E] score lost when that event is removed (positive: the event raised the item)

    def top(self, target: int, n: int) -> list[tuple[int, float]]:
        """(position in the history, weight) of the `n` events that raised target `target` most
        (positive weights only), largest first."""
        order = np.argsort(-self.drops[target], kind="stable")[:n]
        return [(int(self.positions[e]), float(self.drops[target, e])) for e in order if self.drops[target, e] > 0]


def read_positions(artifact: Artifact, history: np.ndarray) -> np.ndarray:
    """Indices of the events `Artifact.scores` reads: known items, the last `max_len` of them."""
    history = np.asarray(history)
    known = np.flatnonzero((history > 0) & (history <= artifact.n_items))
    return known[-artifact.model.config.max_len :]


def leave_one_out(
    artifact: Artifact, history: np.ndarray, targets: np.ndarray, types: np.ndarray | None = None
) -> Attribution:
    """Attributions of `targets` (dense item ids) to each event of `history` (dense ids, oldest
    first; `types`: the artifact's type ids, aligned) that the model reads; one forward pass."""
    positions = read_positions(artifact, history)
    items = np.asarray(history)[positions]
    rows = [items] + [np.delete(items, e) for e in range(len(items))]
    type_rows = None
    if types is not None:
        kept = np.asarray(types)[positions]
        type_rows = [kept] + [np.delete(kept, e) for e in range(len(kept))]
    targets = np.asarray(targets, dtype=np.int64)
    scores = artifact.scores(rows, types=type_rows)[:, targets].astype(np.float64)
    return Attribution(positions, scores[0], (scores[0][None, :] - scores[1:]).T)


__all__ = ["Attribution", "leave_one_out", "read_positions"]
