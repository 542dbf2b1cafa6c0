"""check_lr_schedule and check_train_step accept correct solutions and reject each planted mistake with its own
hint."""

import math

import pytest
import torch
import torch.nn.functional as F

from llama3.checks import check_lr_schedule, check_train_step
from llama3.train import lr_schedule
from tests.checks_util import assert_named


def schedule_written_out(step, *, warmup_steps, total_steps, max_lr, min_lr):
    """An independent correct solution: the cosine written as a cos^2 (cos(x/2)^2 = (1 + cos x) / 2)."""
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    progress = min((step - warmup_steps) / (total_steps - warmup_steps), 1.0)
    return min_lr + (max_lr - min_lr) * math.cos(math.pi * progress / 2) ** 2


def no_warmup(step, *, warmup_steps, total_steps, max_lr, min_lr):
    return lr_schedule(max(step, warmup_steps), warmup_steps=warmup_steps, total_steps=total_steps, max_lr=max_lr,
                       min_lr=min_lr)


def decays_to_zero(step, *, warmup_steps, total_steps, max_lr, min_lr):
    return lr_schedule(step, warmup_steps=warmup_steps, total_steps=total_steps, max_lr=max_lr, min_lr=0.0) \
        if step < total_steps else 0.0


def warmup_off_by_one(step, *, warmup_steps, total_steps, max_lr, min_lr):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    return lr_schedule(step, warmup_steps=warmup_steps, total_steps=total_steps, max_lr=max_lr, min_lr=min_lr)


def linear_decay(step, *, warmup_steps, total_steps, max_lr, min_lr):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    progress = min((step - warmup_steps) / (total_steps - warmup_steps), 1.0)
    return max_lr - progress * (max_lr - min_lr)


def cosine_keeps_going(step, *, warmup_steps, total_steps, max_lr, min_lr):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def progress_not_shifted(step, *, warmup_steps, total_steps, max_lr, min_lr):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    progress = min(step / total_steps, 1.0)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def returns_none(step, *, warmup_steps, total_steps, max_lr, min_lr):
    return None


@pytest.mark.parametrize("fn", [lr_schedule, schedule_written_out])
def test_correct_schedules_pass(fn, capsys):
    check_lr_schedule(fn)
    assert "PASSED" in capsys.readouterr().out


SCHEDULE_MISTAKES = [
    (no_warmup, "there is no warm-up"),
    (decays_to_zero, "decays to 0 instead of min_lr"),
    (warmup_off_by_one, "warm-up is off by one"),
    (linear_decay, "the decay is linear"),
    (cosine_keeps_going, "the cosine keeps going"),
    (progress_not_shifted, "does not start at the end of the warm-up"),
    (returns_none, "not a number"),
]


@pytest.mark.parametrize("fn, hint", SCHEDULE_MISTAKES)
def test_planted_mistakes_get_their_own_hint(fn, hint):
    assert_named(check_lr_schedule, fn, hint, [h for _, h in SCHEDULE_MISTAKES])


# ------------------------------------------------------------------------------------------------ a training step
def step_written_out(model, optimizer, x, y, lr, grad_clip):
    """An independent correct step: gradients reset first, log-softmax loss by hand, the tensor loss returned."""
    optimizer.zero_grad()
    for group in optimizer.param_groups:
        group["lr"] = lr
    log_probs = model(x).logits.float().log_softmax(-1)  # (B, T, V)
    loss = -log_probs.gather(-1, y[..., None]).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.detach()


def _step(model, optimizer, x, y, lr, grad_clip, *, zero=True, set_lr=True, clip="before", labels=False):
    if set_lr:
        for group in optimizer.param_groups:
            group["lr"] = lr
    loss = model(x, labels=y).loss if labels else F.cross_entropy(model(x).logits.flatten(0, 1), y.flatten())
    loss.backward()
    if clip == "before":
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if clip == "after":
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if zero:
        optimizer.zero_grad()
    return loss.item()


def step_without_zero_grad(model, optimizer, x, y, lr, grad_clip):
    return _step(model, optimizer, x, y, lr, grad_clip, zero=False)


def step_ignoring_lr(model, optimizer, x, y, lr, grad_clip):
    return _step(model, optimizer, x, y, lr, grad_clip, set_lr=False)


def step_without_clipping(model, optimizer, x, y, lr, grad_clip):
    return _step(model, optimizer, x, y, lr, grad_clip, clip=None)


def step_clipping_after_update(model, optimizer, x, y, lr, grad_clip):
    return _step(model, optimizer, x, y, lr, grad_clip, clip="after")


def step_shifting_twice(model, optimizer, x, y, lr, grad_clip):
    return _step(model, optimizer, x, y, lr, grad_clip, labels=True)


def step_returning_nothing(model, optimizer, x, y, lr, grad_clip):
    _step(model, optimizer, x, y, lr, grad_clip)


def step_loss_after_update(model, optimizer, x, y, lr, grad_clip):
    """Reports the loss of a second forward pass, after the update."""
    _step(model, optimizer, x, y, lr, grad_clip)
    with torch.no_grad():
        return F.cross_entropy(model(x).logits.flatten(0, 1), y.flatten()).item()


def step_before_backward(model, optimizer, x, y, lr, grad_clip):
    """Zeroes, steps, then computes the gradients: the update always sees no gradients."""
    optimizer.zero_grad()
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = F.cross_entropy(model(x).logits.flatten(0, 1), y.flatten())
    optimizer.step()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    return loss.item()


def step_with_last_gradients(model, optimizer, x, y, lr, grad_clip):
    """Steps on the previous call's gradients, then computes this call's."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = F.cross_entropy(model(x).logits.flatten(0, 1), y.flatten())
    optimizer.step()
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    return loss.item()


@pytest.mark.parametrize("fn", [step_written_out, _step])
def test_correct_steps_pass(fn, capsys):
    check_train_step(fn)
    assert "PASSED" in capsys.readouterr().out


STEP_MISTAKES = [
    (step_without_zero_grad, "gradients are never reset"),
    (step_ignoring_lr, "learning rate passed in is not used"),
    (step_without_clipping, "not clipped"),
    (step_clipping_after_update, "not clipped"),
    (step_shifting_twice, "shifted twice"),
    (step_returning_nothing, "not the loss as a float"),
    (step_loss_after_update, "not the loss of the weights before the update"),
    (step_before_backward, "the weights never change"),
    (step_with_last_gradients, "optimizer.step() runs between the forward pass and loss.backward()"),
]


@pytest.mark.parametrize("fn, hint", STEP_MISTAKES)
def test_planted_step_mistakes_get_their_own_hint(fn, hint):
    assert_named(check_train_step, fn, hint, [h for _, h in STEP_MISTAKES])
