"""check_rope: the learner's ``RoPE(head_dim, theta, rope_scaling)`` against ``llama3.rope.RoPE``.

RoPE has no weights, so the check feeds the same inputs to both and compares. When they disagree it recomputes
the rotation with one deliberate mistake at a time (half-split pairing, a wrong frequency exponent, the position
offset ignored, ...) and names the mistake whose output the learner's matches.
"""

from __future__ import annotations

import torch

from llama3.checks._common import build, call, checker, close, fail, learner_dependency, passed, prerequisite
from llama3.rope import RoPE as ReferenceRoPE
from llama3.rope import apply_rotary

_reference_apply_rotary = apply_rotary

# Llama 3.1's scaling, as in the 8B/70B/405B config.json
LLAMA31_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192}

ATOL = 1e-4  # float32 angles up to position ~100: the maths is exact, the rounding of theta**x is not


def _frequencies(head_dim: int, theta: float, exponent: str) -> torch.Tensor:
    """The D/2 frequencies, right (``"2i/D"``) or with a typical mistake in the exponent."""
    if exponent == "2i/D":  # correct: theta^(-2i/D), i = 0 .. D/2-1
        power = torch.arange(0, head_dim, 2).double() / head_dim
    elif exponent == "i/D":  # forgot the factor 2
        power = torch.arange(0, head_dim // 2).double() / head_dim
    elif exponent == "4i/D":  # arange(0, D, 2) and a factor 2 on top
        power = 2 * torch.arange(0, head_dim, 2).double() / head_dim
    elif exponent == "+2i/D":  # theta^(+2i/D): frequencies grow instead of shrink
        power = -torch.arange(0, head_dim, 2).double() / head_dim
    elif exponent == "2i/(D-2)":  # linspace(0, 1, D/2): the last pair reaches theta^-1 exactly
        power = torch.linspace(0, 1, head_dim // 2).double()
    else:
        raise ValueError(exponent)
    return (1.0 / theta ** power).float()


def _rotate(x: torch.Tensor, positions: torch.Tensor, freqs: torch.Tensor, pairing: str = "adjacent",
            direction: float = 1.0) -> torch.Tensor:
    """Rotate x (B, T, H, D) at positions (1|B, T) by freqs (D/2,), pairing adjacent or half-split dimensions."""
    angles = positions[..., None].float() * freqs.float()  # (1|B, T, D/2), float32 as most solutions compute it
    cos, sin = angles.cos()[:, :, None, :], (direction * angles.sin())[:, :, None, :]
    if pairing == "adjacent":
        return apply_rotary(x, cos, sin)
    half = x.shape[-1] // 2  # Hugging Face's convention: dimension i pairs with i + D/2
    x0, x1 = x[..., :half].float(), x[..., half:].float()
    return torch.cat((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).type_as(x)


def _mistakes(head_dim: int, theta: float):
    """(what is wrong, how to fix it, kwargs for _rotate) for each deliberate mistake the diagnosis tries, most
    likely first."""
    right = _frequencies(head_dim, theta, "2i/D")
    yield ("you rotate dimension i with dimension i + head_dim/2 (the Hugging Face 'rotate_half' convention); this "
           "course follows Meta and rotates ADJACENT pairs, dimensions (2i, 2i+1).",
           "pair x[..., 0::2] with x[..., 1::2] and interleave the rotated halves back with "
           "torch.stack((r0, r1), dim=-1).flatten(-2).",
           dict(freqs=right, pairing="half"))
    yield ("the position offset is ignored: yours rotates the T tokens as if they started at position 0, which "
           "breaks cached decoding and left-padded batches.",
           "forward(x, positions=p) rotates the tokens to positions p, p+1, ..., p+T-1 for an int p "
           "(torch.arange(p, p + T)), or to the given (T,) or (B, T) tensor of positions.",
           dict(freqs=right, offset=False))
    for exponent, wrong in (("i/D", "theta^(-i/D): the factor 2 is missing"),
                            ("4i/D", "theta^(-4i/D): torch.arange(0, D, 2) already contains the factor 2"),
                            ("+2i/D", "theta^(+2i/D): the sign of the exponent is flipped"),
                            ("2i/(D-2)", "theta^(-2i/(D-2)) (torch.linspace(0, 1, D/2) reaches the end exactly)")):
        yield (f"wrong frequency exponent: your frequencies are {wrong}.",
               "pair i turns at freq_i = theta^(-2i/head_dim) for i = 0 .. head_dim/2 - 1: "
               "1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim).",
               dict(freqs=_frequencies(head_dim, theta, exponent)))
    yield (f"the `theta` argument is ignored: your frequencies use base 10000 (Llama 2) instead of theta={theta:g}.",
           "use the theta passed to __init__ (self.theta; Llama 3 uses 500000) in the frequencies.",
           dict(freqs=_frequencies(head_dim, 10000.0, "2i/D")))
    yield ("the rotation turns the wrong way: yours has the signs of the sin terms swapped.",
           "pair (x0, x1) becomes (x0 cos - x1 sin, x0 sin + x1 cos).",
           dict(freqs=right, direction=-1.0))


def _diagnose(mine, actual: torch.Tensor, x: torch.Tensor, positions: torch.Tensor, head_dim: int, theta: float,
              where: str) -> None:
    """The learner's output differs from the reference: name the mistake it matches, else explain what to check."""
    if not torch.isfinite(actual.float()).all():
        fail(f"RoPE {where}: the output contains NaN or inf; a rotation only multiplies by cos and sin.")
    for what, fix, kwargs in _mistakes(head_dim, theta):
        offset = kwargs.pop("offset", True)
        pos = positions if offset else torch.arange(x.shape[1])[None]
        if close(actual, _rotate(x, pos, **kwargs), atol=ATOL, rtol=ATOL):
            fail(f"RoPE {where}: {what}", fix)
    # No known mistake: probe the angles directly. The unit vector (1, 0) in every pair, rotated to position 1,
    # comes out as (cos f_i, sin f_i), so atan2 reads off the learner's per-pair frequencies.
    probe = torch.zeros(1, 1, 1, head_dim)
    probe[..., 0::2] = 1.0
    turned = call(mine, probe, 1, what=f"RoPE.forward {where}").float().flatten()
    yours = torch.atan2(turned[1::2], turned[0::2])
    right = _frequencies(head_dim, theta, "2i/D")
    err = (actual.float() - _rotate(x, positions, right).float()).abs().max().item()
    fail(f"RoPE {where}: the output differs from the reference (max abs error {err:.3g}). Rotating (1, 0) pairs to "
         f"position 1 gives your angles {[round(a, 4) for a in yours[:3].tolist()]}..., expected freq_i = "
         f"theta^(-2i/head_dim) = {[round(f, 4) for f in right[:3].tolist()]}...",
         "check, in order: pairs are adjacent dimensions (2i, 2i+1); angle = position * freq_i; (x0, x1) -> "
         "(x0 cos - x1 sin, x0 sin + x1 cos); positions start at the given offset.")


def _positions_for(x: torch.Tensor, positions) -> torch.Tensor:
    if isinstance(positions, int):
        return torch.arange(positions, positions + x.shape[1])[None]
    return positions if positions.dim() == 2 else positions[None]


def _check_forward(mine, ref, x, positions, head_dim, theta, where):
    out = call(mine, x, positions, what=f"RoPE.forward {where}")
    if not isinstance(out, torch.Tensor):
        fail(f"RoPE.forward {where}: expected a tensor, got {type(out).__name__}.")
    if out.shape != x.shape:
        fail(f"RoPE.forward {where}: output shape {tuple(out.shape)}, expected the input's shape {tuple(x.shape)} "
             f"(B, T, H, D): RoPE rotates, it never changes the shape.")
    if out.dtype != x.dtype:
        fail(f"RoPE.forward {where}: output dtype {out.dtype}, expected the input's {x.dtype}.",
             "rotate in float32 and cast back with .type_as(x).")
    expected = ref(x, positions)
    atol = ATOL if x.dtype == torch.float32 else 2e-2
    if not close(out, expected, atol=atol, rtol=atol):
        if x.dtype != torch.float32:
            fail(f"RoPE.forward {where}: a {x.dtype} input gives a different rotation than in float32.",
                 "compute the angles and the rotation in float32, then cast back with .type_as(x).")
        _diagnose(mine, out, x, _positions_for(x, positions), head_dim, theta, where)


@checker
def check_apply_rotary(apply_rotary) -> None:
    """Check a learner's ``apply_rotary(x, cos, sin)``: rotate the adjacent pairs of x (B, T, H, D) by angles whose
    cos and sin are (1 or B, T, 1, D/2); float32 inside, x's dtype out."""
    gen = torch.Generator().manual_seed(0)
    for head_dim in (8, 6):
        x = torch.randn(2, 5, 3, head_dim, generator=gen)  # (B, T, H, D)
        freqs = _frequencies(head_dim, 10000.0, "2i/D")
        per_row = torch.tensor([[0, 0, 0, 1, 2], [3, 4, 5, 6, 7]])
        for positions, where in ((torch.arange(5)[None], "cos, sin of shape (1, T, 1, D/2)"),
                                 (per_row, "cos, sin of shape (B, T, 1, D/2)")):
            angles = positions[..., None].float() * freqs  # (1|B, T, D/2)
            cos, sin = angles.cos()[:, :, None], angles.sin()[:, :, None]
            what = f"apply_rotary (head_dim={head_dim}, {where})"
            out = call(apply_rotary, x, cos, sin, what=what)
            if not isinstance(out, torch.Tensor) or out.shape != x.shape:
                fail(f"{what}: must return a tensor of x's shape {tuple(x.shape)}, got "
                     f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}.",
                     "split the last dimension into pairs (x.unflatten(-1, (-1, 2))), rotate, and flatten them back.")
            if close(out, _rotate(x, positions, freqs), atol=1e-5, rtol=1e-5):
                continue
            for pairing, direction, wrong, fix in (
                    ("half", 1.0, "you rotate dimension i with dimension i + D/2 (Hugging Face's rotate_half), "
                                  "not ADJACENT pairs (2i, 2i+1).",
                     "x0 = x[..., 0::2], x1 = x[..., 1::2], and interleave the results back with "
                     "torch.stack((r0, r1), dim=-1).flatten(-2)."),
                    ("adjacent", -1.0, "the rotation turns the wrong way: yours has the signs of the sin terms "
                                       "swapped.", "(x0, x1) -> (x0 cos - x1 sin, x0 sin + x1 cos).")):
                if close(out, _rotate(x, positions, freqs, pairing=pairing, direction=direction), atol=1e-5, rtol=1e-5):
                    fail(f"{what}: {wrong}", fix)
            pairs = x.unflatten(-1, (-1, 2))
            concatenated = torch.cat((pairs[..., 0] * cos - pairs[..., 1] * sin,
                                      pairs[..., 0] * sin + pairs[..., 1] * cos), dim=-1)
            if close(out, concatenated, atol=1e-5, rtol=1e-5):
                fail(f"{what}: the rotated halves are concatenated (torch.cat) instead of interleaved: pair i must go "
                     f"back to dimensions (2i, 2i+1).", "torch.stack((r0, r1), dim=-1).flatten(-2).")
            fail(f"{what}: the output differs from the rotation of adjacent pairs (max abs error "
                 f"{(out.float() - _rotate(x, positions, freqs)).abs().max():.3g}).",
                 "pair (x[..., 2i], x[..., 2i+1]) becomes (x0 cos_i - x1 sin_i, x0 sin_i + x1 cos_i).")
        what = f"apply_rotary (head_dim={head_dim}, bfloat16 x)"
        x16 = (4 * x).bfloat16()
        out = call(apply_rotary, x16, cos, sin, what=what)
        if not isinstance(out, torch.Tensor) or out.dtype != torch.bfloat16:
            fail(f"{what}: returned {getattr(out, 'dtype', type(out).__name__)}, expected x's dtype bfloat16.",
                 "rotate in float32 (x.float()) and return x's dtype with .type_as(x).")
        # the lesson prescribes float32 arithmetic: the result is the float32 rotation rounded once to bfloat16
        expected = _reference_apply_rotary(x16, cos, sin)
        differ = (out != expected).float().mean().item()
        if differ > 0.05:
            pairs = x16.unflatten(-1, (-1, 2))
            c, s_ = cos.bfloat16(), sin.bfloat16()
            in_bf16 = torch.stack((pairs[..., 0] * c - pairs[..., 1] * s_, pairs[..., 0] * s_ + pairs[..., 1] * c),
                                  dim=-1).flatten(-2)
            if (out != in_bf16).float().mean().item() < 0.01:
                fail(f"{what}: {differ:.0%} of the entries differ from the float32 rotation rounded to bfloat16: "
                     f"yours computes the rotation in bfloat16 (cos and sin cast to x's dtype), although the lesson "
                     f"computes it in float32 (bfloat16 keeps 8 bits of mantissa; each product rounds).",
                     "x.float() before the rotation, keep cos and sin in float32, and .type_as(x) only at the end.")
            fail(f"{what}: {differ:.0%} of the entries differ from the float32 rotation rounded to bfloat16.",
                 "rotate x.float() with float32 cos and sin, then cast back once with .type_as(x).")
    passed("apply_rotary: adjacent pairs rotated the right way, interleaved back, dtype kept.")


@checker
def check_rope(RoPE, *, apply_rotary=None) -> None:
    """Check a learner's ``RoPE`` class: forward(x (B, T, H, D), positions) and cos_sin(positions).

    The learner's own ``apply_rotary`` (exercise 1), passed explicitly or the one RoPE's code calls, is re-checked
    first: a wrong rotation there would otherwise be blamed on RoPE."""
    mine_rotary = learner_dependency(RoPE, "apply_rotary", apply_rotary, reference=_reference_apply_rotary)
    if mine_rotary is not None:
        prerequisite(check_apply_rotary, mine_rotary, "apply_rotary", "RoPE")
    gen = torch.Generator().manual_seed(0)
    for head_dim, theta in ((16, 500000.0), (6, 10000.0)):  # also an odd number of pairs
        mine = build(RoPE, head_dim, theta, what=f"RoPE({head_dim}, theta={theta:g})")
        ref = ReferenceRoPE(head_dim, theta)
        if not callable(mine):
            fail("RoPE: the object is not callable.",
                 "make the class an nn.Module with a forward(x, positions) method.")
        x = torch.randn(2, 5, 3, head_dim, generator=gen)  # (B, T, H, D)
        size = f"head_dim={head_dim}, theta={theta:g}"

        # position 0 rotates nothing: the cheapest test, and the clearest hint when it fails
        out = call(mine, x[:, :1], 0, what=f"RoPE.forward ({size}) at position 0")
        if isinstance(out, torch.Tensor) and out.shape == x[:, :1].shape and not close(out, x[:, :1], atol=1e-6):
            fail(f"RoPE ({size}): at position 0 every angle is 0, so RoPE must return x unchanged; yours changes it.",
                 "the angle is position * freq (not (position + 1) * freq), and cos multiplies both x0 and x1.")
        _check_forward(mine, ref, x, 0, head_dim, theta, f"({size}, positions=0)")
        _check_forward(mine, ref, x, 7, head_dim, theta, f"({size}, start position 7 given as an int)")
        _check_forward(mine, ref, x, torch.tensor([3, 4, 5, 6, 90]), head_dim, theta,
                       f"({size}, a (T,) tensor of positions)")
        left_padded = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])  # (B, T): row 0 has 2 pads in front
        _check_forward(mine, ref, x, left_padded, head_dim, theta,
                       f"({size}, a (B, T) tensor of positions, one row per sequence)")
        _check_forward(mine, ref, x.bfloat16(), 3, head_dim, theta, f"({size}, a bfloat16 input)")

        # cos_sin is what the attention layer of notebook 04 consumes
        for positions, shape in ((torch.arange(4), (1, 4, 1, head_dim // 2)), (left_padded, (2, 5, 1, head_dim // 2))):
            got = call(mine.cos_sin, positions, what=f"RoPE.cos_sin ({size})")
            if not (isinstance(got, tuple | list) and len(got) == 2):
                fail(f"RoPE.cos_sin ({size}): must return a pair (cos, sin), got {type(got).__name__}.")
            for name, actual, expected in zip(("cos", "sin"), got, ref.cos_sin(positions), strict=True):
                if not isinstance(actual, torch.Tensor) or actual.shape != shape:
                    fail(f"RoPE.cos_sin ({size}): {name} for positions of shape {tuple(positions.shape)} must have "
                         f"shape {shape} = (1 or B, T, 1, head_dim/2), got "
                         f"{tuple(actual.shape) if isinstance(actual, torch.Tensor) else type(actual).__name__}.",
                         "angles = positions[..., None].float() * self.inv_freq gives (1 or B, T, D/2); add the "
                         "heads axis with [:, :, None, :] (the 1 broadcasts over the heads).")
                if not close(actual, expected, atol=ATOL, rtol=ATOL):
                    fail(f"RoPE.cos_sin ({size}): {name} differs from the reference.",
                         f"it is {name}(position * freq_i) with freq_i = theta^(-2i/head_dim).")

    # Llama 3.1 long-context scaling slows the low frequencies down; the skeleton's helper does the arithmetic
    mine = build(RoPE, 16, 500000.0, LLAMA31_SCALING, what="RoPE(16, 500000, rope_scaling=Llama 3.1)")
    ref = ReferenceRoPE(16, 500000.0, LLAMA31_SCALING)
    x = torch.randn(1, 4, 2, 16, generator=gen)
    out = call(mine, x, 100, what="RoPE.forward with rope_scaling")
    if not close(out, ref(x, 100), atol=ATOL, rtol=ATOL):
        plain = ReferenceRoPE(16, 500000.0)
        if close(out, plain(x, 100), atol=ATOL, rtol=ATOL):
            fail("RoPE with rope_scaling (Llama 3.1): the `rope_scaling` argument is ignored: the output equals "
                 "RoPE without scaling.",
                 "when rope_scaling is not None, pass the frequencies through the scaling helper "
                 "(scale_frequencies(inv_freq, rope_scaling)) and use the scaled ones for the angles.")
        fail("RoPE with rope_scaling (Llama 3.1): the output differs from the reference.",
             "pass the frequencies through the scaling helper when rope_scaling is not None, and use the scaled ones "
             "for the angles.")
    passed(f"RoPE: adjacent pairs, theta^(-2i/D) frequencies, offsets and per-row positions, "
           f"cos_sin shapes, bfloat16 and Llama 3.1 scaling agree with llama3.RoPE (max error < {ATOL:g}).")


__all__ = ["check_apply_rotary", "check_rope", "LLAMA31_SCALING"]
