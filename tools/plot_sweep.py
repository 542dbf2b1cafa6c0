"""Compare training runs: validation loss against tokens seen and against training time, from their metrics.jsonl.

    python tools/plot_sweep.py runs/sw-d192 runs/sw-d256 runs/sw-d384 --out assets/figures/tinystories_sweep.png

Each run is a ``python -m llama3 train --out-dir`` folder; its label is the folder name, or ``label=folder``. The
right panel is the one a sweep at equal compute reads: runs side by side on the same cores for the same time. Also
prints, for each run, its validation loss at the latest training time that every run reached.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from llama3.files import METRICS_NAME, atomic_write_with
from llama3.train import read_metrics


def load_runs(specs: list[str]) -> dict[str, list[dict]]:
    """{label: validation rows} for ``folder`` or ``label=folder`` specs."""
    runs = {}
    for spec in specs:
        label, _, folder = spec.rpartition("=")
        folder = Path(folder)
        rows = [r for r in read_metrics(folder / METRICS_NAME) if "val_loss" in r]
        if not rows:
            raise SystemExit(f"{folder / METRICS_NAME} has no validation rows: is {folder} a training --out-dir?")
        runs[label or folder.name] = rows
    return runs


def at_time(rows: list[dict], seconds: float, key: str) -> float:
    """``key`` ("val_loss", "tokens") at ``seconds`` of training time, interpolated linearly between evaluations."""
    times = [r["train_time_s"] for r in rows]
    if not times[0] <= seconds <= times[-1]:
        raise ValueError(f"{seconds} s is outside this run's evaluations ({times[0]}-{times[-1]} s).")
    return float(np.interp(seconds, times, [r[key] for r in rows]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="training --out-dir folders (or label=folder)")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--title", default="")
    opts = parser.parse_args(argv)
    runs = load_runs(opts.runs)
    fig = Figure(figsize=(11, 4))
    by_tokens, by_time = fig.subplots(1, 2, sharey=True)
    for label, rows in runs.items():
        by_tokens.plot([r["tokens"] / 1e6 for r in rows], [r["val_loss"] for r in rows], "o-", ms=3, label=label)
        by_time.plot([r["train_time_s"] / 60 for r in rows], [r["val_loss"] for r in rows], "o-", ms=3, label=label)
    by_tokens.set_xlabel("tokens seen (millions)")
    by_time.set_xlabel("training time (minutes), runs side by side on the same cores")
    by_tokens.set_ylabel("validation loss (nats / token)")
    for ax in (by_tokens, by_time):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(opts.title)
    fig.tight_layout()
    atomic_write_with(opts.out, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    common = min(rows[-1]["train_time_s"] for rows in runs.values())
    print(f"validation loss at {common:.0f} s of training time (the latest every run reached; interpolated):")
    for label, rows in runs.items():
        print(f"  {label}: {at_time(rows, common, 'val_loss'):.4f} after {at_time(rows, common, 'tokens') / 1e6:.2f} M "
              f"tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
