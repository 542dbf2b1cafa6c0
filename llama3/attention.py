"""Grouped-query attention (Ainslie et al., 2023, "GQA") with an optional fused kernel
(Dao et al., 2022, "FlashAttention", through ``F.scaled_dot_product_attention``)."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from llama3.config import ModelArgs
from llama3.kv_cache import KV_Cache
from llama3.rope import apply_rotary


def build_attention_mask(attention_mask: torch.Tensor | None, q_len: int, start_pos: int = 0) -> torch.Tensor:
    """A boolean (B or 1, 1, T, S) mask, True where query t may attend to key s.

    Causal with an offset: query t sits at absolute position start_pos + t and sees keys s <= start_pos + t.
    ``attention_mask`` (B, S), 1 for real tokens and 0 for padding, hides padded keys. A padded query would then
    see no key at all and its softmax would be 0/0 = NaN, so every query may always see itself; the outputs at
    padded positions are meaningless and are ignored by the loss and by generation.
    """
    kv_len = start_pos + q_len if attention_mask is None else attention_mask.shape[-1]
    device = None if attention_mask is None else attention_mask.device
    query_pos = torch.arange(start_pos, start_pos + q_len, device=device)[:, None]  # (T, 1)
    key_pos = torch.arange(kv_len, device=device)[None, :]  # (1, S)
    mask = (key_pos <= query_pos)[None, None]  # (1, 1, T, S)
    if attention_mask is not None:
        mask = mask & attention_mask[:, None, None, :].bool()
        mask = mask | (key_pos == query_pos)[None, None]
    return mask


def check_attention_mask(attention_mask, shape: tuple[int, int]) -> None:
    """Refuse an attention_mask that is not exactly ``shape`` = (batch, seq) of 0/1 with a real token in every row:
    a mask of another shape is never reshaped, and a row of padding alone has nothing to attend to."""
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a tensor of 0/1 of shape {shape}, got "
                        f"{type(attention_mask).__name__}.")
    if tuple(attention_mask.shape) != tuple(shape):
        raise ValueError(f"attention_mask must have shape (batch, seq) = {tuple(shape)}, got "
                         f"{tuple(attention_mask.shape)}: pass one 0/1 entry per token.")
    if attention_mask.is_complex() or bool(((attention_mask != 0) & (attention_mask != 1)).any()):
        raise ValueError("attention_mask must hold only 0 (padding) and 1 (real token), got "
                         f"{sorted(set(attention_mask.unique().tolist()))[:6]}.")
    empty = (attention_mask == 0).all(-1)
    if bool(empty.any()):
        raise ValueError(f"attention_mask row {int(empty.nonzero()[0])} has no real token (all 0): every row needs "
                         f"at least one 1; drop empty rows from the batch.")


def grouped_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                 dropout: float = 0.0) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` for grouped-query heads: q (B, H, T, D), k and v (B, KV, S, D) with
    H a multiple of KV -> (B, H, T, D). mask: a boolean (B or 1, 1, T, S) from ``build_attention_mask``, or None
    for plain causal attention (or, for one query row, attention to every key).

    No mask is passed when none is needed, so that the fused kernels apply (CUDA's flash kernel takes none):
    a prompt without padding runs with ``is_causal=True`` and a decode step without padding with no mask.
    """
    batch, heads, seq, head_dim = q.shape
    kv_heads = k.shape[1]
    if seq == 1 and heads != kv_heads:
        # One query row (decoding): fold each group's query heads into rows of its K/V head. That is plain
        # attention with no K/V copy, and it avoids the CPU kernel's slow enable_gqa path (~100x slower here).
        q = q.view(batch, kv_heads, heads // kv_heads, head_dim)  # (B, KV, G, D)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return out.view(batch, heads, 1, head_dim)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and seq > 1,
                                          dropout_p=dropout, enable_gqa=heads != kv_heads)


class MultiHeadGQAttention(nn.Module):
    """Causal self-attention in which ``group_size`` query heads share one key/value head.

    With group_size=1 this is ordinary multi-head attention; with group_size=heads it is multi-query
    attention. Sharing K/V heads shrinks the KV cache by a factor of group_size at almost no cost in quality.

    ``use_flash=True`` calls ``F.scaled_dot_product_attention``, which dispatches to a fused (flash) kernel;
    ``use_flash=False`` spells the same maths out, which is what the course builds first.

    forward(x, cos, sin, mask=None, kv_cache=None, start_pos=0):
      x (B, T, d_model); cos, sin from ``RoPE.cos_sin`` for the T positions of x; mask a boolean
      (B, 1, T, S) from ``build_attention_mask`` or None for plain causal attention; kv_cache a ``KV_Cache``
      that receives the new keys and values at ``start_pos``.
    """

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.heads = args.heads
        self.n_kv_heads = args.n_kv_heads
        self.group_size = args.group_size
        self.head_dim = args.head_dim
        self.use_flash = args.use_flash
        self.dropout = args.dropout
        self.wq = nn.Linear(args.d_model, self.heads * self.head_dim, bias=False)
        self.wk = nn.Linear(args.d_model, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(args.d_model, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(self.heads * self.head_dim, args.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None = None,
                kv_cache: KV_Cache | None = None, start_pos: int = 0) -> torch.Tensor:
        batch, seq, _ = x.shape
        q = self.wq(x).view(batch, seq, self.heads, self.head_dim)  # (B, T, H, D)
        k = self.wk(x).view(batch, seq, self.n_kv_heads, self.head_dim)  # (B, T, KV, D)
        v = self.wv(x).view(batch, seq, self.n_kv_heads, self.head_dim)  # (B, T, KV, D)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, T, D)
        if kv_cache is not None:
            k, v = kv_cache.update(start_pos, k, v)  # (B, KV, S, D), S = start_pos + T
        if mask is None and seq > 1 and k.shape[2] != seq:
            # A prefill on top of a cache: is_causal would align the triangle top-left, which is wrong here.
            mask = build_attention_mask(None, seq, k.shape[2] - seq).to(x.device)
        dropout = self.dropout if self.training else 0.0
        if self.use_flash:
            out = grouped_sdpa(q, k, v, mask, dropout)
        else:
            out = self.attention_by_hand(q, k, v, mask, dropout)
        out = out.transpose(1, 2).reshape(batch, seq, self.heads * self.head_dim)  # (B, T, H*D)
        return self.wo(out)

    def attention_by_hand(self, q, k, v, mask, dropout):
        """softmax(q k^T / sqrt(D) + mask) v, with each K/V head repeated for the query heads of its group."""
        # repeat_interleave gives kv0, kv0, kv1, kv1, ...: query head h reads K/V head h // group_size.
        k = k.repeat_interleave(self.group_size, dim=1)  # (B, H, S, D)
        v = v.repeat_interleave(self.group_size, dim=1)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, H, T, S)
        seq, kv_len = scores.shape[-2:]
        if mask is None and seq > 1:
            mask = build_attention_mask(None, seq, kv_len - seq).to(q.device)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        probs = F.softmax(scores.float(), dim=-1).type_as(q)
        probs = F.dropout(probs, p=dropout, training=dropout > 0)
        return probs @ v  # (B, H, T, D)
