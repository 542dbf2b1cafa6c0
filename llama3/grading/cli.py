"""``python -m llama3.grade PATH``: grade a class of learners against the released assignment."""

from __future__ import annotations

import argparse
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from llama3.grading.grader import NotebookResult, grade_notebook, not_graded
from llama3.grading.release import DEFAULT_RELEASE, Release, load_release
from llama3.grading.report import Reporter, print_report
from llama3.grading.sandbox import Limits
from llama3.grading.supervisor import PR_SET_CHILD_SUBREAPER, _prctl, children, kill_tree


@dataclass
class Submission:
    student: str
    notebook: str  # released file name
    path: Path | None  # None: not handed in
    notes: list[str]


def _visible(path: Path, base: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(base).parts)  # .ipynb_checkpoints, .git


def find_submissions(path, release: Release) -> list[Submission]:
    """One Submission per (learner, released notebook). PATH is a folder of per-learner folders, a folder of one
    learner's notebooks (the learner is the folder's name), or one notebook (only that one is graded). A released
    notebook a learner did not hand in is a Submission without a path; a notebook that is not part of the release
    is named in a note, not graded."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"PATH {str(path)!r} does not exist; pass a notebook or a folder of notebooks")
    if path.is_file():
        if path.suffix != ".ipynb":
            raise ValueError(f"PATH {str(path)!r} is not a notebook (.ipynb); pass a notebook or a folder")
        if path.name not in release.notebooks:
            raise ValueError(f"{path.name} is not a notebook of the released assignment ({release.root}); rename it "
                             f"or pass --release")
        return [Submission(path.resolve().parent.name, path.name, path, [])]
    folders = sorted(p for p in path.iterdir() if p.is_dir() and _visible(p, path))
    loose = sorted(p for p in path.glob("*.ipynb") if _visible(p, path))
    learners: dict[str, list[Path]] = {}
    if loose or not folders:
        learners[path.resolve().name] = loose
    for folder in folders:
        learners.setdefault(folder.name, []).extend(
            sorted((p for p in folder.rglob("*.ipynb") if _visible(p, path)),
                   key=lambda p: (len(p.relative_to(folder).parts), str(p))))
    found = []
    for student, files in learners.items():
        notes = [f"{f.relative_to(path)} is not a notebook of the assignment: not graded (rename it to a released "
                 f"name)" for f in files if f.name not in release.notebooks and f.name not in release.excluded]
        for name in release.notebooks:
            mine = [f for f in files if f.name == name]
            extra = [f"{f.relative_to(path)} was ignored: {mine[0].relative_to(path)} was graded" for f in mine[1:]]
            found.append(Submission(student, name, mine[0] if mine else None, notes + extra))
            notes = []
    return found


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (no cap) or more, got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m llama3.grade",
        description="Grade learners' notebooks against the released assignment, each in an isolated kernel.")
    p.add_argument("path", type=Path, metavar="PATH",
                   help="a folder of per-learner folders, a folder of one learner's notebooks, or one notebook")
    p.add_argument("--release", type=Path, default=None, metavar="PATH",
                   help=f"the notebooks you handed out (a folder, or one notebook); default {DEFAULT_RELEASE}")
    p.add_argument("--match", default=None, metavar="REGEX",
                   help="grade only released notebooks whose file name matches REGEX, e.g. '0[1-4]_'")
    p.add_argument("--csv", type=Path, help="write the scores to this CSV file (after every notebook)")
    p.add_argument("--json", type=Path, help="write scores, notes, errors and flags to this JSON file")
    p.add_argument("--feedback", type=Path, metavar="DIR", help="write one Markdown feedback file per learner here")
    p.add_argument("-j", "--jobs", type=int, default=1, help="notebooks graded at the same time (default 1)")
    p.add_argument("--timeout", type=_positive, default=Limits.timeout,
                   help=f"wall-clock seconds per notebook (default {Limits.timeout:g})")
    p.add_argument("--memory", type=_non_negative_int, default=Limits.memory_mb, metavar="MiB",
                   help=f"memory cap per kernel: heap and private writable mappings, RLIMIT_DATA "
                        f"(default {Limits.memory_mb}; 0: none)")
    p.add_argument("--cpu-time", type=_positive, default=None, metavar="S",
                   help="CPU seconds per kernel (default 4 x --timeout)")
    p.add_argument("--file-size", type=_non_negative_int, default=Limits.file_mb, metavar="MiB",
                   help=f"largest file a kernel may write (default {Limits.file_mb}; 0: none)")
    p.add_argument("--max-output", type=_non_negative_int, default=Limits.output_kb, metavar="KiB",
                   help=f"stdout/stderr kept per kernel for the report (default {Limits.output_kb})")
    p.add_argument("--keep-env", action="append", default=[], metavar="NAME",
                   help="pass this environment variable to the kernels too (they get a scrubbed environment)")
    p.add_argument("--full-hints", action="store_true",
                   help="show the checkers' whole messages, fixes included (default: only what is wrong)")
    p.add_argument("-q", "--quiet", action="store_true", help="leave out the errors of ordinary cells")
    return p


def grade_class(submissions: list[Submission], release: Release, limits: Limits, reporter: Reporter, jobs: int = 1,
                graded: bool = True) -> list[NotebookResult]:
    """Grade every submission (missing ones at once), handing each result to ``reporter`` as it finishes."""
    threads = max(1, (os.cpu_count() or 1) // jobs) if limits.threads is None else limits.threads

    def one(sub: Submission) -> None:
        released = release.notebooks[sub.notebook]
        if sub.path is None:
            result = not_graded(released, sub.student, "missing", f"{sub.notebook} was not handed in")
        else:
            print(f"grading {sub.student}/{sub.notebook} ...", file=sys.stderr, flush=True)
            try:
                result = grade_notebook(sub.path, sub.student, released, limits, graded=graded, threads=threads)
            except Exception as err:  # a bug of the grader: this learner's row says so, the others are graded
                result = not_graded(released, sub.student, "crashed",
                                    f"the grader failed on this notebook ({type(err).__name__}: {err})",
                                    str(sub.path))
        result.notes = sub.notes + result.notes
        reporter.add(result)

    for sub in [s for s in submissions if s.path is None]:
        one(sub)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, [s for s in submissions if s.path is not None]))
    return reporter.sorted()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.jobs < 1:
        print(f"grade: error: --jobs must be 1 or more, got {args.jobs}", file=sys.stderr)
        return 2
    try:
        pattern = re.compile(args.match) if args.match else None
        release = load_release(args.release, pattern)
        submissions = find_submissions(args.path, release)
    except (FileNotFoundError, ValueError, re.error) as err:
        print(f"grade: error: {err}", file=sys.stderr)
        return 2
    limits = Limits(timeout=args.timeout, memory_mb=args.memory, cpu_s=args.cpu_time, file_mb=args.file_size,
                    output_kb=args.max_output, keep_env=tuple(args.keep_env))
    reporter = Reporter(release, args.csv, args.json, args.feedback, log=sys.stderr)
    # a process that escapes a killed supervisor comes back to us rather than to init, and is killed below
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    try:
        results = grade_class(submissions, release, limits, reporter, args.jobs, graded=not args.full_hints)
    finally:
        if children(os.getpid()):
            kill_tree(os.getpid())
    print_report(results, show_errors=not args.quiet)
    return 0 if all(r.all_passed for r in results) else 1
