"""RMSNorm (Zhang & Sennrich, 2019): scale by the root-mean-square, no mean subtraction, no bias."""

import torch
from torch import nn


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The function behind RMSNorm (also used by the fast decode path)."""
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.type_as(x)


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight.

    The statistics are taken in float32 and the result is cast back to the input dtype *before* the
    multiplication by ``weight``, exactly as Meta's and Hugging Face's Llama do; that order matters for
    bit-level parity in bfloat16.
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., dim) -> (..., dim)
        return rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
