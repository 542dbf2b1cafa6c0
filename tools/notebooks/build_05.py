"""Build solutions/05_decoder_layer.ipynb: the pre-norm residual block (llama3/decoder.py).

    .venv/bin/python tools/notebooks/build_05.py
    nice -n 10 .venv/bin/jupyter nbconvert --to notebook --execute --inplace solutions/05_decoder_layer.ipynb
    .venv/bin/python tools/make_exercises.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbbuild_late import check, code, exercise, md, versions, write  # noqa: E402

cells = [
    md(r"""
    # 05 · The decoder layer: a pre-norm residual block

    Notebooks 01–04 built every part a Llama layer needs: rotary positions (`RoPE`), `RMSNorm`, the SwiGLU `FFN`,
    the `KV_Cache` and grouped-query attention. This notebook wires them into **one decoder layer**, the block that
    Llama 3 repeats 16 times (1B), 32 times (8B) or 126 times (405B).

    The wiring is two lines of code, and it is the reason a 126-layer stack trains at all.

    **Learning goals**

    1. Write `DecoderLayer`: attention and feed-forward, each in a **pre-norm residual branch**.
    2. Explain the *residual stream*: every layer reads it through a norm and *adds* its result back.
    3. See why pre-norm beats post-norm (the 2017 Transformer's wiring) in deep stacks: a figure of activations
       and gradients through 48 layers.
    4. Check that cached decoding through a layer gives the same numbers as the full sequence.
    """),
    versions(),
    code("""
    %matplotlib inline
    import math

    import matplotlib.pyplot as plt
    import torch
    import torch.nn.functional as F
    from torch import nn

    from llama3 import FFN, KV_Cache, ModelArgs, MultiHeadGQAttention, RMSNorm, RoPE, build_attention_mask
    from llama3.checks import check_decoder_layer
    """),
    md(r"""
    ## The idea: a residual stream that every layer adds to

    Think of the hidden state $x \in \mathbb{R}^{B \times T \times d}$ as a **stream** that flows from the
    embedding to the output head. A layer never replaces it; it reads a *normalised copy*, computes something,
    and **adds** the result back:

    $$
    h = x + \operatorname{Attention}\big(\operatorname{RMSNorm}_1(x)\big), \qquad
    \text{out} = h + \operatorname{FFN}\big(\operatorname{RMSNorm}_2(h)\big).
    $$

    ```
    x ──┬────────────────────────────(+)── h ──┬─────────────────────────(+)── out
        └─ attention_norm → attention ──┘       └─ ffn_norm → feed_forward ──┘
    ```

    Attention mixes information **across positions** (token $t$ reads tokens $\le t$); the FFN transforms each
    position **on its own**. Both are *branches*; the straight line is the identity path.

    **Pre-norm vs post-norm.** The original Transformer (Vaswani et al., 2017) normalised *after* the addition:

    $$
    h = \operatorname{Norm}_1\big(x + \operatorname{Attention}(x)\big), \qquad
    \text{out} = \operatorname{Norm}_2\big(h + \operatorname{FFN}(h)\big).
    $$

    That looks harmless, but it puts a norm *on* the identity path. Differentiate the pre-norm layer:

    $$
    \frac{\partial\,\text{out}}{\partial x} = I + \frac{\partial\,\text{branches}}{\partial x},
    $$

    so the gradient of the loss reaches every layer through an unbroken chain of identities (plus the branch
    terms). In post-norm every layer multiplies the gradient by the Jacobian of a norm, roughly
    $1/\operatorname{RMS}(x + F(x))$; over $L$ layers these factors **compound**, and the early layers see
    gradients that are orders of magnitude off. Post-norm Transformers need a careful learning-rate warm-up to
    train at all; pre-norm ones train without it (Xiong et al., 2020, "On Layer Normalization in the Transformer
    Architecture"). GPT-2, Llama and nearly every large model since are pre-norm. We measure it below.
    """),
    md(r"""
    ## A small configuration

    The same `ModelArgs` as in notebook 04. Small sizes keep everything fast on a laptop CPU; the maths does not
    care about the size.
    """),
    code("""
    args = ModelArgs(
        vocab_size=256,   # not used by a single layer, but ModelArgs describes the whole model
        d_model=64,       # width of the residual stream
        heads=4,          # query heads: head_dim = 64 / 4 = 16
        group_size=2,     # 2 query heads share one K/V head -> 2 K/V heads (GQA)
        num_layers=1,     # this notebook builds one layer
        max_seq_len=64,   # longest sequence
        multiple_of=32,   # FFN hidden size rounded up to a multiple of 32 (notebook 02)
    )
    print(f"head_dim={args.head_dim}, n_kv_heads={args.n_kv_heads}, FFN hidden_dim={args.hidden_dim}, "
          f"norm_eps={args.norm_eps}, dropout={args.dropout}")
    """),
    md(r"""
    ## Exercise 1: `DecoderLayer`

    Write the layer with the reference's constructor and forward signature:

    - `__init__(self, args)` creates four sub-modules **with exactly these names** (the checker loads the
      reference weights by name; they are also Meta's checkpoint names):
      `attention_norm = RMSNorm(d_model, eps=norm_eps)`, `attention = MultiHeadGQAttention(args)`,
      `ffn_norm = RMSNorm(d_model, eps=norm_eps)`,
      `feed_forward = FFN(d_model, multiple_of, ffn_dim_multiplier, ffn_hidden_dim)`.
      Keep `args.dropout` as `self.dropout`.
    - `forward(x, cos, sin, mask=None, kv_cache=None, start_pos=0)` returns a tensor shaped like `x`
      `(B, T, d_model)`. Pass `cos, sin, mask, kv_cache, start_pos` on to the attention unchanged: the layer
      does not care whether it runs on a full sequence, a padded batch or one new token on top of a cache.
    - While training, dropout (rate `self.dropout`) is applied to each branch *before* it is added:
      `F.dropout(branch, self.dropout, self.training)`. With `dropout=0.0` it does nothing.
    """),
    exercise("decoder_layer", '''
    class DecoderLayer(nn.Module):
        """h = x + attention(attention_norm(x)); out = h + feed_forward(ffn_norm(h)) (pre-norm, Xiong et al., 2020)."""

        def __init__(self, args: ModelArgs):
            super().__init__()
            # names fixed: attention_norm, attention, ffn_norm, feed_forward (and self.dropout)
            ### BEGIN SOLUTION
            ### HINT: the four sub-modules named above, sized from args (norm_eps, multiple_of, ...)
            self.attention_norm = RMSNorm(args.d_model, eps=args.norm_eps)
            self.attention = MultiHeadGQAttention(args)
            self.ffn_norm = RMSNorm(args.d_model, eps=args.norm_eps)
            self.feed_forward = FFN(args.d_model, args.multiple_of, args.ffn_dim_multiplier, args.ffn_hidden_dim)
            self.dropout = args.dropout
            ### END SOLUTION

        def forward(self, x, cos, sin, mask=None, kv_cache=None, start_pos=0):  # (B, T, d) -> (B, T, d)
            ### BEGIN SOLUTION
            ### HINT: pre-norm: each branch reads a normalised copy; its output is ADDED to the un-normalised stream
            attended = self.attention(self.attention_norm(x), cos, sin, mask, kv_cache, start_pos)
            h = x + F.dropout(attended, self.dropout, self.training)  # the residual adds to the UN-normalised x
            return h + F.dropout(self.feed_forward(self.ffn_norm(h)), self.dropout, self.training)
            ### END SOLUTION
    '''),
    check("decoder_layer", "check_decoder_layer(DecoderLayer)"),
    md(r"""
    ## Shapes and parameters

    A layer maps `(B, T, d_model)` to `(B, T, d_model)`, which is what lets us stack any number of them. Its
    parameters are the attention's four projections (K and V are smaller under GQA), the FFN's three matrices
    and the two norms' weights:

    $$
    \underbrace{d \cdot H d_h}_{w_q} + \underbrace{2 \cdot d \cdot H_{kv} d_h}_{w_k,\,w_v}
    + \underbrace{H d_h \cdot d}_{w_o} + \underbrace{3 \cdot d \cdot d_{ff}}_{w_1,\,w_2,\,w_3}
    + \underbrace{2d}_{\text{norms}}.
    $$
    """),
    code("""
    torch.manual_seed(0)
    layer = DecoderLayer(args).eval()
    rope = RoPE(args.head_dim, args.rope_theta)

    batch, seq = 2, 10
    x = torch.randn(batch, seq, args.d_model)      # (B, T, d_model): the residual stream
    cos, sin = rope.cos_sin(torch.arange(seq))     # (1, T, 1, head_dim/2) each
    with torch.no_grad():
        out = layer(x, cos, sin)
    print("x   ", tuple(x.shape))
    print("cos ", tuple(cos.shape))
    print("out ", tuple(out.shape))

    d, hd, H, Hkv, dff = args.d_model, args.head_dim, args.heads, args.n_kv_heads, args.hidden_dim
    formula = d * H * hd + 2 * d * Hkv * hd + H * hd * d + 3 * d * dff + 2 * d
    counted = sum(p.numel() for p in layer.parameters())
    print(f"parameters: formula {formula:,}, counted {counted:,}")
    for name, p in layer.named_parameters():
        print(f"  {name:28s} {tuple(p.shape)}")
    """, "uses-exercise"),
    md(r"""
    ## The layer under a KV cache

    During generation (notebook 08) the layer sees the prompt once (a *prefill* that fills the cache), then one
    new token at a time at `start_pos`. Only attention looks across positions, and it reads the past from the
    cache, so the outputs must equal the full-sequence outputs position by position. A padding mask
    (notebook 04) is passed through in the same way.
    """),
    code("""
    cache = KV_Cache(batch, args.n_kv_heads, seq, args.head_dim)
    with torch.no_grad():
        full = layer(x, cos, sin)                                         # all 10 positions at once
        steps = [layer(x[:, :6], cos[:, :6], sin[:, :6], None, cache, 0)]  # prefill positions 0..5
        for pos in range(6, seq):                                         # then one position at a time
            steps.append(layer(x[:, pos:pos + 1], cos[:, pos:pos + 1], sin[:, pos:pos + 1], None, cache, pos))
    cached = torch.cat(steps, dim=1)
    print("cached", tuple(cached.shape), "| equal to the full sequence (within 1e-5):",
          torch.allclose(cached, full, atol=1e-5))

    padding = torch.ones(batch, seq, dtype=torch.long)
    padding[1, :4] = 0                                    # row 1 is left-padded by 4 tokens
    mask = build_attention_mask(padding, seq)            # (B, 1, T, T) booleans
    with torch.no_grad():
        padded = layer(x, cos, sin, mask)
    print("mask", tuple(mask.shape), "| row 0 unchanged by row 1's padding:",
          torch.allclose(padded[0], full[0], atol=1e-6))
    """, "uses-exercise"),
    md(r"""
    ## Pre-norm vs post-norm through 48 layers

    We stack 48 layers twice, on the same weights: once with your pre-norm `DecoderLayer`, once with a post-norm
    version (the 2017 wiring). The weights are drawn so that each branch is about as large as its input, as at
    the start of training in a model that is not specially initialised. We then push a batch through, put a
    final norm and a random output head on top, compute a cross-entropy loss and backpropagate. Two things are
    recorded after every layer:

    1. the RMS of the hidden state (the size of the residual stream);
    2. the norm of the gradient of the loss with respect to the hidden state.
    """),
    code('''
    class PostNormDecoderLayer(DecoderLayer):
        """The 2017 Transformer's wiring, for comparison: the norm sits ON the residual path."""

        def forward(self, x, cos, sin, mask=None, kv_cache=None, start_pos=0):
            h = self.attention_norm(x + self.attention(x, cos, sin, mask, kv_cache, start_pos))
            return self.ffn_norm(h + self.feed_forward(h))


    def depth_profile(layer_cls, num_layers=48, seed=0):
        """RMS of the hidden state and norm of its gradient after each of num_layers layers."""
        deep = ModelArgs(vocab_size=128, d_model=64, heads=4, group_size=2, num_layers=num_layers,
                         max_seq_len=64, multiple_of=32)
        torch.manual_seed(seed)
        layers = nn.ModuleList(layer_cls(deep) for _ in range(num_layers))
        for p in layers.parameters():
            if p.dim() == 2:  # std 1/sqrt(fan_in): each branch about as large as its input
                nn.init.normal_(p, std=1 / math.sqrt(p.shape[1]))
        x = torch.randn(2, 16, deep.d_model, requires_grad=True)     # (B, T, d)
        head = torch.randn(deep.d_model, deep.vocab_size)            # a random output head
        targets = torch.randint(0, deep.vocab_size, (2 * 16,))
        cos, sin = RoPE(deep.head_dim).cos_sin(torch.arange(16))
        hidden = [x]
        h = x
        for layer in layers:
            h = layer(h, cos, sin)
            h.retain_grad()  # keep the gradient of this intermediate tensor
            hidden.append(h)
        logits = F.rms_norm(h, (deep.d_model,)) @ head
        F.cross_entropy(logits.flatten(0, 1), targets).backward()
        rms = [t.detach().pow(2).mean().sqrt().item() for t in hidden]
        grad = [t.grad.norm().item() for t in hidden]
        return rms, grad
    '''),
    code("""
    pre_rms, pre_grad = depth_profile(DecoderLayer)
    post_rms, post_grad = depth_profile(PostNormDecoderLayer)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(pre_rms, label="pre-norm (Llama)")
    ax1.plot(post_rms, label="post-norm (2017)")
    ax1.set(xlabel="layer", ylabel="RMS of the hidden state", title="Size of the residual stream")
    ax1.legend()
    ax2.semilogy(pre_grad, label="pre-norm (Llama)")
    ax2.semilogy(post_grad, label="post-norm (2017)")
    ax2.set(xlabel="layer", ylabel="gradient norm (log scale)", title="Gradient reaching each layer")
    ax2.legend()
    plt.tight_layout()
    plt.show()

    for name, grad in (("pre-norm ", pre_grad), ("post-norm", post_grad)):
        ratio = float(f"{grad[0] / grad[-1]:.2g}")  # two significant digits: stable from run to run
        print(f"{name}: the gradient at layer 0 is about {ratio:,.0f} times the gradient at layer 48")
    """, "uses-exercise"),
    md(r"""
    **Reading the figure.** Left: in pre-norm the stream *grows* with depth, because every layer adds to it and
    nothing rescales it (the final `RMSNorm` before the output head takes care of that); in post-norm it is reset
    to RMS 1 after every layer. Right: in post-norm each norm on the path rescales the gradient, the factors
    compound, and the first layers receive gradients orders of magnitude larger than the last ones; no single
    learning rate suits them all, hence the warm-up tricks. In pre-norm the identity path delivers the gradient
    to every layer; it shrinks only slowly, as the stream it is divided by grows.

    Real Llama training adds one more guard: the projections that write into the stream (`wo`, `w2`) start with
    a smaller standard deviation, $0.02/\sqrt{2L}$ (GPT-2's scaled initialisation), so that the sum of $2L$
    branches stays moderate at the start. You will find it in `Llama3.__init__` in notebook 06.
    """),
    md(r"""
    ## Hand-over: `llama3.DecoderLayer`

    The package's `DecoderLayer` is the class you just wrote. Load your layer's weights into it and compare.
    From now on the course uses the reference class: notebook 06 stacks `num_layers` of them between a token
    embedding and an output head to make the whole `Llama3` model.
    """),
    code("""
    from llama3 import DecoderLayer as ReferenceDecoderLayer

    reference = ReferenceDecoderLayer(args).eval()
    reference.load_state_dict(layer.state_dict())   # same names, so the weights load one to one
    with torch.no_grad():
        difference = (reference(x, cos, sin) - layer(x, cos, sin)).abs().max().item()
    print("reference == yours (within 1e-6):", difference < 1e-6)
    print(ReferenceDecoderLayer.__doc__.splitlines()[0])
    """, "uses-exercise"),
]

if __name__ == "__main__":
    write("05_decoder_layer", cells)
