"""check_decoder_layer: the learner's DecoderLayer against llama3.DecoderLayer on the same weights.

The reference is h = x + attention(attention_norm(x)); out = h + feed_forward(ffn_norm(h)). When the learner's
output differs, the checker computes the usual wrong wirings of the same sub-modules (post-norm, a missing
residual, the norms swapped, ...) and names the one that matches.
"""

from __future__ import annotations

import copy

import torch

from llama3.attention import build_attention_mask
from llama3.checks._common import build, call, checker, close, copy_weights, fail, passed
from llama3.config import ModelArgs
from llama3.decoder import DecoderLayer
from llama3.kv_cache import KV_Cache
from llama3.rope import RoPE

WHAT = "DecoderLayer"
ATOL = 1e-4  # same operations on the same float32 weights: only summation order may differ


def _args(d_model: int, heads: int, group_size: int, use_flash: bool, **extra) -> ModelArgs:
    return ModelArgs(vocab_size=64, d_model=d_model, heads=heads, group_size=group_size, num_layers=1,
                     max_seq_len=32, multiple_of=16, use_flash=use_flash, **extra)


def _reference(args: ModelArgs, seed: int) -> DecoderLayer:
    torch.manual_seed(seed)
    layer = DecoderLayer(args).eval()
    with torch.no_grad():  # norm weights away from 1, so that a norm applied in the wrong place shows
        layer.attention_norm.weight.copy_(1 + 0.5 * torch.randn(args.d_model))
        layer.ffn_norm.weight.copy_(1 + 0.5 * torch.randn(args.d_model))
    return layer


def _wirings(ref: DecoderLayer, x, cos, sin, mask) -> list[tuple[torch.Tensor, str, str]]:
    """Wrong ways to wire the same sub-modules: (output, what is wrong, how to fix it)."""
    def attn(y):
        return ref.attention(y, cos, sin, mask)

    ffn, n1, n2 = ref.feed_forward, ref.attention_norm, ref.ffn_norm
    h = x + attn(n1(x))
    h_no_res = attn(n1(x))
    post = n1(x + attn(x))
    pre_norm = ("h = x + self.attention(self.attention_norm(x), cos, sin, mask, kv_cache, start_pos); "
                "return h + self.feed_forward(self.ffn_norm(h)).")
    default_eps = copy.deepcopy(ref)
    default_eps.attention_norm.eps = default_eps.ffn_norm.eps = 1e-5
    return [
        (n2(post + ffn(post)),
         "this is POST-norm (norm(x + attention(x)), as in the 2017 Transformer); Llama is PRE-norm.",
         "normalise the input of each branch and add the branch to the un-normalised x: " + pre_norm),
        (ffn(n2(h_no_res)), "both residual connections are missing.",
         "add each branch's output to its input: " + pre_norm),
        (h_no_res + ffn(n2(h_no_res)), "the attention residual is missing.",
         "h = x + attention(attention_norm(x)), not h = attention(attention_norm(x))."),
        (ffn(n2(h)), "the feed-forward residual is missing.",
         "out = h + feed_forward(ffn_norm(h)), not out = feed_forward(ffn_norm(h))."),
        (x + attn(n2(x)) + ffn(n1(x + attn(n2(x)))), "attention_norm and ffn_norm are swapped.",
         "attention_norm goes before the attention, ffn_norm before the feed-forward: " + pre_norm),
        (h + ffn(n1(h)), "attention_norm is used for both branches; the feed-forward branch has its own ffn_norm "
         "(with its own weight).", "return h + self.feed_forward(self.ffn_norm(h))."),
        (x + attn(n2(x)) + ffn(n2(x + attn(n2(x)))), "ffn_norm is used for both branches; the attention branch has "
         "its own attention_norm (with its own weight).", "self.attention(self.attention_norm(x), ...)."),
        (h + ffn(n2(x)), "the feed-forward reads x instead of h: the two branches run in sequence.",
         "out = h + feed_forward(ffn_norm(h)) with h the output of the attention branch."),
        (n2(n1(x) + attn(n1(x))) + ffn(n2(n1(x) + attn(n1(x)))),
         "the residual adds the NORMALISED input; only the branch input is normalised.",
         "add the branch to x itself: " + pre_norm),
        (x + attn(x) + ffn(x + attn(x)), "the norms are missing.",
         "apply attention_norm before the attention and ffn_norm before the feed-forward: " + pre_norm),
        (default_eps(x, cos, sin, mask), f"args.norm_eps={ref.attention_norm.eps:g} is not passed to the RMSNorms "
         f"(yours use eps=1e-5).", "RMSNorm(args.d_model, eps=args.norm_eps) for both norms."),
    ]


def _compare(out, expected, ref, x, cos, sin, mask, what: str) -> None:
    if not isinstance(out, torch.Tensor):
        fail(f"{what}: forward must return a tensor (B, T, d_model), got {type(out).__name__}.")
    if out.shape != expected.shape:
        fail(f"{what}: output shape {tuple(out.shape)}, expected {tuple(expected.shape)} (the same as x).")
    if close(out, expected, atol=ATOL):
        return
    with torch.no_grad():
        for wrong, problem, fix in _wirings(ref, x, cos, sin, mask):
            if close(out, wrong, atol=ATOL):
                fail(f"{what}: {problem}", fix)
    err = (out.float() - expected.float()).abs().max().item()
    fail(f"{what}: output differs from the reference (max abs error {err:.3g}).",
         "h = x + attention(attention_norm(x), cos, sin, mask, kv_cache, start_pos); "
         "out = h + feed_forward(ffn_norm(h)).")


def _check_structure(learner, ref, where: str) -> None:
    """Sub-modules named, separate, and sized from args (before the weights are loaded, which would hide sharing)."""
    norms = (getattr(learner, "attention_norm", None), getattr(learner, "ffn_norm", None))
    if norms[0] is not None and norms[0] is norms[1]:
        fail(f"{where}: attention_norm and ffn_norm are one module shared by both sub-layers; each branch has its own "
             f"norm with its own learned weight.",
             "two modules: self.attention_norm = RMSNorm(args.d_model, eps=args.norm_eps) and self.ffn_norm = "
             "RMSNorm(args.d_model, eps=args.norm_eps).")
    mine_w1 = getattr(getattr(learner, "feed_forward", None), "w1", None)
    if isinstance(mine_w1, torch.nn.Linear) and mine_w1.weight.shape != ref.feed_forward.w1.weight.shape:
        fail(f"{where}: the feed-forward's hidden size is {mine_w1.weight.shape[0]}, expected "
             f"{ref.feed_forward.w1.weight.shape[0]}: args' FFN fields are not passed on.",
             "FFN(args.d_model, args.multiple_of, args.ffn_dim_multiplier, args.ffn_hidden_dim).")


def _check_config(cls, d_model: int, heads: int, group_size: int, use_flash: bool, seed: int, **extra) -> None:
    args = _args(d_model, heads, group_size, use_flash, **extra)
    where = f"{WHAT}(d_model={d_model}, heads={heads}, group_size={group_size}, use_flash={use_flash}" + "".join(
        f", {k}={v}" for k, v in extra.items()) + ")"
    ref = _reference(args, seed)
    learner = build(cls, args, what=where)
    _check_structure(learner, ref, where)
    copy_weights(learner, ref, where)
    learner.eval()
    rope = RoPE(args.head_dim, args.rope_theta)
    gen = torch.Generator().manual_seed(seed)
    batch, seq = 2, 7
    # Scale and shift the input so that a norm in the wrong place changes the output a lot.
    x = 3 * torch.randn(batch, seq, d_model, generator=gen) + 1  # (B, T, d)
    cos, sin = rope.cos_sin(torch.arange(seq))

    with torch.no_grad():
        # 1. plain causal forward
        out = call(learner, x, cos, sin, what=f"{where}.forward(x, cos, sin)")
        _compare(out, ref(x, cos, sin), ref, x, cos, sin, None, f"{where}, causal forward")

        # 2. a left-padding mask must reach the attention
        padding = torch.ones(batch, seq, dtype=torch.long)
        padding[1, :3] = 0
        mask = build_attention_mask(padding, seq)  # (B, 1, T, T)
        out = call(learner, x, cos, sin, mask, what=f"{where}.forward(x, cos, sin, mask)")
        expected = ref(x, cos, sin, mask)
        if close(out, ref(x, cos, sin), atol=ATOL) and not close(expected, ref(x, cos, sin), atol=ATOL):
            fail(f"{where}: the mask is ignored: padded keys are attended to.",
                 "pass mask on: self.attention(self.attention_norm(x), cos, sin, mask, kv_cache, start_pos).")
        _compare(out, expected, ref, x, cos, sin, mask, f"{where}, with a padding mask")

        # 3. cached decoding: a prefill of 4 positions, then one position at a time, against the full sequence
        full = ref(x, cos, sin)
        ours_cache = KV_Cache(batch, args.n_kv_heads, seq, args.head_dim)
        prefill = 4
        out = call(learner, x[:, :prefill], cos[:, :prefill], sin[:, :prefill], None, ours_cache, 0,
                   what=f"{where}.forward(x, cos, sin, None, kv_cache, start_pos=0)")
        _compare(out, full[:, :prefill], ref, x[:, :prefill], cos[:, :prefill], sin[:, :prefill], None,
                 f"{where}, prefill into a KV cache")
        for pos in range(prefill, seq):
            step = slice(pos, pos + 1)
            out = call(learner, x[:, step], cos[:, step], sin[:, step], None, ours_cache, pos,
                       what=f"{where}.forward(x, cos, sin, None, kv_cache, start_pos={pos})")
            if isinstance(out, torch.Tensor) and close(out, ref(x[:, step], cos[:, step], sin[:, step]), atol=ATOL):
                fail(f"{where}: with a KV cache, the new position attends only to itself: kv_cache and start_pos do "
                     f"not reach the attention.",
                     "pass them on: self.attention(self.attention_norm(x), cos, sin, mask, kv_cache, start_pos).")
            if not close(out, full[:, step], atol=ATOL):
                err = float("nan")
                if isinstance(out, torch.Tensor) and out.shape == full[:, step].shape:
                    err = (out.float() - full[:, step]).abs().max().item()
                fail(f"{where}: cached decoding at start_pos={pos} differs from the full-sequence output (max abs "
                     f"error {err:.3g}).", "pass kv_cache and start_pos on to self.attention unchanged.")


@checker
def check_decoder_layer(DecoderLayerClass) -> None:
    """Check a learner's ``DecoderLayer(args)`` with ``forward(x, cos, sin, mask=None, kv_cache=None, start_pos=0)``."""
    _check_config(DecoderLayerClass, d_model=32, heads=4, group_size=2, use_flash=True, seed=0)  # GQA
    _check_config(DecoderLayerClass, d_model=24, heads=3, group_size=1, use_flash=False, seed=1)  # odd sizes, MHA
    # every field of args must reach its sub-module: a large norm_eps changes the output, an explicit FFN size too
    _check_config(DecoderLayerClass, d_model=32, heads=4, group_size=4, use_flash=True, seed=2, norm_eps=0.5,
                  ffn_hidden_dim=40)
    passed("DecoderLayer: pre-norm residual block matches the reference (causal, padded, cached; GQA and MHA).")
