"""check_rmsnorm and check_ffn: the learner's ``RMSNorm(dim, eps)`` and ``FFN(d_model, multiple_of,
ffn_dim_multiplier, hidden_dim)`` against the reference, with the reference's weights loaded into them.

When an output disagrees, the checker recomputes it with one deliberate mistake at a time (no eps, LayerNorm's
mean subtraction, ReLU instead of SiLU, gate and up swapped, ...) and names the mistake the learner's matches.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from llama3.checks._common import build, call, checker, close, copy_weights, fail, passed
from llama3.config import ffn_hidden_size
from llama3.ffn import FFN as ReferenceFFN
from llama3.norm import RMSNorm as ReferenceRMSNorm


def _first_match(actual, candidates, atol, rtol):
    """(what, fix) of the first (what, fix, tensor) candidate that ``actual`` equals (NaN where it has NaN), else
    None."""
    for what, fix, expected in candidates:
        if close(actual, expected, atol=atol, rtol=rtol, equal_nan=True):
            return what, fix
    return None


def _output(module, x, what):
    out = call(module, x, what=what)
    if not isinstance(out, torch.Tensor):
        fail(f"{what}: expected a tensor, got {type(out).__name__}.")
    if out.shape != x.shape:
        fail(f"{what}: output shape {tuple(out.shape)}, expected the input's shape {tuple(x.shape)}.")
    return out


def _no_bias_hint(learner, what):
    biases = [name for name in learner.state_dict() if name.endswith("bias")]
    if biases:
        fail(f"{what}: has bias parameters {biases}; Llama's layers have none.",
             "nn.Linear(..., bias=False); RMSNorm has only a weight.")


# ------------------------------------------------------------------------------------------------------ RMSNorm
def _rmsnorm_mistakes(x: torch.Tensor, weight: torch.Tensor, eps: float):
    """(what is wrong, how to fix it, output) for each typical RMSNorm mistake, computed in float32."""
    x = x.float()
    w = weight.float()
    ms = x.pow(2).mean(-1, keepdim=True)
    rms_fix = "x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps), then .type_as(x), then * self.weight."
    yield ("the eps is missing: without eps an all-zero (or tiny) vector gives NaN or explodes.",
           f"divide by sqrt(mean(x^2) + eps), not sqrt(mean(x^2)): {rms_fix}", w * x * torch.rsqrt(ms))
    for other in (1e-5, 1e-6, 1e-8):  # a hard-coded eps: the argument has no effect
        if other != eps:
            yield (f"the eps passed to __init__ is not used (yours behaves as eps={other:g}).",
                   "store it (self.eps = eps) and add self.eps inside the square root.",
                   w * x * torch.rsqrt(ms + other))
    yield ("eps is added outside the square root.", f"sqrt(mean(x^2) + eps): {rms_fix}", w * x / (ms.sqrt() + eps))
    yield ("you take the mean of x, not of x^2: the mean of x can be 0 or negative, and its square root is NaN.",
           f"the statistic is the mean of the SQUARES, x.pow(2).mean(-1, keepdim=True): {rms_fix}",
           w * x * torch.rsqrt(x.mean(-1, keepdim=True) + eps))
    yield ("you subtract the mean (that is LayerNorm); RMSNorm does not centre.",
           f"x / sqrt(mean(x^2) + eps) * weight: {rms_fix}",
           w * (x - x.mean(-1, keepdim=True)) * torch.rsqrt(x.var(-1, keepdim=True, unbiased=False) + eps))
    yield ("you divide by the mean of |x| instead of the root-mean-square sqrt(mean(x^2) + eps).", rms_fix,
           w * x / (x.abs().mean(-1, keepdim=True) + eps))
    yield ("the square root is missing: you divide by mean(x^2) + eps.", f"divide by sqrt(mean(x^2) + eps): {rms_fix}",
           w * x / (ms + eps))
    yield ("the statistic is taken over the wrong dimension: mean(x^2) runs over the last (feature) dimension.",
           rms_fix, w * x * torch.rsqrt(x.pow(2).mean(0, keepdim=True) + eps))
    yield ("the learned weight is not applied.", "multiply the normalised x by self.weight.",
           x * torch.rsqrt(ms + eps))


@checker
def check_rmsnorm(RMSNorm) -> None:
    """Check a learner's ``RMSNorm(dim, eps)``: float32 maths, tiny and zero inputs, and bfloat16 bit for bit."""
    gen = torch.Generator().manual_seed(0)
    for dim, eps in ((64, 1e-5), (10, 1e-6)):
        what = f"RMSNorm({dim}, eps={eps:g})"
        ref = ReferenceRMSNorm(dim, eps)
        with torch.no_grad():
            ref.weight.copy_(1 + 0.5 * torch.randn(dim, generator=gen))  # a non-trivial weight to load
        mine = build(RMSNorm, dim, eps, what=what)
        _no_bias_hint(mine, what)
        copy_weights(mine, ref, what)
        cases = (("random input", 3 * torch.randn(2, 5, dim, generator=gen)),
                 ("a tiny input (|x| ~ 1e-3, where eps matters)", 1e-3 * torch.randn(2, 3, dim, generator=gen)),
                 ("an all-zero input", torch.zeros(1, 2, dim)))
        for case, x in cases:
            where = f"{what} on {case}"
            out = _output(mine, x, where)
            expected = ref(x)
            if close(out, expected, atol=1e-5, rtol=1e-5):
                continue
            named = _first_match(out, _rmsnorm_mistakes(x, ref.weight.detach(), eps), atol=1e-5, rtol=1e-4)
            if named:
                fail(f"{where}: {named[0]}", named[1])
            if not torch.isfinite(out).all():
                fail(f"{where}: the output contains NaN or inf: a square root or a division of something that can be "
                     f"0 or negative.",
                     "x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps): the mean of squares plus eps is > 0.")
            err = (out.float() - expected).abs().max().item()
            fail(f"{where}: output differs from the reference (max abs error {err:.3g}).",
                 "RMSNorm is x / sqrt(mean(x^2 over the last dimension) + eps) * weight.")
        # bfloat16: the statistics in float32, the cast back BEFORE the multiplication by weight, as Meta and HF do.
        # A different but correct spelling (x / sqrt(...)) rounds identically in bfloat16; the wrong orders flip the
        # last bit of about a quarter of the entries, so a 5% threshold separates the two cleanly.
        ref16, mine16 = ref.to(torch.bfloat16), mine.to(torch.bfloat16)
        x = (3 * torch.randn(4, 7, dim, generator=gen)).bfloat16()
        where = f"{what} in bfloat16"
        out = _output(mine16, x, where)
        if out.dtype != torch.bfloat16:
            fail(f"{where}: output dtype {out.dtype}, expected bfloat16.",
                 "cast the normalised x back with .type_as(x) and then multiply by the weight.")
        expected = ref16(x)
        differ = (out != expected).float().mean().item()
        if differ > 0.05:
            x32, w = x.float(), ref16.weight
            normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
            before = (normed * w).type_as(x)
            in_bf16 = w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))
            if (out != before).float().mean().item() < 0.01:
                wrong = "the weight is applied before the cast back to the input dtype"
                fix = ("compute self.weight * normed.type_as(x): cast the float32 result back to the input dtype "
                       "FIRST and then multiply by the weight (Meta's and Hugging Face's order; it matters for "
                       "bit-exact bfloat16).")
            elif (out != in_bf16).float().mean().item() < 0.01:
                wrong = "the statistics are computed in bfloat16, although the lesson computes them in float32"
                fix = ("upcast with x.float() first, normalise in float32, then cast back with .type_as(x) before "
                       "multiplying by the weight.")
            else:
                wrong = "the rounding differs from float32 statistics cast back before the weight"
                fix = "normalise in float32 (x.float()), cast back with .type_as(x), then multiply by self.weight."
            fail(f"{where}: {differ:.0%} of the entries differ from the reference in the last bit: {wrong}.", fix)
    passed("RMSNorm: float32, tiny and zero inputs, and bfloat16 bit for bit agree with llama3.RMSNorm.")


# ---------------------------------------------------------------------------------------------------------- FFN
def _hidden_size_mistakes(d_model: int, multiple_of: int, ffn_dim_multiplier: float | None):
    """(what is wrong, hidden size) for each typical mistake in Llama's hidden-size rule."""
    base = int(2 * 4 * d_model / 3)
    scaled = int(ffn_dim_multiplier * base) if ffn_dim_multiplier is not None else base
    yield "the hidden size is not rounded up to a multiple of multiple_of.", scaled
    yield "the hidden size is rounded DOWN; Llama rounds up.", multiple_of * (scaled // multiple_of)
    yield ("the hidden size is rounded to the NEAREST multiple; Llama rounds up.",
           multiple_of * round(scaled / multiple_of))
    if ffn_dim_multiplier is not None:
        yield "ffn_dim_multiplier is ignored.", multiple_of * math.ceil(base / multiple_of)
        yield ("ffn_dim_multiplier is applied after the rounding.",
               int(ffn_dim_multiplier * multiple_of * math.ceil(base / multiple_of)))
    yield ("the 2/3 factor is missing: SwiGLU has three matrices, so Llama shrinks 4 * d_model to 2/3 of it to keep "
           "the parameter count of a two-matrix FFN.",
           multiple_of * math.ceil((int(ffn_dim_multiplier * 4 * d_model) if ffn_dim_multiplier else 4 * d_model)
                                   / multiple_of))


HIDDEN_RULE = ("hidden = int(2 * 4 * d_model / 3); if ffn_dim_multiplier is not None: hidden = int(ffn_dim_multiplier "
               "* hidden); then round UP: hidden = multiple_of * math.ceil(hidden / multiple_of) (Meta writes "
               "multiple_of * ((hidden + multiple_of - 1) // multiple_of)).")


def _hidden_rows(module, what) -> int:
    for name in ("w1", "w2", "w3"):
        if not isinstance(getattr(module, name, None), torch.nn.Linear):
            fail(f"{what}: self.{name} is not an nn.Linear.",
                 f"self.{name} = nn.Linear(..., bias=False) (Meta's names: w1 gate, w3 up, w2 down).")
    rows = module.w1.weight.shape[0]
    shapes = (tuple(module.w1.weight.shape), tuple(module.w3.weight.shape), tuple(module.w2.weight.shape))
    d_model = module.w1.weight.shape[1]
    if shapes != ((rows, d_model), (rows, d_model), (d_model, rows)):
        fail(f"{what}: w1, w3 must map d_model -> hidden and w2 hidden -> d_model; got weight shapes w1 {shapes[0]}, "
             f"w3 {shapes[1]}, w2 {shapes[2]} (an nn.Linear(in, out) stores weight (out, in)).")
    return rows


def _check_hidden_size(FFN, d_model, multiple_of, ffn_dim_multiplier, hidden_dim=None):
    what = f"FFN({d_model}, multiple_of={multiple_of}, ffn_dim_multiplier={ffn_dim_multiplier}" + (
        f", hidden_dim={hidden_dim})" if hidden_dim is not None else ")")
    with torch.device("meta"):  # shapes only: a 4096-wide FFN would cost 700 MB of real memory
        module = build(FFN, d_model, multiple_of, ffn_dim_multiplier, hidden_dim, what=what)
    rows = _hidden_rows(module, what)
    expected = hidden_dim or ffn_hidden_size(d_model, multiple_of, ffn_dim_multiplier)
    if rows == expected:
        return
    if hidden_dim is not None:
        fail(f"{what}: hidden size {rows}: the explicit hidden_dim={hidden_dim} is ignored.",
             "when hidden_dim is given (a checkpoint's intermediate_size) use it as is; apply the rule only when it "
             "is None.")
    wrong = next((h for h, size in _hidden_size_mistakes(d_model, multiple_of, ffn_dim_multiplier) if size == rows),
                 "the hidden-size rule differs from Llama's.")
    fail(f"{what}: hidden size {rows}, expected {expected}: {wrong}", HIDDEN_RULE)


def _ffn_mistakes(ref: ReferenceFFN, x: torch.Tensor):
    """(what is wrong, how to fix it, output) for each typical SwiGLU mistake, with the reference's weights."""
    gate, up = ref.w1(x), ref.w3(x)
    swiglu = "self.w2(F.silu(self.w1(x)) * self.w3(x))"
    yield "ReLU is used where Llama uses SiLU (swish).", swiglu, ref.w2(F.relu(gate) * up)
    yield "GELU is used where Llama uses SiLU (swish).", swiglu, ref.w2(F.gelu(gate) * up)
    yield "GELU (tanh) is used where Llama uses SiLU (swish).", swiglu, ref.w2(F.gelu(gate, approximate="tanh") * up)
    yield ("a sigmoid is used where Llama uses SiLU, x * sigmoid(x).", swiglu, ref.w2(torch.sigmoid(gate) * up))
    yield ("gate and up are swapped: w1 is the gate that goes through SiLU, w3 is the up projection.", swiglu,
           ref.w2(F.silu(up) * gate))
    yield "SiLU is applied to the product; only the gate goes through it.", swiglu, ref.w2(F.silu(gate * up))
    yield ("SiLU is applied to both branches; only the gate (w1) goes through it, the up branch (w3) stays linear.",
           swiglu, ref.w2(F.silu(gate) * F.silu(up)))
    yield ("the up branch is missing (that is a plain SiLU MLP): the GLU in SwiGLU multiplies by self.w3(x).", swiglu,
           ref.w2(F.silu(gate)))


@checker
def check_ffn(FFN) -> None:
    """Check a learner's ``FFN(d_model, multiple_of, ffn_dim_multiplier, hidden_dim)``: the hidden-size rule and
    the SwiGLU output with the reference's weights."""
    # the hidden-size rule, on real Llama sizes: Llama 3 8B (14336), Llama 3 70B (28672), Llama 2 7B (11008)
    for d_model, multiple_of, multiplier in ((4096, 1024, 1.3), (8192, 4096, 1.3), (4096, 256, None),
                                             (32, 16, None), (20, 8, 1.5)):
        _check_hidden_size(FFN, d_model, multiple_of, multiplier)
    _check_hidden_size(FFN, 32, 16, None, hidden_dim=40)

    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():  # the reference's random init must not move the learner's random stream
        torch.manual_seed(0)
        refs = [ReferenceFFN(32, 16), ReferenceFFN(20, 8, 1.5), ReferenceFFN(12, 4, None, hidden_dim=22)]
    for ref in refs:
        d_model = ref.w1.weight.shape[1]
        what = f"FFN(d_model={d_model}, hidden={ref.hidden_dim})"
        mine = build(FFN, d_model, 1, None, ref.hidden_dim, what=what)
        _no_bias_hint(mine, what)
        copy_weights(mine, ref, what)
        x = torch.randn(2, 5, d_model, generator=gen)
        out = _output(mine, x, what)
        with torch.no_grad():
            expected = ref(x)
            if not close(out, expected, atol=1e-5, rtol=1e-5):
                named = _first_match(out, _ffn_mistakes(ref, x), atol=1e-5, rtol=1e-4)
                if named:
                    fail(f"{what}: {named[0]}", named[1])
                err = (out.float() - expected).abs().max().item()
                fail(f"{what}: output differs from the reference (max abs error {err:.3g}).",
                     "SwiGLU is self.w2(F.silu(self.w1(x)) * self.w3(x)).")
    passed("FFN: the hidden-size rule (4096 -> 14336 for Llama 3 8B) and SwiGLU outputs agree with llama3.FFN.")
