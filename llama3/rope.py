"""Rotary position embeddings (Su et al., 2021, "RoFormer"), with Llama 3.1's long-context frequency scaling.

Each head vector is cut into pairs of dimensions and pair i is rotated by the angle ``position * freq_i``.
This package pairs ADJACENT dimensions (2i, 2i+1), as Meta's reference code does. Hugging Face pairs
dimension i with i + head_dim/2 instead and permutes the rows of its q/k weights to match; ``llama3.convert``
applies that permutation when loading or saving the Hugging Face format.

Angles are real cos/sin tensors, not complex numbers, so the code runs under ``torch.compile`` and on MPS.
"""

import math

import torch
from torch import nn


def rope_frequencies(head_dim: int, theta: float = 500000.0, rope_scaling: dict | None = None) -> torch.Tensor:
    """The head_dim/2 rotation frequencies theta^(-2i/head_dim), optionally rescaled Llama-3.1 style."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if rope_scaling is None:
        return inv_freq
    # Llama 3.1: long wavelengths (low frequencies) are slowed down by `factor`, short ones are kept, and the
    # band in between is interpolated smoothly. Same arithmetic as transformers' `_compute_llama3_parameters`.
    factor = rope_scaling["factor"]
    low_freq_factor = rope_scaling["low_freq_factor"]
    high_freq_factor = rope_scaling["high_freq_factor"]
    old_context_len = rope_scaling["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs of the last dimension of x.

    x: (B, T, H, D); cos, sin: broadcastable to (B, T, H, D/2), in float32. Returns x's shape and dtype.
    """
    pairs = x.float().unflatten(-1, (-1, 2))  # (B, T, H, D/2, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)


class RoPE(nn.Module):
    """Rotary position embedding for heads of size ``head_dim``.

    ``cos_sin(positions)`` gives the angles for a (T,) or (B, T) tensor of positions; ``forward`` rotates a
    (B, T, H, D) tensor. The angles are computed from the positions on the fly (as transformers does), so there
    is no table to outgrow and a 128K-context checkpoint costs nothing extra. Positions are explicit so that
    cached decoding (start at the cache length) and left-padded batches (each row starts at 0 at its first real
    token) both get the right angles.
    """

    def __init__(self, head_dim: int, theta: float = 500000.0, rope_scaling: dict | None = None):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE head_dim must be even (it rotates pairs), got {head_dim}.")
        self.head_dim = head_dim
        self.theta = theta
        self.rope_scaling = rope_scaling
        self.register_buffer("inv_freq", rope_frequencies(head_dim, theta, rope_scaling), persistent=False)

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (T,) or (B, T) -> cos, sin of shape (1 or B, T, 1, D/2), float32, ready for apply_rotary."""
        if positions.dim() == 1:
            positions = positions[None]
        angles = positions[..., None].float() * self.inv_freq.float()  # (B, T, D/2)
        return angles.cos()[:, :, None, :], angles.sin()[:, :, None, :]

    def forward(self, x: torch.Tensor, positions: torch.Tensor | int = 0) -> torch.Tensor:
        """x (B, T, H, D); positions: a start position (int) or a (T,) / (B, T) tensor of positions."""
        if isinstance(positions, int):
            positions = torch.arange(positions, positions + x.shape[1], device=x.device)
        cos, sin = self.cos_sin(positions)
        return apply_rotary(x, cos, sin)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, theta={self.theta}, scaled={self.rope_scaling is not None}"
