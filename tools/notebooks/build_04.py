"""Build solutions/04_gqa_flash_attention.ipynb: grouped-query attention with masks, a KV cache and SDPA.

    .venv/bin/python tools/notebooks/build_04.py
    nice -n 10 .venv/bin/jupyter nbconvert --to notebook --execute --inplace solutions/04_gqa_flash_attention.ipynb
    .venv/bin/python tools/make_exercises.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbbuild import Notebook  # noqa: E402

nb = Notebook("04_gqa_flash_attention")

nb.md(r"""
# 04 · Grouped-query attention, masks and flash attention

Attention is where tokens exchange information. This notebook builds Llama 3's attention layer,
`MultiHeadGQAttention`, exactly as `llama3/attention.py` ships it: several heads, causal and padding masks, the
rotary embedding from notebook 01, the KV cache from notebook 03, **grouped-query attention** (Ainslie et al.,
2023, "GQA"), in which groups of query heads share one key/value head, and a fused **flash** kernel
(Dao et al., 2022) through PyTorch's `F.scaled_dot_product_attention` (SDPA).

**Learning goals**

1. Write scaled dot-product attention and explain the $1/\sqrt{D}$ and the axis of the softmax.
2. Build causal and padding masks (and the offset mask for queries on top of a cache), and see them in a widget.
3. Explain which query heads share a K/V head (`repeat_interleave`, not `repeat`) and how much KV-cache memory
   GQA saves for Llama 3.
4. Implement `MultiHeadGQAttention(args)` with a spelled-out path and an SDPA path, and check both against
   `llama3` in training, with padding, in a cached prefill and in one-token decoding.
5. Confirm that the flash path and the manual path agree, and compare their speed.
""")
nb.versions()
nb.code(r"""
%matplotlib inline
import math
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

from llama3 import KV_Cache, ModelArgs, RoPE, apply_rotary, build_attention_mask
from llama3.checks import check_attention

torch.set_printoptions(precision=4, sci_mode=False)
""")

nb.md(r"""
## 1. Scaled dot-product attention

For one head, queries $Q \in \mathbb{R}^{T \times D}$ (one row per position that asks), keys
$K \in \mathbb{R}^{S \times D}$ and values $V \in \mathbb{R}^{S \times D}$ (one row per position that can be read):

$$
\operatorname{Attention}(Q, K, V) = \operatorname{softmax}\!\left(\frac{Q K^\top}{\sqrt{D}} + M\right) V,
$$

where the softmax runs over the **keys** (the last axis of the $T \times S$ score matrix, so each query's weights
sum to one) and the mask $M$ holds $0$ where a query may look and $-\infty$ where it may not.

Why divide by $\sqrt{D}$? If the entries of $q$ and $k$ have unit variance, $q \cdot k$ is a sum of $D$ such
products and has variance $D$. Large scores push the softmax into a one-hot corner where its gradient vanishes;
dividing by $\sqrt{D}$ brings the variance back to 1 for every head size.
""")
nb.code(r"""
torch.manual_seed(0)
for head_dim in (16, 64, 256):
    q, k = torch.randn(10_000, head_dim), torch.randn(10_000, head_dim)
    scores = (q * k).sum(-1)
    logits = torch.randn(8, head_dim) @ torch.randn(head_dim, 16)  # 8 queries, 16 keys
    top = F.softmax(logits, dim=-1).amax(-1).mean()
    top_scaled = F.softmax(logits / math.sqrt(head_dim), dim=-1).amax(-1).mean()
    print(f"D={head_dim:3d}: std of q.k = {scores.std():5.2f}, after / sqrt(D) = "
          f"{(scores / math.sqrt(head_dim)).std():.2f} | mean largest softmax weight over 16 keys: "
          f"{top:.2f} unscaled, {top_scaled:.2f} scaled")
""")

nb.md(r"""
## 2. Masks

Masks in this package are **boolean, True where a query may attend**, of shape `(B or 1, 1, T, S)` (the 1
broadcasts over heads). `llama3.build_attention_mask(attention_mask, q_len, start_pos)` builds them:

* **Causal.** Query $t$ sits at absolute position `start_pos + t` and may see keys $s \le$ `start_pos + t`.
  Training and a prefill on an empty cache have `start_pos = 0` and a lower-triangular mask. A chunk of $T$ new
  queries on top of $S - T$ cached positions needs the triangle shifted right; SDPA's `is_causal=True` aligns it
  top-left, which is only right when $T = S$ (or $T = 1$, where no mask is needed at all).
* **Padding.** A batch of prompts of different lengths is padded to one length. `attention_mask` (`(B, S)`, 1 for a
  real token, 0 for padding, as tokenizers return it) hides padded *keys*. A padded *query* would then see no key
  at all and its softmax would be $0/0$ = NaN, so every query may always see itself; the outputs at padded
  positions are ignored by the loss and by generation.

Generation pads on the **left** (so every prompt ends at the last column and the next token is appended there);
training usually pads on the right.
""")
nb.code(r"""
def show_masks(seq_len: int = 8, left_pad: int = 2, right_pad: int = 2, start_pos: int = 5):
    '''Four masks for a sequence of seq_len keys; dark = may attend.'''
    left = torch.ones(1, seq_len, dtype=torch.long)
    left[:, :left_pad] = 0  # generation: padding on the left
    right = torch.ones(1, seq_len, dtype=torch.long)
    right[:, seq_len - right_pad:] = 0  # training: padding on the right
    new = max(seq_len - start_pos, 1)  # queries on top of a cache of start_pos positions
    masks = {
        "causal (training, prefill)": build_attention_mask(None, seq_len)[0, 0],
        f"causal + {left_pad} left pads": build_attention_mask(left, seq_len)[0, 0],
        f"causal + {right_pad} right pads": build_attention_mask(right, seq_len)[0, 0],
        f"{new} new queries, start_pos={seq_len - new}": build_attention_mask(None, new, seq_len - new)[0, 0],
    }
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
    for ax, (title, mask) in zip(axes, masks.items()):
        ax.imshow(mask, cmap="Blues", vmin=0, vmax=1.3)
        ax.set(title=title, xlabel="key position s", ylabel="query t")
        ax.set_xticks(range(mask.shape[1]))
        ax.set_yticks(range(mask.shape[0]))
        ax.tick_params(labelsize=7)
    plt.tight_layout()
    plt.show()
    return masks


masks = show_masks(seq_len=8, left_pad=2, right_pad=2, start_pos=5)
print("causal mask (1 = may attend):")
print(masks["causal (training, prefill)"].int())
""")
nb.md(r"""
In the second panel the two padded columns are empty except on the diagonal (each padded query sees itself only);
in the last panel the three new queries see all five cached positions plus the new ones up to themselves. Try
other sizes with the sliders:
""")
nb.code(r"""
from ipywidgets import IntSlider, interact

interact(show_masks, seq_len=IntSlider(8, 2, 16), left_pad=IntSlider(2, 0, 8), right_pad=IntSlider(2, 0, 8),
         start_pos=IntSlider(5, 0, 15));
""", tags=["nbval-ignore-output", "skip-grade"])

nb.md(r"""
## 3. Grouped-query attention: heads that share keys and values

Multi-head attention runs $H$ heads side by side, each with its own $W_q$, $W_k$, $W_v$ slice of size $D$ =
`head_dim`. During generation the keys and values of every head are cached (notebook 03), and at long contexts
that cache, not the weights, fills the memory. Shazeer (2019) proposed **multi-query attention** (MQA): all query
heads share one K/V head. **Grouped-query attention** sits in between: `group_size` $= g$ consecutive query heads
share one K/V head, so there are $H/g$ K/V heads (`n_kv_heads`). Llama 3 8B has 32 query heads and 8 K/V heads
($g = 4$).

Query head $h$ reads K/V head $\lfloor h / g \rfloor$. To compute all heads with one batched matmul, the K/V heads
are expanded to $H$ with `repeat_interleave(g, dim=1)`, which gives the order kv0, kv0, kv0, kv0, kv1, ... .
`repeat` would give kv0, kv1, ..., kv7, kv0, kv1, ..., which pairs query heads with the wrong K/V heads: the
shapes fit, the checkpoint's weights no longer do.
""")
nb.code(r"""
heads, group_size = 8, 4
kv = torch.arange(heads // group_size).view(1, -1, 1, 1)  # (B, n_kv_heads, 1, 1): K/V head ids 0, 1
print("repeat_interleave:", kv.repeat_interleave(group_size, dim=1).flatten().tolist(), " (query head h reads h // g)")
print("repeat:           ", kv.repeat(1, group_size, 1, 1).flatten().tolist(), " (wrong pairing)")
""")
nb.code(r"""
def show_groups(heads: int = 8, group_size: int = 2):
    '''Draw which query heads (top) read which K/V head (bottom).'''
    if heads % group_size:
        print(f"group_size={group_size} does not divide heads={heads}: choose a divisor")
        return
    n_kv = heads // group_size
    fig, ax = plt.subplots(figsize=(8, 2.6))
    colors = plt.cm.tab10(torch.arange(n_kv) % 10)
    kv_x = [(j + 0.5) * heads / n_kv - 0.5 for j in range(n_kv)]
    for h in range(heads):
        ax.plot([h, kv_x[h // group_size]], [1, 0], color=colors[h // group_size], lw=1.5)
        ax.scatter([h], [1], s=180, color=colors[h // group_size], zorder=3)
        ax.text(h, 1.18, f"q{h}", ha="center", fontsize=8)
    for j in range(n_kv):
        ax.scatter([kv_x[j]], [0], s=300, marker="s", color=colors[j], zorder=3)
        ax.text(kv_x[j], -0.3, f"kv{j}", ha="center", fontsize=8)
    kind = "multi-head" if group_size == 1 else "multi-query" if n_kv == 1 else "grouped-query"
    ax.set(title=f"{kind}: {heads} query heads, {n_kv} K/V heads (group_size={group_size})",
           xlim=(-1, heads), ylim=(-0.5, 1.4))
    ax.axis("off")
    plt.show()


show_groups(heads=8, group_size=4)
""")
nb.code(r"""
interact(show_groups, heads=IntSlider(8, 1, 16), group_size=IntSlider(4, 1, 16));
""", tags=["nbval-ignore-output", "skip-grade"])
nb.md(r"""
**What GQA saves.** The K/V projections shrink by $g$ (for Llama 3 8B, $W_k$ and $W_v$ are $4096 \times 1024$
instead of $4096 \times 4096$), and so does the KV cache, which dominates memory at long contexts. Quality stays
close to multi-head attention (Ainslie et al., 2023).
""")
nb.code(r"""
layers, heads, head_dim, d_model = 32, 32, 128, 4096  # Llama 3 8B
print(f"{'attention':<14}{'K/V heads':>10}{'cache KiB/token':>17}{'cache GiB @128K':>17}{'Wk+Wv params/layer':>20}")
for name, n_kv in (("multi-head", 32), ("GQA (Llama 3)", 8), ("multi-query", 1)):
    per_token = 2 * layers * n_kv * head_dim * 2  # K and V, bfloat16
    print(f"{name:<14}{n_kv:>10}{per_token / 1024:>17.0f}{per_token * 131072 / 2**30:>17.1f}"
          f"{2 * d_model * n_kv * head_dim / 1e6:>19.1f}M")
""")

nb.md(r"""
## 4. Flash attention through SDPA

Written out, attention materialises the $T \times S$ score matrix per head, reads it back for the softmax and again
for the product with $V$. FlashAttention computes the same result tile by tile with an *online* softmax (a
running maximum and a running sum per query), so the score matrix never leaves fast memory: less memory traffic,
$O(T)$ instead of $O(T S)$ extra memory, same maths up to rounding. PyTorch exposes it (and other fused kernels)
as `F.scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False, enable_gqa=False)`, on CPUs too:

* it scales by $1/\sqrt{D}$ itself;
* `attn_mask` is a boolean mask (True = may attend) or an additive float mask; `is_causal=True` builds the
  top-left triangle instead (never both);
* `enable_gqa=True` (torch 2.5+) lets $k, v$ have fewer heads than $q$, in `repeat_interleave` order.

## 5. Exercise: `MultiHeadGQAttention`

The layer's interface is the reference's, so the checker can load `llama3`'s weights into yours:

* `__init__(args)` reads `args.heads`, `args.n_kv_heads`, `args.group_size`, `args.head_dim`, `args.use_flash`,
  `args.dropout`, and creates `wq` (`d_model -> heads * head_dim`), `wk` and `wv`
  (`d_model -> n_kv_heads * head_dim`) and `wo` (`heads * head_dim -> d_model`), all without bias.
* `forward(x, cos, sin, mask=None, kv_cache=None, start_pos=0)`:
  1. project `x` `(B, T, d_model)` to `q` `(B, T, heads, D)` and `k`, `v` `(B, T, n_kv_heads, D)`;
  2. rotate `q` and `k` with `apply_rotary(., cos, sin)` (notebook 01; `cos`, `sin` come from `RoPE.cos_sin`);
  3. transpose to `(B, heads, T, D)`;
  4. with a `kv_cache`, `k, v = kv_cache.update(start_pos, k, v)` (now `S = start_pos + T` positions);
  5. with `mask=None`, `T > 1` and a filled cache (`S != T`), build the offset mask
     `build_attention_mask(None, T, S - T)`;
  6. attend, with SDPA (`use_flash`) or `attention_by_hand`, then merge the heads back to `(B, T, heads * D)`
     and apply `wo`.
* `attention_by_hand(q, k, v, mask, dropout)`: expand `k`, `v` with `repeat_interleave`, scores
  $q k^\top / \sqrt{D}$, the causal mask when `mask is None` and `T > 1`, `masked_fill(~mask, -inf)`, softmax over
  the keys in float32, dropout, times `v`.
""")
nb.exercise(r"""
class MultiHeadGQAttention(nn.Module):
    '''Causal self-attention in which group_size query heads share one key/value head (Ainslie et al., 2023),
    with a fused SDPA path (use_flash=True) and a spelled-out path (use_flash=False).'''

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.heads = args.heads
        self.n_kv_heads = args.n_kv_heads
        self.group_size = args.group_size
        self.head_dim = args.head_dim
        self.use_flash = args.use_flash
        self.dropout = args.dropout
        ### BEGIN SOLUTION
        ### HINT: four bias-free projections; the keys and values have only n_kv_heads heads
        self.wq = nn.Linear(args.d_model, self.heads * self.head_dim, bias=False)
        self.wk = nn.Linear(args.d_model, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(args.d_model, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(self.heads * self.head_dim, args.d_model, bias=False)
        ### END SOLUTION

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None = None,
                kv_cache: KV_Cache | None = None, start_pos: int = 0) -> torch.Tensor:
        batch, seq, _ = x.shape
        # 1. project x to q (B, T, heads, D) and k, v (B, T, n_kv_heads, D)
        ### BEGIN SOLUTION
        ### HINT: project, then split the last dimension into (heads or n_kv_heads, head_dim)
        q = self.wq(x).view(batch, seq, self.heads, self.head_dim)  # (B, T, H, D)
        k = self.wk(x).view(batch, seq, self.n_kv_heads, self.head_dim)  # (B, T, KV, D)
        v = self.wv(x).view(batch, seq, self.n_kv_heads, self.head_dim)  # (B, T, KV, D)
        ### END SOLUTION
        # 2. rotate q and k (RoPE), then move the heads in front: (B, heads, T, D)
        ### BEGIN SOLUTION
        ### HINT: RoPE turns queries and keys, never values; attention wants the heads before the positions
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, T, D)
        ### END SOLUTION
        # 3. with a cache: store the new keys/values and read all S = start_pos + T; offset mask if S != T
        ### BEGIN SOLUTION
        ### HINT: the cache returns every position so far; on a filled cache the causal triangle is shifted by S - T
        if kv_cache is not None:
            k, v = kv_cache.update(start_pos, k, v)  # (B, KV, S, D), S = start_pos + T
        if mask is None and seq > 1 and k.shape[2] != seq:
            # queries on top of a filled cache: is_causal would align the triangle top-left, which is wrong here
            mask = build_attention_mask(None, seq, k.shape[2] - seq).to(x.device)
        ### END SOLUTION
        # 4. attend: the fused kernel or the spelled-out softmax
        dropout = self.dropout if self.training else 0.0
        if self.use_flash:
            ### BEGIN SOLUTION
            ### HINT: SDPA takes either a mask or is_causal (needed only for T > 1), and fewer K/V heads with enable_gqa
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and seq > 1,
                                                 dropout_p=dropout, enable_gqa=self.group_size > 1)
            ### END SOLUTION
        else:
            out = self.attention_by_hand(q, k, v, mask, dropout)  # (B, H, T, D)
        # 5. merge the heads back to (B, T, heads * D) and project with wo
        ### BEGIN SOLUTION
        ### HINT: undo step 2's transpose, flatten the heads into one dimension, project back to d_model
        out = out.transpose(1, 2).reshape(batch, seq, self.heads * self.head_dim)  # (B, T, H*D)
        return self.wo(out)
        ### END SOLUTION

    def attention_by_hand(self, q, k, v, mask, dropout):
        '''softmax(q k^T / sqrt(D) + mask) v, each K/V head repeated for the query heads of its group.'''
        ### BEGIN SOLUTION
        ### HINT: K/V head j serves query heads j*g .. j*g+g-1; scale by sqrt(D); causal if no mask; normalise over keys
        k = k.repeat_interleave(self.group_size, dim=1)  # (B, H, S, D): kv0, kv0, kv1, kv1, ...
        v = v.repeat_interleave(self.group_size, dim=1)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, H, T, S)
        seq, kv_len = scores.shape[-2:]
        if mask is None and seq > 1:
            mask = torch.ones(seq, kv_len, dtype=torch.bool, device=q.device).tril()
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        probs = F.softmax(scores.float(), dim=-1).type_as(q)  # over the keys
        probs = F.dropout(probs, p=dropout, training=dropout > 0)
        return probs @ v  # (B, H, T, D)
        ### END SOLUTION
""", grade_id="attention")
nb.check("check_attention(MultiHeadGQAttention)", grade_id="check_attention")

nb.md(r"""
## 6. Your layer at work

Shapes first: a Llama-3-shaped toy with 8 query heads in 2 groups of 4 (2 K/V heads).
""")
nb.code(r"""
torch.manual_seed(0)
args = ModelArgs(vocab_size=100, d_model=64, heads=8, group_size=4, num_layers=1, max_seq_len=128, use_flash=False)
attention = MultiHeadGQAttention(args).eval()
rope = RoPE(args.head_dim, args.rope_theta)
x = torch.randn(2, 10, args.d_model)  # (B, T, d_model)
cos, sin = rope.cos_sin(torch.arange(10))
print(f"heads={args.heads}, n_kv_heads={args.n_kv_heads}, head_dim={args.head_dim}")
for name in ("wq", "wk", "wv", "wo"):
    print(f"{name}.weight", tuple(getattr(attention, name).weight.shape))
print("x", tuple(x.shape), " cos", tuple(cos.shape), " -> out", tuple(attention(x, cos, sin).shape))
""", tags=["uses-exercise"])
nb.md(r"""
**Flash and manual agree.** The same weights with `use_flash` switched: the outputs agree to float32 rounding,
with no mask, with a padding mask, and in cached decoding.
""")
nb.code(r"""
flash = MultiHeadGQAttention(ModelArgs(**{**args.to_dict(), "use_flash": True})).eval()
flash.load_state_dict(attention.state_dict())
attention_mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1, 1], [1] * 10])  # row 0: three pads on the left
padded = build_attention_mask(attention_mask, 10)

with torch.no_grad():
    print("causal      max |flash - manual| < 1e-5:",
          (flash(x, cos, sin) - attention(x, cos, sin)).abs().max().item() < 1e-5)
    print("padded      max |flash - manual| < 1e-5:",
          (flash(x, cos, sin, padded) - attention(x, cos, sin, padded)).abs().max().item() < 1e-5)
    outs = []
    for layer in (flash, attention):
        cache = KV_Cache(2, args.n_kv_heads, 10, args.head_dim)
        layer(x[:, :9], cos[:, :9], sin[:, :9], kv_cache=cache, start_pos=0)  # prefill
        outs.append(layer(x[:, 9:], cos[:, 9:], sin[:, 9:], kv_cache=cache, start_pos=9))  # one-token decode
    print("decode step max |flash - manual| < 1e-5:", (outs[0] - outs[1]).abs().max().item() < 1e-5)
""", tags=["uses-exercise"])
nb.md(r"""
**Padding does not leak.** Row 0 of a left-padded batch holds a 7-token sequence behind 3 pads. Give its real
tokens positions $0..6$ (each row's positions start at its first real token) and its outputs equal those of the
same 7 tokens run alone: the pads are invisible.
""")
nb.code(r"""
positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, T): row 0 -> 0 0 0 0 1 2 ... 6
cos_b, sin_b = rope.cos_sin(positions)  # (B, T, 1, D/2)
with torch.no_grad():
    batched = attention(x, cos_b, sin_b, padded)[0, 3:]  # the 7 real tokens of row 0
    alone = attention(x[:1, 3:], cos[:, :7], sin[:, :7])[0]  # the same tokens without padding
print("positions of row 0:", positions[0].tolist())
print("real tokens of the padded row == the sequence alone:", torch.allclose(batched, alone, atol=1e-5))
""", tags=["uses-exercise"])
nb.md(r"""
**Speed.** The fused kernel against the spelled-out softmax on one longer sequence (the ratio depends on the
machine; on a GPU the gap is larger, and it grows with the sequence length).
""")
nb.code(r"""
torch.manual_seed(0)
big = ModelArgs(vocab_size=100, d_model=512, heads=8, group_size=4, num_layers=1, max_seq_len=2048, use_flash=False)
manual_layer = MultiHeadGQAttention(big).eval()
flash_layer = MultiHeadGQAttention(ModelArgs(**{**big.to_dict(), "use_flash": True})).eval()
flash_layer.load_state_dict(manual_layer.state_dict())
x_long = torch.randn(1, 1024, big.d_model)
cos_l, sin_l = RoPE(big.head_dim).cos_sin(torch.arange(1024))


def best_of(layer, repeats=3):
    with torch.no_grad():
        layer(x_long, cos_l, sin_l)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            layer(x_long, cos_l, sin_l)
            times.append(time.perf_counter() - start)
    return min(times)


t_manual, t_flash = best_of(manual_layer), best_of(flash_layer)
print(f"T=1024: manual {t_manual * 1e3:.1f} ms, SDPA {t_flash * 1e3:.1f} ms -> SDPA is {t_manual / t_flash:.1f}x "
      f"as fast")
""", tags=["uses-exercise", "nbval-ignore-output", "skip-grade"])

nb.md(r"""
## 7. Hand-over to the reference

`llama3.MultiHeadGQAttention` is the layer you wrote; its `build_attention_mask` is the helper you used. Notebook
05 wraps it, with RMSNorm and the FFN of notebook 02, into the pre-norm `DecoderLayer`, and notebook 06 stacks 16
or 32 of those into `Llama3`.
""")
nb.code(r"""
from llama3 import MultiHeadGQAttention as ReferenceAttention

reference = ReferenceAttention(args).eval()
reference.load_state_dict(attention.state_dict())  # same names and shapes: wq, wk, wv, wo
with torch.no_grad():
    difference = (reference(x, cos, sin, padded) - attention(x, cos, sin, padded)).abs().max().item()
print("max |yours - llama3| < 1e-6:", difference < 1e-6)
print(reference)
""", tags=["uses-exercise"])

nb.save()
