"""Grade one learner's notebook against its released version, and turn what the kernel reported into scores."""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass, field
from pathlib import Path

from llama3.grading.release import (
    DEFAULT_RELEASE,
    Plan,
    ReleasedNotebook,
    UnreadableNotebook,
    build_plan,
    load_released_notebook,
    read_notebook,
)
from llama3.grading.sandbox import Limits, RunOutcome, run_plan
from llama3.grading.static import plan_flags

STATUSES = ("passed", "failed", "missing", "unreadable", "timeout", "crashed", "flagged")
HINT_CHARS = 200  # graded mode: what is wrong, in at most this many characters


@dataclass
class Exercise:
    """One released check cell's result for one learner."""

    exercise: str  # the check cell's grade_id, e.g. "check_rope"
    points: float
    max_points: float
    status: str  # one of STATUSES
    hint: str = ""  # what is wrong (graded mode: the first layer of the checker's message only)
    flags: list[str] = field(default_factory=list)  # why the points are withheld until an instructor has looked
    points_if_cleared: float = 0.0  # what the exercise scores if the instructor clears the flags

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass
class NotebookResult:
    """What grading one released notebook gave for one learner (handed in or not)."""

    student: str
    notebook: str  # the released file name, e.g. "01_rope.ipynb"
    path: str  # the learner's file, "" when missing
    status: str = "passed"
    exercises: list[Exercise] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # exceptions in ordinary cells, named by cell label
    notes: list[str] = field(default_factory=list)  # check cells restored / ignored, why it did not finish, ...
    flags: list[str] = field(default_factory=list)  # flags not tied to one exercise
    seconds: float = 0.0
    output_bytes: int = 0

    @property
    def points(self) -> float:
        return sum(e.points for e in self.exercises)

    @property
    def max_points(self) -> float:
        return sum(e.max_points for e in self.exercises)

    @property
    def all_passed(self) -> bool:
        return all(e.passed for e in self.exercises)


def first_layer(message: str, limit: int = HINT_CHARS) -> str:
    """The "what is wrong" part of a checker's message: its first line and first sentence, at most ``limit``
    characters. The checkers put the fix (often the solution line) after it; graded feedback leaves that out."""
    line = message.strip().splitlines()[0] if message.strip() else ""
    sentence = re.split(r"(?<=[.!?])\s+(?=[A-Z`'\"(])", line, maxsplit=1)[0]
    return sentence if len(sentence) <= limit else sentence[: limit - 1].rstrip() + "…"


def _notebook_status(result: NotebookResult) -> str:
    statuses = {e.status for e in result.exercises}
    for status in ("missing", "unreadable", "flagged", "timeout", "crashed"):
        if status in statuses:
            return status
    if result.flags:
        return "flagged"
    return "passed" if result.all_passed else "failed"


def not_graded(released: ReleasedNotebook, student: str, status: str, reason: str, path: str = "") -> NotebookResult:
    """A notebook that was not run (missing, unreadable): every exercise scores zero, with the reason."""
    result = NotebookResult(student, released.name, path, status=status, notes=[reason])
    result.exercises = [Exercise(c.grade_id, 0.0, c.points, status, reason) for c in released.checks]
    return result


def _ended(outcome: RunOutcome, limits: Limits) -> str:
    """Why the kernel stopped early, in words."""
    tail = " | ".join(line.strip() for line in outcome.output_tail.strip().splitlines()[-3:])[:300]
    tail = f": {tail}" if tail else ""
    if outcome.ended.startswith("signal "):
        number = int(outcome.ended.split()[1])
        if number == signal.SIGXCPU:
            return f"its CPU time limit ({limits.cpu_seconds} s) was reached"
        if number == signal.SIGKILL:
            return f"the kernel was killed (out of memory? the cap is {limits.memory_mb} MiB){tail}"
        name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else str(number)
        return f"the kernel died ({name}){tail}"
    if outcome.ended.startswith("exit "):
        return f"the notebook ended the kernel (exit code {outcome.ended.split()[1]}){tail}"
    return f"the kernel's supervisor was killed{tail}"


def score(released: ReleasedNotebook, plan: Plan, outcome: RunOutcome, result: NotebookResult, limits: Limits,
          static: dict[str | None, list[str]], graded: bool) -> None:
    """Fill ``result`` from the kernel's events: one Exercise per released check, in the released order."""
    verdicts: dict[str, tuple[int, dict]] = {}
    runtime: dict[str | None, list[str]] = {}
    current, done, ready = None, False, False
    for position, message in enumerate(outcome.messages):
        event = message.get("event")
        index = message.get("index")
        cell = plan.cells[index] if isinstance(index, int) and 0 <= index < len(plan.cells) else None
        if event == "ready":
            ready = True
        elif event == "cell" and cell is not None:
            current = cell
        elif event == "check" and cell is not None and cell.grade_id:
            verdicts[cell.grade_id] = (position, message)
        elif event == "error" and cell is not None:
            error = str(message.get("error", ""))
            result.errors.append(f"{cell.label}: {error if not graded or len(error) <= 300 else error[:299] + '…'}")
        elif event == "audit" and cell is not None:
            runtime.setdefault(cell.section, []).extend(f"{cell.label}: {f}" for f in message.get("flags", []))
        elif event == "done":
            done = True
    where = current.label if current is not None else "before the first cell"
    if outcome.timed_out:
        why, status = f"timed out after {limits.timeout:g} s in {where}", "timeout"
    elif not done:
        why = _ended(outcome, limits)
        why, status = (f"{why}, in {where}" if ready else f"the kernel did not start: {why}"), "crashed"
    else:
        why, status = "", ""
    if why:
        result.notes.append(why)
    tampering = [(at, f"the result channel: {what}") for at, what in outcome.tampering]
    for check in released.checks:
        flags = list(static.get(check.grade_id, [])) + list(runtime.get(check.grade_id, []))
        if check.grade_id not in verdicts:
            exercise = Exercise(check.grade_id, 0.0, check.points, status or "crashed", f"not reached: {why}")
            exercise.flags = flags
        else:
            position, message = verdicts[check.grade_id]
            flags += message.get("flags", [])
            flags += [what for at, what in tampering if at <= position]
            passed = bool(message.get("passed"))
            hint = message.get("hint", "")
            hint = first_layer(hint) if graded else hint
            exercise = Exercise(check.grade_id, check.points if passed else 0.0, check.points,
                                "passed" if passed else "failed", hint)
            exercise.flags = flags
        if exercise.flags:  # whatever it scored, an instructor looks first
            exercise.points_if_cleared, exercise.points, exercise.status = exercise.points, 0.0, "flagged"
        result.exercises.append(exercise)
    result.flags += static.get(None, []) + runtime.get(None, [])
    late = [what for at, what in tampering if not any(at <= p for p, _ in verdicts.values())]
    result.flags += sorted(set(late))


def grade_notebook(path, student: str, released: ReleasedNotebook | Path | str | None = None,
                   limits: Limits | None = None, *, graded: bool = True, threads: int = 1) -> NotebookResult:
    """Grade the learner's notebook at ``path`` against ``released`` (a ReleasedNotebook, or the path of the
    instructor's copy; default: the file of the same name in this repository's notebooks/)."""
    path = Path(path)
    limits = limits or Limits()
    if not isinstance(released, ReleasedNotebook):
        released = load_released_notebook(released if released is not None else DEFAULT_RELEASE / path.name)
    try:
        learner = read_notebook(path)
    except UnreadableNotebook as err:
        return not_graded(released, student, "unreadable", f"{path.name} cannot be read: {err}", str(path))
    plan = build_plan(learner, released)
    static = plan_flags(plan, released)
    reference = any("llama3" in c.source for c in released.cells)
    outcome = run_plan(plan, path, limits, reference=reference, threads=threads)
    result = NotebookResult(student, released.name, str(path), notes=list(plan.notes), seconds=outcome.seconds,
                            output_bytes=outcome.output_bytes)
    score(released, plan, outcome, result, limits, static, graded)
    result.status = _notebook_status(result)
    return result
