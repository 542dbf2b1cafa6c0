"""The fast decode path behind ``generate_kv``, in the spirit of gpt-fast.

The readable model (``llama3.model``) is what learners build and what trains. Decoding one token at a time is a
different workload: every weight is read once per token to multiply ONE row, so the speed is set by memory
bandwidth and per-call overhead, not by arithmetic. This module re-lays the same weights for that workload:

- q, k and v projections fused into one matrix, and the gate and up projections into another: 4 products per
  layer instead of 7;
- every matrix stored transposed, (in, out), so a one-row product streams memory contiguously (on the 2-core CPU
  this measured ~2x faster than ``nn.Linear``'s (out, in) layout);
- a static-shape step: the KV cache is preallocated to its full length and attended with a mask, the new
  position is written with ``index_copy_``, so every step has identical shapes and ``torch.compile`` can fuse the
  elementwise work (and on CUDA capture the step in a CUDA graph with mode "reduce-overhead").

``generate_kv`` always decodes through ``decode_step``; ``compile=True`` runs it under ``torch.compile``. Prefill runs
through the readable model into the same cache buffers. Greedy tokens are identical to the readable cached loop
(``generation.start_decoding``) and to ``generate`` (tested). The re-laid weights are a copy, built on the
first call and kept on the model until its parameters change (``del model._fast_weights`` frees them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llama3.generation import new_kv_caches
from llama3.norm import rms_norm
from llama3.rope import apply_rotary


class FastWeights:
    """The model's weights re-laid for one-row products (a copy: about the model's size again in memory)."""

    def __init__(self, model):
        args = model.args
        self.args = args
        self.embedding = model.tok_embeddings.weight.detach()
        self.layers = []
        for layer in model.layers:
            attn, ffn = layer.attention, layer.feed_forward
            self.layers.append(dict(
                attention_norm=layer.attention_norm.weight.detach(),
                wqkv=torch.cat([attn.wq.weight, attn.wk.weight, attn.wv.weight]).detach().t().contiguous(),
                wo=attn.wo.weight.detach().t().contiguous(),
                ffn_norm=layer.ffn_norm.weight.detach(),
                w13=torch.cat([ffn.w1.weight, ffn.w3.weight]).detach().t().contiguous(),
                w2=ffn.w2.weight.detach().t().contiguous(),
            ))
        self.norm = model.norm.weight.detach()
        self.output = model.output.weight.detach().t().contiguous()  # (d_model, vocab)
        self.inv_freq = model.rope.inv_freq.detach()
        self.key = weights_key(model)


def weights_key(model) -> tuple:
    """Identifies the current weights: a changed parameter (training, load_state_dict) changes the key."""
    return tuple((p.data_ptr(), p._version) for p in model.parameters())


def fast_weights(model) -> FastWeights:
    cached = getattr(model, "_fast_weights", None)
    if cached is None or cached.key != weights_key(model):
        cached = FastWeights(model)
        model._fast_weights = cached
    return cached


def layer_step(x: torch.Tensor, attention_norm: torch.Tensor, wqkv: torch.Tensor, wo: torch.Tensor,
               ffn_norm: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, k_cache: torch.Tensor,
               v_cache: torch.Tensor, input_pos: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               mask: torch.Tensor, eps: float, heads: int, kv_heads: int) -> torch.Tensor:
    """One decoder layer for one new token per row. x (B, 1, d); k_cache, v_cache (B, KV, L, D) written at slot
    input_pos (1,); cos, sin (B, 1, 1, D/2); mask (B, 1, 1, L) the visible slots. Every shape is static."""
    batch = x.shape[0]
    head_dim = k_cache.shape[-1]
    h = rms_norm(x, attention_norm, eps)
    q, k, v = (h @ wqkv).split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
    q = apply_rotary(q.view(batch, 1, heads, head_dim), cos, sin)
    k = apply_rotary(k.view(batch, 1, kv_heads, head_dim), cos, sin)
    k_cache.index_copy_(2, input_pos, k.transpose(1, 2))
    v_cache.index_copy_(2, input_pos, v.view(batch, 1, kv_heads, head_dim).transpose(1, 2))
    # the group's query heads become query rows of their K/V head: plain attention, no K/V copy
    q = q.view(batch, kv_heads, heads // kv_heads, head_dim)  # (B, KV, G, D)
    out = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=mask)
    x = x + out.reshape(batch, 1, heads * head_dim) @ wo
    h = rms_norm(x, ffn_norm, eps)
    gate, up = (h @ w13).chunk(2, dim=-1)
    return x + (F.silu(gate) * up) @ w2


def decode_step(weights: FastWeights, caches: list[tuple[torch.Tensor, torch.Tensor]], token: torch.Tensor,
                input_pos: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, layer_fn=layer_step
                ) -> torch.Tensor:
    """One token for every row: token (B, 1), input_pos (1,) the cache slot, positions (B, 1) the RoPE positions,
    mask (B, 1, 1, L) the visible cache slots. Returns the logits (B, vocab)."""
    args = weights.args
    angles = positions[..., None].float() * weights.inv_freq  # (B, 1, D/2)
    cos, sin = angles.cos()[:, :, None, :], angles.sin()[:, :, None, :]  # (B, 1, 1, D/2)
    x = F.embedding(token, weights.embedding)  # (B, 1, d)
    for layer, (k_cache, v_cache) in zip(weights.layers, caches):
        x = layer_fn(x, layer["attention_norm"], layer["wqkv"], layer["wo"], layer["ffn_norm"], layer["w13"],
                     layer["w2"], k_cache, v_cache, input_pos, cos, sin, mask, args.norm_eps, args.heads,
                     args.n_kv_heads)
    x = rms_norm(x, weights.norm, args.norm_eps)
    return (x @ weights.output)[:, 0]  # (B, vocab)


_COMPILED = {}


def compiled_decode_step(device_type: str):
    """decode_step under torch.compile.

    CPU: only the repeated layer is compiled ("regional compilation"), once, and all layers reuse it, so the first
    call's compile time does not grow with depth. CUDA: the whole step is compiled with mode "reduce-overhead",
    which captures it in a CUDA graph (one launch per token instead of hundreds), as gpt-fast does.
    """
    if device_type not in _COMPILED:
        if device_type == "cuda":
            step = torch.compile(decode_step, mode="reduce-overhead", fullgraph=True, dynamic=False)
            _COMPILED[device_type] = lambda *a: step(*a).clone()  # a CUDA graph reuses its output buffer
        else:
            layer_fn = torch.compile(layer_step, fullgraph=True, dynamic=False)
            _COMPILED[device_type] = lambda *a: decode_step(*a, layer_fn=layer_fn)
    return _COMPILED[device_type]


def start_fast_decoding(model, ids, mask, total_len, compile: bool = False):
    """Prefill through the readable model, then decode on the static-shape step. Same contract as
    ``generation.start_decoding``: returns (logits of the last prompt position, next_logits(token, position))."""
    batch, prompt_len = ids.shape
    device = ids.device
    weights = fast_weights(model)
    caches = new_kv_caches(model, batch, total_len)
    logits = model(ids, mask, kv_caches=caches, logits_to_keep=1).logits[:, -1]  # prefill
    buffers = [(c.k_cache, c.v_cache) for c in caches]
    if compile and device.type == "cuda":
        # A CUDA graph replays fixed addresses: declare the weights and caches static, or every replay would
        # first copy them into the graph's own input buffers.
        tensors = [t for layer in weights.layers for t in layer.values()] + [t for kv in buffers for t in kv]
        for tensor in tensors + [weights.embedding, weights.norm, weights.output, weights.inv_freq]:
            torch._dynamo.mark_static_address(tensor)
    step = compiled_decode_step(device.type) if compile else decode_step

    # visible[b, s]: cache slot s holds a real token of row b that the next query may see
    visible = torch.zeros(batch, 1, 1, total_len, dtype=torch.bool, device=device)
    visible[:, 0, 0, :prompt_len] = True if mask is None else mask.bool()
    positions = visible.flatten(1).sum(-1, keepdim=True) - 1  # (B, 1) RoPE position of the last real token

    def next_logits(token: torch.Tensor, cur_len: int) -> torch.Tensor:
        nonlocal positions
        visible[..., cur_len] = True
        positions = positions + 1
        return step(weights, buffers, token[:, None], torch.tensor([cur_len], device=device), positions, visible)

    return logits, next_logits
