"""The key/value cache that makes decoding linear instead of quadratic."""

import torch
from torch import nn


class KV_Cache(nn.Module):
    """Keys and values of every past position, for one attention layer.

    The buffers are allocated once, (max_batch_size, n_kv_heads, max_seq_len, head_dim) each, and written in
    place: no torch.cat, no reallocation while decoding. ``update`` writes the new positions at ``start_pos``
    and returns the valid prefix [0, start_pos + T) to attend over. Size it for the call at hand (batch,
    prompt + new tokens); ``generate_kv`` does.
    """

    def __init__(self, max_batch_size: int, n_kv_heads: int, max_seq_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        super().__init__()
        shape = (max_batch_size, n_kv_heads, max_seq_len, head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.seq_len = 0  # positions [0, seq_len) hold valid keys and values

    @property
    def max_batch_size(self) -> int:
        return self.k_cache.shape[0]

    @property
    def max_seq_len(self) -> int:
        return self.k_cache.shape[2]

    def update(self, start_pos: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, n_kv_heads, T, head_dim) at [start_pos, start_pos + T); return the (B, n_kv, S, D)
        keys and values of positions [0, S), S = start_pos + T."""
        batch, _, seq, _ = k.shape
        end = start_pos + seq
        if end > self.max_seq_len:
            raise ValueError(
                f"KV cache overflow: writing positions [{start_pos}, {end}) into a cache of max_seq_len="
                f"{self.max_seq_len}. Build a larger cache or generate fewer tokens."
            )
        if batch > self.max_batch_size:
            raise ValueError(f"KV cache holds {self.max_batch_size} sequences, got a batch of {batch}.")
        if start_pos > self.seq_len:
            raise ValueError(
                f"KV cache has {self.seq_len} valid positions; writing at start_pos={start_pos} would leave a "
                f"gap. Write positions in order (or reset())."
            )
        self.k_cache[:batch, :, start_pos:end] = k
        self.v_cache[:batch, :, start_pos:end] = v
        self.seq_len = end
        return self.k_cache[:batch, :, :end], self.v_cache[:batch, :, :end]

    def reset(self) -> None:
        self.k_cache.zero_()
        self.v_cache.zero_()
        self.seq_len = 0

    def extra_repr(self) -> str:
        return f"shape={tuple(self.k_cache.shape)}, dtype={self.k_cache.dtype}, seq_len={self.seq_len}"


def new_kv_caches(args, batch: int, length: int, dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> list[KV_Cache]:
    """One KV_Cache per layer of a model built from ``args`` (a ModelArgs), sized for one call: ``batch`` rows of
    ``length`` positions (prompt + new tokens), not ``max_batch_size`` x ``max_seq_len``."""
    return [KV_Cache(batch, args.n_kv_heads, length, args.head_dim, dtype, device) for _ in range(args.num_layers)]
