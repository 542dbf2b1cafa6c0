"""tools/plot_sweep.py: runs compared at equal training time, from their metrics.jsonl."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("plot_sweep", REPO / "tools" / "plot_sweep.py")
plot_sweep = importlib.util.module_from_spec(_spec)
sys.modules["plot_sweep"] = plot_sweep
_spec.loader.exec_module(plot_sweep)

ROWS = [{"step": 50, "tokens": 1000, "val_loss": 4.0, "train_time_s": 10.0},
        {"step": 100, "tokens": 2000, "val_loss": 3.0, "train_time_s": 30.0}]


def write_run(folder: Path, rows) -> Path:
    folder.mkdir()
    train_row = {"step": 10, "tokens": 200, "loss": 6.0, "lr": 1e-3, "tokens_per_s": 100.0, "train_time_s": 2.0}
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [train_row, *rows]))
    return folder


def test_at_time_interpolates_between_evaluations():
    # 15 s is a quarter of the way from 10 s to 30 s: 4.0 - 0.25 * 1.0 and 1000 + 0.25 * 1000
    assert plot_sweep.at_time(ROWS, 15.0, "val_loss") == pytest.approx(3.75)
    assert plot_sweep.at_time(ROWS, 15.0, "tokens") == pytest.approx(1250)
    assert plot_sweep.at_time(ROWS, 30.0, "val_loss") == 3.0
    assert plot_sweep.at_time(ROWS, 10.0, "val_loss") == 4.0


def test_at_time_refuses_a_time_outside_the_run():
    with pytest.raises(ValueError, match="outside"):
        plot_sweep.at_time(ROWS, 31.0, "val_loss")


def test_compares_runs_at_the_latest_common_time(tmp_path, capsys):
    small = write_run(tmp_path / "small", ROWS)
    large = write_run(tmp_path / "large", [{"step": 50, "tokens": 500, "val_loss": 4.5, "train_time_s": 10.0},
                                           {"step": 100, "tokens": 1000, "val_loss": 3.5, "train_time_s": 20.0}])
    out = tmp_path / "sweep.png"
    assert plot_sweep.main([str(small), f"big model={large}", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "at 20 s" in printed
    assert "small: 3.5000 after 0.00 M tokens" in printed  # halfway from 4.0 to 3.0
    assert "big model: 3.5000" in printed


def test_a_folder_without_validation_rows_is_named(tmp_path):
    empty = write_run(tmp_path / "empty", [])
    with pytest.raises(SystemExit, match="no validation rows"):
        plot_sweep.load_runs([str(empty)])
