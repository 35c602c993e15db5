"""The batch's KV cache: Transformers' per-layer cache, kept left-padded across rows, appended in place.

The batch cache is one tensor per layer `[rows, heads, columns, dim]`, left-padded: a row whose
history is shorter than the longest gets zero columns on the left, masked out by the 2D attention
mask, and every row carries its own position ids, which is all a Transformers causal LM needs to
treat padded rows exactly like unpadded ones (the same contract `generate` uses for left padding).
Cached prompt prefixes (`prefix_cache.py`) come back into it as a newcomer's past (`past_cache`).

Models whose cache is not plain full attention (sliding-window or hybrid layers, e.g. Gemma 2/3)
cannot be merged by padding (`all_full_attention`).
"""

from __future__ import annotations

import functools
from typing import Any

from sdc_runtime.prefix_cache import BLOCK, Block


def past_cache(hits: list[list[Block]], past: int, room: int) -> Any:
    """A cache of the newcomers' cached prefixes, right-aligned on `past` columns (zeros where masked).

    Each layer gets `room` more columns after them, so the prefill writes its keys and values in place
    (`growing_layer_class`) instead of concatenating a copy of the past.
    """
    import torch
    from transformers.cache_utils import DynamicCache, DynamicLayer

    reference = next(blocks[0] for blocks in hits if blocks)
    layers: list[Any] = []
    for index, like in enumerate(reference):
        if like is None:
            layers.append(DynamicLayer())  # type: ignore[no-untyped-call]
            continue
        # [keys/values, rows, heads, columns, dim]: a row's blocks land in one copy per layer
        kv = like.new_zeros((2, len(hits), like.shape[1], past + room, like.shape[-1]))
        for row, blocks in enumerate(hits):
            if blocks:
                parts = [block[index] for block in blocks]
                kv[:, row, :, past - len(blocks) * BLOCK : past] = torch.cat(parts, dim=2)
        layers.append(growing_layer_class()(kv[0], kv[1], past))
    cache = DynamicCache()
    cache.layers = layers
    return cache


def layer_kv(cache: Any) -> list[tuple[Any, Any] | None]:
    """Each layer's (keys, values), None for a layer that holds none."""
    return [(layer.keys, layer.values) if holds_kv(layer) else None for layer in cache.layers]


def all_full_attention(cache: Any) -> bool:
    """Only plain growing caches can be merged by left padding (see the module docstring)."""
    from transformers.cache_utils import DynamicLayer

    layers: Any = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) in (DynamicLayer, growing_layer_class()) for layer in layers)


def grow_in_place(cache: Any) -> None:
    """Give the batch cache's plain layers spare columns (see `growing_layer_class`)."""
    from transformers.cache_utils import DynamicLayer

    layers: Any = getattr(cache, "layers", None)
    for i, layer in enumerate(layers or ()):
        if type(layer) is DynamicLayer and holds_kv(layer):
            layers[i] = growing_layer_class()(layer.keys, layer.values)


@functools.cache
def growing_layer_class() -> type:
    """A `DynamicLayer` that appends in place (built on first use: Transformers loads lazily).

    `DynamicLayer.update` concatenates, copying a layer's whole cache to add one column: for 16 rows
    that is a tenth of a decode step on CPU, and it grows with every row and token. This layer keeps
    spare columns after the live ones and writes each new token into them, copying only when they
    run out (every `SPARE` steps). `keys`/`values` stay views of the live columns, so whatever
    assigns them (merging, dropping rows, trimming, `batch_select_indices`) works unchanged: an
    assigned tensor simply has no spare columns until the next append makes some.
    """
    import torch
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):  # type: ignore[no-untyped-call]
        SPARE = 64

        def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int | None = None) -> None:
            """`length`: the live columns when fewer than the tensors hold (the rest is room to append)."""
            super().__init__()  # type: ignore[no-untyped-call]
            self.keys, self.values = keys, values
            if length is not None:
                self._length = self._values_length = length
            self.device = keys.device
            self.is_initialized = True

        @property
        def keys(self) -> torch.Tensor | None:
            return None if self._keys is None else self._keys[:, :, : self._length]

        @keys.setter
        def keys(self, keys: torch.Tensor | None) -> None:
            self._keys = keys
            self._length = 0 if keys is None else keys.shape[-2]

        @property
        def values(self) -> torch.Tensor | None:
            return None if self._values is None else self._values[:, :, : self._values_length]

        @values.setter
        def values(self, values: torch.Tensor | None) -> None:
            # Its own length: callers assign keys and values one after the other, and read values in between.
            self._values = values
            self._values_length = 0 if values is None else values.shape[-2]

        def update(
            self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
        ) -> tuple[torch.Tensor, torch.Tensor]:
            if self._keys is None or self._values is None:
                self.keys, self.values = key_states, value_states
                self.device, self.is_initialized = key_states.device, True
                return key_states, value_states
            start, end = self._length, self._length + key_states.shape[-2]
            if end > self._keys.shape[-2]:
                self._keys = _with_room(self._keys, start, end + self.SPARE)
                self._values = _with_room(self._values, start, end + self.SPARE)
            self._keys[:, :, start:end] = key_states
            self._values[:, :, start:end] = value_states
            self._length = self._values_length = end
            return self._keys[:, :, :end], self._values[:, :, :end]

    return GrowingLayer


def _with_room(tensor: Any, live: int, columns: int) -> Any:
    """A copy of `tensor`'s first `live` columns in a tensor of `columns` columns."""
    roomy = tensor.new_empty((*tensor.shape[:2], columns, tensor.shape[-1]))
    roomy[:, :, :live] = tensor[:, :, :live]
    return roomy


def holds_kv(layer: Any) -> bool:
    """Layers that share another layer's KV (or hold none yet) have nothing to pad or trim."""
    keys = getattr(layer, "keys", None)
    return keys is not None and keys.dim() == 4
