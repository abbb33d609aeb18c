"""The running batch's key/value cache: one left-padded tensor per layer, so every row's
newest token sits in the same column and one forward pass decodes them all.

A sequence joins with its own prefill cache: the shorter of (batch, newcomer) is padded on
the left and the attention mask hides the padding; each row keeps its own position ids, so
rotary embeddings see true positions. A sequence leaves by dropping its row, and columns that
are padding in every remaining row are cut off. ``transformers`` keeps a cache per call to
``generate``; joining and leaving between steps is what it does not do, hence this module.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from transformers import DynamicCache


def _layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]  # type: ignore[union-attr,misc]


def _pad_left(t: torch.Tensor, columns: int) -> torch.Tensor:
    """Pad the sequence axis (dim 2 of batch, heads, seq, head_dim) with zero columns."""
    return F.pad(t, (0, 0, columns, 0)) if columns else t


class KVBatch:
    """Cache, attention mask and next position of every running row."""

    def __init__(self) -> None:
        self.cache: DynamicCache | None = None
        self.mask = torch.zeros(0, 0, dtype=torch.long)
        self.positions = torch.zeros(0, dtype=torch.long)

    @property
    def rows(self) -> int:
        return int(self.positions.shape[0])

    @property
    def columns(self) -> int:
        return int(self.mask.shape[1])

    def join(self, cache: DynamicCache, length: int) -> None:
        """Append one prefilled sequence of ``length`` tokens as the last row."""
        new_mask = torch.ones(1, length, dtype=torch.long)
        if self.cache is None or self.rows == 0:
            self.cache, self.mask = cache, new_mask
            self.positions = torch.tensor([length], dtype=torch.long)
            return
        width = max(self.columns, length)
        grow, pad_new = width - self.columns, width - length
        layers = [
            (
                torch.cat([_pad_left(k, grow), _pad_left(nk, pad_new)]),
                torch.cat([_pad_left(v, grow), _pad_left(nv, pad_new)]),
            )
            for (k, v), (nk, nv) in zip(_layers(self.cache), _layers(cache), strict=True)
        ]
        self.cache = DynamicCache(ddp_cache_data=layers)
        self.mask = torch.cat([F.pad(self.mask, (grow, 0)), F.pad(new_mask, (pad_new, 0))])
        self.positions = torch.cat([self.positions, torch.tensor([length])])

    def step_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention mask (with the new column) and position ids for one decoding step."""
        mask = F.pad(self.mask, (0, 1), value=1)
        return mask, self.positions[:, None]

    def advance(self, cache: DynamicCache) -> None:
        """Record the step just run: the cache grew by one column for every row."""
        self.cache = cache
        self.mask = F.pad(self.mask, (0, 1), value=1)
        self.positions = self.positions + 1

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (in that order), and cut columns now padding in all of them."""
        if len(rows) == self.rows:
            return
        if not rows:
            self.cache = None
            self.mask = torch.zeros(0, 0, dtype=torch.long)
            self.positions = torch.zeros(0, dtype=torch.long)
            return
        index = torch.tensor(rows, dtype=torch.long)
        self.mask = self.mask[index]
        self.positions = self.positions[index]
        used = self.mask.any(dim=0).nonzero()
        first = int(used[0]) if len(used) else 0
        assert self.cache is not None
        layers = [
            (k[index, :, first:].contiguous(), v[index, :, first:].contiguous())
            for k, v in _layers(self.cache)
        ]
        self.cache = DynamicCache(ddp_cache_data=layers)
        self.mask = self.mask[:, first:]
