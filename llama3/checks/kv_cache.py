"""check_kv_cache: the learner's ``KV_Cache(max_batch_size, n_kv_heads, max_seq_len, head_dim, dtype, device)``.

The check replays what generation does, a prefill of several positions and then one position per step, and
after every ``update`` compares the returned keys and values with the ones written so far. A mismatch is
diagnosed: only the new positions returned, earlier positions overwritten, the counter not advancing, the whole
buffer returned, k and v swapped.
"""

from __future__ import annotations

import torch

from llama3.checks._common import build, call, checker, fail, passed

BATCH, MAX_BATCH, N_KV, MAX_LEN, HEAD_DIM = 2, 3, 2, 10, 4
WRITE = "self.k_cache[:B, :, start_pos:start_pos + T] = k (and the same for v)."
SLICE = "return self.k_cache[:B, :, :start_pos + T], self.v_cache[:B, :, :start_pos + T]"


def _buffers(cache, what):
    for name in ("k_cache", "v_cache"):
        buf = getattr(cache, name, None)
        if not isinstance(buf, torch.Tensor):
            fail(f"{what}: self.{name} is not a tensor preallocated in __init__.",
                 f"self.register_buffer(\"{name}\", torch.zeros(max_batch_size, n_kv_heads, max_seq_len, head_dim, "
                 f"dtype=dtype, device=device), persistent=False).")
    return cache.k_cache, cache.v_cache


def _seq_len(cache, what) -> int:
    value = getattr(cache, "seq_len", None)
    if not isinstance(value, int):
        fail(f"{what}: self.seq_len is {type(value).__name__}, not an int (the number of valid positions).",
             "self.seq_len = 0 in __init__ and reset(); self.seq_len = start_pos + T in update.")
    return value


def _check_step(cache, k_new, v_new, start_pos, k_all, v_all, step):
    """One update: write k_new, v_new at start_pos; k_all, v_all are every position written so far."""
    what = f"KV_Cache.update({step})"
    end = start_pos + k_new.shape[2]
    before = getattr(cache, "seq_len", None)
    k_ptr = cache.k_cache.data_ptr()
    result = call(cache.update, start_pos, k_new, v_new, what=what)
    if not (isinstance(result, tuple | list) and len(result) == 2
            and all(isinstance(t, torch.Tensor) for t in result)):
        fail(f"{what}: returned {type(result).__name__}, not the pair (keys, values) of positions [0, start_pos + T).",
             SLICE)
    keys, values = result
    expected_shape = (BATCH, N_KV, end, HEAD_DIM)
    if keys.shape != expected_shape or values.shape != expected_shape:
        got = tuple(keys.shape)
        if got == tuple(k_new.shape) and end != k_new.shape[2]:
            wrong = ("it returns only the new positions; attention needs the keys and values of ALL positions so "
                     "far.")
        elif len(got) == 4 and got[2] == MAX_LEN:
            wrong = "it returns the whole buffer, max_seq_len positions, including the unwritten zeros."
        elif len(got) == 4 and got[0] == MAX_BATCH:
            wrong = f"it returns all max_batch_size={MAX_BATCH} rows for a batch of {BATCH}."
        elif len(got) == 4 and abs(got[2] - end) == 1:
            wrong = (f"the returned length is off by one: {got[2]} positions after writing [{start_pos}, {end}); "
                     f"it must be start_pos + T = {end}.")
        else:
            wrong = "the returned keys do not hold exactly the positions written so far."
        fail(f"{what}: returned keys of shape {got}, expected {expected_shape} = (B, n_kv_heads, start_pos + T, "
             f"head_dim): {wrong}", SLICE)
    if torch.equal(keys, v_all) and torch.equal(values, k_all):
        fail(f"{what}: keys and values are swapped.", "write k into self.k_cache and v into self.v_cache.")
    if not (torch.equal(keys, k_all) and torch.equal(values, v_all)):
        old_lost = not torch.equal(keys[:, :, :start_pos], k_all[:, :, :start_pos])
        if start_pos and old_lost and torch.equal(keys[:, :, :k_new.shape[2]], k_new):
            fail(f"{what}: the new keys were written at position 0 and overwrote earlier positions.", WRITE)
        for shift in (-1, 1):
            lo, hi = start_pos + shift, end + shift
            if 0 <= lo and hi <= MAX_LEN and torch.equal(cache.k_cache[:BATCH, :, lo:hi], k_new):
                fail(f"{what}: the new keys were written at positions [{lo}, {hi}), off by one from "
                     f"[start_pos, start_pos + T) = [{start_pos}, {end}).", WRITE)
        if old_lost:
            fail(f"{what}: the keys of earlier positions [0, {start_pos}) changed; only positions "
                 f"[start_pos, start_pos + T) may be written, the past must stay as it was.", WRITE)
        fail(f"{what}: the new keys/values at positions [{start_pos}, {end}) are not the ones passed in.", WRITE)
    now = _seq_len(cache, what)
    if now != end:
        if now == before:
            wrong = f"the cache does not advance: seq_len is still {now} after writing positions [{start_pos}, {end})"
        elif abs(now - end) == 1:
            wrong = f"seq_len is off by one: {now} after writing positions [{start_pos}, {end})"
        else:
            wrong = f"seq_len is {now} after writing positions [{start_pos}, {end})"
        fail(f"{what}: {wrong}; it must become start_pos + T = {end}, the number of valid positions.",
             "self.seq_len = start_pos + T at the end of update.")
    if cache.k_cache.data_ptr() != k_ptr or tuple(cache.k_cache.shape) != (MAX_BATCH, N_KV, MAX_LEN, HEAD_DIM):
        fail(f"{what}: the buffer was reallocated (torch.cat or a new tensor), so decoding copies the past each step.",
             "write into the preallocated self.k_cache in place with slice assignment: " + WRITE)


@checker
def check_kv_cache(KV_Cache) -> None:
    """Check a learner's ``KV_Cache``: preallocated buffers, prefill then one-token updates, reset, overflow, dtype."""
    what = f"KV_Cache({MAX_BATCH}, {N_KV}, {MAX_LEN}, {HEAD_DIM})"
    cache = build(KV_Cache, MAX_BATCH, N_KV, MAX_LEN, HEAD_DIM, torch.float32, "cpu", what=what)
    k_buf, v_buf = _buffers(cache, what)
    for name, buf in (("k_cache", k_buf), ("v_cache", v_buf)):
        if tuple(buf.shape) != (MAX_BATCH, N_KV, MAX_LEN, HEAD_DIM):
            fail(f"{what}: self.{name} has shape {tuple(buf.shape)}, expected (max_batch_size, n_kv_heads, "
                 f"max_seq_len, head_dim) = {(MAX_BATCH, N_KV, MAX_LEN, HEAD_DIM)}.",
                 "torch.zeros(max_batch_size, n_kv_heads, max_seq_len, head_dim, dtype=dtype, device=device).")
    if _seq_len(cache, what) != 0:
        fail(f"{what}: a new cache holds no positions yet, but seq_len starts at {cache.seq_len}.",
             "self.seq_len = 0 in __init__.")

    gen = torch.Generator().manual_seed(0)
    for round_ in ("first", "after reset()"):
        k_all = torch.randn(BATCH, N_KV, 7, HEAD_DIM, generator=gen)  # (B, n_kv, positions, D)
        v_all = torch.randn(BATCH, N_KV, 7, HEAD_DIM, generator=gen)
        _check_step(cache, k_all[:, :, :4], v_all[:, :, :4], 0, k_all[:, :, :4], v_all[:, :, :4],
                    f"prefill of 4 positions at start_pos=0, {round_} round")
        for pos in range(4, 7):  # decoding: one position per step
            _check_step(cache, k_all[:, :, pos:pos + 1], v_all[:, :, pos:pos + 1], pos, k_all[:, :, :pos + 1],
                        v_all[:, :, :pos + 1], f"one-token decode at start_pos={pos}, {round_} round")
        call(cache.reset, what=f"{what}.reset()")
        if _seq_len(cache, f"{what}.reset()") != 0 or cache.k_cache.abs().sum() or cache.v_cache.abs().sum():
            fail(f"{what}.reset(): the buffers are not zero or seq_len is not 0 afterwards.",
                 "self.k_cache.zero_(); self.v_cache.zero_(); self.seq_len = 0.")

    filled = torch.ones(1, N_KV, 7, HEAD_DIM)
    call(cache.update, 0, filled, filled, what=f"{what}.update(0, 7 positions)")
    overflow = ("if start_pos + T > self.max_seq_len: raise ValueError(f\"... exceeds max_seq_len="
                "{self.max_seq_len}\") before writing.")
    try:  # positions [7, 11) of a cache of 10
        cache.update(7, torch.zeros(1, N_KV, 4, HEAD_DIM), torch.zeros(1, N_KV, 4, HEAD_DIM))
    except ValueError as error:
        if "max_seq_len" not in str(error) and str(MAX_LEN) not in str(error):
            fail(f"{what}.update past the end: the ValueError does not name max_seq_len ({MAX_LEN}), so the caller "
                 f"does not know what to enlarge; got: {error}", overflow)
    except Exception as error:  # noqa: BLE001 - the learner's error type is what we judge
        fail(f"{what}.update past the end (positions [7, 11) of {MAX_LEN}) raised {type(error).__name__}: {error}, "
             f"not a ValueError naming max_seq_len.", overflow)
    else:
        fail(f"{what}.update past the end (positions [7, 11) of max_seq_len={MAX_LEN}) did not raise.", overflow)

    half = build(KV_Cache, 1, 1, 4, 2, torch.bfloat16, "cpu", what="KV_Cache(..., dtype=torch.bfloat16)")
    if _buffers(half, "KV_Cache(..., dtype=torch.bfloat16)")[0].dtype != torch.bfloat16:
        fail("KV_Cache(..., dtype=torch.bfloat16): the buffers are not allocated in the given dtype (a bfloat16 "
             "model halves its cache).", "torch.zeros(..., dtype=dtype, device=device).")
    passed("KV_Cache: preallocated buffers, prefill and one-token updates, reset, overflow and dtype agree with "
           "llama3.KV_Cache.")
