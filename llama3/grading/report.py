"""The grader's outputs: the score table, CSV, JSON and one feedback file per learner, rewritten after every
notebook so that a crash of the grader (or of the machine) loses nothing already graded."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import threading
from dataclasses import asdict
from pathlib import Path

from llama3.files import atomic_write_text
from llama3.grading.grader import NotebookResult
from llama3.grading.release import Release

CSV_FIELDS = ["student", "notebook", "exercise", "status", "points", "max_points", "points_if_cleared", "hint",
              "flags"]


def _pts(x: float) -> str:
    return f"{x:g}"


def student_totals(results: list[NotebookResult]) -> dict[str, tuple[float, float]]:
    totals: dict[str, tuple[float, float]] = {}
    for r in results:
        got, most = totals.get(r.student, (0.0, 0.0))
        totals[r.student] = (got + r.points, most + r.max_points)
    return totals


def csv_text(results: list[NotebookResult]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_FIELDS)
    for r in results:
        for e in r.exercises:
            writer.writerow([r.student, r.notebook, e.exercise, e.status, e.points, e.max_points,
                             e.points_if_cleared, e.hint, " | ".join(e.flags)])
    return out.getvalue()


def json_text(results: list[NotebookResult]) -> str:
    totals = student_totals(results)
    payload = {
        "students": {s: {"points": got, "max_points": most} for s, (got, most) in totals.items()},
        "notebooks": [dict(asdict(r), points=r.points, max_points=r.max_points) for r in results],
    }
    return json.dumps(payload, indent=1) + "\n"


def _md(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def feedback_text(student: str, results: list[NotebookResult]) -> str:
    """A Markdown page an instructor can hand back: per notebook, each exercise's points, status and what is
    wrong (never the fix), the check cells that were restored, errors in other cells and any flag."""
    got, most = student_totals(results).get(student, (0.0, 0.0))
    lines = [f"# Feedback: {student}", "", f"**Total: {_pts(got)} / {_pts(most)} points.**", ""]
    for r in results:
        lines += [f"## {r.notebook}: {_pts(r.points)} / {_pts(r.max_points)} ({r.status})", "",
                  "| exercise | points | status | what is wrong |", "|---|---|---|---|"]
        for e in r.exercises:
            what = "" if e.passed else _md(e.hint) or ("see the flags below" if e.flags else "")
            lines.append(f"| {e.exercise} | {_pts(e.points)} / {_pts(e.max_points)} | {e.status} | {what} |")
        lines.append("")
        flagged = [(e.exercise, f) for e in r.exercises for f in e.flags] + [(None, f) for f in r.flags]
        if flagged:
            lines += ["Flagged (the points are withheld until your instructor has looked at your notebook):", ""]
            lines += [f"- {ex + ': ' if ex else ''}{_md(f)}" for ex, f in flagged] + [""]
        if r.notes:
            lines += ["Notes:", ""] + [f"- {_md(n)}" for n in r.notes] + [""]
        if r.errors:
            lines += ["Errors in other cells:", ""] + [f"- {_md(e)}" for e in r.errors[:20]]
            if len(r.errors) > 20:
                lines.append(f"- ... and {len(r.errors) - 20} more")
            lines.append("")
    return "\n".join(lines)


def feedback_name(student: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", student).strip("._") or "student"


class Reporter:
    """Collects results as notebooks finish (from several threads) and rewrites the files each time."""

    def __init__(self, release: Release, csv_path=None, json_path=None, feedback_dir=None, log=None):
        self.order = {name: i for i, name in enumerate(release.notebooks)}
        self.csv_path, self.json_path = csv_path, json_path
        self.feedback_dir = Path(feedback_dir) if feedback_dir else None
        self.results: list[NotebookResult] = []
        self.lock = threading.Lock()
        self.log = log
        if self.feedback_dir:
            self.feedback_dir.mkdir(parents=True, exist_ok=True)

    def sorted(self) -> list[NotebookResult]:
        return sorted(self.results, key=lambda r: (r.student, self.order.get(r.notebook, 1 << 30)))

    def add(self, result: NotebookResult) -> None:
        with self.lock:
            self.results.append(result)
            results = self.sorted()
            if self.csv_path:
                atomic_write_text(self.csv_path, csv_text(results))
            if self.json_path:
                atomic_write_text(self.json_path, json_text(results))
            if self.feedback_dir:
                mine = [r for r in results if r.student == result.student]
                atomic_write_text(self.feedback_dir / f"{feedback_name(result.student)}.md",
                                  feedback_text(result.student, mine))
            if self.log:
                print(f"graded {result.student}/{result.notebook}: {_pts(result.points)}/{_pts(result.max_points)} "
                      f"{result.status} ({result.seconds:.0f} s)", file=self.log, flush=True)


def print_report(results: list[NotebookResult], *, show_errors: bool = True, file=None) -> None:
    """The score table: one row per exercise, a total per notebook and per student, notes and errors below."""
    file = file or sys.stdout
    rows = [("student", "notebook", "exercise", "points", "status", "hint")]
    for r in results:
        for e in r.exercises:
            rows.append((r.student, r.notebook, e.exercise, f"{_pts(e.points)}/{_pts(e.max_points)}", e.status,
                         "" if e.passed else (e.hint if not e.flags else f"{e.flags[0]}")))
        rows.append((r.student, r.notebook, "TOTAL", f"{_pts(r.points)}/{_pts(r.max_points)}", r.status,
                     f"{r.seconds:.0f} s"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for i, row in enumerate(rows):
        line = "  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths, strict=True)) + "  " + row[5][:150]
        print(line.rstrip(), file=file)
        if i == 0:
            print("-" * min(len(line), 120), file=file)
    for r in results:
        for note in r.notes:
            print(f"note: {r.student}/{r.notebook}: {note}", file=file)
        for flag in r.flags + [f"{e.exercise}: {f}" for e in r.exercises for f in e.flags]:
            print(f"flag: {r.student}/{r.notebook}: {flag}", file=file)
        if show_errors:
            for err in r.errors:
                print(f"error: {r.student}/{r.notebook}: {err}", file=file)
    totals = student_totals(results)
    print(file=file)
    for student, (got, most) in totals.items():
        print(f"{student}: {_pts(got)}/{_pts(most)}", file=file)
