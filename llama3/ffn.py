"""The SwiGLU feed-forward block (Shazeer, 2020, "GLU Variants Improve Transformer")."""

import torch
import torch.nn.functional as F
from torch import nn

from llama3.config import ffn_hidden_size


class FFN(nn.Module):
    """out = w2( silu(w1 x) * w3 x ).

    w1 is the gate, w3 the up projection, w2 the down projection (Meta's names; Hugging Face calls them
    gate_proj, up_proj and down_proj). The hidden size follows Llama's rule (``ffn_hidden_size``) unless
    ``hidden_dim`` is given, as checkpoints with an explicit ``intermediate_size`` need.
    """

    def __init__(self, d_model: int, multiple_of: int = 256, ffn_dim_multiplier: float | None = None,
                 hidden_dim: int | None = None):
        super().__init__()
        self.hidden_dim = hidden_dim or ffn_hidden_size(d_model, multiple_of, ffn_dim_multiplier)
        self.w1 = nn.Linear(d_model, self.hidden_dim, bias=False)
        self.w2 = nn.Linear(self.hidden_dim, d_model, bias=False)
        self.w3 = nn.Linear(d_model, self.hidden_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d_model) -> (B, T, d_model)
        return self.w2(F.silu(self.w1(x)) * self.w3(x))
