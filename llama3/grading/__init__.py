"""Grade learners' notebooks against the released assignment: ``python -m llama3 grade PATH``.

- ``release``: the instructor's notebooks (check cells by grade_id, points) and the plan for one learner's notebook,
  whose check cells are always the released ones;
- ``static``: flags on the cells a learner wrote (importing the reference, touching the checkers, the builtins or
  paths outside the folder);
- ``sandbox`` / ``supervisor`` / ``worker``: one isolated kernel per notebook (scrubbed environment, rlimits, no
  surviving process, bounded output, authenticated results) that restores the pristine checkers before each check;
- ``grader``: scores and statuses; ``report``: table, CSV, JSON and feedback files; ``cli``: the command line.
"""

from llama3.grading.cli import Submission, find_submissions, grade_class, main
from llama3.grading.grader import STATUSES, Exercise, NotebookResult, first_layer, grade_notebook, not_graded
from llama3.grading.release import Release, ReleasedNotebook, build_plan, load_release, load_released_notebook
from llama3.grading.report import Reporter, csv_text, feedback_text, json_text, print_report
from llama3.grading.sandbox import Limits

__all__ = [
    "STATUSES", "Exercise", "Limits", "NotebookResult", "Release", "ReleasedNotebook", "Reporter", "Submission",
    "build_plan", "csv_text", "feedback_text", "find_submissions", "first_layer", "grade_class", "grade_notebook",
    "json_text", "load_release", "load_released_notebook", "main", "not_graded", "print_report",
]
