"""tools/make_exercises.py: solutions/ -> notebooks/ (docs/notebook_conventions.md is the contract)."""

import ast
import importlib.util
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

_spec = importlib.util.spec_from_file_location("make_exercises", REPO / "tools" / "make_exercises.py")
make_exercises = importlib.util.module_from_spec(_spec)
sys.modules["make_exercises"] = make_exercises
_spec.loader.exec_module(make_exercises)


def exercise_meta(grade_id):
    return {"nbgrader": {"grade": False, "solution": True, "locked": False, "grade_id": grade_id,
                         "schema_version": 3}}


def check_meta(grade_id, points=1):
    return {"nbgrader": {"grade": True, "solution": False, "locked": True, "points": points,
                         "grade_id": f"check_{grade_id}", "schema_version": 3}}


def write_solution(folder: Path, name: str, cells) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}})
    for i, cell in enumerate(nb.cells):
        cell.id = f"c{i}"
    path = folder / name
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def demo():
    """(solution, student) notebooks of the committed demo fixture."""
    solution = nbformat.read(FIXTURES / "solutions" / "01_demo.ipynb", as_version=4)
    return solution, make_exercises.make_student_notebook(solution, "01_demo.ipynb")


def test_blocks_become_not_implemented_with_hint_at_marker_indent(demo):
    _, student = demo
    square = next(c for c in student.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "square")
    assert square.source == (
        'def square(x):\n    """Return x squared."""\n    raise NotImplementedError("square: multiply x by itself")'
    )
    counter = next(c for c in student.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "counter")
    lines = counter.source.splitlines()
    # two blocks in one cell, one without a hint (default) and one whose hint holds double quotes
    assert f'        raise NotImplementedError("counter: {make_exercises.DEFAULT_HINT}")' in lines
    assert '        raise NotImplementedError("counter: return \\"twice\\" the value, do not change it")' in lines
    assert "self.value = start" in counter.source  # the skeleton outside the blocks stays


def test_no_solution_code_or_markers_reach_the_student(demo):
    _, student = demo
    text = "\n".join(c.source for c in student.cells)
    for leaked in ("### BEGIN SOLUTION", "### END SOLUTION", "### HINT", "return x * x", "self.value += 1",
                   "[square(i) for i in range(5)]\n"):
        assert leaked not in text


def test_student_code_cells_are_valid_python_and_raise_the_hint(demo):
    _, student = demo
    counter = next(c for c in student.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "counter")
    namespace = {}
    exec(counter.source, namespace)  # defining the class works; calling the method raises the hint
    with pytest.raises(NotImplementedError, match=r'^counter: return "twice" the value, do not change it$'):
        namespace["Counter"](1).double()
    for cell in student.cells:
        if cell.cell_type == "code" and not cell.source.lstrip().startswith("%"):
            ast.parse(cell.source)


def test_outputs_and_counts_cleared_metadata_kept(demo):
    solution, student = demo
    assert any(c.get("outputs") for c in solution.cells), "the fixture solution should be executed"
    assert len(student.cells) == len(solution.cells)
    for sol, stu in zip(solution.cells, student.cells, strict=True):
        assert stu.id == sol.id
        assert stu.cell_type == sol.cell_type
        assert stu.metadata.get("nbgrader") == sol.metadata.get("nbgrader")
        assert "execution" not in stu.metadata
        if stu.cell_type == "code":
            assert stu.outputs == [] and stu.execution_count is None
        else:
            assert stu.source == sol.source
    assert "widgets" in solution.metadata and "widgets" not in student.metadata  # widget state goes with outputs
    assert student.metadata == {k: v for k, v in solution.metadata.items() if k != "widgets"}


def test_raises_exception_tags(demo):
    _, student = demo
    for cell in student.cells:
        if cell.cell_type != "code":
            continue
        tags = cell.metadata.get("tags", [])
        meta = cell.metadata.get("nbgrader", {})
        top_level_block = meta.get("grade_id") == "squares"  # its skeleton raises when the cell runs
        expected = bool(meta.get("grade")) or "uses-exercise" in tags or top_level_block
        assert ("raises-exception" in tags) == expected, cell.source
        assert tags.count("raises-exception") <= 1


def test_committed_fixture_twin_is_up_to_date():
    args = ["--check", "--solutions", str(FIXTURES / "solutions"), "--notebooks", str(FIXTURES / "notebooks")]
    assert make_exercises.main(args) == 0


def test_check_names_stale_missing_and_extra_files(tmp_path, capsys):
    sols, nbs = tmp_path / "solutions", tmp_path / "notebooks"
    shutil.copytree(FIXTURES / "solutions", sols)
    shutil.copy(FIXTURES / "solutions" / "01_demo.ipynb", sols / "02_other.ipynb")
    args = ["--solutions", str(sols), "--notebooks", str(nbs)]
    assert make_exercises.main(args) == 0
    first = (nbs / "01_demo.ipynb").read_bytes()
    assert make_exercises.main(args + ["--check"]) == 0

    # a hand edit in notebooks/, a missing twin and a notebook without a source are all reported, by name
    (nbs / "01_demo.ipynb").write_text((nbs / "01_demo.ipynb").read_text().replace("multiply", "MULTIPLY"))
    (nbs / "02_other.ipynb").unlink()
    shutil.copy(FIXTURES / "notebooks" / "01_demo.ipynb", nbs / "99_orphan.ipynb")
    capsys.readouterr()
    assert make_exercises.main(args + ["--check"]) == 1
    err = capsys.readouterr().err
    assert "stale:" in err and "01_demo.ipynb" in err
    assert "missing:" in err and "02_other.ipynb" in err
    assert "extra:" in err and "99_orphan.ipynb" in err

    # a changed solution makes its twin stale too
    assert make_exercises.main(args) == 0
    assert (nbs / "01_demo.ipynb").read_bytes() == first  # deterministic: same input, same bytes
    assert not (nbs / "99_orphan.ipynb").exists()
    nb = nbformat.read(sols / "02_other.ipynb", as_version=4)
    nb.cells[0].source += "\nedited"
    nbformat.write(nb, sols / "02_other.ipynb")
    capsys.readouterr()
    assert make_exercises.main(args + ["--check"]) == 1
    assert "02_other.ipynb" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        ([new_code_cell("def f():\n    ### BEGIN SOLUTION\n    return 1\n", metadata=exercise_meta("f"))],
         "without a matching"),
        ([new_code_cell("def f():\n    return 1\n    ### END SOLUTION\n", metadata=exercise_meta("f"))],
         "without a '### BEGIN SOLUTION' before it"),
        ([new_code_cell("### BEGIN SOLUTION\n### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n### END SOLUTION",
                        metadata=exercise_meta("f"))], "nested"),
        ([new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")], "no nbgrader metadata"),
        ([new_code_cell("x = 1", metadata=exercise_meta("f"))], "would hand out the solution"),
        ([new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION",
                        metadata={"nbgrader": {"solution": True, "grade": False}})], "no \"grade_id\""),
        ([new_code_cell("def f():\n### BEGIN SOLUTION\n    return 1\n### END SOLUTION", metadata=exercise_meta("f"))],
         "not valid Python"),
    ],
    ids=["begin-without-end", "end-without-begin", "nested", "no-metadata", "no-block", "no-grade-id", "syntax"],
)
def test_malformed_markers_are_refused_naming_notebook_and_cell(tmp_path, capsys, cells, message):
    sols = tmp_path / "solutions"
    write_solution(sols, "05_bad.ipynb", [new_markdown_cell("# title"), *cells])
    with pytest.raises(make_exercises.MarkerError, match=message) as err:
        make_exercises.render(sols / "05_bad.ipynb")
    assert "05_bad.ipynb" in str(err.value) and "cell 1" in str(err.value)
    # the command line says the same and writes nothing
    assert make_exercises.main(["--solutions", str(sols), "--notebooks", str(tmp_path / "notebooks")]) == 2
    assert "05_bad.ipynb, cell 1" in capsys.readouterr().err
    assert not (tmp_path / "notebooks").exists()


@pytest.mark.parametrize("line", [
    "#### BEGIN SOLUTION", "### BEGIN SOLUTON", "### begin solution", "###BEGIN SOLUTION", "# END SOLUTION",
    "### END  SOLUTION", "### BEGIN SOLUTION here", "    ## END SOLUTION", "### BEGIN HIDDEN TESTS", "# HINT: a hint",
    "### hint: a hint", "### HINT a hint",
])
@pytest.mark.parametrize("metadata", [{}, "exercise"], ids=["plain-cell", "exercise-cell"])
def test_marker_typos_are_refused_anywhere_naming_file_cell_and_line(tmp_path, capsys, line, metadata):
    """A mis-spelt marker would ship the solution (`return 42` reached a student notebook): refuse it, in a cell with
    or without nbgrader metadata, naming notebook, cell and line."""
    meta = exercise_meta("f") if metadata == "exercise" else {}
    source = f"def f():\n    ### BEGIN SOLUTION\n    x = 1\n{line}\n    return 42\n    ### END SOLUTION\n"
    if metadata != "exercise":
        source = f"def f():\n{line}\n    return 42\n"
    sols = tmp_path / "solutions"
    write_solution(sols, "07_typo.ipynb", [new_markdown_cell("# title"), new_code_cell(source, metadata=meta)])
    with pytest.raises(make_exercises.MarkerError) as err:
        make_exercises.render(sols / "07_typo.ipynb")
    message = str(err.value)
    lineno = source.splitlines().index(line) + 1
    assert "07_typo.ipynb, cell 1" in message and f"line {lineno}" in message and line.strip() in message
    assert "### BEGIN SOLUTION" in message  # says how the markers are spelled
    assert make_exercises.main(["--solutions", str(sols), "--notebooks", str(tmp_path / "notebooks")]) == 2
    assert not (tmp_path / "notebooks").exists()


def test_marker_typos_in_markdown_are_refused_but_hint_headings_are_not(tmp_path):
    bad = write_solution(tmp_path / "a", "01_md.ipynb", [new_markdown_cell("#### BEGIN SOLUTION\nthe answer")])
    with pytest.raises(make_exercises.MarkerError, match="line 1"):
        make_exercises.render(bad)
    fine = write_solution(tmp_path / "b", "01_md.ipynb", [new_markdown_cell("## Hint\n\n# The end\n\n## Beginning"),
                                                          new_code_cell("# the end of the loop\nx = 1")])
    assert "## Hint" in make_exercises.render(fine)


def test_markdown_answer_and_tabs(tmp_path):
    md = new_markdown_cell("Why?\n\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION", metadata=exercise_meta("why"))
    code = new_code_cell("if True:\n\t### BEGIN SOLUTION\n\tx = 1\n\t### END SOLUTION\n", metadata=exercise_meta("x"))
    path = write_solution(tmp_path, "01_x.ipynb", [md, code])
    student = nbformat.reads(make_exercises.render(path), as_version=4)
    assert student.cells[0].source == "Why?\n\n" + make_exercises.MARKDOWN_PLACEHOLDER
    assert student.cells[1].source == f'if True:\n\traise NotImplementedError("x: {make_exercises.DEFAULT_HINT}")\n'
    assert "raises-exception" in student.cells[1].metadata["tags"]  # the block runs when the cell runs


def test_real_notebooks_are_up_to_date():
    if not any((REPO / "solutions").glob("*.ipynb")):
        pytest.skip("solutions/ holds no notebook yet")
    assert make_exercises.main(["--check"]) == 0, "run `python tools/make_exercises.py` and commit notebooks/"
