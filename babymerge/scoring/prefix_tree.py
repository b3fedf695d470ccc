"""Prefix-tree packing: every distinct prefix of the scored sequences goes through the model once.

Why: a causal LM's hidden state at a position depends only on the tokens up to it, so
sequences that begin alike can share those positions, and evaluation sets are full of
common beginnings. Every request starts with the same prefix token (or the black image);
BLiMP's good and bad sentences share their first words; a paradigm's 1,000 pairs come from
a few templates. The 13,400 sentences of a 10% BLiMP sample have 126,803 scored positions
but only 71,704 distinct prefixes (1.77x fewer; 1.93x on all 67,000 pairs).

How: the sequences, sorted, are packed in the depth-first order of their prefix tree (trie)
into rows of ``row_width`` positions plus the length of the row's longest sequence. Each
position attends only to itself and its ancestors (a tree attention mask, as in tree-based
speculative decoding: SpecInfer, Medusa) and gets position id = its depth, so it sees
exactly what it would see in its own sequence: the scores are the same up to the order of
float sums. A row repeats the prefix its first sequence shares with the previous row, so
each row stands alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Row:
    """One packed row: ``symbols[i]`` sits at position id ``depths[i]`` below ``parents[i]``."""

    symbols: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)  # -1: first symbol of its sequences
    depths: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.symbols)

    def attention_mask(self, width: int) -> np.ndarray:
        """``[width, width]`` booleans, True where position i may attend to position j: j is i
        or one of its ancestors. Padding positions attend to themselves, so no softmax row is
        empty (an all-masked row would give NaN)."""
        mask = np.eye(width, dtype=bool)
        for i, parent in enumerate(self.parents):  # a parent comes before its children
            if parent >= 0:
                mask[i] |= mask[parent]
        return mask


def pack_prefix_tree(
    sequences: list[tuple[int, ...]], row_width: int, share_prefixes: bool = True
) -> tuple[list[Row], list[tuple[int, list[int]]]]:
    """Pack distinct ``sequences`` into rows; each prefix is fed once per row.

    A sequence's symbols except the last are fed (the last is only predicted), as with
    ``inputs = tokens[:-1]``. Returns the rows and, for each sequence in input order, its row
    and the positions of its fed symbols there: position ``path[k]`` predicts symbol ``k + 1``.
    A row holds up to ``row_width`` positions beyond its longest sequence, so sequences that
    share a long context (multiple-choice tasks) still share it.

    ``share_prefixes=False`` gives every sequence its own row, longest first: plain causal
    batches for models that ignore custom attention masks or position ids.
    """
    if share_prefixes:  # sorted order: each sequence shares the most with the one before it
        order = sorted(range(len(sequences)), key=sequences.__getitem__)
    else:
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    rows: list[Row] = []
    placements: list[tuple[int, list[int]]] = [(0, [])] * len(sequences)
    previous, previous_path, longest = (), [], 0
    for i in order:
        sequence = sequences[i]
        fed = len(sequence) - 1
        shared = 0
        if share_prefixes:
            limit = min(len(previous_path), fed)
            while shared < limit and previous[shared] == sequence[shared]:
                shared += 1
        if not rows or not share_prefixes or len(rows[-1]) + fed - shared > row_width + max(longest, fed):
            rows.append(Row())
            shared = longest = 0
        longest = max(longest, fed)
        row = rows[-1]
        path = previous_path[:shared]
        for depth in range(shared, fed):
            row.parents.append(path[-1] if path else -1)
            row.symbols.append(sequence[depth])
            row.depths.append(depth)
            path.append(len(row) - 1)
        placements[i] = (len(rows) - 1, path)
        previous, previous_path = sequence, path
    return rows, placements
