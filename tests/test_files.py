"""llama3.files: every writer leaves the old file whole on failure, raises OSError naming the file, and leaves no
temporary file behind."""

import pytest
import torch

from llama3.files import atomic_dir, atomic_write, atomic_write_text, atomic_write_with


def _fail_inside_atomic_write(path):
    with atomic_write(path, "w") as f:
        f.write("half")
        raise RuntimeError("disk full")  # what torch.save raises on a full disk


def _fail_inside_atomic_write_with(path):
    def write(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    atomic_write_with(path, write)


@pytest.mark.parametrize("fail", [_fail_inside_atomic_write, _fail_inside_atomic_write_with])
def test_a_failed_write_keeps_the_old_file_and_names_it(tmp_path, fail):
    target = tmp_path / "config.json"
    atomic_write_text(target, "old")
    with pytest.raises(OSError, match="config.json.*RuntimeError: disk full"):
        fail(target)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_a_failed_folder_write_keeps_the_old_folder(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("old")
    with pytest.raises(OSError, match="model.*ValueError: cut"):
        with atomic_dir(target) as tmp:
            (tmp / "weights").write_text("new")
            raise ValueError("cut")
    assert (target / "weights").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_interrupts_pass_through_unchanged(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(tmp_path / "x.pt") as f:
            torch.save({"a": 1}, f)
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_a_successful_write_replaces_the_file(tmp_path):
    target = tmp_path / "x.pt"
    atomic_write_text(target, "old")
    with atomic_write(target) as f:
        torch.save({"a": 2}, f)
    assert torch.load(target) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]
