"""Helpers shared by the checkers: building learner objects, loading reference weights, comparing with hints."""

from __future__ import annotations

import torch
from torch import nn


class CheckFailed(AssertionError):
    """A learner's implementation disagrees with the reference; the message is the hint."""


def fail(hint: str) -> None:
    raise CheckFailed(hint)


def passed(what: str) -> None:
    print(f"PASSED {what}")


def build(cls, *args, what: str, **kwargs):
    """Instantiate the learner's class, turning a constructor error or an unsolved exercise into a hint."""
    try:
        return cls(*args, **kwargs)
    except NotImplementedError:
        fail(f"{what}: the exercise is not solved yet (the constructor raises NotImplementedError).")
    except TypeError as error:
        fail(f"{what}: the constructor does not take the reference's arguments ({error}). Keep the skeleton's "
             f"signature.")


def call(fn, *args, what: str, **kwargs):
    """Call the learner's code; an unsolved exercise or a crash becomes a hint naming the call."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        fail(f"{what}: the exercise is not solved yet (it raises NotImplementedError).")
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
             f"{unexpected or 'none'}. Keep the names from the skeleton (Meta's: wq, wk, wv, wo, w1, w2, w3, ...).")
    for name, tensor in ours.items():
        if theirs[name].shape != tensor.shape:
            fail(f"{what}: {name} has shape {tuple(theirs[name].shape)}, the reference has {tuple(tensor.shape)}.")
    learner.load_state_dict(ours)


def close(actual, expected, atol: float = 1e-5, rtol: float = 1e-5) -> bool:
    return (isinstance(actual, torch.Tensor) and actual.shape == expected.shape
            and torch.allclose(actual.float(), expected.float(), atol=atol, rtol=rtol))


def expect_close(actual, expected, what: str, hint: str = "", atol: float = 1e-5, rtol: float = 1e-5) -> None:
    if not isinstance(actual, torch.Tensor):
        fail(f"{what}: expected a tensor, got {type(actual).__name__}.")
    if actual.shape != expected.shape:
        fail(f"{what}: output shape {tuple(actual.shape)}, expected {tuple(expected.shape)}.")
    if not torch.allclose(actual.float(), expected.float(), atol=atol, rtol=rtol):
        err = (actual.float() - expected.float()).abs().max().item()
        fail(f"{what}: output differs from the reference (max abs error {err:.3g}). {hint}".strip())
