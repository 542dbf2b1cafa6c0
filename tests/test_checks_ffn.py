"""check_rmsnorm and check_ffn accept correct classes and reject each planted mistake with its own hint."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llama3 import FFN, RMSNorm
from llama3.checks import check_ffn, check_rmsnorm
from tests.checks_util import assert_named


# ------------------------------------------------------------------------------------------------------ RMSNorm
class SpelledOutRMSNorm(nn.Module):
    """An independent correct solution: division by sqrt instead of rsqrt, x*x instead of pow."""

    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x32 = x.float()
        rms = torch.sqrt((x32 * x32).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * (x32 / rms).type_as(x)


class NoEpsRMSNorm(RMSNorm):
    def forward(self, x):
        x32 = x.float()
        return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True))).type_as(x)


class LayerNormLikeRMSNorm(RMSNorm):
    """Subtracts the mean: LayerNorm without a bias."""

    def forward(self, x):
        x32 = x.float()
        centred = x32 - x32.mean(-1, keepdim=True)
        return self.weight * (centred * torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)


class MeanAbsRMSNorm(RMSNorm):
    """Divides by the mean absolute value instead of the root-mean-square."""

    def forward(self, x):
        x32 = x.float()
        return self.weight * (x32 / (x32.abs().mean(-1, keepdim=True) + self.eps)).type_as(x)


class MeanNotSquaredRMSNorm(RMSNorm):
    """mean(x) instead of mean(x^2): NaN wherever a row's mean is negative, although eps is inside the root."""

    def forward(self, x):
        x32 = x.float()
        return self.weight * (x32 * torch.rsqrt(x32.mean(-1, keepdim=True) + self.eps)).type_as(x)


class HardCodedEpsRMSNorm(RMSNorm):
    def forward(self, x):
        x32 = x.float()
        return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-5)).type_as(x)


class WeightBeforeCastRMSNorm(RMSNorm):
    def forward(self, x):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight).type_as(x)


class NoUpcastRMSNorm(RMSNorm):
    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


@pytest.mark.parametrize("solution", [RMSNorm, SpelledOutRMSNorm])
def test_rmsnorm_correct_solutions_pass(solution, capsys):
    check_rmsnorm(solution)
    assert capsys.readouterr().out.startswith("PASSED RMSNorm")


RMSNORM_MISTAKES = [
    (NoEpsRMSNorm, "the eps is missing"),
    (LayerNormLikeRMSNorm, "that is LayerNorm"),
    (MeanAbsRMSNorm, "mean of |x|"),
    (MeanNotSquaredRMSNorm, "you take the mean of x, not of x^2"),
    (HardCodedEpsRMSNorm, "the eps passed to __init__ is not used"),
    (WeightBeforeCastRMSNorm, "the weight is applied before the cast"),
    (NoUpcastRMSNorm, "statistics are computed in bfloat16"),
]


@pytest.mark.parametrize("planted,phrase", RMSNORM_MISTAKES)
def test_rmsnorm_planted_mistakes_are_named(planted, phrase):
    assert_named(check_rmsnorm, planted, phrase, [p for _, p in RMSNORM_MISTAKES] + ["add eps inside"])


# ---------------------------------------------------------------------------------------------------------- FFN
class MetaStyleFFN(nn.Module):
    """An independent correct solution: Meta's rounding arithmetic and x * sigmoid(x) written out."""

    def __init__(self, d_model, multiple_of=256, ffn_dim_multiplier=None, hidden_dim=None):
        super().__init__()
        if hidden_dim is None:
            hidden_dim = int(2 * (4 * d_model) / 3)
            if ffn_dim_multiplier is not None:
                hidden_dim = int(ffn_dim_multiplier * hidden_dim)
            hidden_dim = multiple_of * ((hidden_dim + multiple_of - 1) // multiple_of)
        self.w1 = nn.Linear(d_model, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, d_model, bias=False)
        self.w3 = nn.Linear(d_model, hidden_dim, bias=False)

    def forward(self, x):
        gate = self.w1(x)
        return self.w2(gate * torch.sigmoid(gate) * self.w3(x))


class ReluFFN(FFN):
    def forward(self, x):
        return self.w2(F.relu(self.w1(x)) * self.w3(x))


class GeluFFN(FFN):
    def forward(self, x):
        return self.w2(F.gelu(self.w1(x)) * self.w3(x))


class SwappedGateUpFFN(FFN):
    def forward(self, x):
        return self.w2(F.silu(self.w3(x)) * self.w1(x))


class FloorRoundingFFN(FFN):
    """Rounds the hidden size down instead of up."""

    def __init__(self, d_model, multiple_of=256, ffn_dim_multiplier=None, hidden_dim=None):
        if hidden_dim is None:
            hidden = int(2 * 4 * d_model / 3)
            if ffn_dim_multiplier is not None:
                hidden = int(ffn_dim_multiplier * hidden)
            hidden_dim = multiple_of * (hidden // multiple_of)
        super().__init__(d_model, multiple_of, ffn_dim_multiplier, hidden_dim)


class UnroundedFFN(FFN):
    def __init__(self, d_model, multiple_of=256, ffn_dim_multiplier=None, hidden_dim=None):
        if hidden_dim is None:
            hidden_dim = int((ffn_dim_multiplier or 1) * int(8 * d_model / 3))
        super().__init__(d_model, multiple_of, ffn_dim_multiplier, hidden_dim)


class MultiplierIgnoredFFN(FFN):
    def __init__(self, d_model, multiple_of=256, ffn_dim_multiplier=None, hidden_dim=None):
        if hidden_dim is None:
            hidden_dim = multiple_of * math.ceil(int(8 * d_model / 3) / multiple_of)
        super().__init__(d_model, multiple_of, ffn_dim_multiplier, hidden_dim)


class BiasFFN(FFN):
    def __init__(self, d_model, multiple_of=256, ffn_dim_multiplier=None, hidden_dim=None):
        super().__init__(d_model, multiple_of, ffn_dim_multiplier, hidden_dim)
        self.w2 = nn.Linear(self.hidden_dim, d_model, bias=True)


@pytest.mark.parametrize("solution", [FFN, MetaStyleFFN])
def test_ffn_correct_solutions_pass(solution, capsys):
    check_ffn(solution)
    assert capsys.readouterr().out.startswith("PASSED FFN")


class HiddenDimIgnoredFFN(FFN):
    def __init__(self, d_model, multiple_of=256, ffn_dim_multiplier=None, hidden_dim=None):
        super().__init__(d_model, multiple_of, ffn_dim_multiplier, None)


FFN_MISTAKES = [
    (ReluFFN, "ReLU is used where Llama uses SiLU"),
    (GeluFFN, "GELU is used where Llama uses SiLU"),
    (SwappedGateUpFFN, "gate and up are swapped"),
    (FloorRoundingFFN, "rounded DOWN"),
    (UnroundedFFN, "not rounded up to a multiple of multiple_of"),
    (MultiplierIgnoredFFN, "ffn_dim_multiplier is ignored"),
    (HiddenDimIgnoredFFN, "the explicit hidden_dim=40 is ignored"),
    (BiasFFN, "has bias parameters"),
]


@pytest.mark.parametrize("planted,phrase", FFN_MISTAKES)
def test_ffn_planted_mistakes_are_named(planted, phrase):
    assert_named(check_ffn, planted, phrase, [p for _, p in FFN_MISTAKES])


def test_llama3_8b_hidden_size_is_14336():
    """The number the notebook quotes, from Meta's params.json for Llama 3 8B (dim 4096, multiple_of 1024, 1.3)."""
    from llama3.config import ffn_hidden_size

    assert ffn_hidden_size(4096, 1024, 1.3) == 14336
