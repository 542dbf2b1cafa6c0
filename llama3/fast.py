"""The fast decoder behind ``generate_kv``, in the spirit of gpt-fast.

The readable model (``llama3.model``) is what learners build and what trains. Decoding one token at a time is a
different workload: every weight is read once per token to multiply ONE row, so the speed is set by memory
bandwidth and per-call overhead, not by arithmetic. ``FastDecoder`` keeps ``Decoder``'s interface (prefill through
the readable model into the same KV caches, then ``step``) and re-lays the weights of each call for that workload:

- q, k and v projections fused into one matrix, and the gate and up projections into another: 4 products per
  layer instead of 7;
- every matrix stored transposed, (in, out), so a one-row product streams memory contiguously (on the 2-core AMD
  CPU the (50258, 256) output head runs in 2.3 ms instead of 5.3 ms through ``nn.Linear``'s (out, in) layout).

Everything else is the package's own: ``rms_norm``, ``RoPE.cos_sin``, ``apply_rotary``, ``build_attention_mask`` and
``grouped_sdpa`` (the GQA fold). The re-laid weights are built for each call and dropped after it, never kept on
the model: a kept copy would go stale when the parameters change behind torch's back (a fused optimiser step,
``p.data.add_()``, a numpy write). Building it costs 0.1-0.6 s on the seed config (32 layers, 51M parameters, on
the shared 2-core CPU), against 2-8 s for 200 tokens there: the price of never serving stale weights.

Two shapes of step: ``static=False`` (eager) attends over the filled prefix of the cache and passes no mask unless
rows are padded, so the fused (flash) kernels apply; ``static=True`` attends over the whole preallocated cache with
a mask, so every step has identical shapes for ``torch.compile`` and a CUDA graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llama3.attention import build_attention_mask, grouped_sdpa
from llama3.decoding import Decoder
from llama3.norm import rms_norm
from llama3.rope import apply_rotary


class FusedWeights:
    """The model's weights re-laid for one-row products (a copy of the layers and the head, made per call)."""

    def __init__(self, model):
        args = model.args
        self.eps, self.heads, self.kv_heads = args.norm_eps, args.heads, args.n_kv_heads
        self.embedding = model.tok_embeddings.weight.detach()  # a view: rows are gathered, no layout to fix
        self.layers = []
        for layer in model.layers:
            attn, ffn = layer.attention, layer.feed_forward
            self.layers.append((
                layer.attention_norm.weight.detach(),
                torch.cat([attn.wq.weight, attn.wk.weight, attn.wv.weight]).detach().t().contiguous(),  # (d, q+k+v)
                attn.wo.weight.detach().t().contiguous(),
                layer.ffn_norm.weight.detach(),
                torch.cat([ffn.w1.weight, ffn.w3.weight]).detach().t().contiguous(),  # (d, 2 * hidden)
                ffn.w2.weight.detach().t().contiguous(),
            ))
        self.norm = model.norm.weight.detach()
        self.output = model.output.weight.detach().t().contiguous()  # (d_model, vocab)

    def tensors(self) -> list[torch.Tensor]:
        return [t for layer in self.layers for t in layer] + [self.embedding, self.norm, self.output]


def fused_layer(x: torch.Tensor, attention_norm: torch.Tensor, wqkv: torch.Tensor, wo: torch.Tensor,
                ffn_norm: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, k_cache: torch.Tensor,
                v_cache: torch.Tensor, input_pos: torch.Tensor, kv_len: int, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None, eps: float, heads: int, kv_heads: int) -> torch.Tensor:
    """``DecoderLayer.forward`` for one new token per row, on fused weights. x (B, 1, d); k_cache, v_cache
    (B, KV, L, D) receive the new key and value at slot input_pos (1,) and are attended over [0, kv_len);
    cos, sin (B or 1, 1, 1, D/2); mask (B, 1, 1, kv_len) or None."""
    batch = x.shape[0]
    head_dim = k_cache.shape[-1]
    h = rms_norm(x, attention_norm, eps)
    q, k, v = (h @ wqkv).split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
    q = apply_rotary(q.view(batch, 1, heads, head_dim), cos, sin).transpose(1, 2)  # (B, H, 1, D)
    k = apply_rotary(k.view(batch, 1, kv_heads, head_dim), cos, sin).transpose(1, 2)  # (B, KV, 1, D)
    k_cache.index_copy_(2, input_pos, k)
    v_cache.index_copy_(2, input_pos, v.view(batch, 1, kv_heads, head_dim).transpose(1, 2))
    out = grouped_sdpa(q, k_cache[:, :, :kv_len], v_cache[:, :, :kv_len], mask)  # (B, H, 1, D)
    x = x + out.reshape(batch, 1, heads * head_dim) @ wo
    gate, up = (rms_norm(x, ffn_norm, eps) @ w13).chunk(2, dim=-1)
    return x + (F.silu(gate) * up) @ w2


def decode_step(weights: FusedWeights, caches: list[tuple[torch.Tensor, torch.Tensor]], token: torch.Tensor,
                input_pos: torch.Tensor, kv_len: int, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None, layer_fn=fused_layer) -> torch.Tensor:
    """One token for every row through every layer: token (B, 1) -> logits (B, vocab). See ``fused_layer``."""
    x = F.embedding(token, weights.embedding)  # (B, 1, d)
    for layer, (k_cache, v_cache) in zip(weights.layers, caches):
        x = layer_fn(x, *layer, k_cache, v_cache, input_pos, kv_len, cos, sin, mask, weights.eps, weights.heads,
                     weights.kv_heads)
    return (rms_norm(x, weights.norm, weights.eps) @ weights.output)[:, 0]


_COMPILED = {}


def compiled_decode_step(device_type: str):
    """decode_step under torch.compile, built once per device type (inputs are tensors: new weights, caches and
    batch sizes reuse it; a new shape compiles again).

    CUDA: the whole step with mode "reduce-overhead", captured in a CUDA graph (one launch per token instead of
    hundreds), as gpt-fast does. CPU: only the repeated layer ("regional compilation"), so the first call's
    compile time does not grow with depth. ``generate_kv(compile=True)`` asks for it on CUDA only: on the CPU it
    measured no faster than the eager step (``benchmarks/bench.py`` times both), so there it serves the bench.
    """
    if device_type not in _COMPILED:
        if device_type == "cuda":
            step = torch.compile(decode_step, mode="reduce-overhead", fullgraph=True, dynamic=False)
            _COMPILED[device_type] = lambda *a: step(*a).clone()  # a CUDA graph reuses its output buffer
        else:
            layer_fn = torch.compile(fused_layer, fullgraph=True, dynamic=False)
            _COMPILED[device_type] = lambda *a: decode_step(*a, layer_fn=layer_fn)
    return _COMPILED[device_type]


class FastDecoder(Decoder):
    """``Decoder`` with a fused-weight step (see the module docstring). ``static=True`` attends over the whole cache
    with a mask (identical shapes at every step); ``compile=True`` runs that static step under torch.compile."""

    def __init__(self, model, batch: int, length: int, compile: bool = False, static: bool = False):
        super().__init__(model, batch, length, use_cache=True)
        self.rope = model.rope
        self.weights = FusedWeights(model)
        self.buffers = [(c.k_cache, c.v_cache) for c in self.caches]
        self.static = static or compile
        device = self.buffers[0][0].device
        self.decode_step = compiled_decode_step(device.type) if compile else decode_step
        if compile and device.type == "cuda":
            # A CUDA graph replays fixed addresses: declare the weights and caches static, or every replay would
            # first copy them into the graph's own input buffers. New addresses (the next call) record anew.
            for tensor in self.weights.tensors() + [t for kv in self.buffers for t in kv]:
                torch._dynamo.mark_static_address(tensor)

    def step(self, token: torch.Tensor) -> torch.Tensor:
        start = self.append(token)
        device = token.device
        mask = self.attention_mask
        input_pos = torch.tensor([start], device=device)  # (1,): the cache slot of the new token
        if mask is None:
            positions = input_pos  # every row sits at the same position
        else:
            positions = mask.sum(-1, keepdim=True) - 1  # (B, 1): count from each row's first real token
        cos, sin = self.rope.cos_sin(positions)  # (B or 1, 1, 1, D/2)
        kv_len = self.length if self.static else self.pos
        if self.static:  # the whole cache, with the unwritten slots hidden by causality
            mask = torch.ones_like(self.ids) if mask is None else mask
            mask = build_attention_mask(F.pad(mask, (0, self.length - self.pos)), 1, start)  # (B, 1, 1, L)
        elif mask is not None:
            mask = build_attention_mask(mask, 1, start)  # (B, 1, 1, pos): hides the left padding
        return self.decode_step(self.weights, self.buffers, token[:, None], input_pos, kv_len, cos,
                                sin, mask)
