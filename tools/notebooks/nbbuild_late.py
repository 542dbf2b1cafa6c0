"""Small helpers the builders of notebooks 05-08 share: cells with the course's metadata, and the writer.

A builder lists its cells (markdown, code, exercise, check) and calls ``write(name, cells)``; the notebook lands in
solutions/ with stable cell ids (``<name>-NN``), so rebuilding gives a clean diff. Execute it afterwards with
``jupyter nbconvert --to notebook --execute --inplace`` (see docs/notebook_conventions.md).
"""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

REPO = Path(__file__).resolve().parents[2]
SOLUTIONS = REPO / "solutions"

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LANGUAGE_INFO = {"codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
                 "mimetype": "text/x-python", "name": "python", "nbconvert_exporter": "python",
                 "pygments_lexer": "ipython3"}

VERSIONS = """\
import sys

import torch
import transformers

print("python      ", sys.version.split()[0])
print("torch       ", torch.__version__)
print("transformers", transformers.__version__)"""


def _text(source: str) -> str:
    return dedent(source).strip("\n")


def md(source: str):
    return new_markdown_cell(_text(source))


def code(source: str, *tags: str):
    cell = new_code_cell(_text(source))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def versions():
    return code(VERSIONS, "nbval-ignore-output")


def exercise(grade_id: str, source: str, *tags: str):
    """A cell the learner completes: the solution sits between ### BEGIN SOLUTION and ### END SOLUTION."""
    cell = code(source, *tags)
    cell.metadata["nbgrader"] = {"grade": False, "solution": True, "locked": False, "grade_id": grade_id,
                                 "schema_version": 3}
    return cell


def check(grade_id: str, source: str, points: int = 1):
    """A locked, graded cell: one call to a checker from llama3.checks."""
    cell = code(source)
    cell.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "points": points,
                                 "grade_id": f"check_{grade_id}", "schema_version": 3}
    return cell


def write(name: str, cells: list) -> Path:
    """Write solutions/<name>.ipynb with deterministic cell ids."""
    prefix = name.split("_")[0]
    for index, cell in enumerate(cells):
        cell["id"] = f"nb{prefix}-{index:02d}"
    nb = new_notebook(cells=cells, metadata={"kernelspec": KERNELSPEC, "language_info": LANGUAGE_INFO})
    nbformat.validate(nb)
    path = SOLUTIONS / f"{name}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    print(f"wrote {path.relative_to(REPO)} ({len(cells)} cells)")
    return path
