"""Decoders: feed the prompt once (prefill), then one token at a time (step), each returning next-token logits.

``generate`` drives any object with this small interface, as gpt-fast's ``decode_one_token`` and nanochat's
``Engine`` do:

    decoder.prefill(ids (B, T), attention_mask (B, T) or None) -> logits (B, vocab) after the last prompt token
    decoder.step(token (B,)) -> logits (B, vocab) after that token, which sits at position ``decoder.pos``

``Decoder`` is the readable implementation: it calls the model's own forward, with one ``KV_Cache`` per layer
(or, with ``use_cache=False``, on the whole sequence again at every step). It needs only the forward contract
(``model(tgt, attention_mask, kv_caches=, start_pos=, logits_to_keep=)`` and ``model.args``), never the model's
class. ``llama3.fast.FastDecoder`` is the fast implementation behind the same interface.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llama3.kv_cache import KV_Cache, new_kv_caches


class Decoder:
    """Decode with the model's own forward. ``length`` is prompt + new tokens: the size of the KV caches.

    State: ``ids`` (B, pos) the tokens fed so far, ``attention_mask`` (B, pos) 1 for real tokens and 0 for left
    padding (None when nothing is padded), ``caches`` one KV_Cache per layer (None without a cache).
    """

    def __init__(self, model, batch: int, length: int, use_cache: bool = True):
        self.model = model
        self.length = length
        weight = next(model.parameters())
        self.caches: list[KV_Cache] | None = (
            new_kv_caches(model.args, batch, length, weight.dtype, weight.device) if use_cache else None)
        self.ids: torch.Tensor | None = None
        self.attention_mask: torch.Tensor | None = None

    @property
    def pos(self) -> int:
        """Positions [0, pos) have been fed: the next token sits at ``pos``."""
        return 0 if self.ids is None else self.ids.shape[1]

    def prefill(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, T), attention_mask (B, T) or None -> logits (B, vocab) after the last prompt token."""
        self.ids, self.attention_mask = ids, attention_mask
        return self.model(ids, attention_mask, kv_caches=self.caches, logits_to_keep=1).logits[:, -1]

    def step(self, token: torch.Tensor) -> torch.Tensor:
        """token (B,) at position ``pos`` -> logits (B, vocab) after it."""
        start = self.append(token)
        if self.caches is None:  # no cache: the whole sequence again
            return self.model(self.ids, self.attention_mask, logits_to_keep=1).logits[:, -1]
        return self.model(token[:, None], self.attention_mask, kv_caches=self.caches, start_pos=start,
                          logits_to_keep=1).logits[:, -1]

    def append(self, token: torch.Tensor) -> int:
        """Record token (B,) as fed (a real token in every row); returns its position."""
        if self.ids is None:
            raise RuntimeError("step() before prefill(): feed the prompt first.")
        start = self.pos
        if start >= self.length:
            raise ValueError(f"The decoder was sized for {self.length} positions: a token at position {start} does "
                             f"not fit. Build it with a larger length.")
        self.ids = torch.cat([self.ids, token[:, None]], dim=1)
        if self.attention_mask is not None:
            self.attention_mask = F.pad(self.attention_mask, (0, 1), value=1)
        return start
