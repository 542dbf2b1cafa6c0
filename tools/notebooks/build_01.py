"""Build solutions/01_rope.ipynb: rotary position embeddings (RoPE), the first notebook of the course.

    .venv/bin/python tools/notebooks/build_01.py
    nice -n 10 .venv/bin/jupyter nbconvert --to notebook --execute --inplace solutions/01_rope.ipynb
    .venv/bin/python tools/make_exercises.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbbuild import Notebook  # noqa: E402

nb = Notebook("01_rope")

nb.md(r"""
# 01 · Rotary position embeddings (RoPE)

Attention compares every query with every key by a dot product, and a dot product does not care *where* a token
sits: shuffle the keys and each score stays the same. Llama tells attention about positions by **rotating** the
query and key vectors by an angle that grows with the position, *Rotary Position Embedding* (Su et al., 2021,
"RoFormer"). This notebook builds it from a 2-D rotation up to the `RoPE` module that `llama3/rope.py` ships.

**Learning goals**

1. Rotate a 2-D vector and see why a rotation keeps lengths and turns a dot product into a function of the
   *difference* of two angles.
2. Explain how a head vector of size $D$ becomes $D/2$ pairs, each turning at its own frequency
   $\theta^{-2i/D}$, and why Llama 3 uses $\theta = 500\,000$.
3. Implement `apply_rotary` (rotate adjacent pairs) and the `RoPE` module with the reference's signature,
   and check both against `llama3`.
4. Verify the relative-position property: $q_m \cdot k_n$ depends only on $n - m$.

Everything runs on a CPU in a few seconds.
""")
nb.versions()
nb.code(r"""
%matplotlib inline
import math

import matplotlib.pyplot as plt
import torch
from torch import nn

from llama3.checks import check_apply_rotary, check_rope

torch.set_printoptions(precision=4, sci_mode=False)
""")

nb.md(r"""
## 1. A rotation in two dimensions

Rotating the point $(x_0, x_1)$ by an angle $\varphi$ multiplies it by a rotation matrix:

$$
R(\varphi)\begin{pmatrix}x_0\\ x_1\end{pmatrix}
= \begin{pmatrix}\cos\varphi & -\sin\varphi\\ \sin\varphi & \cos\varphi\end{pmatrix}
  \begin{pmatrix}x_0\\ x_1\end{pmatrix}
= \begin{pmatrix}x_0\cos\varphi - x_1\sin\varphi\\ x_0\sin\varphi + x_1\cos\varphi\end{pmatrix}.
$$

Two facts make rotations the right tool for positions:

* a rotation keeps the length: $\lVert R(\varphi)\,x\rVert = \lVert x\rVert$, so it changes *where* a vector
  points but not how strongly it can match;
* rotations compose by adding angles and $R(\varphi)^\top = R(-\varphi)$, hence
  $$\big(R(\alpha)\,q\big)^\top \big(R(\beta)\,k\big) = q^\top R(\beta - \alpha)\,k .$$
  If the query at position $m$ is turned by $m\omega$ and the key at position $n$ by $n\omega$, their score
  depends on $(n - m)\,\omega$ only: **the offset, not the absolute positions**.

Let us check both facts numerically with a tiny helper.
""")
nb.code(r"""
def rotate_pair(v: torch.Tensor, angle: float) -> torch.Tensor:
    '''Rotate the 2-D vector v = (x0, x1) by `angle` radians.'''
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([v[0] * c - v[1] * s, v[0] * s + v[1] * c])


q, k = torch.tensor([1.0, 0.5]), torch.tensor([0.3, -1.2])
omega = 0.4  # radians per position
print(f"length before / after a rotation by 2 rad: {q.norm():.6f} / {rotate_pair(q, 2.0).norm():.6f}")
for m, n in [(0, 3), (5, 8), (40, 43)]:  # three pairs of positions, the same offset n - m = 3
    score = rotate_pair(q, m * omega) @ rotate_pair(k, n * omega)
    print(f"m={m:2d}, n={n:2d}: q_m . k_n = {score.item():+.6f}")
""")
nb.md(r"""
The three scores are equal: moving both tokens by the same amount changes nothing. The figure shows the same
vector at positions $0, 1, \dots, 7$ for a fast and a slow frequency $\omega$.
""")
nb.code(r"""
fig, axes = plt.subplots(1, 2, figsize=(8, 4))
v = torch.tensor([1.0, 0.0])
for ax, omega in zip(axes, (0.8, 0.1)):
    for pos in range(8):
        x0, x1 = rotate_pair(v, pos * omega).tolist()
        ax.annotate("", xy=(x0, x1), xytext=(0, 0),
                    arrowprops=dict(arrowstyle="->", color=plt.cm.viridis(pos / 7), lw=2))
        ax.text(1.12 * x0, 1.12 * x1, str(pos), ha="center", va="center", fontsize=9)
    ax.add_patch(plt.Circle((0, 0), 1, fill=False, ls=":", color="grey"))
    ax.set(xlim=(-1.3, 1.3), ylim=(-1.3, 1.3), aspect="equal", title=f"angle = position x {omega} rad")
    ax.axis("off")
fig.suptitle("One pair of dimensions at positions 0..7")
plt.show()
""")

nb.md(r"""
## 2. Many pairs, many frequencies

A head vector has $D$ dimensions (`head_dim`, 64 or 128 in real models). RoPE cuts it into $D/2$ pairs and
turns pair $i$ at position $m$ by the angle $m\,\omega_i$ with

$$
\omega_i = \theta^{-2i/D}, \qquad i = 0, 1, \dots, D/2 - 1 .
$$

Pair $0$ turns by one radian per position; the last pair turns by almost $\theta^{-1}$ radians per position,
so slowly that it needs about $2\pi\theta$ positions for a full turn (its *wavelength*
$\lambda_i = 2\pi/\omega_i$). Fast pairs resolve neighbouring tokens; slow pairs still tell apart tokens that are
thousands of positions apart. Llama 2 used $\theta = 10\,000$; Llama 3 raised it to $\theta = 500\,000$ so that
the slowest pairs have not wrapped around within its 8K (and, with scaling, 128K) context.

Which dimensions form a pair is a convention. Meta's code pairs **adjacent** dimensions $(2i, 2i+1)$, and so does
this course. Hugging Face pairs dimension $i$ with $i + D/2$ ("rotate_half") and permutes the rows of the $W_q$,
$W_k$ checkpoints to compensate; `llama3/convert.py` applies that permutation when loading their format.
""")
nb.code(r"""
head_dim = 128
i = torch.arange(0, head_dim, 2)  # 2i = 0, 2, 4, ..., D-2
for theta in (10_000.0, 500_000.0):
    freqs = theta ** (-i / head_dim)
    wavelengths = 2 * math.pi / freqs
    print(f"theta={theta:>9,.0f}: fastest pair {freqs[0]:.3f} rad/pos, slowest {freqs[-1]:.2e} rad/pos, "
          f"longest wavelength {wavelengths[-1]:,.0f} positions")

D = 8
print("adjacent pairs (Meta, this course):", [(2 * j, 2 * j + 1) for j in range(D // 2)])
print("half-split pairs (Hugging Face):   ", [(j, j + D // 2) for j in range(D // 2)])
""")
nb.code(r"""
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for theta in (10_000.0, 500_000.0):
    wavelengths = 2 * math.pi / theta ** (-i / head_dim)
    axes[0].semilogy(i // 2, wavelengths, label=f"theta = {theta:,.0f}")
axes[0].axhline(8192, color="grey", ls=":", label="8K context")
axes[0].set(xlabel="pair index i", ylabel="wavelength 2 pi / omega_i (positions)", title="Wavelength of each pair")
axes[0].legend()

positions = torch.arange(256)
angles = positions[:, None] * 500_000.0 ** (-i / head_dim)  # (positions, D/2)
image = axes[1].imshow(angles.cos().T, aspect="auto", cmap="RdBu", origin="lower")
axes[1].set(xlabel="position m", ylabel="pair index i", title="cos(m * omega_i), theta = 500 000")
fig.colorbar(image, ax=axes[1])
plt.tight_layout()
plt.show()
""")
nb.md(r"""
Read the right panel row by row: the bottom rows (fast pairs) flicker from one position to the next, the top
rows barely change over 256 positions. Together the pairs give every position a distinct "fingerprint", like
the hands of a clock that turn at different speeds.

## 3. Exercise: rotate adjacent pairs

`apply_rotary(x, cos, sin)` receives

* `x` of shape `(B, T, H, D)`: batch, positions, heads, head dimension;
* `cos`, `sin` of shape `(B or 1, T, 1, D/2)`: one angle per position and pair, broadcast over the heads.

Split the last dimension into pairs `x0 = x[..., 0::2]`, `x1 = x[..., 1::2]`, apply the rotation formula, and
interleave the results back so that pair $i$ returns to dimensions $(2i, 2i+1)$. Do the arithmetic in float32
and return `x`'s dtype: a bfloat16 model must get bfloat16 back.
""")
nb.exercise(r"""
def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    '''Rotate adjacent pairs (2i, 2i+1) of the last dimension of x (B, T, H, D) by angles given as cos, sin
    (B or 1, T, 1, D/2). Returns x's shape and dtype.'''
    ### BEGIN SOLUTION
    ### HINT: pair (2i, 2i+1) -> (x0 cos - x1 sin, x0 sin + x1 cos), interleaved back; float32 inside, x's dtype out
    pairs = x.float().unflatten(-1, (-1, 2))  # (B, T, H, D/2, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]  # (B, T, H, D/2) each
    rotated = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)  # (B, T, H, D/2, 2)
    return rotated.flatten(-2).type_as(x)  # (B, T, H, D)
    ### END SOLUTION
""", grade_id="apply_rotary")
nb.check("check_apply_rotary(apply_rotary)", grade_id="check_apply_rotary")

nb.md(r"""
## 4. Exercise: the `RoPE` module

The module holds the $D/2$ frequencies and turns positions into angles. Its interface is the reference's, so
that notebooks 04 to 08 can use yours or `llama3.RoPE` interchangeably:

* `RoPE(head_dim, theta=500000.0, rope_scaling=None)` stores `inv_freq`, the $D/2$ frequencies
  $\omega_i = \theta^{-2i/D}$, as a buffer (`register_buffer(..., persistent=False)`: it moves with `.to(device)`
  but is not saved in checkpoints, since it is recomputed from `theta`).
* `cos_sin(positions)` takes positions of shape `(T,)` or `(B, T)` and returns `cos`, `sin` of shape
  `(1 or B, T, 1, D/2)`, in float32. One row per sequence matters for **left-padded batches**, where each row's
  first real token is position 0, and the attention layer of notebook 04 consumes exactly these tensors.
* `forward(x, positions=0)` rotates `x` of shape `(B, T, H, D)`. `positions` is either an `int`, the position of
  the first token (the tokens then sit at `p, p+1, ..., p+T-1`: that is how a KV-cached decoder calls it), or
  a tensor of positions.

The angles are computed on the fly instead of from a precomputed table: there is then no maximum length to
outgrow. Llama 3.1 and later rescale the slow frequencies to stretch the context to 128K tokens; the helper
below does that arithmetic (it follows Meta's `apply_scaling`) and the skeleton already calls it.
""")
nb.code(r"""
def scale_frequencies(inv_freq: torch.Tensor, rope_scaling: dict) -> torch.Tensor:
    '''Llama 3.1 context extension: slow (long-wavelength) pairs are slowed down by `factor`, fast pairs are kept,
    and the band in between is interpolated smoothly.'''
    factor, low, high = rope_scaling["factor"], rope_scaling["low_freq_factor"], rope_scaling["high_freq_factor"]
    old_context = rope_scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_context / low, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelen >= old_context / high) & (wavelen <= old_context / low)
    return torch.where(is_medium, smoothed, scaled)
""")
nb.exercise(r"""
class RoPE(nn.Module):
    '''Rotary position embedding (Su et al., 2021) for heads of size head_dim, adjacent-pair convention.'''

    def __init__(self, head_dim: int, theta: float = 500000.0, rope_scaling: dict | None = None):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE head_dim must be even (it rotates pairs), got {head_dim}.")
        self.head_dim = head_dim
        self.theta = theta
        self.rope_scaling = rope_scaling
        ### BEGIN SOLUTION
        ### HINT: head_dim/2 frequencies theta^(-2i/head_dim), i = 0 .. head_dim/2 - 1, as a float tensor
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2).float() / head_dim))  # (D/2,)
        ### END SOLUTION
        if rope_scaling is not None:
            inv_freq = scale_frequencies(inv_freq, rope_scaling)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        '''positions (T,) or (B, T) -> cos, sin of shape (1 or B, T, 1, D/2), float32.'''
        ### BEGIN SOLUTION
        ### HINT: angle = position x frequency, shape (1 or B, T, D/2); then add a length-1 axis for the heads
        if positions.dim() == 1:
            positions = positions[None]  # (1, T)
        angles = positions[..., None].float() * self.inv_freq.float()  # (1|B, T, D/2)
        return angles.cos()[:, :, None, :], angles.sin()[:, :, None, :]  # (1|B, T, 1, D/2)
        ### END SOLUTION

    def forward(self, x: torch.Tensor, positions: torch.Tensor | int = 0) -> torch.Tensor:
        '''x (B, T, H, D); positions: the int position of the first token, or a (T,) / (B, T) tensor.'''
        ### BEGIN SOLUTION
        ### HINT: an int p stands for the positions p, p+1, ..., p+T-1; then rotate with cos_sin and apply_rotary
        if isinstance(positions, int):
            positions = torch.arange(positions, positions + x.shape[1], device=x.device)  # (T,)
        cos, sin = self.cos_sin(positions)
        return apply_rotary(x, cos, sin)  # (B, T, H, D)
        ### END SOLUTION
""", grade_id="rope")
nb.check("check_rope(RoPE)", grade_id="check_rope")

nb.md(r"""
## 5. Shapes, and the relative-position property with your module

A Llama 3 8B head has `head_dim = 128`. Below, a batch of 2 sequences of 10 tokens with 4 heads goes through
your `RoPE`; the shape does not change, and neither does the length of any head vector.
""")
nb.code(r"""
torch.manual_seed(0)
rope = RoPE(head_dim=128)
x = torch.randn(2, 10, 4, 128)  # (B, T, H, D)
cos, sin = rope.cos_sin(torch.arange(10))
print("x:         ", tuple(x.shape))
print("inv_freq:  ", tuple(rope.inv_freq.shape))
print("cos, sin:  ", tuple(cos.shape), tuple(sin.shape))
print("rope(x, 5):", tuple(rope(x, 5).shape))
print("lengths kept:", torch.allclose(rope(x, 5).norm(dim=-1), x.norm(dim=-1), atol=1e-4))
""", tags=["uses-exercise"])
nb.md(r"""
Now the property that makes RoPE a *relative* position encoding. Take one query vector $q$ and one key vector
$k$, place the query at position $m$ and the key at position $n$, and record $\text{score}(m, n) =
\text{RoPE}(q, m)\cdot\text{RoPE}(k, n)$ for all $m, n < 48$. If the score depends only on $n - m$, the matrix is
constant along every diagonal (a Toeplitz matrix).
""")
nb.code(r"""
torch.manual_seed(1)
rope = RoPE(head_dim=32, theta=10_000.0)
q, k = torch.randn(32), torch.randn(32)
n_pos = 48
# the same vector at every position: (1, T, 1, D) -> rotated copies at positions 0..T-1
q_rot = rope(q.expand(1, n_pos, 1, 32), 0)[0, :, 0]  # (T, D)
k_rot = rope(k.expand(1, n_pos, 1, 32), 0)[0, :, 0]
scores = q_rot @ k_rot.T  # scores[m, n] = RoPE(q, m) . RoPE(k, n)

diagonals_constant = all(torch.allclose(scores.diagonal(d), scores.diagonal(d)[0].expand(n_pos - abs(d)), atol=1e-4)
                         for d in range(-n_pos + 1, n_pos))
print("score(m, n) depends only on n - m:", diagonals_constant)
print("score(0, 3), score(20, 23), score(40, 43):", [round(scores[m, m + 3].item(), 4) for m in (0, 20, 40)])

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
image = axes[0].imshow(scores, cmap="RdBu")
axes[0].set(xlabel="key position n", ylabel="query position m", title="RoPE(q, m) . RoPE(k, n)")
fig.colorbar(image, ax=axes[0])
offsets = torch.arange(0, 512)
for theta in (10_000.0, 500_000.0):  # the score of a vector with itself, as the distance grows
    rope_t = RoPE(head_dim=128, theta=theta)
    v = torch.ones(1, 1, 1, 128)
    far = torch.cat([rope_t(v, int(o)) for o in offsets], dim=1)[0, :, 0]  # (512, D)
    axes[1].plot(offsets, (far @ v.flatten()) / 128, label=f"theta = {theta:,.0f}")
axes[1].set(xlabel="offset n - m", ylabel="normalised score", title="Score of a vector with itself vs distance")
axes[1].legend()
plt.tight_layout()
plt.show()
""", tags=["uses-exercise"])
nb.md(r"""
Left: every diagonal has one colour, so attention can learn patterns such as "look three tokens back" once and
apply them at any position. Right: the score of a vector with its own rotated copy decays, with wiggles, as the
tokens move apart; with $\theta = 500\,000$ it decays more slowly, one reason Llama 3 handles longer contexts.

## 6. Interactive: position, pair and theta

Move the sliders: the left panel shows pair $i$ of a vector at position 0 and at the chosen position (the angle
between them is $m\,\omega_i$); the right panel shows all frequencies $\omega_i$ for the chosen $\theta$ with the
selected pair marked. The function is called once with fixed arguments first, so it also runs without a
browser.
""")
nb.code(r"""
def show_rotation(position: int = 5, pair: int = 0, theta: float = 500000.0, head_dim: int = 64):
    '''Plot pair `pair` of a head_dim vector rotated to `position`, and the frequencies for this theta.'''
    rope = RoPE(head_dim, theta)
    v = torch.zeros(1, 1, 1, head_dim)
    v[..., 0::2] = 1.0  # every pair starts at (1, 0)
    turned = rope(v, position)[0, 0, 0].view(-1, 2)  # (D/2, 2)
    angle = position * rope.inv_freq[pair].item()

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    axes[0].add_patch(plt.Circle((0, 0), 1, fill=False, ls=":", color="grey"))
    axes[0].annotate("", xy=(1, 0), xytext=(0, 0), arrowprops=dict(arrowstyle="->", color="grey", lw=2))
    x0, x1 = turned[pair].tolist()
    axes[0].annotate("", xy=(x0, x1), xytext=(0, 0), arrowprops=dict(arrowstyle="->", color="C3", lw=2.5))
    axes[0].set(xlim=(-1.3, 1.3), ylim=(-1.3, 1.3), aspect="equal",
                title=f"pair {pair} at position {position}: {math.degrees(angle) % 360:.1f} degrees")
    axes[0].axis("off")
    axes[1].semilogy(rope.inv_freq, ".-", color="C0")
    axes[1].semilogy([pair], [rope.inv_freq[pair]], "o", color="C3", ms=10)
    axes[1].set(xlabel="pair index i", ylabel="omega_i (rad / position)", title=f"frequencies, theta = {theta:,.0f}")
    plt.tight_layout()
    plt.show()


show_rotation(position=5, pair=3, theta=500000.0)
""", tags=["uses-exercise"])
nb.code(r"""
from ipywidgets import FloatLogSlider, IntSlider, fixed, interact

interact(show_rotation, position=IntSlider(5, 0, 200), pair=IntSlider(0, 0, 31),
         theta=FloatLogSlider(value=500000.0, base=10, min=2, max=7, step=0.1, description="theta"),
         head_dim=fixed(64));
""", tags=["nbval-ignore-output", "skip-grade", "uses-exercise"])

nb.md(r"""
## 7. Hand-over to the reference

`llama3.RoPE` is the class you just wrote, plus Llama 3.1 scaling built in. From here on the course imports it:
notebook 04 feeds its `cos_sin` to the attention layer, and notebook 06 builds the full model around one shared
`RoPE`. A last comparison, with Llama 3.1 scaling switched on:
""")
nb.code(r"""
from llama3 import RoPE as ReferenceRoPE

scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
           "original_max_position_embeddings": 8192}
torch.manual_seed(2)
x = torch.randn(1, 6, 2, 128)
for kwargs in ({}, {"rope_scaling": scaling}):
    ours, ref = RoPE(128, 500000.0, **kwargs), ReferenceRoPE(128, 500000.0, **kwargs)
    print(f"{'Llama 3.1 scaling' if kwargs else 'plain':>17}: max |yours - llama3.RoPE| =",
          f"{(ours(x, 1000) - ref(x, 1000)).abs().max().item():.1e}")
print(ReferenceRoPE(128, 500000.0, scaling))
""", tags=["uses-exercise"])

nb.save()
