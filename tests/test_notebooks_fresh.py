"""The notebook machinery end to end: nbval on the fixture notebooks, and the real course notebooks' invariants.

nbval itself runs the real notebooks in the README's test command; here we check the conventions that make those
runs pass (docs/notebook_conventions.md), cheaply and with a clear message.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SOLUTIONS = sorted((REPO / "solutions").glob("*.ipynb"))
NBVAL = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-current-env",
         "--nbval-cell-timeout=120"]


def run_pytest(args, cwd):
    return subprocess.run(NBVAL + args, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_nbval_strict_passes_on_the_fixture_solution(tmp_path):
    shutil.copy(FIXTURES / "solutions" / "01_demo.ipynb", tmp_path)
    proc = run_pytest(["--nbval", "--nbval-sanitize-with", str(REPO / "tests" / "nbval_sanitize.cfg"),
                       "01_demo.ipynb"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_nbval_lax_passes_on_the_twin_only_thanks_to_raises_exception_tags(tmp_path):
    twin = json.loads((FIXTURES / "notebooks" / "01_demo.ipynb").read_text())
    (tmp_path / "twin.ipynb").write_text(json.dumps(twin))
    for cell in twin["cells"]:  # the same notebook without the tags make_exercises adds
        tags = cell["metadata"].get("tags", [])
        if "raises-exception" in tags:
            tags.remove("raises-exception")
    (tmp_path / "untagged.ipynb").write_text(json.dumps(twin))
    proc = run_pytest(["--nbval-lax", "-rf", "twin.ipynb", "untagged.ipynb"], tmp_path)
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    assert failed and all(line.startswith("FAILED untagged.ipynb::") for line in failed), proc.stdout[-3000:]


@pytest.mark.parametrize(
    ("printed", "expected"),
    [
        ("<__main__.A object at 0x7f97d4515f10>", "<__main__.A object at 0xADDRESS>"),
        ("/tmp/ipykernel_5607/1406025109.py:3: UserWarning: careful", "FILE.py:LINE: UserWarning: careful"),
        ("/work/main/.venv/lib/python3.11/site-packages/torch/nn/modules/module.py:1234: FutureWarning: x",
         "FILE.py:LINE: FutureWarning: x"),
        ("100%|##########| 3/3 [00:00<00:00, 94.18it/s]", "100%|##########| 3/3 [TQDM]"),
        ("Wall time: 15.3 ms", "Wall time: TIME"),
        ("  File /tmp/ipykernel_12/34.py, line 2", "  File IPYKERNEL_CELL.py, line 2"),
        # what must stay compared
        ("max diff 1.2e-07, shape (2, 8, 50258), 0x10 = 16", "max diff 1.2e-07, shape (2, 8, 50258), 0x10 = 16"),
    ],
)
def test_sanitiser_rewrites_only_what_varies(printed, expected):
    from nbval.plugin import get_sanitize_patterns

    patterns = get_sanitize_patterns((REPO / "tests" / "nbval_sanitize.cfg").read_text())
    assert len(patterns) == 5
    for regex, replace in patterns:  # as nbval applies them
        printed = re.sub(regex, replace, printed)
    assert printed == expected


@pytest.mark.skipif(not SOLUTIONS, reason="solutions/ holds no notebook yet")
@pytest.mark.parametrize("path", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_solution_notebook_follows_the_conventions(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3", (
        f"{path.name}: save it with the 'python3' kernel (docs/notebook_conventions.md, rule 2)")
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    counts = [c.get("execution_count") for c in code]
    run = [n for n in counts if n is not None]
    assert run == list(range(1, len(run) + 1)), (
        f"{path.name}: execution counts {counts}; save it after Restart Kernel and Run All Cells (rule 1)")
    assert not any(c["outputs"] and c.get("execution_count") is None for c in code), (
        f"{path.name}: a cell has outputs but no execution count, which nbval refuses; rerun the notebook")
    grade_ids = [c["metadata"]["nbgrader"]["grade_id"] for c in nb["cells"] if "nbgrader" in c["metadata"]]
    assert len(grade_ids) == len(set(grade_ids)), f"{path.name}: duplicate grade_id in {grade_ids}"
    checks = [c for c in code if c["metadata"].get("nbgrader", {}).get("grade")]
    assert checks, f"{path.name}: no check cell (nbgrader grade: true)"
    sources = "\n".join("".join(c["source"]) for c in nb["cells"])
    assert "matplotlib" in sources, f"{path.name}: at least one matplotlib figure (rule 9)"
