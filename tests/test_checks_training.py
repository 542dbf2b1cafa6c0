"""check_lr_schedule accepts correct schedules and rejects each planted mistake with its own hint."""

import math

import pytest

from llama3.checks import check_lr_schedule
from llama3.checks._common import CheckFailed
from llama3.train import lr_schedule


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


@pytest.mark.parametrize("fn, hint", [
    (no_warmup, "There is no warm-up"),
    (decays_to_zero, "decays to 0 instead of min_lr"),
    (warmup_off_by_one, "warm-up is off by one"),
    (linear_decay, "The decay is linear"),
    (cosine_keeps_going, "the cosine keeps going"),
    (progress_not_shifted, "does not start at the end of the warm-up"),
    (returns_none, "return a number"),
])
def test_planted_mistakes_get_their_own_hint(fn, hint):
    with pytest.raises(CheckFailed, match=hint):
        check_lr_schedule(fn)
