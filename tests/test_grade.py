"""llama3.grade: runs notebooks without a Jupyter server and scores their check cells."""

import csv
import json
import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from llama3 import grade

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def check_cell(source, grade_id, points=1):
    return new_code_cell(source, metadata={"nbgrader": {"grade": True, "solution": False, "locked": True,
                                                        "points": points, "grade_id": grade_id,
                                                        "schema_version": 3}})


def write_notebook(path: Path, cells) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(new_notebook(cells=cells), path)
    return path


def by_id(result):
    return {e.exercise: e for e in result.exercises}


def test_solution_fixture_gets_full_marks():
    result = grade.grade_notebook(FIXTURES / "solutions" / "01_demo.ipynb", "teacher", timeout=120)
    assert result.finished and result.errors == []
    assert [(e.exercise, e.points, e.max_points) for e in result.exercises] == [
        ("check_square", 1, 1), ("check_counter", 2, 2), ("check_squares", 1, 1)]
    assert result.all_passed


def test_student_fixture_gets_zero_with_the_hints():
    result = grade.grade_notebook(FIXTURES / "notebooks" / "01_demo.ipynb", "learner", timeout=120)
    assert result.finished
    assert result.points == 0 and result.max_points == 4
    hints = {e.exercise: e.hint for e in result.exercises}
    assert hints["check_square"] == "not implemented yet (square: multiply x by itself)"
    assert "counter:" in hints["check_counter"]
    # cells that use the learner's unfinished code are reported, and do not stop the next cells
    assert "cell 9 (in cell 7, line 8): not implemented yet (counter: replace this line with your implementation)" \
        in result.errors
    assert any(err.startswith("cell 12") and "square: multiply x by itself" in err for err in result.errors)


def test_magics_skip_grade_crashes_widgets_and_agg(tmp_path):
    path = write_notebook(tmp_path / "student" / "nb.ipynb", [
        new_markdown_cell("# behaviours"),
        new_code_cell("%matplotlib inline\n!touch shell_ran.txt\nfiles = !ls\nx = 2"),     # 1
        new_code_cell("%%time\ny = x + 1"),                                              # 2: body runs once
        new_code_cell("%%bash\ntouch bash_ran.txt"),                                     # 3: skipped
        new_code_cell("while True:\n    pass", metadata={"tags": ["skip-grade"]}),      # 4: skipped
        new_code_cell("raise RuntimeError('learner crash')"),                            # 5: reported, goes on
        new_code_cell("import sys\nsys.exit(3)"),                                        # 6: reported, goes on
        new_code_cell(
            "import matplotlib, matplotlib.pyplot as plt\n"
            "backend = matplotlib.get_backend()\n"
            "plt.plot([1, 2]); plt.show()\n"
            "from ipywidgets import interact\n"
            "calls = []\n"
            "interact(lambda k=1: calls.append(k), k=(0, 3))\n"
            "display('shown')"),                                                          # 7
        check_cell("assert y == 3, 'y should be 3'", "check_magics"),                    # 8
        check_cell("assert backend.lower() == 'agg' and calls == [1]", "check_env", 2),  # 9
        check_cell("assert y == 4, 'y should be 4: add two'", "check_fails"),            # 10
        check_cell("z = undefined_name", "check_nameerror"),                             # 11
        new_code_cell("after = True"),                                                   # 12
        check_cell("assert after", "check_after"),                                       # 13
    ])
    result = grade.grade_notebook(path, "student", timeout=120)
    assert result.finished
    ex = by_id(result)
    assert ex["check_magics"].passed and ex["check_env"].passed and ex["check_after"].passed
    assert ex["check_env"].points == 2
    assert not ex["check_fails"].passed and ex["check_fails"].hint == "y should be 4: add two"
    assert ex["check_nameerror"].hint == "NameError: name 'undefined_name' is not defined"
    assert result.points == 4 and result.max_points == 6
    assert result.errors == ["cell 5 (line 1): RuntimeError: learner crash", "cell 6 (line 2): SystemExit: 3"]
    assert not (path.parent / "shell_ran.txt").exists() and not (path.parent / "bash_ran.txt").exists()


def test_timeout_and_dead_process_score_the_rest_zero(tmp_path):
    loop = write_notebook(tmp_path / "loop.ipynb", [
        new_code_cell("a = 1"),
        check_cell("assert a == 1", "check_before"),
        new_code_cell("while True:\n    pass"),
        check_cell("assert True", "check_after"),
    ])
    result = grade.grade_notebook(loop, "s", timeout=8)
    assert not result.finished
    ex = by_id(result)
    assert ex["check_before"].passed
    assert not ex["check_after"].passed and "timed out after 8 s in cell 2" in ex["check_after"].hint

    dead = write_notebook(tmp_path / "dead.ipynb", [
        new_code_cell("import os\nos._exit(7)"),
        check_cell("assert True", "check_never"),
    ])
    result = grade.grade_notebook(dead, "s", timeout=120)
    assert not result.finished
    assert "died in cell 0 (exit code 7)" in by_id(result)["check_never"].hint


def test_cli_folder_of_students_csv_json_and_exit_codes(tmp_path, capsys):
    subs = tmp_path / "submissions"
    shutil.copy(FIXTURES / "solutions" / "01_demo.ipynb", (subs / "alice").mkdir(parents=True) or subs / "alice")
    shutil.copy(FIXTURES / "notebooks" / "01_demo.ipynb", (subs / "bob").mkdir() or subs / "bob")
    checkpoints = subs / "bob" / ".ipynb_checkpoints"
    checkpoints.mkdir()
    shutil.copy(FIXTURES / "notebooks" / "01_demo.ipynb", checkpoints / "01_demo-checkpoint.ipynb")
    (subs / "carol").mkdir()
    (subs / "carol" / "01_demo.ipynb").write_text("{ not json")

    assert grade.find_notebooks(subs) == [("alice", subs / "alice" / "01_demo.ipynb"),
                                          ("bob", subs / "bob" / "01_demo.ipynb"),
                                          ("carol", subs / "carol" / "01_demo.ipynb")]
    code = grade.main([str(subs), "--jobs", "2", "--csv", str(tmp_path / "s.csv"), "--json", str(tmp_path / "s.json")])
    assert code == 1
    out = capsys.readouterr().out
    assert "alice: 4/4" in out and "bob: 0/4" in out and "carol: 0/0" in out
    assert "cannot read the notebook" in out

    rows = list(csv.DictReader(open(tmp_path / "s.csv", encoding="utf-8")))
    assert {(r["student"], r["exercise"], r["passed"]) for r in rows} == {
        (s, e, str(s == "alice")) for s in ("alice", "bob") for e in ("check_square", "check_counter", "check_squares")}
    report = json.loads((tmp_path / "s.json").read_text())
    assert [(r["student"], r["points"], r["max_points"], r["finished"]) for r in report] == [
        ("alice", 4, 4, True), ("bob", 0, 4, True), ("carol", 0, 0, False)]

    # full marks exit 0; a single notebook path names its folder as the student
    assert grade.main([str(subs / "alice" / "01_demo.ipynb"), "-q"]) == 0
    assert re.search(r"^alice +01_demo.ipynb +TOTAL +4/4 ", capsys.readouterr().out, re.MULTILINE)


def test_bad_paths_are_refused(tmp_path, capsys):
    assert grade.main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert grade.main([str(tmp_path / "empty")]) == 2
    assert "no notebook" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("x")
    assert grade.main([str(tmp_path / "notes.txt")]) == 2
    assert "not a notebook" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        grade.main([str(tmp_path), "--timeout", "0"])
    shutil.copy(FIXTURES / "solutions" / "01_demo.ipynb", tmp_path / "empty")
    assert grade.main([str(tmp_path / "empty"), "--jobs", "0"]) == 2
    assert "--jobs must be 1 or more" in capsys.readouterr().err


# The real course: solutions/ scores full marks and the untouched notebooks/ zero. An unsolved twin grades in a few
# seconds (its exercises fail at once), so every twin is graded. A solution runs top to bottom (up to a minute or
# two on a busy 2-core machine; all of them take about 3 minutes), so CI grades the quick ones in SOLUTIONS_IN_CI;
# the others run in full under `pytest --nbval solutions/`. LLAMA3_GRADE_ALL=1 grades every solution here too.
COURSE = sorted(p.name for p in (REPO / "solutions").glob("*.ipynb"))
SOLUTIONS_IN_CI = COURSE if os.environ.get("LLAMA3_GRADE_ALL") else [n for n in COURSE if n[:2] in {"01", "02", "03"}]


def _ids(names):
    return [n.removesuffix(".ipynb") for n in names]


@pytest.mark.skipif(not SOLUTIONS_IN_CI, reason="solutions/ holds no notebook yet")
@pytest.mark.parametrize("name", SOLUTIONS_IN_CI, ids=_ids(SOLUTIONS_IN_CI))
def test_real_solution_gets_full_marks(name):
    solved = grade.grade_notebook(REPO / "solutions" / name, "solutions", timeout=300)
    assert solved.finished and solved.exercises, solved.errors
    assert solved.all_passed, [(e.exercise, e.hint) for e in solved.exercises if not e.passed]
    assert solved.errors == [], solved.errors


@pytest.mark.skipif(not COURSE, reason="solutions/ holds no notebook yet")
@pytest.mark.parametrize("name", COURSE, ids=_ids(COURSE))
def test_real_student_notebook_gets_zero(name):
    twin = REPO / "notebooks" / name
    if not twin.exists():
        pytest.fail(f"notebooks/{name} is missing; run `python tools/make_exercises.py`")
    unsolved = grade.grade_notebook(twin, "notebooks", timeout=300)
    assert unsolved.finished, unsolved.errors
    expected = [c[1] for c in grade._check_cells(REPO / "solutions" / name)]
    assert expected, f"solutions/{name} has no check cell"
    assert [e.exercise for e in unsolved.exercises] == expected
    assert unsolved.points == 0, [(e.exercise, e.hint) for e in unsolved.exercises if e.passed]
    # the learner is told what to do, not shown a crash: every exercise fails with its not-yet-solved hint
    assert all(e.hint for e in unsolved.exercises)
