"""Shared by the checker tests: run a checker on a planted mistake and assert the hint names that mistake only."""

import re

import pytest

from llama3.checks._common import CheckFailed


def failure(check, learner, **kwargs) -> CheckFailed:
    """The CheckFailed that ``check(learner)`` raises (the test fails if it passes instead)."""
    with pytest.raises(CheckFailed) as info:
        check(learner, **kwargs)
    return info.value


def assert_named(check, learner, phrase: str, others=(), **kwargs) -> CheckFailed:
    """``check(learner)`` fails, its ``what`` (the part always shown, also to the grader) contains ``phrase``, and
    none of the ``others`` phrases (the hints of the other planted mistakes): the mistake is named, and not
    diagnosed as something else."""
    error = failure(check, learner, **kwargs)
    assert re.search(re.escape(phrase), error.what), f"expected {phrase!r} in: {error.what}"
    wrong = [other for other in others if other != phrase and other not in phrase
             and re.search(re.escape(other), error.what)]
    assert not wrong, f"also diagnosed as {wrong}: {error.what}"
    return error
