"""Score token sequences with a causal LM, each distinct prefix fed once.

An item is ``(symbols, n_scored)``: a sequence (token ids, images written as
``ImageFeatureCache.symbols`` does) and how many symbols at its end are scored. Its result is
lm-eval's ``(sum of log P(scored symbol), whether each was the argmax)``.

The distinct sequences are packed as a prefix tree (``prefix_tree.pack_prefix_tree``) into
rows of ``row_width`` positions beyond their longest sequence, with a tree attention mask
and position id = depth; as many consecutive rows as fit ``token_budget`` padded positions
(or ``batch_size`` rows) go through one forward pass of the model's body under
``inference_mode``, and the LM head runs only where a symbol is scored.

Rows come in the sorted order of their sequences, not by length as with lm-eval's
``Collator``: neighbours in that order share the longest prefixes, and the packed rows all
have about the same length, so padding stays small anyway (``last_packing`` has the counts).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from tqdm.auto import tqdm

from .image_cache import ImageFeatureCache
from .prefix_tree import pack_prefix_tree

logger = logging.getLogger(__name__)

# Padded tokens per forward pass when batch_size=auto. On CPUs, activations that stay in
# cache beat bigger matmuls (2048 was fastest on BLiMP with a ~20M model); GPUs want more.
DEFAULT_TOKEN_BUDGET = {"cpu": 2048, "cuda": 16384}
# Positions a packed prefix-tree row holds beyond its longest sequence: long enough that the
# prefix a row repeats from the previous one is cheap, short enough that attention over the
# row stays small (96-256 were equally fast on BLiMP with a ~20M model on CPU).
DEFAULT_ROW_WIDTH = 128

Item = tuple[tuple[int, ...], int]  # (symbols, number of scored symbols at the end)


class PackedScorer:
    """The scoring engine behind ``--model babymerge``'s loglikelihood requests.

    ``batch_size``: ``"auto"`` (as many rows as fit ``token_budget`` padded positions, at most
    ``max_batch_size``) or a number of rows. ``prefix_sharing=False`` gives every sequence its
    own row (plain causal batches), for models that ignore custom 4D attention masks or
    position ids (``check_prefix_sharing`` finds out).
    """

    def __init__(
        self,
        model,
        images: ImageFeatureCache,
        pad_token_id: int | None,
        device: torch.device,
        batch_size: int | str = "auto",
        max_batch_size: int | None = None,
        token_budget: int | None = None,
        row_width: int = DEFAULT_ROW_WIDTH,
        prefix_sharing: bool = True,
    ):
        self.model, self.images, self.device = model, images, device
        self.pad = pad_token_id if pad_token_id is not None else 0
        self.batch_size = batch_size if batch_size == "auto" else int(batch_size)
        self.max_batch_size = max_batch_size
        self.token_budget = int(token_budget or DEFAULT_TOKEN_BUDGET.get(device.type, 2048))
        self.row_width, self.prefix_sharing, self.prefix_sharing_checked = int(row_width), bool(prefix_sharing), False
        self.last_packing: dict[str, int] = {}

    def score(self, items: list[Item], forward=None, progress: bool = True, on_result=None) -> list[tuple[float, bool]]:
        """Results of ``items``, in order; identical items are scored once.

        ``forward(rows)``: the final hidden states of packed rows (default ``hidden_states``).
        ``on_result(item, result)`` is called as soon as an item's batch is scored (lm-eval's
        cache keeps what an interrupted run computed)."""
        forward = forward or self.hidden_states
        unique = list(dict.fromkeys(items))
        sequences = list(dict.fromkeys(symbols for symbols, _ in unique))
        rows, placements = pack_prefix_tree(sequences, self.row_width, share_prefixes=self.prefix_sharing)
        placement = dict(zip(sequences, placements))
        batches = self.batch_rows(rows)
        self.last_packing = {
            "positions": sum(len(s) - 1 for s in sequences),  # scoring each distinct sequence whole
            "fed": sum(map(len, rows)),
            "padded": sum((last - first) * max(map(len, rows[first:last])) for first, last in batches),
        }
        batch_of_row = {row: b for b, (first, last) in enumerate(batches) for row in range(first, last)}
        todo: dict[int, list[Item]] = {}
        for item in unique:
            todo.setdefault(batch_of_row[placement[item[0]][0]], []).append(item)

        results: dict[Item, tuple[float, bool]] = {}
        bar = tqdm(total=len(unique), disable=not progress, desc="babymerge loglikelihood")
        with torch.inference_mode():
            for b, (first, last) in enumerate(batches):
                hidden = forward(rows[first:last])
                width = hidden.shape[1]
                hidden = hidden.reshape(-1, hidden.shape[-1])
                batch_items = todo.get(b, [])
                positions, targets, lengths = [], [], []
                for symbols, n_scored in batch_items:
                    row, path = placement[symbols]
                    offset = (row - first) * width
                    positions += [offset + p for p in path[len(path) - n_scored :]]
                    targets += symbols[len(symbols) - n_scored :]
                    lengths.append(n_scored)
                for item, result in zip(batch_items, self.logprobs(hidden, positions, targets, lengths)):
                    results[item] = result
                    if on_result is not None:
                        on_result(item, result)
                bar.update(len(batch_items))
        bar.close()
        return [results[item] for item in items]

    def batch_rows(self, rows) -> list[tuple[int, int]]:
        """Consecutive rows per forward pass, as ``(first, last + 1)``: ``batch_size`` rows, or
        with ``auto`` as many as fit ``token_budget`` padded positions (at least one)."""
        auto = self.batch_size == "auto"
        max_rows = (self.max_batch_size or len(rows)) if auto else self.batch_size
        batches, first = [], 0
        while first < len(rows):
            last, width = first + 1, len(rows[first])
            while last < len(rows) and last - first < max_rows:
                wider = max(width, len(rows[last]))
                if auto and (last + 1 - first) * wider > self.token_budget:
                    break
                last, width = last + 1, wider
            batches.append((first, last))
            first = last
        return batches

    def hidden_states(self, rows) -> torch.Tensor:
        """Final hidden states ``[rows, width, hidden]`` of packed rows; the LM head is applied
        later, only where a token is scored."""
        width = max(len(row) for row in rows)
        symbols = torch.full((len(rows), width), self.pad, dtype=torch.long)
        depths = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            symbols[r, : len(row)] = torch.tensor(row.symbols)
            depths[r, : len(row)] = torch.tensor(row.depths)
        images = symbols < 0
        image_token_id = self.images.image_token_id
        input_ids = symbols.masked_fill(images, image_token_id if image_token_id is not None else self.pad)
        call = {"input_ids": input_ids.to(self.device)}
        if self.prefix_sharing:
            masks = np.stack([row.attention_mask(width) for row in rows])[:, None]
            call.update(attention_mask=torch.from_numpy(masks).to(self.device), position_ids=depths.to(self.device))
        if images.any():  # one feature per image token, in reading order
            call["image_features"] = torch.stack([self.images.feature(-1 - int(s)) for s in symbols[images]]).to(
                self.device
            )
        body = getattr(self.model, self.model.base_model_prefix)  # .model (Llama, Llava), .transformer (GPT-2)
        return body(**call).last_hidden_state

    def logprobs(self, hidden, positions, targets, lengths) -> list[tuple[float, bool]]:
        """Sum of log P(target) at the given positions of the flattened hidden states, per
        item, and whether every target was the argmax. A position shared by several items
        goes through the LM head once."""
        if not lengths:
            return []
        if not positions:
            return [(0.0, True)] * len(lengths)
        unique, inverse = torch.tensor(positions, device=hidden.device).unique(return_inverse=True)
        logits = self.model.get_output_embeddings()(hidden[unique]).float()
        target = torch.tensor(targets, device=logits.device)
        picked = (logits[inverse, target] - logits.logsumexp(-1)[inverse]).double().cpu().split(lengths)
        greedy = (logits.argmax(-1)[inverse] == target).cpu().split(lengths)
        return [(float(p.sum()), bool(g.all())) for p, g in zip(picked, greedy)]

    def check_prefix_sharing(self, probe: list[Item], forward=None) -> None:
        """Prefix sharing needs a model that honours a custom 4D attention mask and position
        ids (Llama-style models in transformers do; models that derive positions from a 2D mask,
        or use ALiBi, may not). Score ``probe`` (sequences that share a prefix) packed together
        and apart; if they differ, warn and fall back to one sequence per row."""
        self.prefix_sharing_checked = True
        together = self.score(probe, forward, progress=False)
        self.prefix_sharing = False
        apart = self.score(probe, forward, progress=False)
        tolerance = 1e-3 if self.model.dtype == torch.float32 else 5e-2
        self.prefix_sharing = all(abs(a[0] - b[0]) < tolerance for a, b in zip(together, apart))
        if not self.prefix_sharing:
            logger.warning(
                f"{type(self.model).__name__} ignores custom attention masks or position ids: scoring "
                "without prefix sharing (slower, same results). Pass prefix_sharing=False to skip this check."
            )
