"""check_rope accepts correct RoPE classes and rejects each planted mistake with its own hint."""

import pytest
import torch

from llama3.checks import check_rope
from llama3.rope import RoPE, apply_rotary, rope_frequencies
from tests.checks_util import assert_named


class MetaComplexRoPE(torch.nn.Module):
    """An independent correct solution: Meta's original complex-number formulation (torch.polar)."""

    def __init__(self, head_dim, theta=500000.0, rope_scaling=None):
        super().__init__()
        self.register_buffer("inv_freq", rope_frequencies(head_dim, theta, rope_scaling), persistent=False)

    def cos_sin(self, positions):
        positions = positions[None] if positions.dim() == 1 else positions
        angles = positions[..., None].float() * self.inv_freq
        return angles.cos()[:, :, None], angles.sin()[:, :, None]

    def forward(self, x, positions=0):
        if isinstance(positions, int):
            positions = torch.arange(positions, positions + x.shape[1])
        positions = positions[None] if positions.dim() == 1 else positions
        rotor = torch.polar(torch.ones_like(self.inv_freq), positions[..., None].float() * self.inv_freq)
        pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))  # (B, T, H, D/2)
        return torch.view_as_real(pairs * rotor[:, :, None]).flatten(-2).type_as(x)


class HalfSplitRoPE(RoPE):
    """Rotates dimension i with i + D/2 (Hugging Face's rotate_half) instead of adjacent pairs."""

    def forward(self, x, positions=0):
        if isinstance(positions, int):
            positions = torch.arange(positions, positions + x.shape[1])
        cos, sin = self.cos_sin(positions)
        x0, x1 = x.float().chunk(2, dim=-1)
        return torch.cat((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).type_as(x)


class MissingFactorTwoRoPE(RoPE):
    """Frequencies theta^(-i/D): arange(0, D/2) / D, the factor 2 forgotten."""

    def __init__(self, head_dim, theta=500000.0, rope_scaling=None):
        super().__init__(head_dim, theta, rope_scaling)
        self.inv_freq = 1.0 / theta ** (torch.arange(0, head_dim // 2).float() / head_dim)


class PositiveExponentRoPE(RoPE):
    def __init__(self, head_dim, theta=500000.0, rope_scaling=None):
        super().__init__(head_dim, theta, rope_scaling)
        self.inv_freq = theta ** (torch.arange(0, head_dim, 2).float() / head_dim)


class OffsetIgnoredRoPE(RoPE):
    """Always rotates to positions 0..T-1, whatever positions says."""

    def forward(self, x, positions=0):
        return super().forward(x, 0)


class TensorPositionsIgnoredRoPE(RoPE):
    """Honours an int start but drops a tensor of positions."""

    def forward(self, x, positions=0):
        return super().forward(x, positions if isinstance(positions, int) else 0)


class HardCodedThetaRoPE(RoPE):
    def __init__(self, head_dim, theta=500000.0, rope_scaling=None):
        super().__init__(head_dim, 10000.0, rope_scaling)


class Float16RoPE(RoPE):
    """Returns float32 whatever the input dtype."""

    def forward(self, x, positions=0):
        return super().forward(x.float(), positions)


class ScalingIgnoredRoPE(RoPE):
    def __init__(self, head_dim, theta=500000.0, rope_scaling=None):
        super().__init__(head_dim, theta, None)


class UnsolvedRoPE(RoPE):
    def forward(self, x, positions=0):
        raise NotImplementedError("rope: write forward")


@pytest.mark.parametrize("solution", [RoPE, MetaComplexRoPE])
def test_correct_solutions_pass(solution, capsys):
    check_rope(solution)
    assert capsys.readouterr().out.startswith("PASSED RoPE")


ROPE_MISTAKES = [
    (HalfSplitRoPE, "rotates ADJACENT pairs"),
    (MissingFactorTwoRoPE, "the factor 2 is missing"),
    (PositiveExponentRoPE, "the sign of the exponent is flipped"),
    (OffsetIgnoredRoPE, "position offset is ignored"),
    (TensorPositionsIgnoredRoPE, "position offset is ignored"),
    (HardCodedThetaRoPE, "`theta` argument is ignored"),
    (Float16RoPE, "output dtype torch.float32, expected the input's torch.bfloat16"),
    (ScalingIgnoredRoPE, "`rope_scaling` argument is ignored"),
    (UnsolvedRoPE, "not solved yet"),
]


@pytest.mark.parametrize("planted,phrase", ROPE_MISTAKES)
def test_planted_mistakes_are_named(planted, phrase):
    assert_named(check_rope, planted, phrase, [p for _, p in ROPE_MISTAKES])


class NotebookRoPE(RoPE):
    """The notebook's RoPE: its forward calls the global apply_rotary, which the tests swap for a wrong one."""

    def forward(self, x, positions=0):
        if isinstance(positions, int):
            positions = torch.arange(positions, positions + x.shape[1])
        cos, sin = self.cos_sin(positions)
        return apply_rotary(x, cos, sin)  # the notebook's own (exercise 1), found by its global name


def test_rope_with_a_wrong_apply_rotary_says_fix_exercise_1_first(monkeypatch):
    """The cascade of the issue: a correct RoPE on top of a backwards apply_rotary is not blamed for the angles."""
    monkeypatch.setitem(globals(), "apply_rotary", backwards_apply_rotary)
    error = assert_named(check_rope, NotebookRoPE, "Fix notebook 01, exercise 1 (apply_rotary) first",
                         ["your angles"])
    assert "turns the wrong way" in error.what  # the earlier check's own diagnosis travels with it


def test_rope_cascade_uses_an_explicit_apply_rotary_first():
    assert_named(check_rope, RoPE, "exercise 1 (apply_rotary) first", apply_rotary=half_split_apply_rotary)


def test_rope_with_the_learners_correct_apply_rotary_passes(monkeypatch, capsys):
    monkeypatch.setitem(globals(), "apply_rotary", complex_apply_rotary)
    check_rope(NotebookRoPE)
    assert capsys.readouterr().out.startswith("PASSED RoPE")


def test_checker_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_rope(RoPE)
    assert torch.equal(torch.rand(3), expected)


# ----------------------------------------------------------------------------------------------- apply_rotary
def complex_apply_rotary(x, cos, sin):
    """An independent correct solution: multiply each pair, read as a complex number, by cos + i sin."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2).contiguous())
    return torch.view_as_real(pairs * torch.complex(cos, sin)).flatten(-2).type_as(x)


def half_split_apply_rotary(x, cos, sin):
    x0, x1 = x.float().chunk(2, dim=-1)
    return torch.cat((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).type_as(x)


def concatenating_apply_rotary(x, cos, sin):
    x0, x1 = x.float()[..., 0::2], x.float()[..., 1::2]
    return torch.cat((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).type_as(x)


def backwards_apply_rotary(x, cos, sin):
    from llama3.rope import apply_rotary

    return apply_rotary(x, cos, -sin)


def float32_apply_rotary(x, cos, sin):
    from llama3.rope import apply_rotary

    return apply_rotary(x.float(), cos, sin)


@pytest.mark.parametrize("solution", ["reference", complex_apply_rotary])
def test_apply_rotary_correct_solutions_pass(solution, capsys):
    from llama3.checks import check_apply_rotary
    from llama3.rope import apply_rotary

    check_apply_rotary(apply_rotary if solution == "reference" else solution)
    assert capsys.readouterr().out.startswith("PASSED apply_rotary")


def bfloat16_apply_rotary(x, cos, sin):
    """Computes in x's dtype: cos and sin are cast down to bfloat16, every product rounds."""
    cos, sin = cos.type_as(x), sin.type_as(x)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


APPLY_ROTARY_MISTAKES = [
    (half_split_apply_rotary, "Hugging Face's rotate_half"),
    (concatenating_apply_rotary, "concatenated (torch.cat) instead of interleaved"),
    (backwards_apply_rotary, "turns the wrong way"),
    (float32_apply_rotary, "expected x's dtype bfloat16"),
    (bfloat16_apply_rotary, "computes the rotation in bfloat16"),
]


@pytest.mark.parametrize("planted,phrase", APPLY_ROTARY_MISTAKES)
def test_apply_rotary_planted_mistakes_are_named(planted, phrase):
    from llama3.checks import check_apply_rotary

    assert_named(check_apply_rotary, planted, phrase, [p for _, p in APPLY_ROTARY_MISTAKES])
