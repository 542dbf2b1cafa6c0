"""Build solutions/03_kv_cache.ipynb: the key/value cache that makes decoding linear instead of quadratic.

    .venv/bin/python tools/notebooks/build_03.py
    nice -n 10 .venv/bin/jupyter nbconvert --to notebook --execute --inplace solutions/03_kv_cache.ipynb
    .venv/bin/python tools/make_exercises.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbbuild import Notebook  # noqa: E402

nb = Notebook("03_kv_cache")

nb.md(r"""
# 03 · The KV cache

A language model writes one token at a time: run the model on the text so far, pick the next token, append it,
repeat. Done naively, every step reprocesses the whole text, and generating $N$ tokens costs work that grows with
$N^2$. The **key/value cache** stores what every layer computed for earlier positions so that each step only
processes the one new token. This notebook builds `KV_Cache` as `llama3/kv_cache.py` ships it: preallocated
buffers written in place.

**Learning goals**

1. Explain which parts of attention can be reused from one decoding step to the next, and why the queries
   cannot.
2. Count the work of decoding with and without a cache and see the quadratic curve become linear.
3. Implement `KV_Cache(max_batch_size, n_kv_heads, max_seq_len, head_dim, dtype, device)` with `update`,
   `reset` and `seq_len`, and check it.
4. Plug your cache into a real attention layer and confirm that cached decoding gives the same outputs as
   recomputing everything.
5. Work out the cache's memory for real Llama 3 models, and why a 128K context is sized per call, not up front.
""")
nb.versions()
nb.code(r"""
%matplotlib inline
import time

import matplotlib.pyplot as plt
import torch

from llama3 import ModelArgs, MultiHeadGQAttention, RoPE
from llama3.checks import check_kv_cache

torch.set_printoptions(precision=4, sci_mode=False)
""")

nb.md(r"""
## 1. What a decoding step needs

In a causal attention layer, position $t$ computes a query $q_t = x_t W_q$, a key $k_t = x_t W_k$ and a value
$v_t = x_t W_v$, and its output is

$$
o_t = \sum_{s \le t} \operatorname{softmax}_s\!\left(\frac{q_t \cdot k_s}{\sqrt{D}}\right) v_s .
$$

Because of the causal mask, **nothing at positions $s < t$ ever depends on position $t$**. When token $t+1$
arrives, the keys and values of positions $0..t$ are exactly the ones computed at the previous steps, in every
layer. Only the *new* position needs a query (the old queries have already produced their outputs). So each step
can

1. compute $q, k, v$ for the new token only,
2. append $k, v$ to a per-layer store of all earlier keys and values: the cache,
3. attend from the one new query over all cached keys.

Without the cache, step $t$ pushes all $t$ tokens through every projection and MLP again. Over $N$ generated
tokens after a prompt of $P$ tokens that is

$$
\sum_{t=P+1}^{P+N} t \;=\; N P + \frac{N(N+1)}{2} \quad \text{token passes, versus} \quad P + N
\quad \text{with the cache.}
$$

(The attention scores themselves still grow with $t$ at each step, $q_t \cdot k_s$ for $s \le t$, but they are a
small part of the work for the lengths a small model sees.)
""")
nb.code(r"""
prompt_len, new_tokens = 16, 240
steps = torch.arange(1, new_tokens + 1)
passes_without = prompt_len + steps  # step t reprocesses the whole sequence
passes_with = torch.ones(new_tokens, dtype=torch.long)  # only the new token (the prefill is paid once)
passes_with[0] += prompt_len

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
axes[0].plot(steps, passes_without, label="no cache: whole sequence")
axes[0].plot(steps, passes_with, label="KV cache: one token")
axes[0].set(xlabel="decoding step", ylabel="token passes in this step", title="Work per step")
axes[1].plot(steps, passes_without.cumsum(0), label="no cache (quadratic)")
axes[1].plot(steps, passes_with.cumsum(0), label="KV cache (linear)")
axes[1].set(xlabel="tokens generated", ylabel="token passes so far", title="Total work")
for ax in axes:
    ax.legend()
plt.tight_layout()
plt.show()
print(f"{new_tokens} tokens after a {prompt_len}-token prompt: {passes_without.sum().item():,} token passes "
      f"without a cache, {passes_with.sum().item():,} with one ({passes_without.sum() / passes_with.sum():.0f}x fewer)")
""")

nb.md(r"""
## 2. Exercise: `KV_Cache`

One cache serves one attention layer. Its design follows Meta's reference code:

* **Preallocate.** `__init__` allocates two zero buffers, `k_cache` and `v_cache`, each of shape
  `(max_batch_size, n_kv_heads, max_seq_len, head_dim)` in the given `dtype` and on the given `device`, and
  registers them with `register_buffer(..., persistent=False)` (they follow `.to(device)` but are not part of a
  checkpoint). Growing a tensor with `torch.cat` at every step would copy the whole past each time.
* **Write in place.** `update(start_pos, k, v)` receives the new keys and values of shape
  `(B, n_kv_heads, T, head_dim)` (T = the prompt length for the prefill, 1 while decoding), writes them at
  positions `[start_pos, start_pos + T)` of the first `B` rows, sets `seq_len = start_pos + T`, and returns the
  keys and values of **all** valid positions, `[0, start_pos + T)`, for the first `B` rows.
* **Refuse overflow.** Writing past `max_seq_len` raises a `ValueError` that names `max_seq_len`.
* `reset()` zeroes the buffers and `seq_len`, so a cache can serve the next prompt.

`n_kv_heads` rather than `heads`: with grouped-query attention (notebook 04) several query heads share one K/V
head, and only the K/V heads are cached.
""")
nb.exercise(r"""
class KV_Cache(torch.nn.Module):
    '''Keys and values of every past position for one attention layer, preallocated and written in place.'''

    def __init__(self, max_batch_size: int, n_kv_heads: int, max_seq_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        super().__init__()
        ### BEGIN SOLUTION
        ### HINT: two zero buffers (max_batch_size, n_kv_heads, max_seq_len, head_dim), not in checkpoints
        shape = (max_batch_size, n_kv_heads, max_seq_len, head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.seq_len = 0  # positions [0, seq_len) hold valid keys and values
        ### END SOLUTION

    @property
    def max_batch_size(self) -> int:
        return self.k_cache.shape[0]

    @property
    def max_seq_len(self) -> int:
        return self.k_cache.shape[2]

    def update(self, start_pos: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        '''Write k, v (B, n_kv_heads, T, head_dim) at positions [start_pos, start_pos + T); return the keys and
        values (B, n_kv_heads, start_pos + T, head_dim) of all positions so far.'''
        ### BEGIN SOLUTION
        ### HINT: refuse overflow; write in place at [start_pos, start_pos + T) of the first B rows; return all so far
        batch, _, seq, _ = k.shape
        end = start_pos + seq
        if end > self.max_seq_len:
            raise ValueError(f"KV cache overflow: positions [{start_pos}, {end}) do not fit max_seq_len="
                             f"{self.max_seq_len}. Build a larger cache or generate fewer tokens.")
        self.k_cache[:batch, :, start_pos:end] = k
        self.v_cache[:batch, :, start_pos:end] = v
        self.seq_len = end
        return self.k_cache[:batch, :, :end], self.v_cache[:batch, :, :end]
        ### END SOLUTION

    def reset(self) -> None:
        ### BEGIN SOLUTION
        ### HINT: back to the state right after __init__, without reallocating
        self.k_cache.zero_()
        self.v_cache.zero_()
        self.seq_len = 0
        ### END SOLUTION
""", grade_id="kv_cache")
nb.check("check_kv_cache(KV_Cache)", grade_id="check_kv_cache")

nb.md(r"""
## 3. Watching the cache fill

A batch of 2 sequences, 2 K/V heads of size 8, room for 12 positions: a prefill of 5 positions, then three
decoding steps of one position each. The buffers never change shape; the returned views grow.
""")
nb.code(r"""
torch.manual_seed(0)
cache = KV_Cache(max_batch_size=2, n_kv_heads=2, max_seq_len=12, head_dim=8)
print("buffers:", tuple(cache.k_cache.shape), "seq_len", cache.seq_len)
k, v = torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)  # (B, n_kv_heads, T, head_dim)
keys, values = cache.update(0, k, v)
print(f"prefill   T=5 at 0 -> keys {tuple(keys.shape)}, seq_len {cache.seq_len}")
for pos in range(5, 8):
    keys, values = cache.update(pos, torch.randn(2, 2, 1, 8), torch.randn(2, 2, 1, 8))
    print(f"decode    T=1 at {pos} -> keys {tuple(keys.shape)}, seq_len {cache.seq_len}")
print("the prefill is still there:", torch.equal(keys[:, :, :5], k))
try:
    cache.update(8, torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8))
except ValueError as error:
    print("ValueError:", error)
""", tags=["uses-exercise"])

nb.md(r"""
## 4. Your cache inside a real attention layer

`llama3.MultiHeadGQAttention` (you build it in notebook 04) calls `kv_cache.update(start_pos, k, v)` and attends
over what it returns. Below, one layer processes a 24-token sequence twice: once in full, as in training, and
once the way generation does it, a 16-token prefill into **your** cache followed by 8 one-token steps. The outputs
agree to float32 rounding.
""")
nb.code(r"""
torch.manual_seed(0)
args = ModelArgs(vocab_size=100, d_model=64, heads=8, group_size=2, num_layers=1, max_seq_len=64)
attention = MultiHeadGQAttention(args).eval()
rope = RoPE(args.head_dim, args.rope_theta)
x = torch.randn(1, 24, args.d_model)  # (B, T, d_model)
cos, sin = rope.cos_sin(torch.arange(24))

with torch.no_grad():
    full = attention(x, cos, sin)  # all 24 positions at once, causal
    cache = KV_Cache(1, args.n_kv_heads, 24, args.head_dim)
    pieces = [attention(x[:, :16], cos[:, :16], sin[:, :16], kv_cache=cache, start_pos=0)]  # prefill
    for t in range(16, 24):  # decode: one new position per step
        pieces.append(attention(x[:, t:t + 1], cos[:, t:t + 1], sin[:, t:t + 1], kv_cache=cache, start_pos=t))
cached = torch.cat(pieces, dim=1)
print("full:", tuple(full.shape), " cached:", tuple(cached.shape), " cache holds", cache.seq_len, "positions")
print("max |full - cached| < 1e-5:", (full - cached).abs().max().item() < 1e-5)
""", tags=["uses-exercise"])
nb.md(r"""
How much does it save? The next cell decodes 128 tokens with the same layer, once with your cache and once by
recomputing the whole prefix at every step, and prints the ratio of the two times (it varies from machine to
machine; notebook 08 measures the same on a whole model).
""")
nb.code(r"""
torch.manual_seed(0)
args = ModelArgs(vocab_size=100, d_model=256, heads=8, group_size=4, num_layers=1, max_seq_len=256)
attention = MultiHeadGQAttention(args).eval()
rope = RoPE(args.head_dim, args.rope_theta)
n = 128
x = torch.randn(1, n, args.d_model)
cos, sin = rope.cos_sin(torch.arange(n))

with torch.no_grad():
    start = time.perf_counter()
    for t in range(1, n + 1):  # no cache: the whole prefix again, keep the last row
        attention(x[:, :t], cos[:, :t], sin[:, :t])[:, -1]
    without = time.perf_counter() - start

    cache = KV_Cache(1, args.n_kv_heads, n, args.head_dim)
    start = time.perf_counter()
    for t in range(n):  # with the cache: one position per step
        attention(x[:, t:t + 1], cos[:, t:t + 1], sin[:, t:t + 1], kv_cache=cache, start_pos=t)
    with_cache = time.perf_counter() - start
print(f"{n} steps: no cache {without * 1e3:.0f} ms, KV cache {with_cache * 1e3:.0f} ms "
      f"-> {without / with_cache:.1f}x faster with the cache")
""", tags=["uses-exercise", "nbval-ignore-output", "skip-grade"])

nb.md(r"""
## 5. What the cache costs in memory

Per sequence, the cache stores a key and a value vector for every layer, K/V head and position:

$$
\text{bytes} = 2 \times n_\text{layers} \times n_\text{kv heads} \times D_\text{head} \times T \times
\text{bytes per element}.
$$

Llama 3 8B in bfloat16 (2 bytes): $2 \cdot 32 \cdot 8 \cdot 128 \cdot 2 = 131\,072$ bytes, **128 KiB per token**.
An 8K context costs 1 GiB per sequence, the full 128K of Llama 3.1 costs 16 GiB, per sequence. Without grouped-query
attention (32 K/V heads instead of 8) it would be four times as much; notebook 04 builds the attention that makes
this saving. This is also why `max_seq_len` in `ModelArgs` is an upper bound and not an allocation: `generate_kv`
builds caches sized for the call at hand (batch, prompt + new tokens).
""")
nb.code(r"""
def kv_cache_bytes(num_layers: int, n_kv_heads: int, head_dim: int, seq_len: int, batch: int = 1,
                   bytes_per_element: int = 2) -> int:
    '''Bytes of the K and V caches of all layers.'''
    return 2 * num_layers * n_kv_heads * head_dim * seq_len * batch * bytes_per_element


llamas = {  # name: (layers, query heads, K/V heads, head_dim), from the checkpoints' config.json
    "Llama 3.2 1B": (16, 32, 8, 64),
    "Llama 3.2 3B": (28, 24, 8, 128),
    "Llama 3 8B": (32, 32, 8, 128),
    "Llama 3 70B": (80, 64, 8, 128),
    "Llama 3.1 405B": (126, 128, 8, 128),
}
GiB = 2 ** 30
print(f"{'model':<15}{'KiB/token':>10}{'8K ctx GiB':>12}{'128K ctx GiB':>14}{'128K w/o GQA':>14}")
for name, (layers, heads, kv_heads, head_dim) in llamas.items():
    per_token = kv_cache_bytes(layers, kv_heads, head_dim, 1)
    print(f"{name:<15}{per_token / 1024:>10.0f}{kv_cache_bytes(layers, kv_heads, head_dim, 8192) / GiB:>12.2f}"
          f"{kv_cache_bytes(layers, kv_heads, head_dim, 131072) / GiB:>14.1f}"
          f"{kv_cache_bytes(layers, heads, head_dim, 131072) / GiB:>14.1f}")
""")
nb.code(r"""
lengths = torch.logspace(8, 17, 50, base=2)
fig, ax = plt.subplots(figsize=(7, 4))
for name, (layers, heads, kv_heads, head_dim) in llamas.items():
    ax.loglog(lengths, [kv_cache_bytes(layers, kv_heads, head_dim, int(n)) / GiB for n in lengths], label=name)
ax.axhline(80, color="grey", ls=":", label="80 GB accelerator")
ax.set(xlabel="context length (tokens)", ylabel="KV cache, GiB per sequence (bf16)",
       title="KV cache memory grows linearly with the context")
ax.legend(fontsize=8)
plt.show()
""")
nb.md(r"""
The formula and your class agree: one layer's cache for an 8K-token Llama 3 8B sequence, built on PyTorch's
`meta` device (shapes without memory), times 32 layers.
""")
nb.code(r"""
with torch.device("meta"):
    layer_cache = KV_Cache(1, n_kv_heads=8, max_seq_len=8192, head_dim=128, dtype=torch.bfloat16)
per_layer = sum(buf.numel() * buf.element_size() for buf in (layer_cache.k_cache, layer_cache.v_cache))
print(f"one layer: {per_layer / 2**20:.0f} MiB; 32 layers: {32 * per_layer / GiB:.2f} GiB; "
      f"formula: {kv_cache_bytes(32, 8, 128, 8192) / GiB:.2f} GiB")
""", tags=["uses-exercise"])

nb.md(r"""
## 6. Hand-over to the reference

`llama3.KV_Cache` is the class you wrote, with one more safety check (writing at a `start_pos` beyond `seq_len`
would leave a gap, so it is refused). Notebook 04 builds the attention layer that writes into it, and notebook 08
uses one cache per layer in `generate_kv` and measures the speed-up on a whole model.
""")
nb.code(r"""
from llama3 import KV_Cache as ReferenceKV_Cache

torch.manual_seed(4)
ours, ref = KV_Cache(2, 2, 8, 4), ReferenceKV_Cache(2, 2, 8, 4)
k, v = torch.randn(2, 2, 3, 4), torch.randn(2, 2, 3, 4)
same = all(torch.equal(a, b) for a, b in zip(ours.update(0, k, v), ref.update(0, k, v)))
print("same keys and values as llama3.KV_Cache:", same)
print(ref)
""", tags=["uses-exercise"])

nb.save()
