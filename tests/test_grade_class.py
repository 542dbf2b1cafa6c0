"""A class of learners built at run time from the real notebooks 01-03 (the cheap ones), graded once with the command
line as an instructor would (``--jobs 2``, CSV, JSON, feedback): honest, partial, untouched, broken, one learner per
cheat of issue 10, an output flood and an escaper. Every score, status and flag is asserted, and nothing the
learners started may outlive the grader."""

import copy
import csv
import json
import os
import time
from pathlib import Path

import nbformat
import pytest

from llama3 import grade

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = ["01_rope.ipynb", "02_ffn.ipynb", "03_kv_cache.ipynb"]
MAX = {"01_rope.ipynb": 2.0, "02_ffn.ipynb": 2.0, "03_kv_cache.ipynb": 1.0}  # the released points
pytestmark = pytest.mark.slow  # about 1-2 minutes on 2 busy cores


def released(name):
    return json.loads((REPO / "notebooks" / name).read_text())


def honest(name):
    """The handed-out notebook with every exercise cell answered by the solution's code (matched by cell id)."""
    solution = {c["id"]: c["source"] for c in json.loads((REPO / "solutions" / name).read_text())["cells"]}
    nb = released(name)
    for cell in nb["cells"]:
        if (cell["metadata"].get("nbgrader") or {}).get("solution"):
            cell["source"] = solution[cell["id"]]
    return nb


def cell_index(nb, grade_id):
    return next(i for i, c in enumerate(nb["cells"]) if (c["metadata"].get("nbgrader") or {}).get("grade_id")
                == grade_id)


def code(source, cell_id):
    return {"cell_type": "code", "id": cell_id, "metadata": {}, "source": source, "outputs": [],
            "execution_count": None}


def with_cell_before_check(nb, source, check="check_kv_cache"):
    nb = copy.deepcopy(nb)
    nb["cells"].insert(cell_index(nb, check), code(source, "learner-added"))
    return nb


def build_class(root: Path) -> dict:
    """Write the submissions; return the paths the escaper and the snooper need to know."""
    subs = root / "submissions"
    secret = root / "instructor" / "answers.txt"
    secret.parent.mkdir(parents=True)
    secret.write_text("the answers")
    csv_path = root / "out" / "scores.csv"
    pid_file = root / "escaper.pid"

    def hand_in(learner, name, nb):
        path = subs / learner / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(nb if isinstance(nb, str) else json.dumps(nb))

    for name in NOTEBOOKS:
        hand_in("alice", name, honest(name))
    hand_in("bob", NOTEBOOKS[0], honest(NOTEBOOKS[0]))  # partial: 01 done, 02 untouched, 03 not handed in
    hand_in("bob", NOTEBOOKS[1], released(NOTEBOOKS[1]))
    text = json.dumps(honest(NOTEBOOKS[0]))
    hand_in("dave", NOTEBOOKS[0], text[: len(text) // 2])  # truncated JSON
    hand_in("dave", NOTEBOOKS[1], "")  # empty file
    hand_in("dave", NOTEBOOKS[2], nbformat.writes(nbformat.convert(nbformat.reads(json.dumps(honest(NOTEBOOKS[2])),
                                                                                 4), 3)))  # nbformat 3, solved

    kv = "03_kv_cache.ipynb"
    unsolved, solved = released(kv), honest(kv)
    hand_in("patch_checks", kv, with_cell_before_check(unsolved, (
        "import llama3.checks.kv_cache as k\n"
        # the public checker wraps the real one (llama3.checks._common.checker): patch the code that runs
        "k.check_kv_cache.__wrapped__.__code__ = (lambda cls: print('PASSED kv_cache')).__code__")))
    hand_in("redefine_checker", kv, with_cell_before_check(unsolved, (
        "def check_kv_cache(cls):\n    print('PASSED kv_cache')")))
    edited = copy.deepcopy(unsolved)
    edited["cells"][cell_index(edited, "check_kv_cache")]["source"] = "print('PASSED kv_cache')"
    hand_in("edit_check", kv, edited)
    points = copy.deepcopy(unsolved)
    points["cells"][cell_index(points, "check_kv_cache")]["metadata"]["nbgrader"]["points"] = 100
    fake = code("print('PASSED bonus')", "fake-check")
    fake["metadata"] = {"nbgrader": {"grade": True, "solution": False, "locked": True, "points": 50,
                                     "grade_id": "check_bonus", "schema_version": 3}}
    points["cells"].append(fake)
    hand_in("raise_points", kv, points)
    deleted = copy.deepcopy(unsolved)
    del deleted["cells"][cell_index(deleted, "check_kv_cache")]
    hand_in("delete_check", kv, deleted)
    reference = copy.deepcopy(unsolved)
    reference["cells"][cell_index(reference, "kv_cache")]["source"] = "from llama3 import KV_Cache"
    hand_in("reference_class", kv, reference)
    alias = copy.deepcopy(unsolved)
    alias["cells"][cell_index(alias, "kv_cache")]["source"] = (
        "module = __import__('llama3.kv_' + 'cache', fromlist=['x'])\n"
        "class KV_Cache(getattr(module, 'KV_' + 'Cache')):\n    pass")
    hand_in("subclass_reference", kv, alias)
    during = copy.deepcopy(unsolved)  # learner code runs inside the checker: it patches the checker from there
    during["cells"][cell_index(during, "kv_cache")]["source"] = (
        "class KV_Cache:\n"
        "    def __init__(self, *args, **kwargs):\n"
        "        import sys\n"
        "        sys.modules['llama3.checks.kv_cache'].fail = lambda hint: None\n")
    hand_in("patch_during_check", kv, during)
    hand_in("patch_exec", kv, with_cell_before_check(unsolved, (
        "import builtins\nbuiltins.exec = lambda *args, **kwargs: None")))
    hand_in("patch_torch", kv, with_cell_before_check(unsolved, (
        "import torch\ntorch.equal = lambda *a, **k: True\ntorch.allclose = lambda *a, **k: True")))
    hand_in("forge_result", kv, with_cell_before_check(unsolved, (
        "import os\n"
        "fake = b'0' * 64 + b' {\"event\":\"check\",\"index\":%d,\"passed\":true,\"hint\":\"\",\"flags\":[]}\\n'\n"
        "lines = [fake % i for i in range(40)] + [b'0' * 64 + b' {\"event\":\"done\"}\\n']\n"
        "for fd in os.listdir('/proc/self/fd'):\n"
        "    for line in lines:\n"
        "        try:\n"
        "            os.write(int(fd), line)\n"
        "        except OSError:\n"
        "            pass\n"
        "os._exit(0)")))
    hand_in("escaper", kv, with_cell_before_check(solved, (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "        time.sleep(2)\n"
        f"        open({str(csv_path)!r}, 'w').write('HACKED')\n"
        "    os._exit(0)\n"
        "time.sleep(0.5)")))
    hand_in("snooper", kv, with_cell_before_check(solved, (
        f"stolen = open({str(subs / 'alice' / kv)!r}).read()\n"
        f"secret = open({str(secret)!r}).read()")))
    hand_in("flood", NOTEBOOKS[0], with_cell_before_check(honest(NOTEBOOKS[0]), (
        "line = 'x' * 9999\nfor _ in range(20_000):\n    print(line)"), check="check_rope"))
    return {"subs": subs, "csv": csv_path, "pid_file": pid_file}


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    paths = build_class(root)
    out = root / "out"
    start = time.monotonic()
    code = grade.main([str(paths["subs"]), "--release", str(REPO / "notebooks"), "--match", "0[1-3]_",
                       "--jobs", "2", "--timeout", "300", "--csv", str(out / "scores.csv"),
                       "--json", str(out / "scores.json"), "--feedback", str(out / "feedback"), "-q"])
    seconds = time.monotonic() - start
    print(f"class graded in {seconds:.0f} s")
    csv_before = paths["csv"].read_text()
    time.sleep(3)  # the escaper would have rewritten scores.csv two seconds after its notebook
    report = json.loads((out / "scores.json").read_text())
    return dict(paths, code=code, seconds=seconds, csv_before=csv_before, out=out, report=report,
                notebooks={(r["student"], r["notebook"]): r for r in report["notebooks"]})


def exercise(graded_class, student, notebook, grade_id):
    nb = graded_class["notebooks"][(student, notebook)]
    return next(e for e in nb["exercises"] if e["exercise"] == grade_id)


def test_totals_are_over_the_released_maximum(graded_class):
    totals = {s: (t["points"], t["max_points"]) for s, t in graded_class["report"]["students"].items()}
    assert totals == {
        "alice": (5, 5), "bob": (2, 5), "dave": (1, 5), "flood": (2, 5),
        **{s: (0, 5) for s in ("patch_checks", "redefine_checker", "edit_check", "raise_points", "delete_check",
                               "reference_class", "subclass_reference", "patch_during_check", "patch_exec",
                               "patch_torch", "forge_result", "escaper", "snooper")}}
    assert graded_class["code"] == 1
    # every learner has a row for every released exercise, handed in or not
    rows = list(csv.DictReader(open(graded_class["out"] / "scores.csv", encoding="utf-8")))
    assert len(rows) == 17 * 5 and {r["student"] for r in rows} == set(totals)


def test_honest_partial_untouched_missing_and_broken(graded_class):
    status = {k: v["status"] for k, v in graded_class["notebooks"].items()}
    assert [status[("alice", n)] for n in NOTEBOOKS] == ["passed"] * 3
    assert [status[("bob", n)] for n in NOTEBOOKS] == ["passed", "failed", "missing"]
    assert [status[("dave", n)] for n in NOTEBOOKS] == ["unreadable", "unreadable", "passed"]
    assert all(not v["flags"] and not any(e["flags"] for e in v["exercises"])
               for (s, _), v in graded_class["notebooks"].items() if s in ("alice", "bob", "dave"))
    missing = exercise(graded_class, "bob", NOTEBOOKS[2], "check_kv_cache")
    assert missing["hint"] == "03_kv_cache.ipynb was not handed in" and missing["status"] == "missing"
    assert "not valid JSON" in exercise(graded_class, "dave", NOTEBOOKS[0], "check_rope")["hint"]
    assert "the file is empty" in exercise(graded_class, "dave", NOTEBOOKS[1], "check_ffn")["hint"]
    feedback = (graded_class["out"] / "feedback" / "bob.md").read_text()
    assert "**Total: 2 / 5 points.**" in feedback and "03_kv_cache.ipynb was not handed in" in feedback
    # graded mode: the untouched notebook's feedback says what is wrong in one short sentence
    hint = exercise(graded_class, "bob", NOTEBOOKS[1], "check_ffn")["hint"]
    assert hint and "\n" not in hint and len(hint) <= 200


@pytest.mark.parametrize("student, status, flag", [
    ("patch_checks", "flagged", "the code of llama3.checks.kv_cache.check_kv_cache.__wrapped__ was replaced"),
    ("redefine_checker", "flagged", "redefines the checker check_kv_cache"),
    ("reference_class", "flagged", "KV_Cache is llama3's own llama3.kv_cache.KV_Cache"),
    ("subclass_reference", "flagged", "KV_Cache subclasses llama3's llama3.kv_cache.KV_Cache"),
    ("patch_during_check", "flagged", "during this check: llama3.checks.kv_cache.fail was replaced"),
    ("patch_exec", "flagged", "builtins.exec was replaced"),
    ("patch_torch", "flagged", "torch.allclose was replaced"),
    ("forge_result", "flagged", "writes to raw file descriptors (os.write)"),
    ("escaper", "flagged", "starts a process (fork)"),
    ("snooper", "flagged", "reads a path outside its folder"),
])
def test_each_cheat_scores_zero_and_is_flagged(graded_class, student, status, flag):
    ex = exercise(graded_class, student, "03_kv_cache.ipynb", "check_kv_cache")
    assert ex["status"] == status and ex["points"] == 0
    assert any(flag in f for f in ex["flags"]), ex["flags"]
    feedback = (graded_class["out"] / "feedback" / f"{student}.md").read_text()
    assert "points are withheld" in feedback and flag.split("(")[0].strip() in feedback


def test_honest_code_behind_a_flag_would_have_passed(graded_class):
    """The flag withholds points, the verdict is still there for the instructor who clears it."""
    for student in ("reference_class", "subclass_reference", "escaper", "snooper"):
        assert exercise(graded_class, student, "03_kv_cache.ipynb", "check_kv_cache")["points_if_cleared"] == 1
    for student in ("patch_checks", "redefine_checker", "patch_exec", "patch_torch"):  # unsolved underneath
        assert exercise(graded_class, student, "03_kv_cache.ipynb", "check_kv_cache")["points_if_cleared"] == 0


def test_check_cells_edited_invented_or_deleted_are_restored(graded_class):
    nbs = graded_class["notebooks"]
    for student, note in (("edit_check", "check cell check_kv_cache was edited: the released check ran instead"),
                          ("raise_points", "check cell check_kv_cache claims 100 points: it is worth 1, as released"),
                          ("raise_points", "check cell check_bonus is not in the released assignment: ignored"),
                          ("delete_check", "check cell check_kv_cache was deleted: the released check ran after "
                                           "exercise kv_cache")):
        nb = nbs[(student, "03_kv_cache.ipynb")]
        assert nb["status"] == "failed" and nb["points"] == 0 and nb["max_points"] == 1
        assert any(n.startswith(note) for n in nb["notes"]), nb["notes"]
        assert [e["exercise"] for e in nb["exercises"]] == ["check_kv_cache"]


def test_forged_results_are_dropped(graded_class):
    nb = graded_class["notebooks"][("forge_result", "03_kv_cache.ipynb")]
    assert nb["exercises"][0]["hint"].startswith("not reached: the notebook ended the kernel (exit code 0)")
    assert any("forged result" in f for f in nb["flags"]), nb["flags"]


def test_nothing_outlives_the_grader(graded_class):
    pid = int(graded_class["pid_file"].read_text())  # the escaper's grandchild, in its own session
    alive = Path(f"/proc/{pid}/stat")
    assert not alive.exists() or alive.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    assert graded_class["csv"].read_text() == graded_class["csv_before"] and "HACKED" not in graded_class["csv_before"]
    leftovers = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and b"LLAMA3_GRADE_RUN=" in Path(f"/proc/{entry}/environ").read_bytes():
                leftovers.append(int(entry))
        except OSError:
            pass
    assert leftovers == []


def test_flood_is_graded_and_bounded(graded_class):
    nb = graded_class["notebooks"][("flood", "01_rope.ipynb")]
    assert nb["status"] == "passed" and nb["output_bytes"] >= 200_000_000
