"""A small helper for the notebook builders (tools/notebooks/build_NN.py): cells with the course's metadata.

Each builder describes one solution notebook cell by cell and writes ``solutions/NN_name.ipynb`` without
outputs; executing it (``jupyter nbconvert --execute --inplace``) stores them. Cell ids are derived from the
notebook name and the cell's position, so rebuilding an unchanged notebook gives an unchanged file.

    nb = Notebook("01_rope")
    nb.md("# Title")
    nb.code("print(1)", tags=["nbval-ignore-output"])
    nb.exercise("def f():\\n    ### BEGIN SOLUTION\\n    return 1\\n    ### END SOLUTION", grade_id="f")
    nb.check("check_f(f)", grade_id="check_f")
    nb.save()
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[2]

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}

VERSIONS_CELL = """\
import sys

import torch
import transformers

print("python      ", sys.version.split()[0])
print("torch       ", torch.__version__)
print("transformers", transformers.__version__)"""


def _clean(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


class Notebook:
    """Collects cells in order; ``save()`` writes solutions/<name>.ipynb."""

    def __init__(self, name: str):
        self.name = name
        self.cells: list = []

    def _add(self, cell) -> None:
        cell.id = f"{self.name.replace('_', '-')}-{len(self.cells):03d}"
        self.cells.append(cell)

    def md(self, text: str) -> None:
        self._add(nbformat.v4.new_markdown_cell(_clean(text)))

    def code(self, source: str, tags: list[str] | tuple[str, ...] = ()) -> None:
        cell = nbformat.v4.new_code_cell(_clean(source))
        if tags:
            cell.metadata["tags"] = list(tags)
        self._add(cell)

    def versions(self) -> None:
        """The second cell of every notebook: the versions in use (they vary, so their output is not compared)."""
        self.code(VERSIONS_CELL, tags=["nbval-ignore-output"])

    def exercise(self, source: str, grade_id: str) -> None:
        """A cell the learner completes: its ``### BEGIN SOLUTION`` blocks become NotImplementedError skeletons."""
        cell = nbformat.v4.new_code_cell(_clean(source))
        cell.metadata["nbgrader"] = {"grade": False, "solution": True, "locked": False, "grade_id": grade_id,
                                     "schema_version": 3}
        self._add(cell)

    def check(self, source: str, grade_id: str, points: int = 1) -> None:
        """A locked check cell: one call to a checker, worth ``points``."""
        cell = nbformat.v4.new_code_cell(_clean(source))
        cell.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "points": points,
                                     "grade_id": grade_id, "schema_version": 3}
        self._add(cell)

    def save(self) -> Path:
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = dict(KERNELSPEC)
        nb.metadata["language_info"] = {"name": "python"}
        nb.cells = self.cells
        nbformat.validate(nb)
        path = REPO / "solutions" / f"{self.name}.ipynb"
        path.parent.mkdir(exist_ok=True)
        nbformat.write(nb, path)
        print(f"wrote {path.relative_to(REPO)} ({len(self.cells)} cells)")
        return path
