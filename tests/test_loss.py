"""The chunked head + cross-entropy (llama3.loss) against F.cross_entropy on the full logits (the oracle)."""

import pytest
import torch
import torch.nn.functional as F

from llama3.loss import compile_for_training, linear_cross_entropy


def full_loss(h, w, targets, amp=None):
    with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
        logits = F.linear(h, w)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # float32, or float64 for float64
    return F.cross_entropy(logits.flatten(0, -2), targets.flatten(), ignore_index=-100)


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 10_000])
def test_loss_and_gradients_equal_full_logits_cross_entropy_with_ignored_rows(chunk_rows):
    torch.manual_seed(0)
    h = torch.randn(3, 50, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(40, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 40, (3, 50))
    targets[:, -1] = -100  # the last position has no next token
    targets[1, :10] = -100  # and padding
    expected = full_loss(h, w, targets)
    grad_h, grad_w = torch.autograd.grad(expected, (h, w))
    loss = linear_cross_entropy(h, w, targets, chunk_rows=chunk_rows)
    got_h, got_w = torch.autograd.grad(loss * 3.0, (h, w))  # an upstream gradient is applied
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(got_h, 3.0 * grad_h)
    torch.testing.assert_close(got_w, 3.0 * grad_w)
    assert got_h[1, :10].abs().max() == 0 and got_h[:, -1].abs().max() == 0  # ignored rows get no gradient


def test_bfloat16_autocast_matches_autocast_linear_then_float32_cross_entropy():
    torch.manual_seed(1)
    h = torch.randn(300, 32, requires_grad=True)
    w = (0.1 * torch.randn(500, 32)).requires_grad_()
    targets = torch.randint(0, 500, (300,))
    expected = full_loss(h, w, targets, torch.bfloat16)
    grad_h, grad_w = torch.autograd.grad(expected, (h, w))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = linear_cross_entropy(h, w, targets, chunk_rows=64)
    got_h, got_w = torch.autograd.grad(loss, (h, w))
    assert loss.dtype == torch.float32 and got_h.dtype == h.dtype and got_w.dtype == w.dtype
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_h, grad_h, rtol=2e-2, atol=2e-4)  # bf16 matmuls on both sides
    torch.testing.assert_close(got_w, grad_w, rtol=2e-2, atol=2e-4)


def test_all_rows_ignored_gives_nan_like_cross_entropy_and_no_grad_mode_works():
    h, w = torch.randn(4, 8), torch.randn(10, 8)
    targets = torch.full((4,), -100)
    assert torch.isnan(linear_cross_entropy(h, w, targets)) and torch.isnan(F.cross_entropy(h @ w.T, targets))
    with torch.no_grad():
        t = torch.randint(0, 10, (4,))
        torch.testing.assert_close(linear_cross_entropy(h, w, t), F.cross_entropy(h @ w.T, t))


def test_bad_shapes_and_chunk_sizes_are_refused():
    h, w, t = torch.randn(4, 8), torch.randn(10, 8), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="targets must have shape"):
        linear_cross_entropy(h, w, t[:3])
    with pytest.raises(ValueError, match="features"):
        linear_cross_entropy(h, torch.randn(10, 9), t)
    with pytest.raises(ValueError, match="chunk_rows"):
        linear_cross_entropy(h, w, t, chunk_rows=0)


def test_model_without_logits_gives_the_loss_and_gradients_of_the_full_logits_path(make_model):
    """forward(..., return_logits=False) vs the default path, with labels (padding mask, -100) and shift_labels."""
    torch.manual_seed(2)
    model = make_model(seed=3).double()
    tgt = torch.randint(2, 97, (3, 20))
    labels = tgt.clone()
    labels[0, 5] = -100
    mask = torch.ones_like(tgt)
    mask[2, :4] = 0  # left padding
    for kwargs in (dict(labels=labels, attention_mask=mask), dict(shift_labels=torch.roll(tgt, -1, 1))):
        full = model(tgt, **kwargs)
        assert full.logits is not None  # the default path keeps its logits for existing callers
        full_grads = torch.autograd.grad(full.loss, list(model.parameters()))
        fast = model(tgt, **kwargs, return_logits=False)
        assert fast.logits is None
        fast_grads = torch.autograd.grad(fast.loss, list(model.parameters()))
        # the full path's cross-entropy runs in float32 (logits.float()), the chunked one in float64 here
        torch.testing.assert_close(fast.loss.float(), full.loss)
        for a, b in zip(fast_grads, full_grads):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_model_refuses_ambiguous_or_missing_targets(make_model):
    model = make_model()
    tgt = torch.randint(2, 97, (2, 8))
    with pytest.raises(ValueError, match="not both"):
        model(tgt, labels=tgt, shift_labels=tgt)
    with pytest.raises(ValueError, match="pass labels or shift_labels"):
        model(tgt, return_logits=False)
    with pytest.raises(ValueError, match="shift_labels must have shape"):
        model(tgt, shift_labels=tgt[:, :5], return_logits=False)


def test_compiled_layers_give_the_same_loss(make_model):
    torch.manual_seed(4)
    model = make_model(seed=5).train()
    tgt = torch.randint(2, 97, (2, 16))
    expected = model(tgt, labels=tgt).loss
    compiled = compile_for_training(model)
    torch.testing.assert_close(compiled(tgt, labels=tgt, return_logits=False).loss, expected, rtol=1e-5, atol=1e-5)
