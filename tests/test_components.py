"""Each component against hand-computed values, its formula, or a mathematical property."""

import math

import pytest
import torch
import torch.nn.functional as F

from llama3 import FFN, KV_Cache, ModelArgs, MultiHeadGQAttention, RMSNorm, RoPE, build_attention_mask
from llama3.attention import check_attention_mask, grouped_sdpa
from llama3.config import ffn_hidden_size
from llama3.rope import apply_rotary, rope_frequencies
from tests.conftest import tiny_args


# ------------------------------------------------------------------------------------------------ ModelArgs
@pytest.mark.parametrize("field,value,phrase", [
    ("d_model", 30, "d_model=30 is not divisible by heads=4"),
    ("group_size", 3, "heads=4 is not divisible by group_size=3"),
    ("vocab_size", 0, "vocab_size must be at least 1"),
    ("num_layers", 0, "num_layers must be at least 1"),
    ("d_model", 12, "head_dim=3"),  # 12 / 4 heads = 3: odd
    ("dropout", 1.0, "dropout must be in [0, 1)"),
    ("pad_token_id", 97, "pad_token_id=97 is outside the vocabulary"),
])
def test_model_args_refuses_impossible_values(field, value, phrase):
    with pytest.raises(ValueError, match=re_escape(phrase)):
        tiny_args(**{field: value})


def re_escape(text):
    import re

    return re.escape(text)


def test_model_args_type_and_tokenizer_checks(tokenizer):
    with pytest.raises(TypeError, match="heads must be an int"):
        tiny_args(heads=4.0)
    with pytest.raises(ValueError, match="does not match the tokenizer"):
        ModelArgs(vocab_size=50257, tokenizer=tokenizer, d_model=32, heads=4, group_size=2, num_layers=1,
                  max_seq_len=16)
    args = ModelArgs(vocab_size=len(tokenizer), tokenizer=tokenizer, d_model=32, heads=4, group_size=2, num_layers=1,
                     max_seq_len=16)
    assert args.pad_token_id == 50257 and args.n_kv_heads == 2 and args.head_dim == 8
    assert ModelArgs.from_dict(args.to_dict()) == args


def test_unknown_rope_scaling_is_refused():
    with pytest.raises(ValueError, match="rope_type='yarn' is not supported"):
        tiny_args(rope_scaling={"rope_type": "yarn", "factor": 2.0})


# ------------------------------------------------------------------------------------------------- RMSNorm
def test_rmsnorm_matches_its_formula():
    torch.manual_seed(0)
    norm = RMSNorm(6, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 7.0))
    x = torch.randn(3, 5, 6)
    expected = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-5) * torch.arange(1.0, 7.0)
    torch.testing.assert_close(norm(x), expected, atol=1e-6, rtol=1e-6)
    # a hand-computed row: x = (3, 4) -> rms = sqrt(12.5)
    norm2 = RMSNorm(2, eps=0.0)
    torch.testing.assert_close(norm2(torch.tensor([3.0, 4.0])), torch.tensor([3.0, 4.0]) / math.sqrt(12.5))


def test_rmsnorm_casts_before_the_weight_in_bfloat16():
    torch.manual_seed(0)
    norm = RMSNorm(64)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(4, 64).bfloat16()
    x32 = x.float()
    expected = norm.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-5)).bfloat16()
    assert torch.equal(norm(x), expected)


# ----------------------------------------------------------------------------------------------------- RoPE
def test_rope_keeps_norms_of_every_pair():
    torch.manual_seed(0)
    rope = RoPE(16, theta=10000.0)
    x = torch.randn(2, 9, 3, 16)
    out = rope(x, 5)
    pair_norms = lambda t: t.unflatten(-1, (8, 2)).norm(dim=-1)
    torch.testing.assert_close(pair_norms(out), pair_norms(x))


def test_rope_dot_product_depends_only_on_the_offset():
    torch.manual_seed(0)
    rope = RoPE(32)
    q, k = torch.randn(1, 1, 1, 32), torch.randn(1, 1, 1, 32)
    dots = [(rope(q, m) * rope(k, m - 3)).sum().item() for m in (3, 10, 50, 200)]
    assert max(dots) - min(dots) < 1e-4
    assert abs((rope(q, 10) * rope(k, 10)).sum().item() - dots[0]) > 1e-3  # another offset, another score


def test_rope_rotates_adjacent_pairs_by_position_times_frequency():
    rope = RoPE(4, theta=100.0)  # frequencies 1 and 100^(-1/2) = 0.1
    x = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 1, 4)
    out = rope(x, torch.tensor([2])).flatten()
    expected = torch.tensor([math.cos(2.0), math.sin(2.0), math.cos(0.2), math.sin(0.2)])
    torch.testing.assert_close(out, expected)


def test_rope_positions_per_row_and_start_offset_agree():
    torch.manual_seed(0)
    rope = RoPE(8)
    x = torch.randn(2, 4, 2, 8)
    by_offset = rope(x, 6)
    by_tensor = rope(x, torch.arange(6, 10).expand(2, 4))
    torch.testing.assert_close(by_offset, by_tensor)
    cos, sin = rope.cos_sin(torch.arange(6, 10))
    torch.testing.assert_close(apply_rotary(x, cos, sin), by_offset)


def test_rope_scaling_matches_transformers():
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaling = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
    config = LlamaConfig(hidden_size=2048, num_attention_heads=32, rope_theta=500000.0, rope_scaling=scaling,
                         max_position_embeddings=131072)
    hf_inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    ours = rope_frequencies(64, 500000.0, tiny_args(rope_scaling=scaling).rope_scaling)
    torch.testing.assert_close(ours, hf_inv_freq, rtol=0, atol=0)
    plain = rope_frequencies(64, 500000.0)
    assert torch.equal(ours[:8], plain[:8]) and torch.allclose(ours[-4:], plain[-4:] / 32)


# ------------------------------------------------------------------------------------------------------ FFN
@pytest.mark.parametrize("d_model,multiple_of,multiplier,expected", [
    (4096, 1024, 1.3, 14336),  # Llama 3 8B
    (2048, 256, 1.5, 8192),  # Llama 3.2 1B
    (4096, 256, None, 11008),  # Llama 2 7B
    (256, 256, None, 768),  # the seed config: int(2 * 1024 / 3) = 682 -> 768
])
def test_ffn_hidden_size_rule(d_model, multiple_of, multiplier, expected):
    assert ffn_hidden_size(d_model, multiple_of, multiplier) == expected
    if d_model <= 256:
        assert FFN(d_model, multiple_of, multiplier).w1.out_features == expected


def test_ffn_is_swiglu_and_explicit_hidden_size_wins():
    torch.manual_seed(0)
    ffn = FFN(8, hidden_dim=12)
    assert (ffn.w1.weight.shape, ffn.w2.weight.shape, ffn.w3.weight.shape) == ((12, 8), (8, 12), (12, 8))
    x = torch.randn(2, 3, 8)
    gate = x @ ffn.w1.weight.T
    expected = ((gate * torch.sigmoid(gate)) * (x @ ffn.w3.weight.T)) @ ffn.w2.weight.T
    torch.testing.assert_close(ffn(x), expected)


# ------------------------------------------------------------------------------------------------- KV cache
def test_kv_cache_reads_back_what_was_written_and_refuses_overflow():
    cache = KV_Cache(max_batch_size=2, n_kv_heads=3, max_seq_len=6, head_dim=4)
    k1, v1 = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    k, v = cache.update(0, k1, v1)
    assert torch.equal(k, k1) and torch.equal(v, v1)
    k2, v2 = torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4)
    k, v = cache.update(4, k2, v2)
    assert k.shape == (2, 3, 5, 4) and torch.equal(k, torch.cat([k1, k2], 2)) and torch.equal(v, torch.cat([v1, v2], 2))
    ptr = cache.k_cache.data_ptr()
    cache.update(5, k2, v2)
    assert cache.k_cache.data_ptr() == ptr  # written in place, never reallocated
    with pytest.raises(ValueError, match="KV cache overflow"):
        cache.update(6, k2, v2)
    with pytest.raises(ValueError, match="holds 2 sequences"):
        KV_Cache(2, 3, 6, 4).update(0, torch.randn(3, 3, 1, 4), torch.randn(3, 3, 1, 4))
    with pytest.raises(ValueError, match="leave a gap"):
        KV_Cache(2, 3, 6, 4).update(2, k2, v2)
    cache.reset()
    assert cache.seq_len == 0 and not cache.k_cache.any()


# ------------------------------------------------------------------------------------------------ attention
def run_attention(attn, x, rope, mask=None, cache=None, start_pos=0, positions=None):
    positions = torch.arange(start_pos, start_pos + x.shape[1]) if positions is None else positions
    cos, sin = rope.cos_sin(positions)
    return attn(x, cos, sin, mask, cache, start_pos)


@pytest.mark.parametrize("group_size", [1, 2, 4])
def test_flash_and_manual_attention_agree(group_size):
    torch.manual_seed(0)
    args = tiny_args(group_size=group_size)
    flash = MultiHeadGQAttention(args).eval()
    manual = MultiHeadGQAttention(tiny_args(group_size=group_size, use_flash=False)).eval()
    manual.load_state_dict(flash.state_dict())
    rope = RoPE(args.head_dim)
    x = torch.randn(2, 10, args.d_model)
    # training: causal, then causal + padding
    torch.testing.assert_close(run_attention(flash, x, rope), run_attention(manual, x, rope), atol=1e-5, rtol=1e-5)
    padding = torch.ones(2, 10, dtype=torch.long)
    padding[1, :3] = 0
    mask = build_attention_mask(padding, 10)
    a, b = run_attention(flash, x, rope, mask), run_attention(manual, x, rope, mask)
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # prefill 7 positions into a cache, then a 2-token prefill on top, then one-token decode
    outs = {}
    for name, attn in (("flash", flash), ("manual", manual)):
        cache = KV_Cache(2, args.n_kv_heads, 12, args.head_dim)
        parts = [run_attention(attn, x[:, :7], rope, cache=cache),
                 run_attention(attn, x[:, 7:9], rope, cache=cache, start_pos=7),
                 run_attention(attn, x[:, 9:10], rope, cache=cache, start_pos=9)]
        outs[name] = torch.cat(parts, dim=1)
    full = run_attention(flash, x, rope)
    torch.testing.assert_close(outs["flash"], full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs["manual"], full, atol=1e-5, rtol=1e-5)


def test_gqa_shares_kv_heads_in_repeat_interleave_order():
    """With group_size 2, query heads 0 and 1 read K/V head 0: giving them equal queries gives equal outputs."""
    torch.manual_seed(0)
    args = tiny_args(group_size=2, use_flash=False)
    attn = MultiHeadGQAttention(args).eval()
    with torch.no_grad():
        wq = attn.wq.weight.view(args.heads, args.head_dim, -1)
        wq[1] = wq[0]  # heads 0 and 1 share K/V head 0 -> identical outputs
        wq[2] = wq[0]  # head 2 reads K/V head 1 -> different output
    rope = RoPE(args.head_dim)
    x = torch.randn(1, 6, args.d_model)
    cos, sin = rope.cos_sin(torch.arange(6))
    q = attn.wq(x).view(1, 6, args.heads, args.head_dim)
    k = attn.wk(x).view(1, 6, args.n_kv_heads, args.head_dim)
    v = attn.wv(x).view(1, 6, args.n_kv_heads, args.head_dim)
    q, k = apply_rotary(q, cos, sin).transpose(1, 2), apply_rotary(k, cos, sin).transpose(1, 2)
    heads = attn.attention_by_hand(q, k, v.transpose(1, 2), None, 0.0)  # (1, H, T, D)
    torch.testing.assert_close(heads[:, 0], heads[:, 1])
    assert not torch.allclose(heads[:, 0], heads[:, 2], atol=1e-3)


def test_attention_mask_shapes_and_self_visibility():
    padding = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    mask = build_attention_mask(padding, 4)
    assert mask.shape == (2, 1, 4, 4)
    assert mask[1, 0].equal(torch.ones(4, 4, dtype=torch.bool).tril())
    assert mask[0, 0, 3].tolist() == [False, False, True, True]
    assert mask[0, 0, 0].tolist() == [True, False, False, False]  # a pad query sees only itself: no NaN
    offset = build_attention_mask(None, 2, start_pos=3)
    assert offset[0, 0].tolist() == [[True] * 4 + [False], [True] * 5]
    assert F.softmax(torch.zeros(4).masked_fill(~mask[0, 0, 0], float("-inf")), -1).isfinite().all()


@pytest.mark.parametrize("seq", [1, 5])
def test_grouped_sdpa_equals_attention_with_repeated_kv_heads(seq):
    """The GQA fold (one query row: a group's heads become rows of their K/V head) and enable_gqa both equal plain
    attention on K/V heads repeated in repeat_interleave order, with and without a padding mask."""
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, seq, 8), torch.randn(2, 2, 9, 8), torch.randn(2, 2, 9, 8)
    padding = torch.ones(2, 9, dtype=torch.long)
    padding[1, :3] = 0
    # no mask: one query row sees every key; several rows on top of a cache need the offset mask
    causal = None if seq == 1 else build_attention_mask(None, seq, 9 - seq)
    for mask in (causal, build_attention_mask(padding, seq, 9 - seq)):
        scores = q @ k.repeat_interleave(2, 1).transpose(-2, -1) / math.sqrt(8)  # (2, 4, seq, 9)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        expected = scores.softmax(-1) @ v.repeat_interleave(2, 1)
        torch.testing.assert_close(grouped_sdpa(q, k, v, mask), expected, atol=1e-5, rtol=1e-5)


def test_check_attention_mask_names_each_problem():
    check_attention_mask(torch.tensor([[0, 1], [1, 1]]), (2, 2))
    check_attention_mask(torch.tensor([[False, True], [True, True]]), (2, 2))
    for mask, phrase in ((torch.ones(4), "must have shape"), (torch.tensor([[1, 3], [1, 1]]), "only 0"),
                         (torch.tensor([[0, 0], [1, 1]]), "row 0 has no real token")):
        with pytest.raises(ValueError, match=phrase):
            check_attention_mask(mask, (2, 2))
    with pytest.raises(TypeError, match="must be a tensor"):
        check_attention_mask([[1, 1]], (1, 2))
