"""Build solutions/02_ffn.ipynb: RMSNorm and the SwiGLU feed-forward block.

    .venv/bin/python tools/notebooks/build_02.py
    nice -n 10 .venv/bin/jupyter nbconvert --to notebook --execute --inplace solutions/02_ffn.ipynb
    .venv/bin/python tools/make_exercises.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbbuild import Notebook  # noqa: E402

nb = Notebook("02_ffn")

nb.md(r"""
# 02 · RMSNorm and the SwiGLU feed-forward block

Every Llama decoder layer (notebook 05) is two sub-blocks, attention and a feed-forward network, each preceded by
a normalisation. This notebook builds the two pieces that are *not* attention: **RMSNorm** (Zhang & Sennrich,
2019) and the **SwiGLU** feed-forward block (Shazeer, 2020, "GLU Variants Improve Transformer"), with the rule
that sizes its hidden layer.

**Learning goals**

1. State what RMSNorm computes, how it differs from LayerNorm, and why the statistics are taken in float32 and
   cast back *before* the weight is applied.
2. Implement `RMSNorm(dim, eps)` and check it bit for bit in bfloat16 against `llama3.RMSNorm`.
3. Compare SiLU with ReLU and GELU, and explain the gated linear unit $\text{SiLU}(xW_1) \odot xW_3$.
4. Derive Llama's hidden-size rule (`multiple_of`, `ffn_dim_multiplier`) and reproduce $d = 4096 \to 14336$ for
   Llama 3 8B.
5. Implement `FFN(d_model, multiple_of, ffn_dim_multiplier, hidden_dim)` with Meta's parameter names `w1`, `w2`,
   `w3`.
""")
nb.versions()
nb.code(r"""
%matplotlib inline
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

from llama3.checks import check_ffn, check_rmsnorm

torch.set_printoptions(precision=4, sci_mode=False)
""")

nb.md(r"""
## 1. RMSNorm

Deep residual networks add the output of every block to a running *residual stream*; without normalisation its
scale drifts from layer to layer. LayerNorm fixes both the mean and the spread of each vector:
$\text{LN}(x) = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} \odot g + b$. Zhang & Sennrich found that the
re-centring is not what helps; re-*scaling* is. RMSNorm keeps only that:

$$
\text{RMS}(x) = \sqrt{\frac{1}{d}\sum_{j=1}^{d} x_j^2 + \epsilon}, \qquad
\text{RMSNorm}(x) = \frac{x}{\text{RMS}(x)} \odot g ,
$$

with a learned gain $g \in \mathbb{R}^d$ (initialised to ones, called `weight`) and no bias. It is cheaper (one
reduction instead of two) and works as well. $\epsilon$ (`norm_eps`, $10^{-5}$ in Llama 3) keeps an all-zero
vector from dividing by zero.

**Precision.** Models run in bfloat16, which has only 8 bits of mantissa. The mean of squares is therefore taken
in float32, and the normalised vector is cast back to the input dtype *before* it is multiplied by the weight:
`self.weight * normed.type_as(x)`. Meta's and Hugging Face's Llama do exactly this, and the order decides the last
bit of a quarter of the outputs; the checker compares bfloat16 outputs bit for bit.
""")
nb.code(r"""
torch.manual_seed(0)
x = torch.randn(3, 8) * torch.tensor([[0.1], [1.0], [10.0]]) + torch.tensor([[0.0], [2.0], [-5.0]])
rms = x.pow(2).mean(-1, keepdim=True).sqrt()
print("RMS of each row before:", rms.flatten())
print("RMS of each row after: ", (x / rms).pow(2).mean(-1).sqrt())
print("mean of each row after:", (x / rms).mean(-1), "(RMSNorm does not centre)")
""")
nb.md(r"""
## 2. Exercise: `RMSNorm`

Write the forward pass. The skeleton fixes the parameter name `weight`, so the checker can load reference weights.
""")
nb.exercise(r"""
class RMSNorm(nn.Module):
    '''y = x / sqrt(mean(x^2) + eps) * weight (Zhang & Sennrich, 2019): statistics in float32, cast back to the
    input dtype, then scaled by the learned weight.'''

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., dim) -> (..., dim)
        ### BEGIN SOLUTION
        ### HINT: statistics in float32 over the last dim, eps inside the root; cast back BEFORE the weight
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.type_as(x)
        ### END SOLUTION
""", grade_id="rmsnorm")
nb.check("check_rmsnorm(RMSNorm)", grade_id="check_rmsnorm")
nb.code(r"""
torch.manual_seed(0)
norm = RMSNorm(64)
h = 5 * torch.randn(2, 7, 64) + 3  # (B, T, d_model): large and off-centre
out = norm(h)
print("input: ", tuple(h.shape), " RMS per vector ~", round(h.pow(2).mean(-1).sqrt().mean().item(), 3))
print("output:", tuple(out.shape), " RMS per vector ~", round(out.pow(2).mean(-1).sqrt().mean().item(), 3))
print("bfloat16 in -> ", norm.to(torch.bfloat16)(h.bfloat16()).dtype, "out")
""", tags=["uses-exercise"])

nb.md(r"""
## 3. The feed-forward block: from ReLU to SwiGLU

After attention has mixed information *between* positions, the feed-forward network processes each position on
its own. The original Transformer used two matrices and a ReLU, $\text{FFN}(x) = \max(0, xW_1)W_2$ with a hidden
size of $4d$. Shazeer (2020) replaced it with a *gated linear unit*: one projection is passed through a smooth
activation and multiplies another, element by element:

$$
\text{SwiGLU}(x) = \big(\text{SiLU}(xW_1) \odot xW_3\big)\, W_2, \qquad \text{SiLU}(z) = z\,\sigma(z) =
\frac{z}{1 + e^{-z}} .
$$

`w1` is the **gate**, `w3` the **up** projection, `w2` the **down** projection (Meta's names; Hugging Face calls
them `gate_proj`, `up_proj`, `down_proj`). SiLU ("swish") is smooth, lets small negative values through, and its
gradient does not vanish abruptly at 0 as ReLU's does. The gate lets the network switch each hidden unit on and
off *depending on the input*, which measurably lowers the loss at equal cost.
""")
nb.code(r"""
z = torch.linspace(-5, 5, 401, requires_grad=True)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for name, fn in (("ReLU", F.relu), ("GELU", F.gelu), ("SiLU (swish)", F.silu)):
    y = fn(z)
    (grad,) = torch.autograd.grad(y.sum(), z)
    axes[0].plot(z.detach(), y.detach(), label=name)
    axes[1].plot(z.detach(), grad, label=name)
axes[0].set(title="activation", xlabel="z", ylim=(-1, 5))
axes[1].set(title="derivative", xlabel="z")
for ax in axes:
    ax.axhline(0, color="grey", lw=0.5)
    ax.legend()
plt.tight_layout()
plt.show()
print("SiLU minimum:", round(F.silu(z).min().item(), 4), "at z =", round(z[F.silu(z).argmin()].item(), 3))
""")

nb.md(r"""
## 4. The hidden-size rule

SwiGLU has **three** $d \times h$ matrices where the ReLU block had two. To keep the parameter count of a
$4d$-wide two-matrix FFN ($2 \cdot 4d^2 = 8d^2$), Llama shrinks the hidden size to two thirds:
$3 d h = 8 d^2 \Rightarrow h = \tfrac{2}{3}\,4d$. Then two practical adjustments:

1. `ffn_dim_multiplier` (Llama 3: 1.3 for 8B and 70B) widens it again: $h \leftarrow \lfloor 1.3\,h \rfloor$;
2. `multiple_of` $= m$ (1024 for Llama 3 8B, 4096 for 70B) rounds it **up** to a multiple, so the matrix shapes
   suit the GPU's tiles: $h \leftarrow m \lceil h / m \rceil$.

In code, as in Meta's `model.py`: `hidden = int(2 * 4 * d / 3)`, then `int(multiplier * hidden)` when a multiplier
is set, then the rounding. The table below is for the real checkpoints (their `params.json`).
""")
nb.code(r"""
def hidden_size_steps(d_model: int, multiple_of: int, ffn_dim_multiplier: float | None):
    '''The three steps of Llama's rule, for the table (the exercise below writes the rule itself).'''
    base = int(2 * 4 * d_model / 3)
    scaled = int(ffn_dim_multiplier * base) if ffn_dim_multiplier is not None else base
    return base, scaled, multiple_of * math.ceil(scaled / multiple_of)


models = {  # name: (d_model, multiple_of, ffn_dim_multiplier), from Meta's params.json
    "Llama 2 7B": (4096, 256, None),
    "Llama 3 8B": (4096, 1024, 1.3),
    "Llama 3 70B": (8192, 4096, 1.3),
    "Llama 3.1 405B": (16384, 4096, 1.2),
    "Llama 3.2 1B": (2048, 256, 1.5),
    "Llama 3.2 3B": (3072, 256, 1.0),
}
print(f"{'model':<15}{'d_model':>8}{'2/3*4d':>8}{'x mult':>8}{'hidden':>8}{'hidden/d':>9}")
for name, (d, m, mult) in models.items():
    base, scaled, hidden = hidden_size_steps(d, m, mult)
    print(f"{name:<15}{d:>8}{base:>8}{scaled:>8}{hidden:>8}{hidden / d:>9.2f}")
""")
nb.code(r"""
ds = range(64, 1025, 64)
fig, ax = plt.subplots(figsize=(7, 3.6))
ax.plot(ds, [8 * x / 3 for x in ds], "k:", label="8d/3 (exact)")
for m in (64, 256):
    ax.plot(ds, [hidden_size_steps(x, m, None)[2] for x in ds], "o-", ms=3, label=f"rounded up, multiple_of={m}")
ax.set(xlabel="d_model", ylabel="hidden size", title="SwiGLU hidden size: 2/3 of 4d, rounded up")
ax.legend()
plt.show()
""")

nb.md(r"""
## 5. Exercise: `FFN`

Two blocks to fill: the hidden-size rule in `__init__` (used unless an explicit `hidden_dim` is given, as
Hugging Face checkpoints with an `intermediate_size` need) and the SwiGLU forward pass. The layers have no bias,
like every linear layer in Llama.
""")
nb.exercise(r"""
class FFN(nn.Module):
    '''SwiGLU feed-forward block (Shazeer, 2020): w2(silu(w1 x) * w3 x), w1 gate, w3 up, w2 down.'''

    def __init__(self, d_model: int, multiple_of: int = 256, ffn_dim_multiplier: float | None = None,
                 hidden_dim: int | None = None):
        super().__init__()
        if hidden_dim is None:
            ### BEGIN SOLUTION
            ### HINT: 2/3 of 4 * d_model, scaled by the multiplier if given (int() each time), rounded UP to multiple_of
            hidden_dim = int(2 * (4 * d_model) / 3)
            if ffn_dim_multiplier is not None:
                hidden_dim = int(ffn_dim_multiplier * hidden_dim)
            hidden_dim = multiple_of * math.ceil(hidden_dim / multiple_of)
            ### END SOLUTION
        self.hidden_dim = hidden_dim
        self.w1 = nn.Linear(d_model, hidden_dim, bias=False)  # gate
        self.w2 = nn.Linear(hidden_dim, d_model, bias=False)  # down
        self.w3 = nn.Linear(d_model, hidden_dim, bias=False)  # up

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d_model) -> (B, T, d_model)
        ### BEGIN SOLUTION
        ### HINT: only the gate (w1) goes through SiLU; it multiplies the up branch (w3); w2 projects back
        return self.w2(F.silu(self.w1(x)) * self.w3(x))
        ### END SOLUTION
""", grade_id="ffn")
nb.check("check_ffn(FFN)", grade_id="check_ffn")

nb.md(r"""
## 6. Shapes and parameter counts

The block maps `(B, T, d_model)` to the same shape, position by position. For Llama 3 8B the three matrices hold
$3 \cdot 4096 \cdot 14336 \approx 176$ M parameters per layer, about four fifths of the layer (attention has
42 M); we build that size on
PyTorch's `meta` device, which records shapes without allocating memory.
""")
nb.code(r"""
torch.manual_seed(0)
ffn = FFN(d_model=64, multiple_of=32)
x = torch.randn(2, 5, 64)  # (B, T, d_model)
print("hidden size for d_model=64, multiple_of=32:", ffn.hidden_dim)
print("w1", tuple(ffn.w1.weight.shape), " w3", tuple(ffn.w3.weight.shape), " w2", tuple(ffn.w2.weight.shape))
print("x", tuple(x.shape), "-> ffn(x)", tuple(ffn(x).shape))

with torch.device("meta"):
    big = FFN(4096, multiple_of=1024, ffn_dim_multiplier=1.3)  # Llama 3 8B
n_params = sum(p.numel() for p in big.parameters())
print(f"Llama 3 8B FFN: hidden {big.hidden_dim}, {n_params / 1e6:.1f} M parameters per layer "
      f"(a 4d ReLU FFN would have {2 * 4096 * 4 * 4096 / 1e6:.1f} M)")
""", tags=["uses-exercise"])
nb.md(r"""
Each position is processed independently: the output at position $t$ depends on $x_t$ alone, which the next cell
checks by changing one position and watching the others stay put.
""")
nb.code(r"""
x2 = x.clone()
x2[:, 3] += 1.0  # change position 3 only
changed = (ffn(x2) - ffn(x)).abs().amax(dim=(0, 2)) > 0  # (T,)
print("positions whose output changed:", changed.nonzero().flatten().tolist())
""", tags=["uses-exercise"])

nb.md(r"""
## 7. Hand-over to the reference

`llama3.RMSNorm` and `llama3.FFN` are the classes you wrote (the package's rule lives in
`llama3.config.ffn_hidden_size`). Notebook 05 wires them into the pre-norm decoder layer:
`h = x + attention(attention_norm(x))`, `out = h + feed_forward(ffn_norm(h))`.
""")
nb.code(r"""
from llama3 import FFN as ReferenceFFN
from llama3 import RMSNorm as ReferenceRMSNorm
from llama3 import ffn_hidden_size

torch.manual_seed(3)
x = torch.randn(2, 4, 48)
ref_norm, ref_ffn = ReferenceRMSNorm(48), ReferenceFFN(48, multiple_of=16, ffn_dim_multiplier=1.3)
ours_norm, ours_ffn = RMSNorm(48), FFN(48, multiple_of=16, ffn_dim_multiplier=1.3)
ours_norm.load_state_dict(ref_norm.state_dict())
ours_ffn.load_state_dict(ref_ffn.state_dict())  # same names, same shapes: the weights load as they are
print("max |yours - llama3| RMSNorm:", (ours_norm(x) - ref_norm(x)).abs().max().item())
print("max |yours - llama3| FFN:    ", (ours_ffn(x) - ref_ffn(x)).abs().max().item())
print("ffn_hidden_size(4096, 1024, 1.3) =", ffn_hidden_size(4096, 1024, 1.3))
""", tags=["uses-exercise"])

nb.save()
