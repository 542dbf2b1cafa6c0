"""check_lr_schedule: the learner's learning-rate schedule against ``llama3.train.lr_schedule``.

The reference warms up linearly from 0 (lr = max_lr * step / warmup_steps), decays along a half cosine from max_lr
at step warmup_steps to min_lr at total_steps, and stays at min_lr after. The checker compares whole curves on a few
settings (odd sizes, no warm-up at all) and, when they differ, names the usual mistake whose curve matches.
"""

from __future__ import annotations

import math

from llama3.checks._common import call, fail, passed
from llama3.train import lr_schedule

SETTINGS = [  # (warmup_steps, total_steps, max_lr, min_lr)
    (10, 100, 1e-3, 1e-4),
    (7, 23, 3e-4, 3e-5),  # odd sizes
    (0, 40, 6e-4, 6e-5),  # no warm-up: the cosine starts at step 0
]


def _cosine(progress, max_lr, min_lr):
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def _variants(warmup, total, max_lr, min_lr) -> dict[str, tuple[callable, str]]:
    """Wrong schedules, each a function of the step, with the hint that names the mistake."""
    def decay_progress(step):
        return (step - warmup) / (total - warmup)

    def ref(step):
        return lr_schedule(step, warmup_steps=warmup, total_steps=total, max_lr=max_lr, min_lr=min_lr)

    return {
        "no warm-up": (
            lambda s: max_lr if s < warmup else ref(s),
            "There is no warm-up: for step < warmup_steps the learning rate rises linearly from 0, "
            "max_lr * step / warmup_steps."),
        "cosine from step 0": (
            lambda s: _cosine(min(s, total) / total, max_lr, min_lr),
            "The cosine starts at step 0 and there is no warm-up: warm up linearly for warmup_steps, then decay "
            "with progress = (step - warmup_steps) / (total_steps - warmup_steps)."),
        "warm-up off by one": (
            lambda s: max_lr * (s + 1) / warmup if s < warmup else ref(s),
            "The warm-up is off by one: at step 0 the learning rate is 0 and it reaches max_lr exactly at step "
            "warmup_steps (max_lr * step / warmup_steps, not (step + 1))."),
        "decays to 0": (
            lambda s: ref(s) if s < warmup else 0.5 * (1 + math.cos(math.pi * min(decay_progress(s), 1.0))) * max_lr,
            "The schedule decays to 0 instead of min_lr: lr = min_lr + 0.5 * (1 + cos(pi * progress)) * "
            "(max_lr - min_lr)."),
        "linear decay": (
            lambda s: ref(s) if s < warmup else max_lr - min(decay_progress(s), 1.0) * (max_lr - min_lr),
            "The decay is linear: Llama and nanoGPT use a half cosine, min_lr + 0.5 * (1 + cos(pi * progress)) * "
            "(max_lr - min_lr)."),
        "cosine keeps going": (
            lambda s: ref(s) if s < total else _cosine(decay_progress(s), max_lr, min_lr),
            "After total_steps the cosine keeps going (the learning rate rises again): return min_lr for "
            "step >= total_steps."),
        "progress not shifted": (
            lambda s: ref(s) if s < warmup else _cosine(min(s / total, 1.0), max_lr, min_lr),
            "The decay does not start at the end of the warm-up: progress = (step - warmup_steps) / "
            "(total_steps - warmup_steps), so the learning rate is max_lr at step warmup_steps."),
    }


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


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
                fail(f"{where}: return a number (the learning rate), got {type(value).__name__}.")
        expected = [lr_schedule(s, warmup_steps=warmup, total_steps=total, max_lr=max_lr, min_lr=min_lr)
                    for s in steps]
        if all(_same(a, b) for a, b in zip(ours, expected)):
            continue
        for fn, hint in _variants(warmup, total, max_lr, min_lr).values():
            if all(_same(a, fn(s)) for s, a in zip(steps, ours)):
                fail(f"{where}: {hint}")
        step = next(s for s, a, b in zip(steps, ours, expected) if not _same(a, b))
        fail(f"{where}: at step {step} the learning rate is {ours[step]:.6g}, expected {expected[step]:.6g}. Warm up "
             f"linearly from 0 (max_lr * step / warmup_steps), then min_lr + 0.5 * (1 + cos(pi * progress)) * "
             f"(max_lr - min_lr) with progress = (step - warmup_steps) / (total_steps - warmup_steps), and min_lr "
             f"from total_steps on.")
    passed("lr_schedule: linear warm-up, cosine decay to min_lr, constant after total_steps.")
