"""Fault injection for training: a full disk, Ctrl-C, SIGKILL while a checkpoint is written, two runs on one
--out-dir, a cut-off metrics line. Real faults in child processes (tests/train_child.py): signals sent to the
process, and a file-size limit (RLIMIT_FSIZE) under which the kernel refuses writes with EFBIG, as a full disk
does with ENOSPC. The oracle for "nothing lost" is an uninterrupted run of the same settings: after the fault and
--resume, every logged loss must equal it bit for bit. Tiny models and a few steps: the module takes seconds."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from llama3.train import OutDirBusy, load_checkpoint, lock_out_dir, train
from tests.test_data import DAMAGES
from tests.test_train import cli_flags, losses, tiny_config

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("isolated_token_cache")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, stories):
    """The oracle: the rows of a run of 8 steps that nothing disturbed."""
    return train(tiny_config(tmp_path_factory.mktemp("uninterrupted"), stories))


def run_child(config, *fault_flags, timeout=300, wait=True):
    """python -m tests.train_child FAULT_FLAGS -- TRAIN FLAGS, in the repository, with one thread."""
    command = [sys.executable, "-m", "tests.train_child", *map(str, fault_flags), "--", *cli_flags(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    if not wait:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".lock")


# --------------------------------------------------------------------------------------------------- disk full
def test_a_full_disk_keeps_training_and_every_previous_file_whole(tmp_path, stories, uninterrupted):
    """Steps 1-3 saved normally; steps 4-8 under a 100 kB file-size limit: the checkpoint (3.5 MB), the weights
    (1.2 MB) and tokenizer.json (270 kB) cannot be written. Training must finish with warnings, no traceback, and
    leave the step-3 checkpoint and model/ byte for byte, with no temporary files."""
    out = tmp_path / "run"
    assert train(tiny_config(tmp_path, stories, stop_after=3))
    before = snapshot(out / "model")
    ckpt_before = (out / "checkpoint.pt").read_bytes()
    result = run_child(tiny_config(tmp_path, stories, resume=True), "--file-size-limit", 100_000)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "could not save the checkpoint at step 6" in result.stderr
    assert "could not save the checkpoint at step 8" in result.stderr
    assert "could not write model/ at step 8" in result.stderr
    assert (out / "checkpoint.pt").read_bytes() == ckpt_before
    assert snapshot(out / "model") == before
    assert leftovers(out) == []
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert losses(rows) == losses(uninterrupted)  # metrics.jsonl is small enough to be written: every step is there
    # and the run resumes from step 3 as if nothing had happened
    rest = train(tiny_config(tmp_path, stories, resume=True))
    assert losses(rest) == losses(uninterrupted)


# ---------------------------------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_saves_a_checkpoint_exits_130_and_resume_is_bit_exact(tmp_path, stories, uninterrupted):
    config = tiny_config(tmp_path, stories, ckpt_interval=100)  # no periodic checkpoint before step 8
    result = run_child(config, "--sigint-at-step", 5)
    assert result.returncode == 130, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line == f"interrupted at step 5: checkpoint saved in {tmp_path / 'run'}; continue with --resume."
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 5
    rest = train(tiny_config(tmp_path, stories, ckpt_interval=100, resume=True))
    assert losses(rest) == losses(uninterrupted)
    assert losses(rest, "val_loss") == losses(uninterrupted, "val_loss")


def test_a_second_ctrl_c_quits_at_once_with_one_line(tmp_path, stories):
    result = run_child(tiny_config(tmp_path, stories), "--sigint-at-step", 5, "--sigint-twice")
    assert result.returncode == 130
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "interrupted"
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 3  # the last periodic checkpoint


# ------------------------------------------------------------------------------------------------------- SIGKILL
def test_sigkill_while_writing_a_checkpoint_then_resume_is_bit_exact(tmp_path, stories, uninterrupted):
    result = run_child(tiny_config(tmp_path, stories), "--sigkill-in-save-at-step", 6)
    assert result.returncode == -9
    out = tmp_path / "run"
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 3  # the previous checkpoint is whole
    assert leftovers(out)  # the half-written temporary file of step 6...
    rest = train(tiny_config(tmp_path, stories, resume=True))
    assert leftovers(out) == []  # ...is removed by the next run
    assert losses(rest) == losses(uninterrupted)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert losses(rows) == losses(uninterrupted)


# ------------------------------------------------------------------------------------------- two runs, one dir
def test_a_second_training_on_the_same_out_dir_is_refused(tmp_path, stories, uninterrupted):
    """Run A pauses at step 2 holding the lock; B (in this process, and from the command line) is refused with a
    message naming A's pid; A then finishes undisturbed."""
    ready, go = tmp_path / "ready", tmp_path / "go"
    first = run_child(tiny_config(tmp_path, stories), "--pause-at-step", 2, "--ready", ready, "--go", go, wait=False)
    try:
        for _ in range(6000):
            if ready.exists() or first.poll() is not None:
                break
            time.sleep(0.05)
        assert ready.exists(), first.communicate()[1][-3000:]
        with pytest.raises(OutDirBusy, match=f"in use by another training \\(pid {first.pid}\\)"):
            train(tiny_config(tmp_path, stories, resume=True))
        second = run_child(tiny_config(tmp_path, stories, resume=True))
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert second.stderr.startswith(f"error: {tmp_path / 'run'} is in use by another training (pid {first.pid}): "
                                        f"wait for it to end, or choose another --out-dir.")
        assert second.stderr.count("\n") == 1
    finally:
        go.touch()
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert losses(rows) == losses(uninterrupted)


def test_the_lock_is_per_out_dir_and_released_at_the_end(tmp_path, stories):
    with lock_out_dir(tmp_path / "run"):
        with pytest.raises(OutDirBusy, match="choose another --out-dir"):
            train(tiny_config(tmp_path, stories, steps=2))
        assert train(tiny_config(tmp_path / "other", stories, steps=2))  # another folder is free
    assert train(tiny_config(tmp_path, stories, steps=2))  # released: the same folder is free again


# -------------------------------------------------------------------------------------------- metrics.jsonl
def test_resume_after_a_crash_mid_line_in_metrics(tmp_path, stories, uninterrupted, capsys):
    train(tiny_config(tmp_path, stories, stop_after=6))
    metrics = tmp_path / "run" / "metrics.jsonl"
    with open(metrics, "a") as f:
        f.write('{"step": 7, "tokens": 8')  # the crash came in the middle of a row
    rest = train(tiny_config(tmp_path, stories, resume=True))
    assert "dropped the cut-off last line" in capsys.readouterr().err
    assert losses(rest) == losses(uninterrupted)
    assert [json.loads(line) for line in metrics.read_text().splitlines()] == rest


def test_a_damaged_metrics_line_before_the_end_is_named(tmp_path, stories):
    train(tiny_config(tmp_path, stories, stop_after=3))
    metrics = tmp_path / "run" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match="metrics.jsonl line 2 is damaged"):
        train(tiny_config(tmp_path, stories, resume=True))


# ------------------------------------------------------------------------------------------------ damaged caches
@pytest.mark.parametrize("damage", ["random ids", "truncated", "empty"])
def test_training_on_a_damaged_token_cache_rebuilds_it_and_learns_the_same(damage, tmp_path, stories, uninterrupted,
                                                                             monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("LLAMA3_DATA_CACHE", str(cache))
    train(tiny_config(tmp_path / "first", stories, stop_after=1))  # builds the cache
    [token_file] = [p for p in cache.glob("train-*.uint16")]
    token_file.write_bytes(DAMAGES[damage](token_file.read_bytes(), np.random.default_rng(1)))
    capsys.readouterr()
    rows = train(tiny_config(tmp_path, stories))
    assert f"the token cache {token_file} is damaged" in capsys.readouterr().err
    assert losses(rows) == losses(uninterrupted)
