"""check_kv_cache accepts correct caches and rejects each planted mistake with its own hint."""

import pytest
import torch
from torch import nn

from llama3 import KV_Cache
from llama3.checks import check_kv_cache
from tests.checks_util import assert_named


class IndexCopyCache(nn.Module):
    """An independent correct solution: index_copy_ into the buffers instead of slice assignment."""

    def __init__(self, max_batch_size, n_kv_heads, max_seq_len, head_dim, dtype=torch.float32, device=None):
        super().__init__()
        shape = (max_batch_size, n_kv_heads, max_seq_len, head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.seq_len = 0

    def update(self, start_pos, k, v):
        batch, _, seq, _ = k.shape
        if start_pos + seq > self.k_cache.shape[2]:
            raise ValueError(f"cache full: max_seq_len={self.k_cache.shape[2]}")
        index = torch.arange(start_pos, start_pos + seq)
        self.k_cache[:batch].index_copy_(2, index, k)
        self.v_cache[:batch].index_copy_(2, index, v)
        self.seq_len = start_pos + seq
        return self.k_cache[:batch, :, :self.seq_len], self.v_cache[:batch, :, :self.seq_len]

    def reset(self):
        self.k_cache.zero_()
        self.v_cache.zero_()
        self.seq_len = 0


class NotAdvancingCache(KV_Cache):
    """Writes and returns the right tensors but never moves seq_len forward."""

    def update(self, start_pos, k, v):
        out = super().update(start_pos, k, v)
        self.seq_len = 0
        return out


class OverwritingCache(KV_Cache):
    """Always writes at position 0, so each step overwrites the earlier positions."""

    def update(self, start_pos, k, v):
        batch, _, seq, _ = k.shape
        self.k_cache[:batch, :, :seq] = k
        self.v_cache[:batch, :, :seq] = v
        self.seq_len = start_pos + seq
        return self.k_cache[:batch, :, :self.seq_len], self.v_cache[:batch, :, :self.seq_len]


class OnlyNewPositionsCache(KV_Cache):
    def update(self, start_pos, k, v):
        super().update(start_pos, k, v)
        return k, v


class WholeBufferCache(KV_Cache):
    def update(self, start_pos, k, v):
        super().update(start_pos, k, v)
        return self.k_cache[:k.shape[0]], self.v_cache[:k.shape[0]]


class SwappedCache(KV_Cache):
    def update(self, start_pos, k, v):
        return super().update(start_pos, v, k)


class ConcatenatingCache(KV_Cache):
    """Grows by torch.cat, reallocating the past at every step."""

    def update(self, start_pos, k, v):
        batch = k.shape[0]
        self.k_cache = torch.cat((self.k_cache[:, :, :start_pos], torch.zeros_like(self.k_cache[:, :, start_pos:])), 2)
        self.v_cache = self.v_cache.clone()
        return super().update(start_pos, k, v)[0][:batch], self.v_cache[:batch, :, :start_pos + k.shape[2]]


class SilentOverflowCache(KV_Cache):
    def update(self, start_pos, k, v):
        end = min(start_pos + k.shape[2], self.max_seq_len)
        k, v = k[:, :, :end - start_pos], v[:, :, :end - start_pos]
        return super().update(start_pos, k, v)


class LengthOffByOneCache(KV_Cache):
    """Writes and returns the right positions but counts one too few."""

    def update(self, start_pos, k, v):
        out = super().update(start_pos, k, v)
        self.seq_len = start_pos + k.shape[2] - 1
        return out


class ReturnsOneTooManyCache(KV_Cache):
    def update(self, start_pos, k, v):
        super().update(start_pos, k, v)
        return self.k_cache[:k.shape[0], :, :self.seq_len + 1], self.v_cache[:k.shape[0], :, :self.seq_len + 1]


class WritesOnePositionLateCache(KV_Cache):
    def update(self, start_pos, k, v):
        batch, _, seq, _ = k.shape
        self.k_cache[:batch, :, start_pos + 1:start_pos + 1 + seq] = k
        self.v_cache[:batch, :, start_pos + 1:start_pos + 1 + seq] = v
        self.seq_len = start_pos + seq
        return self.k_cache[:batch, :, :self.seq_len], self.v_cache[:batch, :, :self.seq_len]


class IgnoresDtypeCache(KV_Cache):
    def __init__(self, max_batch_size, n_kv_heads, max_seq_len, head_dim, dtype=torch.float32, device=None):
        super().__init__(max_batch_size, n_kv_heads, max_seq_len, head_dim, torch.float32, device)


@pytest.mark.parametrize("solution", [KV_Cache, IndexCopyCache])
def test_correct_solutions_pass(solution, capsys):
    check_kv_cache(solution)
    assert capsys.readouterr().out.startswith("PASSED KV_Cache")


MISTAKES = [
    (NotAdvancingCache, "the cache does not advance"),
    (LengthOffByOneCache, "seq_len is off by one"),
    (ReturnsOneTooManyCache, "the returned length is off by one"),
    (WritesOnePositionLateCache, "off by one from [start_pos, start_pos + T)"),
    (OverwritingCache, "overwrote earlier positions"),
    (OnlyNewPositionsCache, "returns only the new positions"),
    (WholeBufferCache, "returns the whole buffer"),
    (SwappedCache, "keys and values are swapped"),
    (ConcatenatingCache, "the buffer was reallocated"),
    (SilentOverflowCache, "did not raise"),
    (IgnoresDtypeCache, "not allocated in the given dtype"),
]


@pytest.mark.parametrize("planted,phrase", MISTAKES)
def test_planted_mistakes_are_named(planted, phrase):
    assert_named(check_kv_cache, planted, phrase, [p for _, p in MISTAKES])
