"""Grade learners' notebooks without a Jupyter server: ``python -m llama3.grade PATH``.

PATH is one notebook, a folder of notebooks, or a folder of per-student folders of notebooks (``.ipynb_checkpoints``
and other hidden folders are ignored). Each notebook runs in its own subprocess with a time limit, so a learner's
infinite loop or crash cannot take the grader down. Inside it, the code cells run in order in one fresh namespace,
as "Restart & Run All" would, with the working directory set to the notebook's folder:

- IPython syntax is translated and then neutralised: line magics (``%matplotlib inline``) and shell lines
  (``!pip install ...``) do nothing; ``%%time``/``%%timeit``/``%%capture`` cells run their body once; other cell
  magics (``%%bash``, ``%%html``, ...) are skipped;
- cells tagged ``skip-grade`` are skipped (widgets, long demos, training runs, downloads);
- matplotlib draws on the Agg backend, ``display`` prints a repr, ipywidgets create no front-end, tqdm is silent;
- every check cell (nbgrader metadata ``grade: true``) is one exercise worth its ``points`` (default 1): it passes
  when it runs without an exception, and fails with the checker's message (the hint) otherwise;
- an exception in any other cell is reported and the next cells still run.

It prints a score table (student, notebook, exercise, points, hint), can write it as CSV (``--csv``) or JSON
(``--json``), and exits with 1 when any exercise fails, 2 when PATH holds no notebook.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

SKIP_TAG = "skip-grade"
DEFAULT_TIMEOUT_S = 300.0
# cell magics whose body is ordinary Python that the grader runs once; any other cell magic is skipped
PYTHON_BODY_CELL_MAGICS = {"time", "timeit", "capture", "prun"}


@dataclass
class Exercise:
    """One check cell's result."""

    exercise: str  # the check cell's nbgrader grade_id, e.g. "check_rope"
    cell: int  # index of the check cell among all cells
    points: float
    max_points: float
    passed: bool
    hint: str = ""


@dataclass
class NotebookResult:
    """What grading one notebook gave."""

    student: str
    notebook: str  # file name, e.g. "01_rope.ipynb"
    path: str
    exercises: list[Exercise] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # exceptions in ordinary cells, crash or timeout notes
    finished: bool = True  # False when the notebook could not be read, timed out, or its process died
    seconds: float = 0.0

    @property
    def points(self) -> float:
        return sum(e.points for e in self.exercises)

    @property
    def max_points(self) -> float:
        return sum(e.max_points for e in self.exercises)

    @property
    def all_passed(self) -> bool:
        return all(e.passed for e in self.exercises)


# --------------------------------------------------------------------------------------------------------------------
# The worker: runs one notebook's cells (in a subprocess started by grade_notebook).
# --------------------------------------------------------------------------------------------------------------------


def _short_error(exc: BaseException) -> str:
    """One line that says what went wrong: the message for an assertion, 'Type: message' otherwise."""
    message = " ".join(str(exc).split())
    if isinstance(exc, AssertionError) and message:
        return message
    if isinstance(exc, NotImplementedError):
        return f"not implemented yet ({message})" if message else "not implemented yet"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class _ShellShim:
    """Stands in for IPython's shell under the grader: magics and shell commands do nothing, except the cell
    magics whose body is plain Python (``%%time``), which run that body once in the notebook's namespace."""

    def __init__(self, namespace: dict):
        self.namespace = namespace
        self.user_ns = namespace

    def run_line_magic(self, name, line, *args, **kwargs):
        return None

    def run_cell_magic(self, name, line, cell, *args, **kwargs):
        if name in PYTHON_BODY_CELL_MAGICS:
            exec(compile(cell, "<cell magic body>", "exec"), self.namespace)
        return None

    def system(self, *args, **kwargs):
        return None

    getoutput = system

    def __getattr__(self, name):  # anything else a notebook asks of get_ipython() is a harmless no-op
        return lambda *args, **kwargs: None


def _to_python(source: str) -> str:
    """Translate IPython syntax (magics, ``!shell``, ``obj?``) into Python calls on get_ipython()."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:  # no IPython: drop magic and shell lines, skip cell magics
        if source.lstrip().startswith("%%"):
            return ""
        return "\n".join(
            "pass" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()
        )
    return TransformerManager().transform_cell(source)


def read_notebook(path) -> dict:
    """The notebook as a dict, each cell's source joined into one string. Plain json rather than nbformat: nbformat's
    schema validation pulls in jsonschema's format checkers (seconds of start-up per notebook) and a learner's
    slightly malformed notebook should still run."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(nb, dict) or nb.get("nbformat") != 4 or not isinstance(nb.get("cells"), list):
        raise ValueError("not an nbformat 4 notebook; open it in JupyterLab and save it again")
    for cell in nb["cells"]:
        source = cell.get("source", "")
        cell["source"] = "".join(source) if isinstance(source, list) else source
        cell.setdefault("metadata", {})
    return nb


def _write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    os.replace(tmp, path)


def _run_notebook_cells(notebook_path: str, result_path: str) -> None:
    """Run the code cells of one notebook and keep ``result_path`` up to date after every cell, so that the parent
    knows how far it got if this process is killed (timeout) or dies (segfault, os._exit)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    out = Path(result_path)
    state = {"exercises": [], "errors": [], "current_cell": None, "finished": False}
    try:
        nb = read_notebook(notebook_path)
    except Exception as exc:  # not JSON, not a notebook: nothing to run
        state["errors"].append(f"cannot read the notebook: {_short_error(exc)}")
        state["finished"] = state["unreadable"] = True
        _write_json_atomic(out, state)
        return

    namespace: dict = {"__name__": "__main__", "__builtins__": __builtins__}
    shell = _ShellShim(namespace)
    namespace["get_ipython"] = lambda: shell
    try:
        from IPython.display import display
    except ImportError:
        def display(*objs, **kwargs):
            print(*map(repr, objs))
    namespace["display"] = display
    # figures are drawn off-screen, so plt.show() would only warn that Agg cannot show them
    warnings.filterwarnings("ignore", message=".*non-interactive.*cannot be shown")
    sys.argv = [notebook_path]  # a notebook that parses sys.argv must not see the grader's arguments

    for index, cell in enumerate(nb["cells"]):
        if cell.get("cell_type") != "code":
            continue
        meta = cell["metadata"].get("nbgrader", {}) or {}
        is_check = bool(meta.get("grade"))
        skipped = SKIP_TAG in (cell["metadata"].get("tags") or [])
        state["current_cell"] = index
        _write_json_atomic(out, state)
        error = None
        if not skipped:
            try:
                code = compile(_to_python(cell["source"]), f"<cell {index}>", "exec")
                exec(code, namespace)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # SystemExit from a learner's exit() included
                error = exc
        if is_check:
            max_points = float(meta.get("points", 1))
            passed = error is None and not skipped
            hint = "" if passed else ("cell tagged skip-grade" if skipped else _short_error(error))
            state["exercises"].append(
                asdict(Exercise(meta.get("grade_id") or f"cell_{index}", index, max_points if passed else 0.0,
                                max_points, passed, hint))
            )
        elif error is not None:
            # where it went wrong, for the instructor: the innermost line of notebook code
            frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename.startswith("<cell ")]
            where = ""
            if frames and frames[-1].filename == f"<cell {index}>":
                where = f" (line {frames[-1].lineno})"
            elif frames:
                where = f" (in {frames[-1].filename[1:-1]}, line {frames[-1].lineno})"
            state["errors"].append(f"cell {index}{where}: {_short_error(error)}")
        if "matplotlib.pyplot" in sys.modules:  # figures are not looked at; closing keeps memory flat
            sys.modules["matplotlib.pyplot"].close("all")
    state["current_cell"] = None
    state["finished"] = True
    _write_json_atomic(out, state)


# --------------------------------------------------------------------------------------------------------------------
# The parent: finds notebooks, starts one worker per notebook, collects and reports.
# --------------------------------------------------------------------------------------------------------------------

# Loads this file by path rather than importing the llama3 package, so that a notebook that never imports torch
# does not pay for it, and the learner's code sees the same sys.path as in Jupyter (its own folder first).
_BOOTSTRAP = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('llama3_grade_worker', sys.argv[1])\n"
    "module = sys.modules['llama3_grade_worker'] = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(module)\n"
    "module._run_notebook_cells(sys.argv[2], sys.argv[3])\n"
)


def _check_cells(notebook_path: Path) -> list[tuple[int, str, float]]:
    """(cell index, grade_id, points) of each check cell, read without running anything."""
    try:
        nb = read_notebook(notebook_path)
    except Exception:
        return []
    found = []
    for index, cell in enumerate(nb["cells"]):
        meta = cell["metadata"].get("nbgrader", {}) or {}
        if cell.get("cell_type") == "code" and meta.get("grade"):
            found.append((index, meta.get("grade_id") or f"cell_{index}", float(meta.get("points", 1))))
    return found


def _kill(proc: subprocess.Popen) -> None:
    """Stop the worker and anything it started (DataLoader workers, a learner's subprocesses)."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass


def grade_notebook(notebook_path: Path, student: str, timeout: float = DEFAULT_TIMEOUT_S) -> NotebookResult:
    """Run one notebook in a subprocess (at most ``timeout`` seconds) and return its exercises and errors."""
    notebook_path = Path(notebook_path).resolve()
    result = NotebookResult(student=student, notebook=notebook_path.name, path=str(notebook_path))
    env = dict(os.environ, MPLBACKEND="Agg", TQDM_DISABLE="1", PYTHONUNBUFFERED="1")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="llama3-grade-") as tmp:
        state_path = Path(tmp) / "state.json"
        cmd = [sys.executable, "-c", _BOOTSTRAP, str(Path(__file__).resolve()), str(notebook_path), str(state_path)]
        proc = subprocess.Popen(
            cmd, cwd=notebook_path.parent, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        timed_out = False
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill(proc)
            output, _ = proc.communicate()
        finally:
            _kill(proc)  # grandchildren left behind by a finished notebook
        result.seconds = time.monotonic() - start
        state = json.loads(state_path.read_text(encoding="utf-8")) if state_path.exists() else {}

    result.exercises = [Exercise(**e) for e in state.get("exercises", [])]
    result.errors = list(state.get("errors", []))
    result.finished = bool(state.get("finished")) and not state.get("unreadable")
    if not state.get("finished"):
        cell = state.get("current_cell")
        where = f"in cell {cell}" if cell is not None else "before the first cell"
        if timed_out:
            why = f"timed out after {timeout:g} s {where}"
        else:
            tail = " | ".join(output.decode("utf-8", "replace").strip().splitlines()[-3:])
            why = f"the notebook's process died {where} (exit code {proc.returncode})" + (f": {tail}" if tail else "")
        result.errors.append(why)
        done = {e.cell for e in result.exercises}
        for index, grade_id, max_points in _check_cells(notebook_path):
            if index not in done:
                result.exercises.append(Exercise(grade_id, index, 0.0, max_points, False, f"not run: {why}"))
    return result


def find_notebooks(path: Path) -> list[tuple[str, Path]]:
    """(student, notebook) pairs under ``path``: the student is the first folder below ``path`` that holds the
    notebook, or ``path``'s own name for notebooks directly in it (a single notebook: its folder's name)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"PATH {str(path)!r} does not exist; pass a notebook or a folder of notebooks")
    if path.is_file():
        if path.suffix != ".ipynb":
            raise ValueError(f"PATH {str(path)!r} is not a notebook (.ipynb); pass a notebook or a folder")
        return [(path.resolve().parent.name, path)]
    found = []
    for nb in sorted(path.rglob("*.ipynb")):
        rel = nb.relative_to(path)
        if any(part.startswith(".") for part in rel.parts):  # .ipynb_checkpoints, .git, ...
            continue
        student = rel.parts[0] if len(rel.parts) > 1 else path.resolve().name
        found.append((student, nb))
    return found


def _format_points(x: float) -> str:
    return f"{x:g}"


def print_report(results: list[NotebookResult], *, show_errors: bool = True, file=None) -> None:
    """The score table: one row per exercise, a total per notebook and student, the errors below each notebook."""
    file = file or sys.stdout
    rows = [("student", "notebook", "exercise", "points", "hint")]
    for r in results:
        for e in r.exercises:
            rows.append((r.student, r.notebook, e.exercise,
                         f"{_format_points(e.points)}/{_format_points(e.max_points)}", "ok" if e.passed else e.hint))
        if not r.exercises:
            rows.append((r.student, r.notebook, "(no check cells)", "0/0", ""))
        rows.append((r.student, r.notebook, "TOTAL",
                     f"{_format_points(r.points)}/{_format_points(r.max_points)}", f"{r.seconds:.0f} s"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for i, row in enumerate(rows):
        line = "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
        print(line.rstrip(), file=file)
        if i == 0:
            print("-" * min(len(line), 120), file=file)
    if show_errors:
        for r in results:
            for err in r.errors:
                print(f"error: {r.student}/{r.notebook}: {err}", file=file)
    students: dict[str, list[float]] = {}
    for r in results:
        got, most = students.setdefault(r.student, [0.0, 0.0])
        students[r.student] = [got + r.points, most + r.max_points]
    if len(students) > 1:
        print(file=file)
        for student, (got, most) in students.items():
            print(f"{student}: {_format_points(got)}/{_format_points(most)}", file=file)


def write_csv(results: list[NotebookResult], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "notebook", "exercise", "points", "max_points", "passed", "hint"])
        for r in results:
            for e in r.exercises:
                writer.writerow([r.student, r.notebook, e.exercise, e.points, e.max_points, e.passed, e.hint])


def write_json(results: list[NotebookResult], path: Path) -> None:
    payload = [
        dict(asdict(r), points=r.points, max_points=r.max_points) for r in results
    ]
    Path(path).write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--timeout must be a positive number of seconds, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llama3.grade",
        description="Grade notebooks: run each one's cells without a Jupyter server and score its check cells.",
    )
    parser.add_argument("path", type=Path, metavar="PATH",
                        help="a notebook, a folder of notebooks, or a folder of per-student folders")
    parser.add_argument("--timeout", type=_positive, default=DEFAULT_TIMEOUT_S,
                        help=f"seconds allowed per notebook (default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--csv", type=Path, help="also write the scores to this CSV file")
    parser.add_argument("--json", type=Path, help="also write the scores and errors to this JSON file")
    parser.add_argument("--match", default=None, metavar="REGEX",
                        help="grade only notebooks whose file name matches REGEX, e.g. '0[1-4]_'")
    parser.add_argument("-j", "--jobs", type=int, default=1,
                        help="notebooks graded at the same time (default 1; each one is its own process)")
    parser.add_argument("-q", "--quiet", action="store_true", help="leave out the errors of ordinary cells")
    args = parser.parse_args(argv)

    try:
        notebooks = find_notebooks(args.path)
        pattern = re.compile(args.match) if args.match else None
    except (FileNotFoundError, ValueError, re.error) as err:
        print(f"grade: error: {err}", file=sys.stderr)
        return 2
    if pattern:
        notebooks = [(s, nb) for s, nb in notebooks if pattern.search(nb.name)]
    if not notebooks:
        print(f"grade: error: no notebook (.ipynb) found under {args.path}", file=sys.stderr)
        return 2

    if args.jobs < 1:
        print(f"grade: error: --jobs must be 1 or more, got {args.jobs}", file=sys.stderr)
        return 2

    def run(item):
        student, nb = item
        print(f"grading {student}/{nb.name} ...", file=sys.stderr, flush=True)
        return grade_notebook(nb, student, timeout=args.timeout)

    # threads only wait on the notebooks' subprocesses; results keep the order of the notebooks
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(run, notebooks))

    print_report(results, show_errors=not args.quiet)
    if args.csv:
        write_csv(results, args.csv)
    if args.json:
        write_json(results, args.json)
    failed = any(not r.all_passed or not r.finished for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
