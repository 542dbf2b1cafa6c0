"""The released assignment and the plan that grades one learner's notebook against it.

The instructor's copy of each notebook (``notebooks/`` of this repository by default) is the source of truth for what
is graded: which check cells exist (by nbgrader ``grade_id``), what they run and how many points they are worth. A
learner's notebook only contributes the cells the learner wrote; its check cells are replaced by the released ones,
so an edited, deleted or invented check cell changes nothing but a line in the report.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path

SKIP_TAG = "skip-grade"
MAX_NOTEBOOK_BYTES = 50 * 2**20  # a notebook this large is a mistake (or an attack on the grader's memory)
DEFAULT_RELEASE = Path(__file__).resolve().parent.parent.parent / "notebooks"


class UnreadableNotebook(ValueError):
    """The file is not a notebook the grader can run; the message says why and what to do."""


def read_notebook(path) -> dict:
    """The notebook as nbformat 4 (older versions are upgraded by nbformat), each cell's source one string.

    Schema validation is skipped on purpose: a learner's slightly malformed notebook should still run, and
    nbformat's validator costs seconds of start-up.
    """
    from nbformat import convert, reader

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise UnreadableNotebook(f"cannot open it ({err.strerror})") from None
    if size == 0:
        raise UnreadableNotebook("the file is empty; save the notebook again in JupyterLab")
    if size > MAX_NOTEBOOK_BYTES:
        raise UnreadableNotebook(f"the file is {size / 2**20:.0f} MiB, over {MAX_NOTEBOOK_BYTES // 2**20} MiB; "
                                 f"clear the outputs and save it again")
    try:
        nb = convert(reader.reads(path.read_text(encoding="utf-8")), 4)
    except UnicodeDecodeError:
        raise UnreadableNotebook("the file is not UTF-8 text; hand in the .ipynb file JupyterLab saves") from None
    except ValueError as err:
        if isinstance(err, json.JSONDecodeError) or type(err).__name__ == "NotJSONError":
            raise UnreadableNotebook("not valid JSON: the file is truncated or was edited by hand; save the "
                                     "notebook again in JupyterLab") from None
        raise UnreadableNotebook(f"not a Jupyter notebook ({' '.join(str(err).split())[:120]}); save the notebook "
                                 f"again in JupyterLab") from None
    except Exception as err:  # nbformat's NotJSONError, missing keys, unknown versions
        raise UnreadableNotebook(f"not a Jupyter notebook ({type(err).__name__}: {' '.join(str(err).split())[:120]})"
                                 f"; save the notebook again in JupyterLab") from None
    cells = nb.get("cells")
    if not isinstance(cells, list):
        raise UnreadableNotebook("the notebook has no list of cells; save it again in JupyterLab")
    if not all(isinstance(cell, dict) for cell in cells):
        raise UnreadableNotebook("a cell of the notebook is not a JSON object; save it again in JupyterLab")
    for cell in cells:
        source = cell.get("source", "")
        cell["source"] = "".join(source) if isinstance(source, list) else str(source)
        if not isinstance(cell.get("metadata"), dict):
            cell["metadata"] = {}
    return nb


def _nbgrader(cell: dict) -> dict:
    meta = cell.get("metadata", {}).get("nbgrader")
    return meta if isinstance(meta, dict) else {}


def _tags(cell: dict) -> list:
    tags = cell.get("metadata", {}).get("tags")
    return tags if isinstance(tags, list) else []


def _checker_args(source: str) -> tuple[str, ...]:
    """The names a check cell hands to its checker: ``check_rope(RoPE)`` -> ("RoPE",)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ()
    return tuple(arg.id for node in ast.walk(tree) if isinstance(node, ast.Call)
                 for arg in node.args if isinstance(arg, ast.Name))


def _first_line(source: str, width: int = 40) -> str:
    line = next((ln.strip() for ln in source.splitlines() if ln.strip()), "")
    return line if len(line) <= width else line[: width - 1] + "…"


@dataclass
class Check:
    """One released check cell: the exercise it grades."""

    grade_id: str
    points: float
    source: str
    args: tuple[str, ...]  # the names handed to the checker, e.g. ("RoPE",)
    cell_id: str | None  # nbformat cell id (4.5+), to find the learner's copy
    exercise: str | None  # grade_id of the exercise cell just before it, where the check goes if deleted
    after_id: str | None  # id of the released cell just before it


@dataclass
class ReleasedNotebook:
    name: str  # file name, e.g. "01_rope.ipynb"
    cells: list[dict]
    checks: list[Check]
    imports: set[tuple]  # (module, name, asname) of every import in the released cells: these are never flagged

    @property
    def max_points(self) -> float:
        return sum(c.points for c in self.checks)

    @property
    def graded_names(self) -> set[str]:
        return {a for c in self.checks for a in c.args}

    def released_source(self, cell_id: str | None) -> str | None:
        for cell in self.cells:
            if cell_id is not None and cell.get("id") == cell_id:
                return cell["source"]
        return None


def _imports(sources) -> set[tuple]:
    found = set()
    for source in sources:
        try:
            tree = ast.parse(to_python(source))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update((a.name, None, a.asname) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                found.update((node.module, a.name, a.asname) for a in node.names)
    return found


def load_released_notebook(path) -> ReleasedNotebook:
    """The instructor's notebook: its check cells (grade_id unique, points from the metadata) and its imports."""
    path = Path(path)
    try:
        nb = read_notebook(path)
    except UnreadableNotebook as err:
        raise ValueError(f"released notebook {path}: {err}") from None
    cells = [c for c in nb["cells"]]
    checks, seen, exercise, previous_id = [], set(), None, None
    for cell in cells:
        meta = _nbgrader(cell)
        if cell.get("cell_type") == "code" and meta.get("grade"):
            grade_id = str(meta.get("grade_id") or "")
            if not grade_id or grade_id in seen:
                raise ValueError(f"released notebook {path}: a check cell has {'no' if not grade_id else 'a repeated'}"
                                 f" grade_id {grade_id!r}; give every check cell a unique nbgrader grade_id")
            seen.add(grade_id)
            checks.append(Check(grade_id, float(meta.get("points", 1) or 0), cell["source"],
                                _checker_args(cell["source"]), cell.get("id"), exercise, previous_id))
        elif meta.get("solution") and meta.get("grade_id"):
            exercise = str(meta["grade_id"])
        previous_id = cell.get("id", previous_id)
    code = [c["source"] for c in cells if c.get("cell_type") == "code"]
    return ReleasedNotebook(path.name, cells, checks, _imports(code))


@dataclass
class Release:
    """The released assignment: notebook file name -> ReleasedNotebook, in the order of the file names."""

    root: Path
    notebooks: dict[str, ReleasedNotebook]
    excluded: set[str] = field(default_factory=set)  # released names left out by --match: not graded, not noted


def load_release(path=None, match=None) -> Release:
    """Read the instructor's notebooks (a folder, or one notebook); ``match`` (a compiled regex) keeps only the
    notebooks whose file name it matches."""
    root = Path(path) if path is not None else DEFAULT_RELEASE
    if not root.exists():
        raise FileNotFoundError(f"the released assignment {str(root)!r} does not exist; pass --release with the "
                                f"folder of the notebooks you handed out")
    files = [root] if root.is_file() else sorted(p for p in root.glob("*.ipynb") if not p.name.startswith("."))
    excluded = set()
    if match is not None:
        excluded = {p.name for p in files if not match.search(p.name)}
        files = [p for p in files if match.search(p.name)]
    if not files:
        raise FileNotFoundError(f"no released notebook (.ipynb) in {str(root)!r}" +
                                (f" matching {match.pattern!r}" if match is not None else "") +
                                "; pass --release with the folder of the notebooks you handed out")
    return Release(root, {p.name: load_released_notebook(p) for p in files}, excluded)


# --------------------------------------------------------------------------------------------------------------------
# The plan: what the kernel runs for one learner's notebook.
# --------------------------------------------------------------------------------------------------------------------


def to_python(source: str) -> str:
    """Translate IPython syntax (magics, ``!shell``, ``obj?``) into Python calls on get_ipython()."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:  # no IPython: drop magic and shell lines, skip cell magics
        if source.lstrip().startswith("%%"):
            return ""
        return "\n".join("pass" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    try:
        return TransformerManager().transform_cell(source)
    except Exception:  # malformed magic: let compile() report the syntax error in the kernel
        return source


@dataclass
class PlannedCell:
    kind: str  # "check" (released source), "learner" (written or changed by the learner), "released" (unchanged)
    source: str
    label: str  # how the reports name this cell: a grade_id, never a raw index
    skip: bool = False
    grade_id: str | None = None  # check cells: the exercise graded
    args: tuple[str, ...] = ()  # check cells: the names handed to the checker
    section: str | None = None  # the check cell that grades the code of this cell (next one in the plan)


@dataclass
class Plan:
    cells: list[PlannedCell]
    notes: list[str] = field(default_factory=list)  # check cells restored, ignored, re-pointed


def _label_cells(cells: list[PlannedCell], exercise_ids: list[str | None]) -> None:
    """Name each cell as a person would find it in JupyterLab: by its exercise, or its place after one."""
    anchor, count = None, 0
    for cell, exercise in zip(cells, exercise_ids, strict=True):
        if cell.kind == "check":
            anchor, count = cell.grade_id, 0
            cell.label = cell.grade_id
            continue
        if exercise:
            anchor, count = exercise, 0
            cell.label = f"exercise {exercise}"
            continue
        count += 1
        where = f"after {anchor}" if anchor else "before the first exercise"
        cell.label = f"code cell {count} {where} ({_first_line(cell.source)!r})"
    section = None
    for cell in reversed(cells):
        if cell.kind == "check":
            section = cell.grade_id
        cell.section = section if cell.kind != "check" else cell.grade_id


def build_plan(learner: dict, released: ReleasedNotebook) -> Plan:
    """The cells to run for ``learner`` (an nbformat 4 dict): the learner's code cells in their order, every check
    cell's released source at the learner's check cell with the same grade_id (or, if deleted, after the
    learner's exercise cell), and a note for every check cell that was edited, deleted, re-pointed or invented."""
    checks = {c.grade_id: c for c in released.checks}
    released_by_id = {c.get("id"): c for c in released.cells if c.get("id")}
    released_sources = {c["source"] for c in released.cells if c.get("cell_type") == "code"}
    cells: list[PlannedCell] = []
    exercise_ids: list[str | None] = []
    placed: set[str] = set()
    notes: list[str] = []

    def add_check(check: Check) -> None:
        cells.append(PlannedCell("check", check.source, check.grade_id, grade_id=check.grade_id, args=check.args))
        exercise_ids.append(None)
        placed.add(check.grade_id)

    learner_cells = [c for c in learner["cells"] if c.get("cell_type") == "code"]
    for cell in learner_cells:
        meta = _nbgrader(cell)
        twin = released_by_id.get(cell.get("id"))
        grade_id = str(meta.get("grade_id") or "") or None
        if twin is not None and _nbgrader(twin).get("grade"):  # the learner's copy of a released check cell
            grade_id, meta = _nbgrader(twin).get("grade_id"), dict(meta, grade=True)
        if meta.get("grade"):
            check = checks.get(grade_id)
            if check is None:
                notes.append(f"check cell {grade_id or '(without grade_id)'} is not in the released assignment: "
                             f"ignored (not run, not scored)")
            elif grade_id in placed:
                notes.append(f"check cell {grade_id} appears twice: the copy was ignored")
            else:
                if cell["source"] != check.source:
                    notes.append(f"check cell {grade_id} was edited: the released check ran instead")
                learner_points = meta.get("points")
                if learner_points is not None and _as_float(learner_points) != check.points:
                    notes.append(f"check cell {grade_id} claims {learner_points} points: it is worth "
                                 f"{check.points:g}, as released")
                add_check(check)
            continue
        # a cell without a released twin (nbformat < 4.5, or copied and pasted, which gives a new id) counts as
        # released when its source is one of the released cells'
        unchanged = cell["source"] == twin["source"] if twin is not None else cell["source"] in released_sources
        tags = _tags(cell) + (_tags(twin) if twin is not None else [])
        exercise = None
        if meta.get("solution") and grade_id:
            exercise = grade_id
        elif twin is not None and _nbgrader(twin).get("solution"):
            exercise = _nbgrader(twin).get("grade_id")
        cells.append(PlannedCell("released" if unchanged else "learner", cell["source"], "", skip=SKIP_TAG in tags))
        exercise_ids.append(exercise)
        # a deleted check cell goes back right after its exercise
        for check in released.checks:
            if check.grade_id not in placed and check.exercise and check.exercise == exercise and \
                    not _learner_has_check(learner_cells, check, released_by_id):
                notes.append(f"check cell {check.grade_id} was deleted: the released check ran after exercise "
                             f"{exercise}")
                add_check(check)
    for check in released.checks:  # deleted, and its exercise cell is gone too: run it at the end
        if check.grade_id not in placed:
            notes.append(f"check cell {check.grade_id} was deleted: the released check ran at the end")
            add_check(check)
    _label_cells(cells, exercise_ids)
    return Plan(cells, notes)


def _as_float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _learner_has_check(learner_cells, check: Check, released_by_id) -> bool:
    for cell in learner_cells:
        twin = released_by_id.get(cell.get("id"))
        grade_id = _nbgrader(twin).get("grade_id") if twin is not None and _nbgrader(twin).get("grade") else \
            _nbgrader(cell).get("grade_id") if _nbgrader(cell).get("grade") else None
        if grade_id == check.grade_id:
            return True
    return False
