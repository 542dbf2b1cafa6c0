"""check_decoder_layer accepts correct DecoderLayers and rejects each planted mistake with its own hint."""

import pytest
from torch import nn

from llama3 import DecoderLayer
from llama3.attention import MultiHeadGQAttention
from llama3.checks import check_decoder_layer
from llama3.ffn import FFN
from llama3.norm import RMSNorm
from tests.checks_util import assert_named


class WrittenOutLayer(nn.Module):
    """An independent correct solution: the same maths written with explicit branches and no dropout."""

    def __init__(self, args):
        super().__init__()
        self.attention_norm = RMSNorm(args.d_model, args.norm_eps)
        self.attention = MultiHeadGQAttention(args)
        self.ffn_norm = RMSNorm(args.d_model, args.norm_eps)
        self.feed_forward = FFN(args.d_model, args.multiple_of, args.ffn_dim_multiplier, args.ffn_hidden_dim)

    def forward(self, x, cos, sin, mask=None, kv_cache=None, start_pos=0):
        attention_branch = self.attention(self.attention_norm(x), cos, sin, mask, kv_cache, start_pos)
        h = attention_branch + x
        ffn_branch = self.feed_forward(self.ffn_norm(h))
        return ffn_branch + h


class PostNorm(DecoderLayer):
    def forward(self, x, cos, sin, mask=None, kv_cache=None, start_pos=0):
        h = self.attention_norm(x + self.attention(x, cos, sin, mask, kv_cache, start_pos))
        return self.ffn_norm(h + self.feed_forward(h))


class NoAttentionResidual(DecoderLayer):
    def forward(self, x, cos, sin, mask=None, kv_cache=None, start_pos=0):
        h = self.attention(self.attention_norm(x), cos, sin, mask, kv_cache, start_pos)
        return h + self.feed_forward(self.ffn_norm(h))


class NoFFNResidual(DecoderLayer):
    def forward(self, x, cos, sin, mask=None, kv_cache=None, start_pos=0):
        h = x + self.attention(self.attention_norm(x), cos, sin, mask, kv_cache, start_pos)
        return self.feed_forward(self.ffn_norm(h))


class NoResidual(DecoderLayer):
    def forward(self, x, cos, sin, mask=None, kv_cache=None, start_pos=0):
        h = self.attention(self.attention_norm(x), cos, sin, mask, kv_cache, start_pos)
        return self.feed_forward(self.ffn_norm(h))


class NormsSwapped(DecoderLayer):
    def forward(self, x, cos, sin, mask=None, kv_cache=None, start_pos=0):
        h = x + self.attention(self.ffn_norm(x), cos, sin, mask, kv_cache, start_pos)
        return h + self.feed_forward(self.attention_norm(h))


class Parallel(DecoderLayer):
    """GPT-J's parallel block: both branches read x."""

    def forward(self, x, cos, sin, mask=None, kv_cache=None, start_pos=0):
        h = x + self.attention(self.attention_norm(x), cos, sin, mask, kv_cache, start_pos)
        return h + self.feed_forward(self.ffn_norm(x))


class ResidualOfNormed(DecoderLayer):
    def forward(self, x, cos, sin, mask=None, kv_cache=None, start_pos=0):
        x = self.attention_norm(x)
        h = x + self.attention(x, cos, sin, mask, kv_cache, start_pos)
        h = self.ffn_norm(h)
        return h + self.feed_forward(h)


class MaskDropped(DecoderLayer):
    def forward(self, x, cos, sin, mask=None, kv_cache=None, start_pos=0):
        return super().forward(x, cos, sin, None, kv_cache, start_pos)


class CacheDropped(DecoderLayer):
    def forward(self, x, cos, sin, mask=None, kv_cache=None, start_pos=0):
        return super().forward(x, cos, sin, mask)


class RenamedNorm(DecoderLayer):
    def __init__(self, args):
        super().__init__(args)
        self.input_layernorm = self.attention_norm
        del self.attention_norm

    def forward(self, x, cos, sin, mask=None, kv_cache=None, start_pos=0):
        raise AssertionError("never reached: the weights cannot be loaded")


class SharedNorm(DecoderLayer):
    """One RMSNorm module for both sub-layers."""

    def __init__(self, args):
        super().__init__(args)
        self.ffn_norm = self.attention_norm


class AttentionNormTwice(DecoderLayer):
    def forward(self, x, cos, sin, mask=None, kv_cache=None, start_pos=0):
        h = x + self.attention(self.attention_norm(x), cos, sin, mask, kv_cache, start_pos)
        return h + self.feed_forward(self.attention_norm(h))


class EpsNotPassed(WrittenOutLayer):
    def __init__(self, args):
        super().__init__(args)
        self.attention_norm, self.ffn_norm = RMSNorm(args.d_model), RMSNorm(args.d_model)


class FFNSizeNotPassed(WrittenOutLayer):
    def __init__(self, args):
        super().__init__(args)
        self.feed_forward = FFN(args.d_model, args.multiple_of)


class NotImplementedLayer(DecoderLayer):
    def forward(self, x, cos, sin, mask=None, kv_cache=None, start_pos=0):
        raise NotImplementedError("decoder_layer: replace this line with your implementation")


@pytest.mark.parametrize("cls", [DecoderLayer, WrittenOutLayer])
def test_correct_layers_pass(cls, capsys):
    check_decoder_layer(cls)
    assert "PASSED" in capsys.readouterr().out


MISTAKES = [
    (PostNorm, "POST-norm"),
    (NoAttentionResidual, "the attention residual is missing"),
    (NoFFNResidual, "the feed-forward residual is missing"),
    (NoResidual, "both residual connections are missing"),
    (NormsSwapped, "are swapped"),
    (Parallel, "the feed-forward reads x instead of h"),
    (ResidualOfNormed, "the residual adds the NORMALISED input"),
    (SharedNorm, "one module shared by both sub-layers"),
    (AttentionNormTwice, "attention_norm is used for both branches"),
    (EpsNotPassed, "args.norm_eps=0.5 is not passed to the RMSNorms"),
    (FFNSizeNotPassed, "args' FFN fields are not passed on"),
    (MaskDropped, "the mask is ignored"),
    (CacheDropped, "attends only to itself"),
    (RenamedNorm, "parameter names differ"),
    (NotImplementedLayer, "not solved yet"),
]


@pytest.mark.parametrize("cls, hint", MISTAKES)
def test_planted_mistakes_get_their_own_hint(cls, hint):
    assert_named(check_decoder_layer, cls, hint, [h for _, h in MISTAKES] + ["Check, in order"])
