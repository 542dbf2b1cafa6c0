"""tools/run_tests.py, the README's test command: every part runs and is reported, and any failure fails the whole."""

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("run_tests", REPO / "tools" / "run_tests.py")
run_tests = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_tests)


def test_ci_reads_the_runner_from_the_readme():
    # the same awk line .ci/run uses to find the command after the marker
    awk = r"/<!-- test-command -->/ {found=1; next} found && /^[^`]/ {print; exit}"
    command = subprocess.run(["awk", awk, "README.md"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert command.strip() == "python tools/run_tests.py"
    assert "awk '" + awk + "' README.md" in (REPO / ".ci" / "run").read_text()


@pytest.mark.parametrize("line, expected", [
    ("3 failed, 250 passed, 2 skipped, 1 warning in 412.31s (0:06:52)",
     {"failed": 3, "passed": 250, "skipped": 2, "warnings": 1}),
    ("===== 1 passed, 2 errors in 0.10s =====", {"passed": 1, "errors": 2}),
])
def test_pytest_summary_lines_are_read(line, expected):
    match = run_tests.SUMMARY.match(line)
    assert match
    assert run_tests.counts(match.group(0).strip("= ")) == expected


def test_the_total_adds_the_parts_in_pytests_words():
    line = run_tests.total_line(["2 passed in 1.00s", "1 failed, 3 passed, 1 warning in 2.00s", "1 error in 0.1s"],
                                12.0)
    assert line == "1 failed, 5 passed, 1 warning, 1 error in 12.00s"
    assert run_tests.SUMMARY.match(line)


def test_a_failing_part_does_not_hide_the_next_and_fails_the_run(tmp_path, monkeypatch, capsys):
    (tmp_path / "test_bad.py").write_text("def test_bad():\n    assert 1 == 2\n")
    (tmp_path / "test_good.py").write_text("def test_good():\n    assert 1 == 1\n\ndef test_too():\n    pass\n")
    monkeypatch.setattr(run_tests, "PARTS", {
        "first": ("a part that fails", [str(tmp_path / "test_bad.py")]),
        "second": ("a part that passes", [str(tmp_path / "test_good.py")]),
    })
    status = run_tests.main([])
    out = capsys.readouterr().out
    assert status == 1
    assert re.search(r"first/ .* FAILED \(pytest exit 1\): 1 failed in", out)
    assert re.search(r"second/ .* passed: 2 passed in", out)
    assert re.match(r"1 failed, 2 passed in [\d.]+s$", out.strip().splitlines()[-1])


def test_an_unknown_part_is_refused(capsys):
    assert run_tests.main(["tset"]) == 2
    assert "unknown part 'tset'" in capsys.readouterr().err
