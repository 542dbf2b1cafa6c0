"""Write the student notebooks (notebooks/) from the solution notebooks (solutions/).

solutions/NN_name.ipynb is the source of truth; notebooks/NN_name.ipynb is generated from it and never edited by
hand (docs/notebook_conventions.md is the contract). For each notebook:

- every block from a line ``### BEGIN SOLUTION`` to a line ``### END SOLUTION`` in an exercise cell (nbgrader
  metadata ``solution: true``) becomes ``raise NotImplementedError("<grade_id>: <hint>")`` at the indentation of the
  BEGIN line; the hint is the block's first line when it reads ``### HINT: <text>``, a default otherwise. In a
  markdown exercise cell the block becomes ``YOUR ANSWER HERE``;
- the outputs and execution counts of all cells are cleared (learners run the notebook themselves);
- check cells (nbgrader ``grade: true``), cells tagged ``uses-exercise``, and exercise cells whose skeleton raises
  when run (a block outside any function) get the tag ``raises-exception``, so ``pytest --nbval-lax notebooks/``
  passes on an unsolved notebook;
- the saved widget state (notebook metadata ``widgets``) is dropped with the outputs;
- everything else (markdown, nbgrader metadata, cell ids, other notebook metadata) is kept.

The output is deterministic (nbformat's sorted, indented JSON), so ``--check`` can compare bytes:

    python tools/make_exercises.py            # write notebooks/
    python tools/make_exercises.py --check    # exit 1 and name the stale files if notebooks/ is out of date

Malformed markers (BEGIN without END, END without BEGIN, nested blocks, markers in a cell without nbgrader
``solution: true`` metadata, an exercise cell without a block) are refused with an error naming notebook and cell,
and so is any line that looks like a marker but is not spelled exactly as one (``#### BEGIN SOLUTION``,
``### begin solution``, ``### BEGIN SOLUTON``, ``# HINT: ...``), in any cell: a typo can never ship a solution.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import re
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
HINT = "### HINT:"
DEFAULT_HINT = "replace this line with your implementation"
MARKDOWN_PLACEHOLDER = "YOUR ANSWER HERE"
RAISES_TAG = "raises-exception"
USES_TAG = "uses-exercise"
# cell metadata that only records how the solution run went (nbclient/JupyterLab timings); noise in the twin
TRANSIENT_CELL_METADATA = ("execution", "ExecuteTime")

_MARKER = re.compile(r"^(?P<indent>[ \t]*)(?P<marker>### (?:BEGIN|END) SOLUTION)[ \t]*$")
# a comment line that looks like a marker (any number of #, any case, typos in SOLUTION, nbgrader's hidden tests) but
# is not spelled as one: refused everywhere, so that a typo can never ship a solution to learners
_MARKER_LIKE = re.compile(r"^[ \t]*#+[ \t]*(?:begin|end)[ \t_-]*(?:sol\w*|hidden[ \t_-]*tests?)\b", re.IGNORECASE)
_HINT_LIKE = re.compile(r"^[ \t]*#+[ \t]*hint\b", re.IGNORECASE)
_HINT_LINE = re.compile(r"^[ \t]*### HINT:")
SPELLING = (f"the markers are exactly '{BEGIN}', '{END}' and '{HINT} <text>' (three #, capitals, one space), "
            f"each alone on its line")


class MarkerError(ValueError):
    """A solution notebook whose markers or nbgrader metadata cannot be turned into an exercise."""


def _where(nb_name: str, index: int, cell) -> str:
    grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
    label = f"cell {index}" + (f" (grade_id {grade_id!r})" if grade_id else "")
    first = next((line.strip() for line in cell.source.splitlines() if line.strip()), "")
    return f"{nb_name}, {label}, starting {first[:60]!r}"


def _refuse_marker_typos(nb_name: str, index: int, cell) -> None:
    """Raise MarkerError for a line that looks like a marker but is not one the tool reads (any cell)."""
    for lineno, line in enumerate(cell.source.splitlines(), start=1):
        if _MARKER.match(line):
            continue
        typo = _MARKER_LIKE.match(line) or (
            cell.cell_type == "code" and _HINT_LIKE.match(line) and not _HINT_LINE.match(line))
        if typo:
            raise MarkerError(f"{_where(nb_name, index, cell)}, line {lineno}: {line.strip()!r} looks like a solution "
                              f"marker but is not spelled as one, so it would not hide anything; {SPELLING}")


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def replace_blocks(source: str, grade_id: str, *, markdown: bool, where: str) -> tuple[str, list[int]]:
    """Replace each BEGIN/END SOLUTION block of ``source``; return the new source and the indents of the blocks.

    Raises MarkerError for a BEGIN without END, an END without BEGIN, or a BEGIN inside an open block.
    """
    out: list[str] = []
    indents: list[int] = []
    block: list[str] | None = None  # lines inside the open block
    indent = ""
    for lineno, line in enumerate(source.splitlines(), start=1):
        match = _MARKER.match(line)
        marker = match["marker"] if match else None
        if marker == BEGIN:
            if block is not None:
                raise MarkerError(f"{where}: nested '{BEGIN}' at line {lineno}; close the open block first")
            block, indent = [], match["indent"]
        elif marker == END:
            if block is None:
                raise MarkerError(f"{where}: '{END}' at line {lineno} without a '{BEGIN}' before it")
            if markdown:
                out.append(indent + MARKDOWN_PLACEHOLDER)
            else:
                first = next((b.strip() for b in block if b.strip()), "")
                hint = first[len(HINT):].strip() if first.startswith(HINT) else ""
                message = f"{grade_id}: {hint or DEFAULT_HINT}"
                # json.dumps yields a valid Python string literal with double quotes
                out.append(f"{indent}raise NotImplementedError({json.dumps(message, ensure_ascii=False)})")
            indents.append(len(indent.expandtabs(4)))
            block = None
        elif block is not None:
            block.append(line)
        else:
            out.append(line)
    if block is not None:
        raise MarkerError(f"{where}: '{BEGIN}' without a matching '{END}'")
    text = "\n".join(out)
    return (text + "\n" if source.endswith("\n") else text), indents


def _raises_at_run(student_source: str, indents: list[int]) -> bool:
    """True when running the skeleton cell raises, i.e. some NotImplementedError sits outside every function."""
    try:
        tree = ast.parse(student_source)
    except SyntaxError:  # IPython syntax in the cell: fall back to the indentation of the blocks
        return any(i == 0 for i in indents)

    def outside_functions(node, inside=False) -> bool:
        if isinstance(node, ast.Raise) and not inside:
            return True
        inside = inside or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        return any(outside_functions(child, inside) for child in ast.iter_child_nodes(node))

    return outside_functions(tree)


def _check_syntax(student_source: str, where: str) -> None:
    """Refuse a skeleton that is not valid Python (e.g. a block that was the only statement of a body whose
    indentation the replacement cannot keep); IPython syntax is translated first when IPython is installed."""
    source = student_source
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        source = TransformerManager().transform_cell(student_source)
    except ImportError:
        pass
    try:
        compile(source, "<student cell>", "exec")
    except SyntaxError as err:
        raise MarkerError(
            f"{where}: the student version is not valid Python ({err.msg}, line {err.lineno}); check the "
            "indentation of the markers"
        ) from None


def _add_tag(cell, tag: str) -> None:
    tags = cell.metadata.setdefault("tags", [])
    if tag not in tags:
        tags.append(tag)


def make_student_notebook(nb, nb_name: str):
    """Return the student twin of the solution notebook ``nb`` (a new NotebookNode; ``nb`` is not modified)."""
    nb = copy.deepcopy(nb)
    for index, cell in enumerate(nb.cells):
        _refuse_marker_typos(nb_name, index, cell)
        meta = _nbgrader(cell)
        has_markers = any(_MARKER.match(line) for line in cell.source.splitlines())
        where = _where(nb_name, index, cell)
        is_solution = bool(meta.get("solution"))
        if has_markers and not is_solution:
            raise MarkerError(
                f"{where}: has '{BEGIN}' markers but no nbgrader metadata with \"solution\": true; add "
                '{"nbgrader": {"grade": false, "solution": true, "locked": false, "grade_id": "<exercise_id>", '
                '"schema_version": 3}} to the cell metadata'
            )
        if is_solution:
            if not meta.get("grade_id"):
                raise MarkerError(f"{where}: nbgrader metadata has no \"grade_id\"; name the exercise")
            if not has_markers:
                raise MarkerError(
                    f"{where}: an exercise cell (nbgrader solution: true) without a '{BEGIN}' ... '{END}' block "
                    "would hand out the solution; mark the part the learner writes"
                )
            if cell.cell_type not in ("code", "markdown"):
                raise MarkerError(f"{where}: solution markers only work in code and markdown cells")
            cell.source, indents = replace_blocks(
                cell.source, meta["grade_id"], markdown=cell.cell_type == "markdown", where=where
            )
            if cell.cell_type == "code":
                _check_syntax(cell.source, where)
                if _raises_at_run(cell.source, indents):
                    _add_tag(cell, RAISES_TAG)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            if meta.get("grade") or USES_TAG in cell.metadata.get("tags", []):
                _add_tag(cell, RAISES_TAG)
        for key in TRANSIENT_CELL_METADATA:
            cell.metadata.pop(key, None)
    nb.metadata.pop("widgets", None)  # saved widget state of the solution run: random ids, no outputs to serve
    return nb


def render(path: Path) -> str:
    """The exact text make_exercises writes for the solution notebook at ``path``."""
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    if nb.nbformat != 4:
        raise MarkerError(f"{path.name}: nbformat {nb.nbformat}; save it as nbformat 4")
    student = make_student_notebook(nb, path.name)
    nbformat.validate(student)
    text = nbformat.writes(student)
    return text if text.endswith("\n") else text + "\n"


def plan(solutions: Path, notebooks: Path) -> tuple[dict[Path, str], list[Path]]:
    """What to write (target path -> text) and which notebooks/ files have no solution twin."""
    if not solutions.is_dir():
        raise FileNotFoundError(f"solutions folder {solutions} not found; pass --solutions DIR")
    sources = sorted(solutions.glob("*.ipynb"))
    targets = {notebooks / src.name: render(src) for src in sources}
    extra = sorted(p for p in notebooks.glob("*.ipynb") if p not in targets) if notebooks.is_dir() else []
    return targets, extra


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--solutions", type=Path, default=REPO / "solutions", help="source folder (solutions/)")
    parser.add_argument("--notebooks", type=Path, default=REPO / "notebooks", help="target folder (notebooks/)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the target is out of date")
    args = parser.parse_args(argv)

    try:
        targets, extra = plan(args.solutions, args.notebooks)
    except (MarkerError, FileNotFoundError) as err:
        print(f"make_exercises: error: {err}", file=sys.stderr)
        return 2

    if args.check:
        problems = []
        for path, text in targets.items():
            if not path.exists():
                problems.append(f"missing: {_rel(path)}")
            elif path.read_text(encoding="utf-8") != text:
                problems.append(f"stale:   {_rel(path)}")
        problems += [f"extra:   {_rel(p)} (no {args.solutions.name}/{p.name})" for p in extra]
        if problems:
            print("make_exercises --check: notebooks/ is out of date:", *problems, sep="\n  ", file=sys.stderr)
            print("run `python tools/make_exercises.py` to regenerate it", file=sys.stderr)
            return 1
        print(f"make_exercises --check: {len(targets)} notebook(s) up to date")
        return 0

    args.notebooks.mkdir(parents=True, exist_ok=True)
    for path, text in targets.items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {_rel(path)}")
    for path in extra:  # notebooks/ mirrors solutions/: a notebook without a source is stale
        path.unlink()
        print(f"removed {_rel(path)} (no {args.solutions.name}/{path.name})")
    print(f"make_exercises: {len(targets)} notebook(s) up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
