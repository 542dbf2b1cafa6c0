"""check_attention: the learner's ``MultiHeadGQAttention(args)`` against ``llama3.MultiHeadGQAttention``.

The reference's weights are loaded into the learner's module, and both run the situations a Llama meets: plain
causal self-attention (training), a left/right-padded batch with an explicit mask, a prefill into a ``KV_Cache``
followed by one-token decoding, a padded prefill and decode, and a chunk of queries on top of a filled cache. All of
that with ``use_flash=False`` and ``True``, with multi-head (group_size=1), grouped (GQA) and multi-query heads.

When an output disagrees, the checker recomputes attention by hand with one deliberate mistake at a time (no
causal mask, no 1/sqrt(d) scale, softmax over the queries, ``repeat`` instead of ``repeat_interleave``, padding
ignored, ...) and names the mistake whose output the learner's matches.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from llama3.attention import MultiHeadGQAttention as ReferenceAttention
from llama3.attention import build_attention_mask
from llama3.checks._common import (
    build,
    call,
    checker,
    close,
    copy_weights,
    fail,
    learner_dependency,
    passed,
    prerequisite,
)
from llama3.config import ModelArgs
from llama3.kv_cache import KV_Cache
from llama3.rope import RoPE, apply_rotary

_reference_mask = build_attention_mask

ATOL = 1e-5  # float32; SDPA and the spelled-out softmax agree to ~1e-7

# (d_model, heads, group_size): GQA (6 query heads in 2 groups of 3), plain multi-head (odd head count), multi-query
CONFIGS = ((48, 6, 3), (24, 3, 1), (24, 4, 4))

# (what is wrong, how to fix it, knobs for _by_hand); the first whose output the learner's matches is reported
MISTAKES = (
    ("the causal mask is missing: query t also attends to the future keys s > t.",
     "with mask=None and T > 1, mask the upper triangle (torch.ones(T, S, dtype=torch.bool).tril()) in the manual "
     "path and pass is_causal=True to F.scaled_dot_product_attention.", dict(causal=False)),
    ("the causal mask is shifted by one: query t does not see itself (tril(-1)), so the first query sees no key at "
     "all and its softmax is NaN.",
     "keys s <= t are allowed, the diagonal included: torch.ones(T, S, dtype=torch.bool).tril() (diagonal 0).",
     dict(causal="shift-1")),
    ("the causal mask is shifted by one: query t also sees key t + 1 (tril(1)), one token of the future.",
     "keys s <= t are allowed: torch.ones(T, S, dtype=torch.bool).tril() (diagonal 0).", dict(causal="shift+1")),
    ("the boolean mask is added to the scores: True becomes +1 and False 0, so masked keys keep their weight.",
     "a boolean mask selects: scores.masked_fill(~mask, float('-inf')) (or pass it as attn_mask to "
     "F.scaled_dot_product_attention, which understands booleans).", dict(mask_mode="add-bool")),
    ("masked scores are filled with 0 instead of -inf: exp(0) = 1, so masked keys still get weight.",
     "scores.masked_fill(~mask, float('-inf')).", dict(mask_mode="fill-zero")),
    ("the padding mask is ignored: keys where the mask is False are attended to.",
     "when a mask (B, 1, T, S) is passed: scores.masked_fill(~mask, float('-inf')) by hand, attn_mask=mask for "
     "F.scaled_dot_product_attention.", dict(padding=False)),
    ("the scores are not scaled by 1 / sqrt(head_dim), so the softmax saturates as head_dim grows.",
     "divide q @ k.transpose(-2, -1) by math.sqrt(self.head_dim) before the softmax.", dict(scale="none")),
    ("the scores are divided by head_dim instead of its square root.",
     "divide by math.sqrt(self.head_dim).", dict(scale="d")),
    ("the scores are divided by sqrt(d_model); the scale is per head.",
     "divide by math.sqrt(self.head_dim).", dict(scale="d_model")),
    ("the softmax runs over the queries: the scores are (B, H, T queries, S keys) and each query's weights over the "
     "keys must sum to 1.", "F.softmax(scores, dim=-1).", dict(softmax_dim=-2)),
    ("the K/V heads are expanded with repeat (kv0, kv1, kv0, kv1, ...), so query head h reads the wrong K/V head; "
     "it belongs to group h // group_size.",
     "k.repeat_interleave(self.group_size, dim=1) (kv0, kv0, kv1, kv1, ...), or enable_gqa=True in "
     "F.scaled_dot_product_attention.", dict(expand="repeat")),
    ("on top of a filled cache the causal triangle is aligned top-left (is_causal=True or tril(ones(T, S)) sees only "
     "keys s <= t); the T new queries sit at positions start_pos .. start_pos+T-1 and must see keys "
     "s <= start_pos + t.",
     "build the offset mask, build_attention_mask(None, T, start_pos), and pass it as the mask.",
     dict(causal="top-left")),
    ("the KV cache is not used: the new queries attend only to the new keys.",
     "with a kv_cache, store the new k, v with k, v = kv_cache.update(start_pos, k, v) and attend over what it "
     "returns (every position so far).", dict(cache=False)),
    ("RoPE is not applied to q and k.",
     "q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin) while they are (B, T, heads, head_dim), before "
     "the transpose.", dict(rope="none")),
    ("RoPE is applied to q only; k needs the same rotation (the dot product then depends on the offset only).",
     "k = apply_rotary(k, cos, sin) as well.", dict(rope="q")),
    ("RoPE is applied to v as well; only q and k are rotated (the values carry content, not position).",
     "leave v unrotated.", dict(rope="qkv")),
    ("the heads are merged without transposing back: (B, heads, T, D).reshape(B, T, heads * D) mixes positions "
     "and heads.",
     "out.transpose(1, 2).reshape(B, T, self.heads * self.head_dim) before self.wo.", dict(merge="no-transpose")),
)

def _args(d_model: int, heads: int, group_size: int, use_flash: bool) -> ModelArgs:
    return ModelArgs(vocab_size=16, d_model=d_model, heads=heads, group_size=group_size, num_layers=1,
                     max_seq_len=16, use_flash=use_flash, multiple_of=16)


@torch.no_grad()
def _by_hand(ref: ReferenceAttention, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, q_start: int,
             key_mask: torch.Tensor | None, *, causal=True, padding=True, scale="sqrt", softmax_dim=-1,
             expand="interleave", cache=True, rope="qk", mask_mode="fill-inf", merge="transpose",
             keep_nan=False) -> torch.Tensor:
    """Attention of the queries at positions [q_start, S) of x (B, S, d) over keys [0, S), with the reference's
    weights, and optionally one mistake. key_mask (B, S) marks real (1) and padded (0) keys, or is None."""
    batch, seq, _ = x.shape
    heads, n_kv, head_dim = ref.heads, ref.n_kv_heads, ref.head_dim
    q = ref.wq(x).view(batch, seq, heads, head_dim)
    k = ref.wk(x).view(batch, seq, n_kv, head_dim)
    v = ref.wv(x).view(batch, seq, n_kv, head_dim)
    if rope != "none":
        q = apply_rotary(q, cos, sin)
    if rope in ("qk", "qkv"):
        k = apply_rotary(k, cos, sin)
    if rope == "qkv":
        v = apply_rotary(v, cos, sin)
    key_start = q_start if not cache else 0
    q = q[:, q_start:].transpose(1, 2)  # (B, H, T, D)
    k, v = k[:, key_start:].transpose(1, 2), v[:, key_start:].transpose(1, 2)  # (B, KV, S, D)
    if expand == "interleave":
        k, v = k.repeat_interleave(ref.group_size, 1), v.repeat_interleave(ref.group_size, 1)
    else:
        k, v = k.repeat(1, ref.group_size, 1, 1), v.repeat(1, ref.group_size, 1, 1)
    divisor = {"sqrt": math.sqrt(head_dim), "none": 1.0, "d": head_dim, "d_model": math.sqrt(x.shape[-1])}[scale]
    scores = q @ k.transpose(-2, -1) / divisor  # (B, H, T, S)
    query_pos = torch.arange(q_start, seq)[:, None]  # absolute positions
    key_pos = torch.arange(key_start, seq)[None, :]
    allowed = torch.ones(seq - q_start, seq - key_start, dtype=torch.bool)
    if causal is True:
        allowed = key_pos <= query_pos
    elif causal == "shift-1":
        allowed = key_pos < query_pos
    elif causal == "shift+1":
        allowed = key_pos <= query_pos + 1
    elif causal == "top-left" and seq - q_start > 1:
        allowed = (key_pos - key_start) <= (query_pos - q_start)
    allowed = allowed[None, None]
    if key_mask is not None and padding:
        allowed = (allowed & key_mask[:, None, None, key_start:].bool()) | (key_pos == query_pos)
    if mask_mode == "fill-inf":
        scores = scores.masked_fill(~allowed, float("-inf"))
    elif mask_mode == "fill-zero":
        scores = scores.masked_fill(~allowed, 0.0)
    else:  # "add-bool": the boolean mask added as 0/1
        scores = scores + allowed.to(scores.dtype)
    probs = F.softmax(scores, dim=softmax_dim)
    if not keep_nan:
        probs = probs.nan_to_num(0.0)
    out = probs @ v  # (B, H, T, D)
    if merge == "transpose":
        out = out.transpose(1, 2)
    out = out.reshape(batch, seq - q_start, heads * head_dim)
    return ref.wo(out)


def _compare(out, ref, x, cos, sin, q_start, key_mask, where):
    """Fail with the best hint when ``out`` (the learner's output for queries [q_start, S)) is wrong."""
    expected = _by_hand(ref, x, cos, sin, q_start, key_mask)
    if not isinstance(out, torch.Tensor):
        fail(f"{where}: expected a tensor, got {type(out).__name__}.")
    if out.shape != expected.shape:
        fail(f"{where}: output shape {tuple(out.shape)}, expected {tuple(expected.shape)} = (B, T, d_model).",
             "merge the heads back with out.transpose(1, 2).reshape(B, T, heads * head_dim) and apply self.wo.")
    if close(out, expected, atol=ATOL, rtol=ATOL):
        return
    for wrong, fix, knobs in MISTAKES:
        variant = _by_hand(ref, x, cos, sin, q_start, key_mask, keep_nan=True, **knobs)
        if close(out, variant, atol=ATOL, rtol=ATOL, equal_nan=True):
            fail(f"{where}: {wrong}", fix)
    if not torch.isfinite(out).all():
        fail(f"{where}: the output contains NaN or inf: some query attends to no key at all (every score -inf).",
             "the mask is True where a query MAY attend, and the diagonal is always allowed: "
             "masked_fill(~mask, float('-inf')), or attn_mask=mask for F.scaled_dot_product_attention.")
    err = (out.float() - expected).abs().max().item()
    fail(f"{where}: the output differs from the reference (max abs error {err:.3g}).",
         "check, in order: q, k, v reshaped to (B, T, heads or n_kv_heads, head_dim); RoPE on q and k; transpose to "
         "(B, heads, T, D); K/V heads repeat_interleave'd by group_size; scores / sqrt(head_dim); mask; softmax over "
         "the keys (dim=-1); heads merged back; self.wo.")


def _check_weight_shapes(mine, ref, where):
    for name in ("wq", "wk", "wv", "wo"):
        layer = getattr(mine, name, None)
        if not isinstance(layer, torch.nn.Linear):
            fail(f"{where}: self.{name} is not an nn.Linear.",
                 f"self.{name} = nn.Linear(in, out, bias=False) (Meta's names wq, wk, wv, wo).")
        if layer.bias is not None:
            fail(f"{where}: self.{name} has a bias; Llama's projections have none.", "nn.Linear(..., bias=False).")
        expected = tuple(getattr(ref, name).weight.shape)
        if tuple(layer.weight.shape) != expected:
            fail(f"{where}: self.{name}.weight has shape {tuple(layer.weight.shape)}, expected {expected}.",
                 "wq maps d_model -> heads * head_dim, wk and wv map d_model -> n_kv_heads * head_dim (the K/V heads "
                 "are fewer: n_kv_heads = heads // group_size), wo maps heads * head_dim -> d_model.")


class _CountSDPA(TorchFunctionMode):
    """Counts calls of F.scaled_dot_product_attention, however the learner's code spells it."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            self.calls += 1
        return func(*args, **(kwargs or {}))


def _check_path(mine, x, cos, sin, use_flash, where):
    """use_flash must choose the path: the fused kernel when True, the spelled-out softmax when False."""
    with _CountSDPA() as counter:
        call(mine, x, cos, sin, what=where)
    if use_flash and not counter.calls:
        fail(f"{where}: use_flash=True never calls F.scaled_dot_product_attention: the use_flash field of args has no "
             f"effect.", "if self.use_flash: out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, "
             "is_causal=mask is None and T > 1, enable_gqa=self.group_size > 1); else: out = "
             "self.attention_by_hand(q, k, v, mask, dropout).")
    if not use_flash and counter.calls:
        fail(f"{where}: use_flash=False still calls F.scaled_dot_product_attention: the spelled-out path is never "
             f"used, so the use_flash field of args has no effect.",
             "if self.use_flash: F.scaled_dot_product_attention(...); else: self.attention_by_hand(q, k, v, mask, "
             "dropout).")


@checker
def check_attention(MultiHeadGQAttention, *, attention_by_hand=None, build_attention_mask=None) -> None:
    """Check a learner's ``MultiHeadGQAttention(args)`` with forward(x, cos, sin, mask=None, kv_cache=None,
    start_pos=0), on both paths (use_flash False and True), MHA, GQA and MQA, with masks and a KV cache.

    The learner's own ``build_attention_mask`` and ``attention_by_hand`` (the earlier exercises; passed explicitly
    or the ones the class's code calls by name) are re-checked first."""
    mine_mask = learner_dependency(MultiHeadGQAttention, "build_attention_mask", build_attention_mask,
                                   reference=_reference_mask)
    if mine_mask is not None:
        prerequisite(check_attention_mask, mine_mask, "build_attention_mask", "MultiHeadGQAttention")
    mine_by_hand = learner_dependency(MultiHeadGQAttention, "attention_by_hand", attention_by_hand)
    if mine_by_hand is not None and not isinstance(mine_by_hand, property):
        prerequisite(check_attention_by_hand, mine_by_hand, "attention_by_hand", "MultiHeadGQAttention")
    _check_attention(MultiHeadGQAttention)


def _check_attention(MultiHeadGQAttention) -> None:
    gen = torch.Generator().manual_seed(0)
    for d_model, heads, group_size in CONFIGS:
        for use_flash in (False, True):
            args = _args(d_model, heads, group_size, use_flash)
            config = f"heads={heads}, group_size={group_size} (n_kv_heads={args.n_kv_heads}), use_flash={use_flash}"
            with torch.random.fork_rng():  # the reference's init must not move the learner's random stream
                torch.manual_seed(d_model + heads + group_size)
                ref = ReferenceAttention(args).eval()
            mine = build(MultiHeadGQAttention, args, what=f"MultiHeadGQAttention({config})")
            _check_weight_shapes(mine, ref, f"MultiHeadGQAttention({config})")
            copy_weights(mine, ref, f"MultiHeadGQAttention({config})")
            mine.eval()
            rope = RoPE(args.head_dim, args.rope_theta)
            cos, sin = rope.cos_sin(torch.arange(7))  # (1, 7, 1, D/2)
            x = torch.randn(2, 7, d_model, generator=gen)  # (B, S, d_model)
            with torch.no_grad():
                # 1. training: causal self-attention, no mask passed
                where = f"[{config}] causal self-attention with mask=None"
                out = call(mine, x, cos, sin, what=where)
                _compare(out, ref, x, cos, sin, 0, None, where)
                _check_path(mine, x, cos, sin, use_flash, f"[{config}]")

                # 2. a padded batch: row 0 left-padded (generation), row 1 right-padded (training)
                key_mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]])
                mask = build_attention_mask(key_mask, 7)  # (B, 1, T, S) bool
                where = f"[{config}] a padded batch with mask=build_attention_mask(attention_mask, T)"
                out = call(mine, x, cos, sin, mask, what=where)
                _compare(out, ref, x, cos, sin, 0, key_mask, where)

                # 3. prefill 4 positions into a KV cache, then decode one token at a time
                cache = KV_Cache(2, args.n_kv_heads, 10, args.head_dim)
                where = f"[{config}] prefill of 4 tokens into an empty KV_Cache"
                out = call(mine, x[:, :4], cos[:, :4], sin[:, :4], None, cache, 0, what=where)
                _compare(out, ref, x[:, :4], cos[:, :4], sin[:, :4], 0, None, where)
                for pos in range(4, 6):
                    where = f"[{config}] one-token decode at start_pos={pos} after a cached prefill"
                    out = call(mine, x[:, pos:pos + 1], cos[:, pos:pos + 1], sin[:, pos:pos + 1], None, cache, pos,
                               what=where)
                    _compare(out, ref, x[:, :pos + 1], cos[:, :pos + 1], sin[:, :pos + 1], pos, None, where)

                # 4. the same with a left-padded batch: the mask travels with every step
                cache = KV_Cache(2, args.n_kv_heads, 10, args.head_dim)
                left = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
                where = f"[{config}] padded prefill into a KV_Cache with mask=build_attention_mask(attention_mask, T)"
                out = call(mine, x[:, :4], cos[:, :4], sin[:, :4], build_attention_mask(left[:, :4], 4), cache, 0,
                           what=where)
                _compare(out, ref, x[:, :4], cos[:, :4], sin[:, :4], 0, left[:, :4], where)
                for pos in range(4, 6):
                    where = f"[{config}] padded one-token decode at start_pos={pos} with its (B, 1, 1, S) mask"
                    step_mask = build_attention_mask(left[:, :pos + 1], 1, pos)
                    out = call(mine, x[:, pos:pos + 1], cos[:, pos:pos + 1], sin[:, pos:pos + 1], step_mask, cache,
                               pos, what=where)
                    _compare(out, ref, x[:, :pos + 1], cos[:, :pos + 1], sin[:, :pos + 1], pos, left[:, :pos + 1],
                             where)

                # 5. a chunk of 3 queries on top of 3 cached positions (chunked prefill, speculative decoding)
                cache = KV_Cache(2, args.n_kv_heads, 10, args.head_dim)
                call(mine, x[:, :3], cos[:, :3], sin[:, :3], None, cache, 0, what=f"[{config}] prefill of 3 tokens")
                where = f"[{config}] 3 new tokens at start_pos=3 on top of a filled KV_Cache, mask=None"
                out = call(mine, x[:, 3:6], cos[:, 3:6], sin[:, 3:6], None, cache, 3, what=where)
                _compare(out, ref, x[:, :6], cos[:, :6], sin[:, :6], 3, None, where)
    passed("MultiHeadGQAttention: causal, padded, cached prefill + decode and chunked prefill agree with "
           "llama3.MultiHeadGQAttention for MHA, GQA and MQA, manual and flash (SDPA) paths.")


# ------------------------------------------------------------------------------------------------- the masks
MASK_FIX = ("query t sits at position start_pos + t and sees keys s <= start_pos + t: query_pos = "
            "torch.arange(start_pos, start_pos + q_len)[:, None]; key_pos = torch.arange(S)[None, :]; mask = "
            "(key_pos <= query_pos)[None, None]; with an attention_mask (B, S): mask = (mask & "
            "attention_mask[:, None, None, :].bool()) | (key_pos == query_pos)[None, None].")


def _mask_variants(attention_mask, q_len, start_pos):
    """(mask, what is wrong) for the usual mistakes in a causal + padding mask builder."""
    kv_len = start_pos + q_len if attention_mask is None else attention_mask.shape[-1]
    query_pos = torch.arange(start_pos, start_pos + q_len)[:, None]
    key_pos = torch.arange(kv_len)[None, :]
    right = build_attention_mask(attention_mask, q_len, start_pos)
    pad = None if attention_mask is None else attention_mask.bool()

    def with_padding(causal, keys=True, diagonal=True):
        mask = causal[None, None]
        if pad is None:
            return mask
        if keys:
            mask = mask & pad[:, None, None, :]
        else:  # the padding applied to the queries
            mask = mask & pad[:, None, -q_len:, None]
        return mask | (key_pos == query_pos)[None, None] if diagonal else mask

    yield ~right, "the mask is inverted: it must be True where a query MAY attend."
    yield (with_padding(key_pos < query_pos),
           "the causal part excludes the diagonal (key s < query t): a token must see itself, or the first query "
           "sees no key at all and its softmax is NaN.")
    yield (with_padding(key_pos <= query_pos + 1),
           "the causal part lets query t see key t + 1, one token of the future.")
    if start_pos:
        yield (with_padding(key_pos <= query_pos - start_pos),
               "start_pos is ignored: the causal triangle is aligned top-left, so the T new queries at positions "
               "start_pos .. start_pos+T-1 do not see all the cached keys before them.")
    if pad is not None:
        yield with_padding(key_pos <= query_pos, keys=False), (
            "the padding mask hides padded QUERIES instead of padded KEYS: index it as attention_mask[:, None, None, "
            ":] so that it broadcasts over the keys (the last dimension).")
        yield (key_pos <= query_pos)[None, None].expand(pad.shape[0], 1, q_len, kv_len), (
            "attention_mask is ignored: padded keys are attended to.")
        yield with_padding(key_pos <= query_pos, diagonal=False), (
            "a padded query sees no key at all (its row is all False), so its softmax is 0/0 = NaN: let every query "
            "see at least itself (| key_pos == query_pos).")


@checker
def check_attention_mask(build_attention_mask_fn) -> None:
    """Check a learner's ``build_attention_mask(attention_mask (B, S) or None, q_len, start_pos=0)`` -> a boolean
    mask (B or 1, 1, T, S), True where query t (at position start_pos + t) may attend to key s."""
    left_right = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])  # row 0 left-padded, row 1 right-padded
    cases = [((None, 5, 0), "attention_mask=None, q_len=5 (training)"),
             ((None, 3, 4), "attention_mask=None, q_len=3, start_pos=4 (3 new tokens on 4 cached ones)"),
             ((left_right, 6, 0), "a padded batch (B=2, S=6), q_len=6"),
             ((torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]]), 1, 6),
              "a left-padded batch decoding one token at start_pos=6")]
    for (attention_mask, q_len, start_pos), name in cases:
        what = f"build_attention_mask on {name}"
        expected = build_attention_mask(attention_mask, q_len, start_pos)
        out = call(build_attention_mask_fn, None if attention_mask is None else attention_mask.clone(), q_len,
                   start_pos, what=what)
        if not isinstance(out, torch.Tensor):
            fail(f"{what}: returned {type(out).__name__}, not a tensor.", MASK_FIX)
        if out.dtype != torch.bool:
            fail(f"{what}: returned a {out.dtype} mask; the lesson's masks are boolean (True = may attend), which "
                 f"both masked_fill and F.scaled_dot_product_attention understand.", MASK_FIX)
        if out.dim() != 4 or out.shape[1:] != expected.shape[1:] or out.shape[0] not in (1, expected.shape[0]):
            fail(f"{what}: returned shape {tuple(out.shape)}, expected {tuple(expected.shape)} = (1 or B, 1, T, S) "
                 f"(the 1 broadcasts over the heads).", MASK_FIX)
        out = out.expand(expected.shape)
        if torch.equal(out, expected.expand(out.shape)):
            continue
        for wrong, problem in _mask_variants(attention_mask, q_len, start_pos):
            if torch.equal(out, wrong.expand(out.shape)):
                fail(f"{what}: {problem}", MASK_FIX)
        fail(f"{what}: the mask differs from the reference in {int((out != expected).sum())} places.", MASK_FIX)
    passed("build_attention_mask: causal with an offset, padded keys hidden, every query sees itself.")


# ---------------------------------------------------------------------------------------- attention by hand
BY_HAND_FIX = ("k, v = k.repeat_interleave(group_size, dim=1), v.repeat_interleave(group_size, dim=1) with group_size "
               "= q.shape[1] // k.shape[1]; scores = q @ k.transpose(-2, -1) / math.sqrt(head_dim); if mask is None "
               "and T > 1: mask = torch.ones(T, S, dtype=torch.bool).tril(); if mask is not None: scores = "
               "scores.masked_fill(~mask, float('-inf')); probs = F.dropout(F.softmax(scores.float(), dim=-1), "
               "dropout, training=dropout > 0).type_as(q); return probs @ v.")

BY_HAND_MISTAKES = (
    (dict(causal=False), "the causal mask is missing: with mask=None and T > 1 query t also attends to the future."),
    (dict(causal="shift-1"), "the causal mask is shifted by one: query t does not see itself (tril(-1)), so the "
                             "first query sees no key at all and its softmax is NaN."),
    (dict(causal="shift+1"), "the causal mask is shifted by one: query t also sees key t + 1 (tril(1))."),
    (dict(causal="always"), "a causal triangle is built for a single query (T = 1) on a cache: tril of a (1, S) "
                            "matrix hides every key but the first; with T = 1 and mask=None every key is visible."),
    (dict(mask_mode="add-bool"), "the boolean mask is added to the scores: True becomes +1 and False 0, so masked "
                                 "keys keep their weight."),
    (dict(mask_mode="fill-zero"), "masked scores are filled with 0 instead of -inf: exp(0) = 1, so masked keys "
                                  "still get weight."),
    (dict(padding=False), "the mask passed in is ignored."),
    (dict(scale="none"), "the scores are not scaled by 1 / sqrt(head_dim)."),
    (dict(scale="d"), "the scores are divided by head_dim instead of its square root."),
    (dict(softmax_dim=-2), "the softmax runs over the queries; each query's weights over the keys must sum to 1."),
    (dict(expand="repeat"), "the K/V heads are expanded with repeat (kv0, kv1, kv0, kv1, ...), so query head h reads "
                            "the wrong K/V head; it belongs to group h // group_size (repeat_interleave)."),
)


def _attend(q, k, v, mask, *, causal=True, padding=True, scale="sqrt", softmax_dim=-1, expand="interleave",
            mask_mode="fill-inf"):
    """softmax(q k^T / sqrt(D) + mask) v on q (B, H, T, D), k, v (B, KV, S, D), optionally with one mistake."""
    group = q.shape[1] // k.shape[1]
    if expand == "interleave":
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    else:
        k, v = k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1)
    divisor = {"sqrt": math.sqrt(q.shape[-1]), "none": 1.0, "d": q.shape[-1]}[scale]
    scores = q @ k.transpose(-2, -1) / divisor  # (B, H, T, S)
    seq, kv_len = scores.shape[-2:]
    if mask is None or not padding:
        mask = None
        ones = torch.ones(seq, kv_len, dtype=torch.bool)
        if causal == "always" or (causal is not False and seq > 1):
            mask = ones.tril({True: 0, "always": 0, "shift-1": -1, "shift+1": 1}[causal])
    if mask is not None:
        if mask_mode == "fill-inf":
            scores = scores.masked_fill(~mask, float("-inf"))
        elif mask_mode == "fill-zero":
            scores = scores.masked_fill(~mask, 0.0)
        else:
            scores = scores + mask.to(scores.dtype)
    return F.softmax(scores.float(), dim=softmax_dim).type_as(q) @ v


@checker
def check_attention_by_hand(attention_by_hand) -> None:
    """Check a learner's ``attention_by_hand(q (B, H, T, D), k (B, KV, S, D), v, mask=None, dropout=0.0)`` ->
    (B, H, T, D): the K/V heads repeated for their group, scaled scores, the mask (causal when None and T > 1),
    the softmax over the keys, dropout on the weights."""
    gen = torch.Generator().manual_seed(0)
    key_mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    for heads, n_kv in ((6, 2), (3, 3), (4, 1)):  # GQA, multi-head, multi-query
        cases = [(6, 6, None, "mask=None, T = S = 6 (causal)"),
                 (6, 6, build_attention_mask(key_mask, 6), "a padding mask from build_attention_mask"),
                 (1, 7, None, "one query on 7 cached keys, mask=None"),
                 (3, 7, build_attention_mask(None, 3, 4), "3 queries at start_pos=4 with the offset mask")]
        for seq, kv_len, mask, name in cases:
            what = f"attention_by_hand (heads={heads}, n_kv_heads={n_kv}) on {name}"
            q = torch.randn(2, heads, seq, 8, generator=gen)
            k, v = torch.randn(2, n_kv, kv_len, 8, generator=gen), torch.randn(2, n_kv, kv_len, 8, generator=gen)
            out = call(attention_by_hand, q, k, v, mask, 0.0, what=what)
            expected = _attend(q, k, v, mask)
            if not isinstance(out, torch.Tensor) or out.shape != expected.shape:
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                fail(f"{what}: returned {shape}, expected {tuple(expected.shape)} = (B, heads, T, head_dim).",
                     BY_HAND_FIX)
            if close(out, expected, atol=ATOL, rtol=ATOL):
                continue
            for knobs, problem in BY_HAND_MISTAKES:
                if close(out, _attend(q, k, v, mask, **knobs), atol=ATOL, rtol=ATOL, equal_nan=True):
                    fail(f"{what}: {problem}", BY_HAND_FIX)
            if not torch.isfinite(out).all():
                fail(f"{what}: the output contains NaN: some query attends to no key at all.", BY_HAND_FIX)
            err = (out.float() - expected).abs().max().item()
            fail(f"{what}: the output differs from softmax(q k^T / sqrt(D) + mask) v (max abs error {err:.3g}).",
                 BY_HAND_FIX)
    # dropout must have its documented effect: on the attention weights, only when dropout > 0
    q = torch.randn(1, 2, 6, 8, generator=gen)
    k, v = torch.randn(1, 2, 6, 8, generator=gen), torch.randn(1, 2, 6, 8, generator=gen)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        dropped = call(attention_by_hand, q, k, v, None, 0.5, what="attention_by_hand(..., dropout=0.5)")
    if isinstance(dropped, torch.Tensor) and close(dropped, _attend(q, k, v, None), atol=ATOL, rtol=ATOL):
        fail("attention_by_hand(..., dropout=0.5): the dropout argument has no effect.",
             "probs = F.dropout(probs, p=dropout, training=dropout > 0) before probs @ v.")
    passed("attention_by_hand: K/V heads repeat_interleave'd, scores / sqrt(D), causal and explicit masks, softmax "
           "over the keys, dropout on the weights.")
