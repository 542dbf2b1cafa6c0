"""check_lr_schedule and check_train_step: the schedule and one optimiser step of the training loop.

check_lr_schedule compares the learner's schedule with ``llama3.train.lr_schedule``.

The reference warms up linearly from 0 (lr = max_lr * step / warmup_steps), decays along a half cosine from max_lr
at step warmup_steps to min_lr at total_steps, and stays at min_lr after. The checker compares whole curves on a few
settings (odd sizes, no warm-up at all) and, when they differ, names the usual mistake whose curve matches.
check_train_step runs three steps of the learner's step function and of the reference (llama3.train's loop body)
from the same weights and batches, and compares losses and weights; a mismatch is matched against the steps one
gets by forgetting zero_grad, the learning rate, the clipping, or by shifting the targets twice.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from llama3.checks._common import call, checker, fail, passed
from llama3.config import ModelArgs
from llama3.model import Llama3
from llama3.train import lr_schedule

SETTINGS = [  # (warmup_steps, total_steps, max_lr, min_lr)
    (10, 100, 1e-3, 1e-4),
    (7, 23, 3e-4, 3e-5),  # odd sizes
    (0, 40, 6e-4, 6e-5),  # no warm-up: the cosine starts at step 0
]


def _cosine(progress, max_lr, min_lr):
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


SCHEDULE_FIX = ("if step < warmup_steps: return max_lr * step / warmup_steps; if step >= total_steps: return min_lr; "
                "progress = (step - warmup_steps) / (total_steps - warmup_steps); return min_lr + 0.5 * (1 + "
                "math.cos(math.pi * progress)) * (max_lr - min_lr).")


def _variants(warmup, total, max_lr, min_lr) -> list[tuple[callable, str]]:
    """Wrong schedules, each a function of the step, with what is wrong."""
    def decay_progress(step):
        return (step - warmup) / (total - warmup)

    def ref(step):
        return lr_schedule(step, warmup_steps=warmup, total_steps=total, max_lr=max_lr, min_lr=min_lr)

    return [
        (lambda s: max_lr if s < warmup else ref(s),
         "there is no warm-up: for step < warmup_steps the learning rate must rise linearly from 0."),
        (lambda s: _cosine(min(s, total) / total, max_lr, min_lr),
         "the cosine starts at step 0 and there is no warm-up."),
        (lambda s: max_lr * (s + 1) / warmup if s < warmup else ref(s),
         "the warm-up is off by one: at step 0 the learning rate must be 0, reaching max_lr exactly at step "
         "warmup_steps (max_lr * step / warmup_steps, not (step + 1))."),
        (lambda s: ref(s) if s < warmup else 0.5 * (1 + math.cos(math.pi * min(decay_progress(s), 1.0))) * max_lr,
         "the schedule decays to 0 instead of min_lr."),
        (lambda s: ref(s) if s < warmup else max_lr - min(decay_progress(s), 1.0) * (max_lr - min_lr),
         "the decay is linear; Llama and nanoGPT use a half cosine."),
        (lambda s: ref(s) if s < total else _cosine(decay_progress(s), max_lr, min_lr),
         "after total_steps the cosine keeps going (the learning rate rises again) instead of staying at min_lr."),
        (lambda s: ref(s) if s < warmup else _cosine(min(s / total, 1.0), max_lr, min_lr),
         "the decay does not start at the end of the warm-up (progress = step / total_steps), so the learning rate "
         "is below max_lr at step warmup_steps."),
    ]


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


@checker
def check_lr_schedule(schedule_fn) -> None:
    """Check a learner's ``lr_schedule(step, *, warmup_steps, total_steps, max_lr, min_lr) -> float``."""
    for warmup, total, max_lr, min_lr in SETTINGS:
        where = f"lr_schedule(step, warmup_steps={warmup}, total_steps={total}, max_lr={max_lr}, min_lr={min_lr})"
        steps = range(0, total + 6)
        ours = []
        for step in steps:
            value = call(schedule_fn, step, warmup_steps=warmup, total_steps=total, max_lr=max_lr, min_lr=min_lr,
                         what=where.replace("step,", f"{step},"))
            try:
                ours.append(float(value))
            except (TypeError, ValueError):
                fail(f"{where}: returned {type(value).__name__}, not a number (the learning rate).", SCHEDULE_FIX)
        expected = [lr_schedule(s, warmup_steps=warmup, total_steps=total, max_lr=max_lr, min_lr=min_lr)
                    for s in steps]
        if all(_same(a, b) for a, b in zip(ours, expected)):
            continue
        for fn, problem in _variants(warmup, total, max_lr, min_lr):
            if all(_same(a, fn(s)) for s, a in zip(steps, ours)):
                fail(f"{where}: {problem}", SCHEDULE_FIX)
        step = next(s for s, a, b in zip(steps, ours, expected) if not _same(a, b))
        fail(f"{where}: at step {step} the learning rate is {ours[step]:.6g}, expected {expected[step]:.6g}.",
             SCHEDULE_FIX)
    passed("lr_schedule: linear warm-up, cosine decay to min_lr, constant after total_steps.")


# ------------------------------------------------------------------------------------------------ a training step
def _reference_step(model, optimizer, x, y, lr, grad_clip, *, zero_grad=True, set_lr=True, clip=True,
                    shift_again=False):
    """One optimiser step as llama3.train does it, with switches for the mistakes check_train_step names."""
    if set_lr:
        for group in optimizer.param_groups:
            group["lr"] = lr
    if shift_again:  # labels=y shifts y a second time inside the model's loss
        loss = model(x, labels=y).loss
    else:
        logits = model(x).logits  # (B, T, V); y (B, T) is already the next token of each position
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
    loss.backward()
    if clip and grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if zero_grad:
        optimizer.zero_grad(set_to_none=True)
    return loss.item()


STEP_FIX = ("for group in optimizer.param_groups: group['lr'] = lr; loss = F.cross_entropy(model(x).logits.flatten(0, "
            "1), y.flatten()); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip); "
            "optimizer.step(); optimizer.zero_grad(set_to_none=True); return loss.item().")

STEP_VARIANTS = [
    ({"zero_grad": False}, "the gradients are never reset, so each step adds to the previous step's gradients."),
    ({"set_lr": False}, "the learning rate passed in is not used (the optimizer keeps its own)."),
    ({"clip": False}, "the gradients are not clipped (or clipped after optimizer.step(), which is too late)."),
    ({"shift_again": True}, "the targets are shifted twice: y from get_batch is already the next token of each "
                            "position of x, and model(x, labels=y) shifts again."),
]


def _step_setup(seed: int):
    args = ModelArgs(vocab_size=53, d_model=32, heads=4, group_size=2, num_layers=2, max_seq_len=16, multiple_of=16)
    torch.manual_seed(seed)
    model = Llama3(args)
    with torch.no_grad():  # a wider output head: large early gradients, so that clipping at 0.5 is active
        model.output.weight.mul_(20)
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(3):
        window = torch.randint(0, args.vocab_size, (4, 13), generator=gen)
        batches.append((window[:, :-1], window[:, 1:]))  # x, y as get_batch returns them
    return model, batches


def _run_steps(step_fn, seed: int, lrs, grad_clip, what: str, **switches):
    model, batches = _step_setup(seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.9, 0.95), weight_decay=0.1)
    losses = []
    for (x, y), lr in zip(batches, lrs):
        if step_fn is None:
            losses.append(_reference_step(model, optimizer, x, y, lr, grad_clip, **switches))
        else:
            try:
                loss = step_fn(model, optimizer, x, y, lr, grad_clip)
            except RuntimeError as error:
                if "modified by an inplace operation" not in str(error):
                    raise
                fail(f"{what}: optimizer.step() runs between the forward pass and loss.backward(): it changes in "
                     f"place the weights that backward still needs (RuntimeError: modified by an inplace "
                     f"operation).", STEP_FIX)
            try:
                losses.append(float(loss))
            except (TypeError, ValueError):
                fail(f"{what}: returned {type(loss).__name__}, not the loss as a float.", STEP_FIX)
    return losses, [p.detach().clone() for p in model.parameters()]


def _same_run(a, b) -> bool:
    (losses_a, params_a), (losses_b, params_b) = a, b
    return (all(math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-6) for x, y in zip(losses_a, losses_b))
            and all(torch.allclose(p, q, atol=1e-6, rtol=1e-5) for p, q in zip(params_a, params_b)))


@checker
def check_train_step(train_step_fn) -> None:
    """Check a learner's ``train_step(model, optimizer, x, y, lr, grad_clip) -> float``: set the learning rate,
    cross-entropy of the logits against the (already shifted) targets y, backward, clip, step, zero the gradients.
    Three steps on a small model must give the reference's losses and weights."""
    lrs, grad_clip = (1e-2, 5e-3, 2e-3), 0.5
    what = f"train_step(model, optimizer, x, y, lr, grad_clip={grad_clip}) for 3 steps, lr {list(lrs)}"
    ours = call(_run_steps, train_step_fn, 0, lrs, grad_clip, what, what=what)
    expected = _run_steps(None, 0, lrs, grad_clip, what)
    if _same_run(ours, expected):
        passed("train_step: learning rate set, loss on shifted targets, clipped, stepped, gradients reset.")
        return
    if not math.isclose(ours[0][0], expected[0][0], rel_tol=1e-5):
        variant = _run_steps(None, 0, lrs, grad_clip, what, shift_again=True)
        if math.isclose(ours[0][0], variant[0][0], rel_tol=1e-5):
            fail(f"{what}: {STEP_VARIANTS[3][1]}", STEP_FIX)
        fail(f"{what}: the first loss is {ours[0][0]:.5f}, expected {expected[0][0]:.5f}: it is not the loss of the "
             f"weights before the update.", STEP_FIX)
    initial = _step_setup(0)[0]
    if all(torch.equal(p, q.detach()) for p, q in zip(ours[1], initial.parameters())):
        fail(f"{what}: the weights never change: optimizer.step() runs before there are gradients (before "
             f"loss.backward(), or after they were reset).", STEP_FIX)
    for switches, problem in STEP_VARIANTS:
        if _same_run(ours, _run_steps(None, 0, lrs, grad_clip, what, **switches)):
            fail(f"{what}: {problem}", STEP_FIX)
    fail(f"{what}: the losses {[round(v, 5) for v in ours[0]]} or the weights after the steps differ from the "
         f"reference ({[round(v, 5) for v in expected[0]]}).", STEP_FIX)
