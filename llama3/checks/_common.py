"""Helpers shared by the checkers: the two-layer failure, building and calling learner code, loading weights.

A failed check raises ``CheckFailed``, an ``AssertionError`` with two layers: ``what`` (what is wrong, always shown:
it is the exception's message) and ``fix`` (the code that fixes it, shown only when the learner asks for it with
``check_x(..., hint=True)``, and never while grading, i.e. when the environment variable ``LLAMA3_GRADING=1``).
Every public checker is wrapped by ``@checker``: it accepts ``hint=False``, names the exercise, and raises the
failure without the checker's own frames or the learner's chained exception (a few lines instead of a 40-line
traceback). ``verbose(True)`` (or ``LLAMA3_CHECKS_VERBOSE=1``) restores the full traceback.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import os

import torch
from torch import nn

GRADING_ENV = "LLAMA3_GRADING"
VERBOSE_ENV = "LLAMA3_CHECKS_VERBOSE"

# checker -> where its exercise lives, as the learner sees it
EXERCISES = {
    "check_apply_rotary": "notebook 01, exercise 1 (apply_rotary)",
    "check_rope": "notebook 01, exercise 2 (RoPE)",
    "check_rmsnorm": "notebook 02, exercise 1 (RMSNorm)",
    "check_ffn": "notebook 02, exercise 2 (FFN)",
    "check_kv_cache": "notebook 03, exercise 1 (KV_Cache)",
    "check_attention_mask": "notebook 04, exercise 1 (build_attention_mask)",
    "check_attention_by_hand": "notebook 04, exercise 2 (attention_by_hand)",
    "check_attention": "notebook 04, exercise 3 (MultiHeadGQAttention)",
    "check_decoder_layer": "notebook 05, exercise 1 (DecoderLayer)",
    "check_loss": "notebook 06, exercise 1 (causal_lm_loss)",
    "check_llama3": "notebook 06, exercise 2 (Llama3)",
    "check_lr_schedule": "notebook 07, exercise 1 (lr_schedule)",
    "check_train_step": "notebook 07, exercise 2 (train_step)",
    "check_top_p": "notebook 08, exercise 1 (top_p_filter)",
    "check_sample_next_token": "notebook 08, exercise 2 (sample_next_token)",
    "check_generate_kv": "notebook 08, exercise 3 (generate_kv)",
}

_verbose: bool | None = None  # None: follow the environment variable


def grading() -> bool:
    """True under the grader: failures show what is wrong, never the fix."""
    return os.environ.get(GRADING_ENV, "").strip() not in ("", "0")


def verbose(on: bool = True) -> None:
    """Show the full traceback of a failed check (into the checker's code) instead of the short message."""
    global _verbose
    _verbose = bool(on)


def is_verbose() -> bool:
    if _verbose is not None:
        return _verbose
    return os.environ.get(VERBOSE_ENV, "").strip() not in ("", "0")


class CheckFailed(AssertionError):
    """A learner's implementation disagrees with the reference.

    ``what``: what is wrong (the message). ``fix``: how to fix it, shown on request (``hint=True``), never while
    grading. ``check``: the checker's name; ``exercise``: where the exercise is; ``learner``: the name of what was
    checked, for the ``hint=True`` line."""

    def __init__(self, what: str, fix: str = ""):
        super().__init__(what)
        self.what = what
        self.fix = fix
        self.check = ""
        self.exercise = ""
        self.learner = ""
        self.show_fix = False

    def hint_call(self) -> str:
        return f"{self.check}({self.learner or '...'}, hint=True)"

    def __str__(self) -> str:
        text = self.what
        if self.fix and not grading():
            if self.show_fix:
                text += f"\nHow to fix it: {self.fix}"
            elif self.check:
                text += f"\nFor how to fix it, run {self.hint_call()}"
        return text


def fail(what: str, fix: str = "") -> None:
    raise CheckFailed(what, fix)


def passed(what: str) -> None:
    print(f"PASSED {what}")


def checker(fn):
    """Make ``fn(learner, ...)`` a public checker: accepts ``hint=False``, names the exercise on failure, and raises
    the failure without the checker's frames and without the learner's chained exception (unless verbose)."""
    @functools.wraps(fn)
    def run(learner, *args, hint: bool = False, **kwargs):
        try:
            return fn(learner, *args, **kwargs)
        except CheckFailed as error:
            error.check = fn.__name__
            error.exercise = EXERCISES.get(fn.__name__, "")
            error.learner = getattr(learner, "__name__", "")
            error.show_fix = bool(hint)
            if is_verbose():
                raise
            error.__traceback__ = None
            failure = error
        raise failure from None  # outside the except block, so the learner's exception is not chained to it

    return run


def prerequisite(check, piece, name: str, used_by: str) -> None:
    """Re-run ``check`` (a public checker) on the learner's earlier ``piece`` quietly; if it fails, say that the
    earlier exercise must be fixed first (its ``what`` and ``fix`` travel with the new failure)."""
    inner = getattr(check, "__wrapped__", check)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            inner(piece)
    except CheckFailed as error:
        where = EXERCISES.get(check.__name__, check.__name__)
        fail(f"Fix {where} first: {used_by} uses your {name}, which does not pass {check.__name__} yet. "
             f"{check.__name__} says: {error.what}",
             error.fix or f"re-run {check.__name__}({name}) until it passes, then this check again.")


def learner_dependency(learner, name: str, explicit=None, reference=None):
    """The object the learner's code calls under ``name`` (e.g. the notebook's own ``apply_rotary``), or None when it
    does not use one of its own. ``explicit`` (passed by the check cell) wins; otherwise the name is looked up where
    the learner's code looks it up: the globals of the functions that mention it. The reference object itself
    (``reference``) counts as none: nothing of the learner's to re-check."""
    if explicit is not None:
        return explicit
    found = None
    for function in _functions_of(learner):
        code = function.__code__
        if name in _names_used(code) and name in function.__globals__:
            found = function.__globals__[name]
            break
    if found is None or found is reference:
        return None
    return found


def _functions_of(obj):
    if inspect.isfunction(obj):
        yield obj
    elif inspect.isclass(obj):
        for klass in obj.__mro__:
            if klass.__module__.startswith(("llama3.", "torch.")) or klass is object:
                continue  # the package's and torch's own code is not the learner's
            for value in vars(klass).values():
                value = getattr(value, "__func__", value)  # staticmethod, classmethod
                value = getattr(value, "fget", value)  # property
                if inspect.isfunction(value):
                    yield inspect.unwrap(value)
    elif callable(obj) and inspect.isfunction(getattr(obj, "__wrapped__", None)):
        yield inspect.unwrap(obj)


def _names_used(code) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if inspect.iscode(const):  # nested functions, comprehensions
            names |= _names_used(const)
    return names


def build(cls, *args, what: str, **kwargs):
    """Instantiate the learner's class, turning a constructor error or an unsolved exercise into a hint."""
    try:
        return cls(*args, **kwargs)
    except NotImplementedError:
        fail(f"{what}: the exercise is not solved yet (the constructor raises NotImplementedError).",
             "replace each `raise NotImplementedError(...)` line of the exercise cell with your code.")
    except CheckFailed:
        raise
    except TypeError as error:
        fail(f"{what}: the constructor does not take the reference's arguments ({error}).",
             "keep the skeleton's __init__ signature (names and order of the arguments).")
    except Exception as error:  # the learner's bug, reported with its type and message
        fail(f"{what}: the constructor raised {type(error).__name__}: {error}")


def call(fn, *args, what: str, **kwargs):
    """Call the learner's code; an unsolved exercise or a crash becomes a hint naming the call."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        fail(f"{what}: the exercise is not solved yet (it raises NotImplementedError).",
             "replace each `raise NotImplementedError(...)` line of the exercise cell with your code.")
    except CheckFailed:
        raise
    except Exception as error:  # the learner's bug, reported with its type and message
        fail(f"{what} raised {type(error).__name__}: {error}")


def copy_weights(learner: nn.Module, reference: nn.Module, what: str) -> None:
    """Load the reference module's weights into the learner's, by parameter name (the skeleton fixes them)."""
    ours = reference.state_dict()
    theirs = learner.state_dict()
    missing = sorted(set(ours) - set(theirs))
    unexpected = sorted(set(theirs) - set(ours))
    if missing or unexpected:
        fail(f"{what}: parameter names differ from the reference. Missing: {missing or 'none'}; unexpected: "
             f"{unexpected or 'none'}.",
             "keep the names from the skeleton (Meta's: wq, wk, wv, wo, w1, w2, w3, attention_norm, ...).")
    for name, tensor in ours.items():
        if theirs[name].shape != tensor.shape:
            fail(f"{what}: {name} has shape {tuple(theirs[name].shape)}, the reference has {tuple(tensor.shape)}.")
    learner.load_state_dict(ours)


def close(actual, expected, atol: float = 1e-5, rtol: float = 1e-5, equal_nan: bool = False) -> bool:
    return (isinstance(actual, torch.Tensor) and isinstance(expected, torch.Tensor) and actual.shape == expected.shape
            and torch.allclose(actual.float(), expected.float(), atol=atol, rtol=rtol, equal_nan=equal_nan))
