"""check_llama3 and check_loss accept correct solutions and reject each planted mistake with its own hint."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llama3 import DecoderLayer, Llama3, RMSNorm, RoPE
from llama3.checks import check_llama3, check_loss
from tests.checks_util import assert_named


# --------------------------------------------------------------------------------------------------- the loss
def loss_written_out(logits, labels, attention_mask=None):
    """An independent correct loss: a per-token log-softmax gather, averaged over the counted tokens."""
    counted = torch.ones_like(labels, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    targets = labels[:, 1:]
    keep = counted[:, 1:] & counted[:, :-1] & (targets != -100)  # input and target both real, target not -100
    log_probs = logits[:, :-1].float().log_softmax(-1)
    picked = log_probs.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    return -(picked * keep).sum() / keep.sum()


def loss_without_shift(logits, labels, attention_mask=None):
    if attention_mask is not None:
        labels = labels.masked_fill(attention_mask == 0, -100)
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)


def loss_counting_prediction_from_padding(logits, labels, attention_mask=None):
    """Hides padded targets but counts the first real token of a left-padded row, predicted from a pad."""
    if attention_mask is not None:
        labels = labels.masked_fill(attention_mask == 0, -100)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)


def loss_counting_padding(logits, labels, attention_mask=None):
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)


def loss_shift_reversed(logits, labels, attention_mask=None):
    if attention_mask is not None:
        labels = labels.masked_fill(attention_mask == 0, -100)
    return F.cross_entropy(logits[:, 1:].flatten(0, 1), labels[:, :-1].flatten(), ignore_index=-100)


def loss_summed(logits, labels, attention_mask=None):
    if attention_mask is not None:
        labels = labels.masked_fill(attention_mask == 0, -100)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100, reduction="sum")


def loss_mean_of_rows(logits, labels, attention_mask=None):
    if attention_mask is not None:
        labels = labels.masked_fill(attention_mask == 0, -100)
    rows = [F.cross_entropy(lg[:-1], lb[1:], ignore_index=-100) for lg, lb in zip(logits, labels)]
    return torch.stack(rows).mean()


def loss_ignoring_minus_100_by_zeroing(logits, labels, attention_mask=None):
    """Treats -100 as token 0 instead of ignoring it."""
    if attention_mask is not None:
        labels = labels.masked_fill(attention_mask == 0, -100)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].clamp(min=0).flatten())


@pytest.mark.parametrize("fn", [Llama3.loss, loss_written_out, Llama3])
def test_correct_losses_pass(fn, capsys):
    check_loss(fn)  # a class with a static loss method is accepted too
    assert "PASSED" in capsys.readouterr().out


LOSS_MISTAKES = [
    (loss_without_shift, "the labels are not shifted"),
    (loss_counting_padding, "padding is counted in the loss"),
    (loss_counting_prediction_from_padding, "its input is a padding token"),
    (loss_shift_reversed, "the shift goes the wrong way"),
    (loss_summed, "the loss is a sum"),
    (loss_mean_of_rows, "averages each row first"),
    (loss_ignoring_minus_100_by_zeroing, "-100 are not ignored"),
]


@pytest.mark.parametrize("fn, hint", LOSS_MISTAKES)
def test_planted_loss_mistakes_get_their_own_hint(fn, hint):
    assert_named(check_loss, fn, hint, [h for _, h in LOSS_MISTAKES])


# -------------------------------------------------------------------------------------------------- the model
class WrittenOutLlama3(nn.Module):
    """An independent correct solution: the package's layers, but the forward (positions, the causal and padding
    mask with its offset, the cache plumbing, the loss and the output object) written out here."""

    def __init__(self, args):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.d_model)
        self.rope = RoPE(args.head_dim, args.rope_theta, args.rope_scaling)
        self.layers = nn.ModuleList([DecoderLayer(args) for _ in range(args.num_layers)])
        self.norm = RMSNorm(args.d_model, args.norm_eps)
        self.output = nn.Linear(args.d_model, args.vocab_size, bias=False)
        if args.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight

    def forward(self, tgt, attention_mask=None, labels=None, *, kv_caches=None, start_pos=0, position_ids=None,
                logits_to_keep=0):
        batch, seq = tgt.shape
        total = start_pos + seq  # keys: every position so far
        if position_ids is None:
            if attention_mask is None:
                position_ids = torch.arange(start_pos, total)
            else:  # each row counts from its first real token
                counted = torch.cumsum(attention_mask.long(), dim=-1) - 1
                position_ids = torch.where(counted < 0, torch.zeros_like(counted), counted)[:, start_pos:]
        cos, sin = self.rope.cos_sin(position_ids)
        mask = None
        if attention_mask is not None or (start_pos > 0 and seq > 1):
            queries = torch.arange(start_pos, total).view(seq, 1)
            keys = torch.arange(total).view(1, total)
            allowed = (keys <= queries).view(1, 1, seq, total)
            if attention_mask is not None:
                allowed = (allowed & (attention_mask.view(batch, 1, 1, total) == 1)) | (keys == queries)
            mask = allowed
        h = self.tok_embeddings(tgt)
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, mask, kv_caches[i] if kv_caches is not None else None, start_pos)
        h = self.norm(h)
        logits = self.output(h[:, -logits_to_keep:] if logits_to_keep else h)
        loss = None
        if labels is not None:
            loss = loss_written_out(logits, labels, attention_mask)
        return SimpleNamespace(logits=logits, loss=loss)


class _Wrapped(Llama3):
    """Base for planted mistakes: the reference forward with one piece swapped out."""

    def forward(self, tgt, attention_mask=None, labels=None, *, kv_caches=None, start_pos=0, position_ids=None,
                logits_to_keep=0):
        return super().forward(tgt, attention_mask, labels, kv_caches=kv_caches, start_pos=start_pos,
                               position_ids=position_ids, logits_to_keep=logits_to_keep)


class NoFinalNorm(_Wrapped):
    def __init__(self, args):
        super().__init__(args)
        self.norm.forward = lambda h: h  # the weight stays (so loading works) but is never applied


class LayersNotChained(_Wrapped):
    def __init__(self, args):
        super().__init__(args)
        for layer in self.layers:
            original = layer.forward
            layer.forward = lambda h, *a, _orig=original, **k: _orig(self._embedded, *a, **k)

    def forward(self, tgt, *args, **kwargs):
        self._embedded = self.tok_embeddings(tgt)
        return super().forward(tgt, *args, **kwargs)


class ReturnsProbabilities(_Wrapped):
    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.logits = out.logits.softmax(-1)
        return out


class PositionsNotAdvanced(_Wrapped):
    def forward(self, tgt, attention_mask=None, labels=None, *, start_pos=0, **kwargs):
        if kwargs.get("position_ids") is None and attention_mask is None:
            kwargs["position_ids"] = torch.arange(tgt.shape[1])
        return super().forward(tgt, attention_mask, labels, start_pos=start_pos, **kwargs)


class CacheIgnored(_Wrapped):
    def forward(self, tgt, attention_mask=None, labels=None, *, kv_caches=None, start_pos=0, **kwargs):
        return super().forward(tgt, attention_mask, labels, **kwargs)


class MaskIgnored(_Wrapped):
    def forward(self, tgt, attention_mask=None, labels=None, **kwargs):
        out = super().forward(tgt, None, None, **kwargs)
        out.loss = None if labels is None else self.loss(out.logits, labels, attention_mask)
        return out


class LossWithoutShift(_Wrapped):
    def forward(self, tgt, attention_mask=None, labels=None, **kwargs):
        out = super().forward(tgt, attention_mask, None, **kwargs)
        out.loss = None if labels is None else loss_without_shift(out.logits, labels, attention_mask)
        return out


class LossCountingPadding(_Wrapped):
    def forward(self, tgt, attention_mask=None, labels=None, **kwargs):
        out = super().forward(tgt, attention_mask, labels, **kwargs)
        if labels is not None:
            out.loss = loss_counting_padding(out.logits, labels, attention_mask)
        return out


class LossAlways(_Wrapped):
    """Computes a loss against tgt even when no labels are given."""

    def forward(self, tgt, attention_mask=None, labels=None, **kwargs):
        return super().forward(tgt, attention_mask, tgt if labels is None else labels, **kwargs)


class KeepsFirstLogits(_Wrapped):
    def forward(self, tgt, *args, logits_to_keep=0, **kwargs):
        out = super().forward(tgt, *args, **kwargs)
        if logits_to_keep:
            out.logits = out.logits[:, :logits_to_keep]
        return out


class RopeFromDModel(_Wrapped):
    def __init__(self, args):
        super().__init__(args)
        self.rope = RoPE(args.d_model, args.rope_theta, args.rope_scaling)


class ThetaNotPassed(_Wrapped):
    def __init__(self, args):
        super().__init__(args)
        self.rope = RoPE(args.head_dim)


class ScalingNotPassed(_Wrapped):
    def __init__(self, args):
        super().__init__(args)
        self.rope = RoPE(args.head_dim, args.rope_theta)


class NormEpsNotPassed(_Wrapped):
    def __init__(self, args):
        super().__init__(args)
        self.norm = RMSNorm(args.d_model)


class AlwaysTied(_Wrapped):
    def __init__(self, args):
        super().__init__(args)
        self.output.weight = self.tok_embeddings.weight


class NeverTied(WrittenOutLlama3):
    def __init__(self, args):
        super().__init__(args)
        self.output = nn.Linear(args.d_model, args.vocab_size, bias=False)


class WrongLossInside(_Wrapped):
    """A correct model whose loss (the notebook's exercise 1) is still wrong."""

    loss = staticmethod(loss_without_shift)


class ReturnsTensor(Llama3):
    def forward(self, tgt, attention_mask=None, labels=None, **kwargs):
        return super().forward(tgt, attention_mask, labels, **kwargs).logits


@pytest.mark.parametrize("cls", [Llama3, WrittenOutLlama3])
def test_correct_models_pass(cls, capsys):
    check_llama3(cls)
    assert "PASSED" in capsys.readouterr().out


MODEL_MISTAKES = [
    (NoFinalNorm, "the final RMSNorm is missing"),
    (LayersNotChained, "each layer reads the embeddings"),
    (ReturnsProbabilities, "returns probabilities"),
    (PositionsNotAdvanced, "positions are not advanced with the cache"),
    (CacheIgnored, "the cache is not used"),
    (MaskIgnored, "attention_mask is ignored"),
    (LossWithoutShift, "the labels are not shifted"),
    (LossCountingPadding, "padding is counted in the loss"),
    (LossAlways, "not None although no labels are given"),
    (KeepsFirstLogits, "keeps the FIRST position"),
    (ReturnsTensor, "not an object with .logits and .loss"),
    (RopeFromDModel, "RoPE is built for d_model=32 dimensions"),
    (ThetaNotPassed, "does not reach RoPE (yours uses RoPE's default theta)"),
    (ScalingNotPassed, "args.rope_scaling does not reach RoPE"),
    (NormEpsNotPassed, "args.norm_eps=0.1 does not reach it"),
    (AlwaysTied, "tied to the embedding although args.tie_embeddings is False"),
    (NeverTied, "args.tie_embeddings is True but the output head has its own weight"),
]


@pytest.mark.parametrize("cls, hint", MODEL_MISTAKES)
def test_planted_model_mistakes_get_their_own_hint(cls, hint):
    assert_named(check_llama3, cls, hint, [h for _, h in MODEL_MISTAKES] + ["raised RuntimeError"])


def test_model_cascade_names_the_loss_mistake_and_takes_an_explicit_loss():
    error = assert_named(check_llama3, WrongLossInside, "Fix notebook 06, exercise 1 (causal_lm_loss) first",
                         [h for c, h in MODEL_MISTAKES if c is not LossWithoutShift])
    assert "the labels are not shifted" in error.what
    assert_named(check_llama3, Llama3, "exercise 1 (causal_lm_loss) first", loss=loss_summed)
