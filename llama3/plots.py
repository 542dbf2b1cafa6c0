"""A training run's curves as a PNG: train and validation loss against tokens seen.

Drawn on a bare ``matplotlib.figure.Figure`` rather than through pyplot, so plotting from the trainer never touches
pyplot's global backend (``%matplotlib inline`` in a notebook that imports ``llama3.train`` keeps working), and
written with ``llama3.files.atomic_write_with``, so a full disk never leaves half a PNG.
"""

from __future__ import annotations

import os

from matplotlib.figure import Figure

from llama3.files import atomic_write_with


def plot_metrics(rows: list[dict], path: str | os.PathLike, title: str = "") -> None:
    """Train loss (rows with "loss") and validation loss (rows with "val_loss") against tokens seen -> ``path``.

    ``rows`` are metrics.jsonl's rows: each has "tokens" and one of the two losses (nats per token).
    """
    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "val_loss" in r]
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    if train:
        ax.plot([r["tokens"] / 1e6 for r in train], [r["loss"] for r in train], label="train", alpha=0.7)
    if val:
        ax.plot([r["tokens"] / 1e6 for r in val], [r["val_loss"] for r in val], "o-", label="validation")
    ax.set_xlabel("tokens seen (millions)")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if train or val:
        ax.legend()
    fig.tight_layout()
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
