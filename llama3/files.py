"""File names and atomic writes, defined once for the whole package.

Every file the package writes (weights, configs, checkpoints, metrics, plots, tokenizer files, grades) goes through
``atomic_write``: it is written to a temporary file in the same folder, flushed to disk and renamed over the target,
so a crash, a Ctrl-C or a full disk leaves either the old file or the new one, never half of one. Any error while
writing, whatever its type (``torch.save`` reports a full disk as ``RuntimeError``), is raised as ``OSError`` naming
the file, so callers that keep going after a failed save need to catch one type only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

CONFIG_NAME = "config.json"  # ModelArgs as JSON (save_pretrained) or a transformers LlamaConfig (Hugging Face)
SAFETENSORS_NAME = "model.safetensors"  # the weights, save_pretrained's default and Hugging Face's single file
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"  # Hugging Face's sharded weights
PTH_NAME = "model.pth"  # the weights as a torch pickle (save_pretrained(safe_serialization=False))
CHECKPOINT_NAME = "checkpoint.pt"  # a training checkpoint: model, optimiser, RNG states, step
PAD_TOKEN = "[PAD]"  # added to GPT-2's vocabulary (id 50257), which has no padding token
# a training run's --out-dir (llama3/train.py)
MODEL_DIR_NAME = "model"  # the latest model of a run, in save_pretrained form
METRICS_NAME = "metrics.jsonl"  # one JSON object per logged step or evaluation
LOSS_PLOT_NAME = "loss.png"  # the training and validation curves
LOCK_NAME = ".lock"  # locked (flock) by the training that writes into the folder


def read_json(path: str | os.PathLike, what: str = "a JSON object") -> dict:
    """The JSON object in ``path``; any problem (missing, unreadable, not JSON, not an object) is one error naming
    the file: FileNotFoundError for a missing file, ValueError otherwise. ``what`` says what the file should hold."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No file at {path}: it should hold {what}.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}): it should hold {what}; fix or replace it.") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, not an object: it should hold {what}.")
    return data


@contextlib.contextmanager
def _cleaned_up_as_oserror(path: Path, clean_up: Callable[[], object]) -> Iterator[None]:
    """On any error in the body: ``clean_up()``, then raise the error as ``OSError`` naming ``path`` (an OSError,
    KeyboardInterrupt or SystemExit passes through as it is)."""
    try:
        yield
    except BaseException as error:
        clean_up()
        if isinstance(error, (OSError, KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        raise OSError(f"could not write {path}: {type(error).__name__}: {error}") from error


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success fsync it and rename it to ``path``.

    On any error the temporary file is removed, the previous file at ``path`` (if any) is untouched, and the error
    is raised again as ``OSError`` naming ``path`` (``KeyboardInterrupt`` and ``SystemExit`` pass through as they are).
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    with _cleaned_up_as_oserror(path, lambda: tmp.unlink(missing_ok=True)):
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_with(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """For writers that want a file name, not a file object (safetensors' ``save_file``, matplotlib's ``savefig``,
    a tokenizer's ``save``): ``write(tmp_path)`` fills a temporary file that is then renamed to ``path``."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix or ".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    with _cleaned_up_as_oserror(path, lambda: tmp.unlink(missing_ok=True)):
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new temporary folder beside ``path`` to fill; on success its files are fsynced and it takes the place
    of ``path``, so a failed or interrupted write leaves the previous folder whole (a model whose tokenizer.json
    is cut off by a full disk never replaces a good one).

    A folder cannot be renamed over a non-empty one, so the old folder is first renamed aside and deleted after: a
    crash between those two renames is the only moment with nothing at ``path``. Errors are raised as for
    ``atomic_write``: ``OSError`` naming ``path``.
    """
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    with _cleaned_up_as_oserror(path, lambda: shutil.rmtree(tmp, ignore_errors=True)):
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                with open(file, "rb+") as f:
                    os.fsync(f.fileno())
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
