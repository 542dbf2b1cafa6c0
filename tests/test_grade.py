"""llama3.grading on small synthetic notebooks (no torch in the kernels): the plan against the release, the
kernel's behaviour, limits, the channel and the command line. The class of real notebooks is in
test_grade_class.py."""

import csv
import json
import os
import re
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from llama3 import grade
from llama3.grading import release as rel
from llama3.grading import sandbox
from llama3.grading.grader import first_layer
from llama3.grading.static import cell_flags

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def exercise_cell(source, grade_id):
    return new_code_cell(source, metadata={"nbgrader": {"grade": False, "solution": True, "locked": False,
                                                        "grade_id": grade_id, "schema_version": 3}})


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


def graded(path, release=None, timeout=120, **limits):
    """Grade ``path`` against ``release`` (default: itself, as if the instructor had handed it out)."""
    return grade.grade_notebook(path, "learner", release or path, grade.Limits(timeout=timeout, **limits))


# ---------------------------------------------------------------------------------------------------------- pure


def test_first_layer_keeps_what_is_wrong_and_drops_the_fix():
    message = ("kv_cache: output differs from the reference (max abs error 0.31). Write k into self.k_cache[:, :, "
               "start_pos:start_pos + T] and v into self.v_cache.\nsecond line")
    assert first_layer(message) == "kv_cache: output differs from the reference (max abs error 0.31)."
    assert first_layer("x" * 500).endswith("…") and len(first_layer("x" * 500)) == 200
    assert first_layer("") == ""


def test_plan_restores_edited_deleted_and_ignores_invented_check_cells():
    released = [
        new_code_cell("def check_a(x):\n    assert x == 1, 'a should be 1'"),
        exercise_cell("a = 0", "a"), check_cell("check_a(a)", "check_a"),
        exercise_cell("b = 0", "b"), check_cell("check_a(b)", "check_b", points=2),
    ]
    nb = new_notebook(cells=released)
    rel_nb = rel.load_released_notebook(_save(nb))
    learner = json.loads(json.dumps(nb))
    learner["cells"][2]["source"] = "print('PASSED')"  # edited check
    learner["cells"][2]["metadata"]["nbgrader"]["points"] = 100
    del learner["cells"][4]  # deleted check
    learner["cells"].append(dict(check_cell("pass", "check_bonus", 50), id="bonus"))  # invented check
    plan = rel.build_plan(learner, rel_nb)
    checks = [(c.grade_id, c.source) for c in plan.cells if c.kind == "check"]
    assert checks == [("check_a", "check_a(a)"), ("check_b", "check_a(b)")]
    assert [c.kind for c in plan.cells] == ["released", "released", "check", "released", "check"]
    assert plan.notes == [
        "check cell check_a was edited: the released check ran instead",
        "check cell check_a claims 100 points: it is worth 1, as released",
        "check cell check_b was deleted: the released check ran after exercise b",
        "check cell check_bonus is not in the released assignment: ignored (not run, not scored)"]
    # labels name exercises, never raw indices; each cell knows the check that grades it
    assert [c.label for c in plan.cells][:3] == [
        "code cell 1 before the first exercise ('def check_a(x):')", "exercise a", "check_a"]
    assert [c.section for c in plan.cells] == ["check_a", "check_a", "check_a", "check_b", "check_b"]


def _save(nb, path=None):
    import tempfile

    path = Path(path or tempfile.mkdtemp()) / "x.ipynb"
    nbformat.write(nb, path)
    return path


def test_static_flags_name_what_a_cell_does_and_spare_honest_code(tmp_path):
    released = rel.load_released_notebook(REPO / "notebooks" / "03_kv_cache.ipynb")
    flags = lambda src: cell_flags(src, released)  # noqa: E731
    assert flags("from llama3 import KV_Cache") == ["imports the reference implementation llama3.KV_Cache"]
    assert flags("from llama3.kv_cache import KV_Cache as K") == [
        "imports the reference implementation llama3.kv_cache.KV_Cache"]
    assert flags("import llama3.checks.kv_cache as k\nk.check_kv_cache = print") == [
        "imports llama3.checks (llama3.checks.kv_cache)", "replaces the checker k.check_kv_cache"]
    assert flags("def check_kv_cache(cls):\n    pass") == ["redefines the checker check_kv_cache"]
    assert flags("import builtins\nbuiltins.exec = print") == ["touches the builtins"]
    assert flags("open('/home/teacher/answers.txt').read()") == [
        "names a path outside its folder ('/home/teacher/answers.txt')"]
    assert flags("import os\nif os.fork() == 0:\n    os.setsid()") == [
        "starts processes (os.fork)", "leaves its process group (os.setsid)"]
    # released imports, ordinary torch code and the reference under the released alias are not flagged
    assert flags("from llama3 import ModelArgs, MultiHeadGQAttention, RoPE\nimport torch\nx = torch.zeros(2)") == []
    assert flags("from llama3 import KV_Cache as ReferenceKV_Cache") == []
    assert flags("rate = 3\nprint(f'{rate}/s', 'tokens/s', '/', 'a / b', 'x.txt')") == []
    assert flags("open('../bob/03_kv_cache.ipynb')") == ["names a path outside its folder ('../bob/03_kv_cache.ipynb')"]
    solution = next(c for c in nbformat.read(REPO / "solutions" / "03_kv_cache.ipynb", 4).cells
                    if c.metadata.get("nbgrader", {}).get("grade_id") == "kv_cache")
    assert flags(solution.source) == []


def test_channel_drops_forged_and_garbled_lines():
    outcome = sandbox.RunOutcome()
    key = b"k" * 32
    reader = sandbox.ChannelReader(key, outcome)
    import hashlib
    import hmac

    def line(seq, payload):
        return hmac.new(key, b"%d:" % seq + payload, hashlib.sha256).hexdigest().encode() + b" " + payload + b"\n"

    reader.feed(line(0, b"{'event': 'ready'}"))
    reader.feed(b"0" * 64 + b" {'event': 'check', 'index': 2, 'passed': True}\n")  # forged: wrong tag
    reader.feed(b"junk without newline " + line(1, b"{'event': 'done'}"))  # learner bytes glued before ours
    reader.feed(b"x" * (sandbox.MAX_LINE + 10))  # a flood with no newline
    assert outcome.messages == [{"event": "ready"}, {"event": "done"}]
    assert [w for _, w in outcome.tampering] == [
        "a message on the result channel did not carry the grader's key (a forged result)",
        "something other than the grader wrote to the result channel",
        "an over-long line was written to the result channel"]
    assert len(reader.buffer) <= 4096


def test_output_tail_is_bounded():
    tail = sandbox.OutputTail(1000)
    for i in range(10_000):
        tail.feed(b"%05d\n" % i)
    assert tail.total == 60_000 and tail.kept == 1000 and tail.text().endswith("09999\n")


def test_submissions_per_learner_missing_extra_and_match(tmp_path):
    for name in ("01_a.ipynb", "02_b.ipynb"):
        write_notebook(tmp_path / "release" / name, [check_cell("pass", "check_" + name[:2])])
    subs = tmp_path / "subs"
    for learner, names in (("ann", ["01_a.ipynb", "02_b.ipynb", "01_a-Copy1.ipynb"]), ("ben", []),
                           ("cy", ["week1/01_a.ipynb", "01_a.ipynb"])):
        (subs / learner).mkdir(parents=True)
        for name in names:
            (subs / learner / name).parent.mkdir(parents=True, exist_ok=True)
            (subs / learner / name).write_text("{}")
    release = rel.load_release(tmp_path / "release", re.compile("^01"))
    assert list(release.notebooks) == ["01_a.ipynb"] and release.excluded == {"02_b.ipynb"}
    found = [(s.student, s.notebook, s.path and str(s.path.relative_to(subs)), s.notes)
             for s in grade.find_submissions(subs, release)]
    assert found == [
        ("ann", "01_a.ipynb", "ann/01_a.ipynb", ["ann/01_a-Copy1.ipynb is not a notebook of the assignment: not "
                                                 "graded (rename it to a released name)"]),
        ("ben", "01_a.ipynb", None, []),
        ("cy", "01_a.ipynb", "cy/01_a.ipynb", ["cy/week1/01_a.ipynb was ignored: cy/01_a.ipynb was graded"])]


# -------------------------------------------------------------------------------------------------------- kernels


def test_demo_fixture_solution_full_marks_student_zero():
    released = FIXTURES / "notebooks" / "01_demo.ipynb"
    solved = graded(FIXTURES / "solutions" / "01_demo.ipynb", released)
    assert solved.status == "passed" and solved.errors == [] and solved.notes == []
    assert [(e.exercise, e.points, e.max_points) for e in solved.exercises] == [
        ("check_square", 1, 1), ("check_counter", 2, 2), ("check_squares", 1, 1)]
    unsolved = graded(released, released)
    assert unsolved.status == "failed" and unsolved.points == 0 and unsolved.max_points == 4
    hints = {e.exercise: e.hint for e in unsolved.exercises}
    assert hints["check_square"] == "not implemented yet (square: multiply x by itself)"
    # errors in ordinary cells are named by their place after an exercise, never by a raw cell index
    assert any(err.startswith("code cell 1 after check_counter") for err in unsolved.errors), unsolved.errors


def test_magics_skip_grade_crashes_widgets_and_agg(tmp_path):
    path = write_notebook(tmp_path / "student" / "nb.ipynb", [
        new_markdown_cell("# behaviours"),
        new_code_cell("%matplotlib inline\n!touch shell_ran.txt\nfiles = !ls\nx = 2"),
        new_code_cell("%%time\ny = x + 1"),                                              # body runs once
        new_code_cell("%%bash\ntouch bash_ran.txt"),                                     # skipped
        new_code_cell("while True:\n    pass", metadata={"tags": ["skip-grade"]}),      # skipped
        new_code_cell("raise RuntimeError('learner crash')"),                            # reported, goes on
        new_code_cell("import sys\nsys.exit(3)"),                                        # reported, goes on
        new_code_cell(
            "import matplotlib, matplotlib.pyplot as plt\n"
            "backend = matplotlib.get_backend()\n"
            "plt.plot([1, 2]); plt.show()\n"
            "from ipywidgets import interact\n"
            "calls = []\n"
            "interact(lambda k=1: calls.append(k), k=(0, 3))\n"
            "display('shown')"),
        check_cell("assert y == 3, 'y should be 3'", "check_magics"),
        check_cell("assert backend.lower() == 'agg' and calls == [1]", "check_env", 2),
        check_cell("assert y == 4, 'y should be 4. Add two to x.'", "check_fails"),
        check_cell("z = undefined_name", "check_nameerror"),
        new_code_cell("after = True"),
        check_cell("assert after", "check_after"),
    ])
    result = graded(path)
    ex = by_id(result)
    assert [ex[k].status for k in ("check_magics", "check_env", "check_fails", "check_nameerror", "check_after")] \
        == ["passed", "passed", "failed", "failed", "passed"]
    assert ex["check_env"].points == 2
    assert ex["check_fails"].hint == "y should be 4."  # graded mode: what is wrong, not the fix
    assert ex["check_nameerror"].hint == "NameError: name 'undefined_name' is not defined"
    assert result.points == 4 and result.max_points == 6 and result.status == "failed"
    assert result.errors == ["code cell 5 before the first exercise (\"raise RuntimeError('learner crash')\"): "
                             "RuntimeError: learner crash (line 1)",
                             "code cell 6 before the first exercise ('import sys'): SystemExit: 3 (line 2)"]
    full = grade.grade_notebook(path, "learner", path, graded=False)
    assert by_id(full)["check_fails"].hint == "y should be 4. Add two to x."


def test_timeout_and_dead_kernel_name_the_cell_and_score_the_rest(tmp_path):
    loop = write_notebook(tmp_path / "loop.ipynb", [
        exercise_cell("a = 1", "a"), check_cell("assert a == 1", "check_a"),
        exercise_cell("while True:\n    pass", "b"), check_cell("assert True", "check_b")])
    result = graded(loop, timeout=6)
    ex = by_id(result)
    assert ex["check_a"].status == "passed" and ex["check_b"].status == "timeout"
    assert ex["check_b"].hint == "not reached: timed out after 6 s in exercise b"
    assert result.status == "timeout"

    dead = write_notebook(tmp_path / "dead.ipynb", [
        exercise_cell("import ctypes\nctypes.string_at(0)", "c"), check_cell("assert True", "check_c")])
    result = graded(dead)
    assert by_id(result)["check_c"].status == "crashed"
    assert by_id(result)["check_c"].hint == "not reached: the kernel died (SIGSEGV), in exercise c"


def test_memory_cpu_and_file_caps(tmp_path):
    path = write_notebook(tmp_path / "hog.ipynb", [
        exercise_cell("try:\n    big = bytearray(2 * 2**30)\nexcept MemoryError:\n    big = None", "mem"),
        check_cell("assert big is None, 'the memory cap did not hold'", "check_mem"),
        exercise_cell("try:\n    open('f.bin', 'wb').write(b'x' * 3 * 2**20)\n    wrote = True\n"
                      "except OSError:\n    wrote = False", "file"),
        check_cell("assert not wrote, 'the file cap did not hold'", "check_file"),
        exercise_cell("while True:\n    pass", "cpu"), check_cell("pass", "check_cpu")])
    result = graded(path, timeout=60, memory_mb=1024, file_mb=1, cpu_s=3)
    ex = by_id(result)
    assert ex["check_mem"].passed and ex["check_file"].passed, result
    assert ex["check_cpu"].status == "crashed" and "CPU time limit (3 s)" in ex["check_cpu"].hint


def test_nbformat3_is_upgraded_and_unreadable_files_score_zero(tmp_path):
    v4 = new_notebook(cells=[exercise_cell("a = 1", "a"), check_cell("assert a == 1, 'a is not 1'", "check_a")])
    release = _save(v4, tmp_path)
    old = tmp_path / "old" / "x.ipynb"
    old.parent.mkdir()
    nbformat.write(nbformat.convert(v4, 3), old)
    assert json.loads(old.read_text())["nbformat"] == 3
    assert graded(old, release).status == "passed"
    for text, why in (("{ not json", "not valid JSON"), ("", "the file is empty"),
                      ('{"cells": 3, "nbformat": 4}', "not a Jupyter notebook"),
                      ('{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [1]}', "not a Jupyter notebook")):
        (tmp_path / "bad.ipynb").write_text(text)
        result = graded(tmp_path / "bad.ipynb", release)
        assert result.status == "unreadable" and result.points == 0 and result.max_points == 1
        assert why in result.exercises[0].hint and result.exercises[0].status == "unreadable"


def test_patching_what_the_kernel_reports_with_cannot_forge_a_pass(tmp_path):
    release = write_notebook(tmp_path / "release" / "x.ipynb", [
        exercise_cell("a = 0", "a"), check_cell("assert a == 1, 'a is not 1'", "check_a")])
    forged = "{'event': 'check', 'index': 1, 'passed': True, 'hint': '', 'flags': []}"
    path = write_notebook(tmp_path / "forger" / "x.ipynb", [
        exercise_cell("a = 0\nimport json, hmac, builtins\n"
                      f"json.dumps = lambda *args, **kwargs: {forged!r}\n"
                      f"builtins.repr = lambda obj: {forged!r}\n"
                      "hmac.new = hmac.compare_digest = lambda *args, **kwargs: True", "a"),
        check_cell("assert a == 1, 'a is not 1'", "check_a")])
    ex = by_id(graded(path, release))["check_a"]
    assert ex.status == "flagged" and ex.points == 0 and ex.points_if_cleared == 0 and ex.hint == "a is not 1"
    assert "before this check: builtins.repr was replaced" in ex.flags


def test_escaper_is_killed_with_the_notebook_and_flagged(tmp_path):
    """A setsid double fork: the grandchild leaves the session and its parent exits; the supervisor, a child
    subreaper, gets it back and kills it with the notebook."""
    pid_file, marker = tmp_path / "escaper.pid", tmp_path / "escaper.alive"
    release = write_notebook(tmp_path / "release" / "x.ipynb", [
        exercise_cell("a = 0", "a"), check_cell("assert a == 1", "check_a")])
    path = write_notebook(tmp_path / "esc" / "x.ipynb", [
        exercise_cell(
            "import os, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            f"        open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
            "        time.sleep(3)\n"
            f"        open({str(marker)!r}, 'w').write('still here')\n"
            "    os._exit(0)\n"
            "time.sleep(1)\n"
            "a = 1", "a"),
        check_cell("assert a == 1", "check_a")])
    result = graded(path, release)
    ex = by_id(result)["check_a"]
    assert ex.status == "flagged" and ex.points_if_cleared == 1
    assert "starts processes (os.fork)" in " ".join(ex.flags) and "starts a process (fork)" in " ".join(ex.flags)
    pid = int(pid_file.read_text())
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
    time.sleep(3.5)
    assert not marker.exists()


def test_killing_the_supervisor_leaves_nothing_behind(tmp_path):
    """The kernel kills its supervisor after starting an escaper: the kernel dies with it (PDEATHSIG) and the
    escaper, orphaned outside the supervisor, is found by the run token in its environment and killed."""
    pid_file = tmp_path / "orphan.pid"
    release = write_notebook(tmp_path / "release" / "x.ipynb", [
        exercise_cell("a = 0", "a"), check_cell("assert a == 1", "check_a")])
    path = write_notebook(tmp_path / "killer" / "x.ipynb", [
        exercise_cell(
            "import os, signal, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            f"        open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
            "        time.sleep(60)\n"
            "    os._exit(0)\n"
            "time.sleep(1)\n"
            "os.kill(os.getppid(), signal.SIGKILL)\n"
            "time.sleep(30)", "a"),
        check_cell("assert a == 1", "check_a")])
    result = graded(path, release, timeout=60)
    ex = by_id(result)["check_a"]
    assert ex.status == "flagged" and ex.points == 0 and "supervisor was killed" in ex.hint
    pid = int(pid_file.read_text())
    assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] \
        == "Z"


def test_environment_is_scrubbed_and_the_folder_holds_only_the_notebook(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "secret-token")
    path = tmp_path / "env" / "x.ipynb"
    write_notebook(path, [
        exercise_cell("import os\nenv = dict(os.environ)\nfiles = sorted(os.listdir('.'))", "a"),
        check_cell("assert 'HF_TOKEN' not in env and env['LLAMA3_GRADING'] == '1', sorted(env)", "check_env"),
        check_cell("assert files == ['x.ipynb'], files", "check_files"),
        check_cell("assert os.getcwd() != " + repr(str(path.parent)) + " and env['HOME'] == os.getcwd()",
                   "check_cwd")])
    result = graded(path)
    assert result.status == "passed", [(e.exercise, e.hint) for e in result.exercises]


# -------------------------------------------------------------------------------------------------- command line


def test_bad_paths_are_refused(tmp_path, capsys):
    release = ["--release", str(FIXTURES / "notebooks")]
    assert grade.main([str(tmp_path / "nope")] + release) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("x")
    assert grade.main([str(tmp_path / "notes.txt")] + release) == 2
    assert "not a notebook" in capsys.readouterr().err
    (tmp_path / "other.ipynb").write_text("{}")
    assert grade.main([str(tmp_path / "other.ipynb")] + release) == 2
    assert "not a notebook of the released assignment" in capsys.readouterr().err
    assert grade.main([str(tmp_path), "--release", str(tmp_path / "none")]) == 2
    assert "--release" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        grade.main([str(tmp_path), "--timeout", "0"])
    assert grade.main([str(tmp_path), "--jobs", "0"] + release) == 2
    assert "--jobs must be 1 or more" in capsys.readouterr().err


def test_cli_folder_of_learners_writes_csv_json_feedback(tmp_path, capsys):
    subs = tmp_path / "submissions"
    (subs / "alice").mkdir(parents=True)
    shutil.copy(FIXTURES / "solutions" / "01_demo.ipynb", subs / "alice")
    (subs / "alice" / "scratch.ipynb").write_text("{}")
    (subs / "bob" / ".ipynb_checkpoints").mkdir(parents=True)
    shutil.copy(FIXTURES / "notebooks" / "01_demo.ipynb", subs / "bob")
    shutil.copy(FIXTURES / "solutions" / "01_demo.ipynb", subs / "bob" / ".ipynb_checkpoints" / "01_demo.ipynb")
    (subs / "carol").mkdir()  # handed in nothing
    out = tmp_path / "out"
    code = grade.main([str(subs), "--release", str(FIXTURES / "notebooks"), "--jobs", "2",
                       "--csv", str(out / "s.csv"), "--json", str(out / "s.json"), "--feedback", str(out / "fb")])
    assert code == 1
    printed = capsys.readouterr().out
    assert "alice: 4/4" in printed and "bob: 0/4" in printed and "carol: 0/4" in printed
    rows = list(csv.DictReader(open(out / "s.csv", encoding="utf-8")))
    points = {"check_square": 1.0, "check_counter": 2.0, "check_squares": 1.0}
    assert [(r["student"], r["exercise"], r["status"], float(r["points"]), float(r["max_points"])) for r in rows] == [
        (s, e, status, p if s == "alice" else 0.0, p) for s, status in (("alice", "passed"), ("bob", "failed"),
                                                                        ("carol", "missing"))
        for e, p in points.items()]
    report = json.loads((out / "s.json").read_text())
    assert report["students"] == {"alice": {"points": 4, "max_points": 4}, "bob": {"points": 0, "max_points": 4},
                                  "carol": {"points": 0, "max_points": 4}}
    assert report["notebooks"][0]["notes"] == [
        "alice/scratch.ipynb is not a notebook of the assignment: not graded (rename it to a released name)"]
    feedback = (out / "fb" / "carol.md").read_text()
    assert "**Total: 0 / 4 points.**" in feedback and "01_demo.ipynb was not handed in" in feedback
    assert "(missing)" in feedback
    # a single notebook names its folder as the learner and is graded alone; full marks exit 0
    assert grade.main([str(subs / "alice" / "01_demo.ipynb"), "--release", str(FIXTURES / "notebooks"), "-q"]) == 0
    assert re.search(r"^alice +01_demo.ipynb +TOTAL +4/4 +passed", capsys.readouterr().out, re.MULTILINE)


def test_flood_keeps_the_graders_memory_bounded(tmp_path):
    """A notebook that prints 400 MB: the grader keeps the last --max-output KiB and counts the rest. Its own peak
    memory (a separate process running only the grader) grows by less than 64 MiB over grading a quiet notebook
    first, and stays far under 1.5 GB."""
    quiet = write_notebook(tmp_path / "quiet" / "x.ipynb", [exercise_cell("a = 1", "a"),
                                                             check_cell("assert a == 1", "check_a")])
    flood = write_notebook(tmp_path / "flood" / "x.ipynb", [
        exercise_cell("line = 'x' * 9999\nfor _ in range(40_000):\n    print(line)\na = 1", "a"),
        check_cell("assert a == 1", "check_a")])
    script = ("import json, resource, sys\n"
              "from llama3.grading import grade_notebook, Limits\n"
              "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
              f"q = grade_notebook({str(quiet)!r}, 'quiet', {str(quiet)!r}, Limits(timeout=240))\n"
              "before = peak()\n"
              f"r = grade_notebook({str(flood)!r}, 'flood', {str(quiet)!r}, Limits(timeout=240))\n"
              "print(json.dumps([q.status, r.status, r.output_bytes, before, peak()]))\n")
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=400,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    quiet_status, status, output_bytes, before, after = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"flood: {output_bytes / 2**20:.0f} MiB printed; grader peak RSS {before / 2**20:.0f} MiB after a quiet "
          f"notebook, {after / 2**20:.0f} MiB after the flood")
    assert quiet_status == status == "passed" and output_bytes >= 400_000_000
    assert after - before < 64 * 2**20 and after < 1.5 * 2**30


# The real course: solutions/ graded against the released notebooks/ scores full marks without a flag, and the
# untouched notebooks/ score zero with a hint on every exercise. An unsolved twin grades in seconds, so every twin is
# graded; a solution runs top to bottom (a minute or two each on a busy 2-core machine), so CI grades the quick ones
# (01-03); `pytest --nbval solutions/` runs the others, and LLAMA3_GRADE_ALL=1 grades every solution here too.
COURSE = sorted(p.name for p in (REPO / "solutions").glob("*.ipynb"))
SOLUTIONS_IN_CI = COURSE if os.environ.get("LLAMA3_GRADE_ALL") else [n for n in COURSE if n[:2] in {"01", "02", "03"}]


def _ids(names):
    return [n.removesuffix(".ipynb") for n in names]


@pytest.mark.slow
@pytest.mark.parametrize("name", SOLUTIONS_IN_CI, ids=_ids(SOLUTIONS_IN_CI))
def test_real_solution_gets_full_marks_without_a_flag(name):
    solved = grade.grade_notebook(REPO / "solutions" / name, "solutions", REPO / "notebooks" / name)
    assert solved.status == "passed", [(e.exercise, e.status, e.hint, e.flags) for e in solved.exercises]
    assert solved.errors == [] and solved.notes == [] and solved.flags == []


@pytest.mark.parametrize("name", COURSE, ids=_ids(COURSE))
def test_real_student_notebook_gets_zero(name):
    twin = REPO / "notebooks" / name
    unsolved = grade.grade_notebook(twin, "notebooks", twin)
    expected = [c.grade_id for c in rel.load_released_notebook(twin).checks]
    assert expected, f"notebooks/{name} has no check cell"
    assert [e.exercise for e in unsolved.exercises] == expected
    assert unsolved.points == 0 and unsolved.status == "failed", [(e.exercise, e.hint) for e in unsolved.exercises]
    # the learner is told what is wrong, not shown a crash: every exercise fails with its not-yet-solved hint
    assert all(e.status == "failed" and e.hint and not e.flags for e in unsolved.exercises)
