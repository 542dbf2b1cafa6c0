"""The instructor guide's hand-out works as written: a copy of the repository (what `git clone` or `git archive`
gives: the tracked files) runs the course offline, with no environment variable, from its notebooks/ folder."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llama3.pretrained import load_pretrained

REPO = Path(__file__).resolve().parent.parent

CHECK = """
import sys
from pathlib import Path
import llama3
from llama3.checks import check_rope
from llama3.data import text_sample
from llama3.pretrained import load_pretrained
root = Path(sys.argv[1]).resolve()
assert Path(llama3.__file__).resolve().is_relative_to(root), llama3.__file__  # the copy's package, not ours
model, tokenizer = load_pretrained()
assert len(tokenizer) == 4096 and model.num_parameters() == int(sys.argv[2])  # the repository's model
text = text_sample("train")
assert text.count("<|endoftext|>") == 2255, text.count("<|endoftext|>")
print("hand-out works")
"""


def tracked_files() -> list[str]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the hand-out is what git clone gives")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name and (REPO / name).is_file()]


def test_the_handout_is_the_repository_not_the_notebooks_folder():
    guide = (REPO / "README.md").read_text(encoding="utf-8")
    assert "just that folder plus" not in guide  # the route that cannot work: requirements.txt installs "-e ."
    assert "-e ." in (REPO / "requirements.txt").read_text().splitlines()
    assert "git archive --format=zip" in guide


def test_a_copy_of_the_tracked_files_runs_offline_without_environment_variables(tmp_path):
    copy = tmp_path / "course"
    for name in tracked_files():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, copy / name)
    assert len(list((copy / "notebooks").glob("*.ipynb"))) == 8
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLAMA3_", "PYTHONPATH"))}
    # PYTHONPATH stands in for `pip install -e .` of the copy (requirements.txt's last line)
    env.update(PYTHONPATH=str(copy), HF_HUB_OFFLINE="1", LLAMA3_DATA_CACHE=str(tmp_path / "cache"))
    shipped_parameters = load_pretrained()[0].num_parameters()
    proc = subprocess.run([sys.executable, "-c", CHECK, str(copy), str(shipped_parameters)], cwd=copy / "notebooks",
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "hand-out works" in proc.stdout
    assert "excerpt shipped" in proc.stderr  # and it said where the text came from
