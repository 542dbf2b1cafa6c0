"""check_llama3 and check_loss accept correct solutions and reject each planted mistake with its own hint."""

import pytest
import torch
import torch.nn.functional as F

from llama3 import Llama3
from llama3.checks import check_llama3, check_loss
from llama3.checks._common import CheckFailed


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


@pytest.mark.parametrize("fn, hint", [
    (loss_without_shift, "labels are not shifted"),
    (loss_counting_padding, "Padding is counted"),
    (loss_counting_prediction_from_padding, "its input is a padding token"),
    (loss_shift_reversed, "shift goes the wrong way"),
    (loss_summed, "The loss is a sum"),
    (loss_mean_of_rows, "averages each row first"),
    (loss_ignoring_minus_100_by_zeroing, "-100 must be ignored"),
])
def test_planted_loss_mistakes_get_their_own_hint(fn, hint):
    with pytest.raises(CheckFailed, match=hint):
        check_loss(fn)


# -------------------------------------------------------------------------------------------------- the model
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


class ReturnsTensor(Llama3):
    def forward(self, tgt, attention_mask=None, labels=None, **kwargs):
        return super().forward(tgt, attention_mask, labels, **kwargs).logits


def test_reference_model_passes(capsys):
    check_llama3(Llama3)
    assert "PASSED" in capsys.readouterr().out


@pytest.mark.parametrize("cls, hint", [
    (NoFinalNorm, "final RMSNorm is missing"),
    (LayersNotChained, "Each layer reads the embeddings"),
    (ReturnsProbabilities, "returns probabilities"),
    (PositionsNotAdvanced, "positions are not advanced with the cache"),
    (CacheIgnored, "the cache is not used"),
    (MaskIgnored, "attention_mask is ignored"),
    (LossWithoutShift, "labels are not shifted"),
    (LossCountingPadding, "Padding is counted"),
    (LossAlways, "must be None when no labels"),
    (KeepsFirstLogits, "keeps the LAST k positions"),
    (ReturnsTensor, "an object with .logits and .loss"),
])
def test_planted_model_mistakes_get_their_own_hint(cls, hint):
    with pytest.raises(CheckFailed, match=hint):
        check_llama3(cls)
