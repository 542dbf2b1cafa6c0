"""Logits and loss equal transformers.LlamaForCausalLM holding the same random weights."""

import pytest
import torch
import torch.nn.functional as F

from llama3 import Llama3

SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
           "original_max_position_embeddings": 16}
CONFIGS = {
    "gqa": dict(group_size=2),
    "multi-head": dict(group_size=1),
    "multi-query": dict(group_size=4),
    "tied": dict(tie_embeddings=True),
    "theta-10000": dict(rope_theta=10000.0),
    "rope-scaled": dict(rope_scaling=SCALING),
    "explicit-ffn": dict(ffn_hidden_dim=40, norm_eps=1e-6),
}


def hf_position_ids(mask):
    return (mask.cumsum(-1) - 1).clamp(min=0)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_equal_transformers(make_model, name):
    model = make_model(**CONFIGS[name])
    hf = model.to_hf()
    torch.manual_seed(1)
    tgt = torch.randint(0, model.args.vocab_size, (2, 40))
    with torch.no_grad():
        ours, theirs = model(tgt).logits, hf(tgt).logits
    assert (ours - theirs).abs().max() < 1e-5
    back = Llama3.from_hf(hf)
    for (name_a, a), (name_b, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert name_a == name_b and torch.equal(a, b)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_equals_transformers_and_unpadded_rows(make_model, side):
    model = make_model()
    hf = model.to_hf()
    torch.manual_seed(2)
    tgt = torch.randint(0, 97, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    pads = {0: 0, 1: 4, 2: 7}
    for row, n in pads.items():
        if n:
            mask[row, :n] = 0 if side == "left" else 1
            if side == "right":
                mask[row, 12 - n:] = 0
    with torch.no_grad():
        ours = model(tgt, mask).logits
        theirs = hf(tgt, attention_mask=mask, position_ids=hf_position_ids(mask)).logits
        real = mask.bool()
        assert (ours[real] - theirs[real]).abs().max() < 1e-5
        for row in range(3):
            alone = model(tgt[row:row + 1, real[row]]).logits[0]
            assert (ours[row, real[row]] - alone).abs().max() < 1e-5


def test_loss_is_shifted_cross_entropy_ignoring_minus_100_and_padding(make_model):
    model = make_model()
    hf = model.to_hf()
    torch.manual_seed(3)
    tgt = torch.randint(0, 97, (2, 10))
    labels = tgt.clone()
    labels[0, 5] = -100
    right = torch.ones_like(tgt)
    right[1, 7:] = 0  # right padding, the training layout
    out = model(tgt, right, labels=labels)
    keep = labels.masked_fill(right == 0, -100)[:, 1:]
    assert int((keep != -100).sum()) == 2 * 9 - 1 - 3  # one -100, three padded targets
    by_hand = F.cross_entropy(out.logits[:, :-1].reshape(-1, 97), keep.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, by_hand)
    hf_loss = hf(tgt, attention_mask=right, labels=labels.masked_fill(right == 0, -100)).loss
    torch.testing.assert_close(out.loss, hf_loss, atol=1e-5, rtol=1e-5)
    assert model(tgt).loss is None


def test_left_padding_counts_only_predictions_made_from_real_tokens(make_model):
    model = make_model()
    torch.manual_seed(4)
    tgt = torch.randint(0, 97, (2, 10))
    left = torch.ones_like(tgt)
    left[1, :3] = 0
    out = model(tgt, left, labels=tgt)
    # row 1 predicts positions 4..9 from real tokens 3..8; its first real token (3) has only padding before it
    logits = torch.cat([out.logits[0, :-1], out.logits[1, 3:-1]])
    targets = torch.cat([tgt[0, 1:], tgt[1, 4:]])
    torch.testing.assert_close(out.loss, F.cross_entropy(logits, targets))
    # and equals the loss of the rows computed alone (left padding changes nothing)
    alone = [model(tgt[:1], labels=tgt[:1]).loss, model(tgt[1:, 3:], labels=tgt[1:, 3:]).loss]
    torch.testing.assert_close(out.loss, (alone[0] * 9 + alone[1] * 6) / 15, atol=1e-5, rtol=1e-5)


def test_flash_and_manual_models_agree_in_training_with_dropout_off(make_model):
    flash = make_model()
    manual = make_model(use_flash=False)
    manual.load_state_dict(flash.state_dict())
    flash.train(), manual.train()
    tgt = torch.randint(0, 97, (2, 16))
    a, b = flash(tgt, labels=tgt), manual(tgt, labels=tgt)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)
    a.loss.backward(), b.loss.backward()
    torch.testing.assert_close(flash.layers[0].attention.wq.weight.grad, manual.layers[0].attention.wq.weight.grad,
                               atol=1e-5, rtol=1e-4)
