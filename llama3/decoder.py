"""One Llama decoder layer: attention then feed-forward, each in a pre-norm residual branch."""

import torch
import torch.nn.functional as F
from torch import nn

from llama3.attention import MultiHeadGQAttention
from llama3.config import ModelArgs
from llama3.ffn import FFN
from llama3.kv_cache import KV_Cache
from llama3.norm import RMSNorm


class DecoderLayer(nn.Module):
    """h = x + attention(norm(x)); out = h + ffn(norm(h)).

    Normalising the input of each branch (pre-norm, Xiong et al., 2020) instead of the sum (post-norm, as in
    the original Transformer) keeps an identity path from the first layer to the last, which is what lets deep
    stacks train without warm-up tricks.
    """

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.attention_norm = RMSNorm(args.d_model, eps=args.norm_eps)
        self.attention = MultiHeadGQAttention(args)
        self.ffn_norm = RMSNorm(args.d_model, eps=args.norm_eps)
        self.feed_forward = FFN(args.d_model, args.multiple_of, args.ffn_dim_multiplier, args.ffn_hidden_dim)
        self.dropout = args.dropout

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None = None,
                kv_cache: KV_Cache | None = None, start_pos: int = 0) -> torch.Tensor:  # (B, T, d) -> (B, T, d)
        attended = self.attention(self.attention_norm(x), cos, sin, mask, kv_cache, start_pos)
        h = x + F.dropout(attended, self.dropout, self.training)
        return h + F.dropout(self.feed_forward(self.ffn_norm(h)), self.dropout, self.training)
