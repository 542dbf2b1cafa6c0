"""Train a Llama 3 on TinyStories: one process, or several under ``torchrun`` (DDP).

    python -m llama3 train --data ../shared/tinystories --tokenizer assets/checkpoints/llama3-tinystories \\
        --d-model 256 --num-layers 6 --heads 8 --group-size 2 --steps 2000 --out-dir runs/main
    torchrun --nproc_per_node=2 -m llama3 train ...   # the same run, the batch split over 2 processes

What it does, following nanoGPT's train.py: AdamW (no weight decay on norms and embeddings), linear warm-up then
cosine decay (``lr_schedule``), gradient clipping, gradient accumulation, bfloat16 autocast on CUDA (and on the CPU
when asked), an evaluation on held-out text every ``--eval-interval`` steps, a tqdm bar (loss, lr, tokens/s), the
metrics in ``metrics.jsonl`` and the curves in ``loss.png``. The loss is the model's own
(``Llama3.forward(x, labels=x)``: next-token cross-entropy, shifted inside the model).

The functions below follow a run: the settings, the data, the model, resuming, one step, evaluation, saving, and
``train`` that strings them together.

Nothing is lost: checkpoints (``checkpoint.pt``, every ``--ckpt-interval`` steps) hold the model, the optimiser, the
scheduler, the step, the RNG states and the data sampler's generator, so ``--resume`` continues exactly where the run
stopped (the losses after a resume equal those of an uninterrupted run). Every file is written atomically
(``llama3.files``), so a crash, a kill or a full disk never destroys the previous checkpoint; a failed save warns and
training goes on. Ctrl-C stops at the end of the current step with a checkpoint (exit status 130); a second Ctrl-C
quits at once. One training at a time may use an ``--out-dir`` (a lock). ``model/`` beside the checkpoint is the
latest model in ``save_pretrained`` form (config, safetensors and tokenizer), ready for
``python -m llama3 generate --model``.

The batch: ``--batch-size`` windows of ``--seq-len`` tokens per micro-step, for the whole job (split evenly over the
DDP processes, so a run gives the same losses on 1 or N processes), times ``--grad-accum`` micro-steps per step.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import fcntl
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from llama3.config import ModelArgs
from llama3.data import HUB, TokenDataset, load_tokens
from llama3.files import (
    CHECKPOINT_NAME,
    LOCK_NAME,
    LOSS_PLOT_NAME,
    METRICS_NAME,
    MODEL_DIR_NAME,
    atomic_dir,
    atomic_write,
    atomic_write_text,
)
from llama3.loss import compile_for_training
from llama3.model import Llama3
from llama3.plots import plot_metrics
from llama3.tokenizer import load_tokenizer

CHECKPOINT_FORMAT = "llama3-train-checkpoint-v1"
EXIT_INTERRUPTED = 130  # the shell's status for a process stopped by Ctrl-C (128 + SIGINT)


# ---------------------------------------------------------------------------------------------- the schedule
def lr_schedule(step: int, *, warmup_steps: int, total_steps: int, max_lr: float, min_lr: float) -> float:
    """The learning rate at ``step``: linear warm-up from 0 to max_lr over warmup_steps, then a cosine decay to
    min_lr at total_steps, and min_lr after (Loshchilov & Hutter, 2017, "SGDR"; as in nanoGPT and Llama)."""
    if warmup_steps < 0 or total_steps < 1 or warmup_steps > total_steps:
        raise ValueError(f"Need 0 <= warmup_steps <= total_steps and total_steps >= 1, got warmup_steps="
                         f"{warmup_steps}, total_steps={total_steps}.")
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


# ------------------------------------------------------------------------------------------------ the settings
def setting(default, help: str):
    """A TrainConfig field with its --help text."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Every setting of a run. Fields in ``RESUMABLE`` may change on ``--resume``; the rest must match."""

    data: str | None = setting(None, f"TinyStories text file or folder, or '{HUB}' for the full data (1.9 GB, "
                                     f"opt-in) (default: $LLAMA3_TINYSTORIES, else a 2 MB slice read from the hub, "
                                     f"else the excerpt shipped in assets/tinystories/)")
    val_data: str | None = setting(None, "validation text (default: the validation files next to --data, or the "
                                         "last 5%% of a single --data file)")
    tokenizer: str | None = setting(None, "tokenizer folder (default: the vendored GPT-2)")
    out_dir: str = setting("runs/train", "folder for checkpoint.pt, model/, metrics.jsonl and loss.png")
    # model
    d_model: int = setting(256, "model width")
    heads: int = setting(8, "query heads")
    group_size: int = setting(2, "query heads per key/value head (GQA)")
    num_layers: int = setting(6, "decoder layers")
    seq_len: int = setting(256, "training window in tokens; also the model's max_seq_len")
    multiple_of: int = setting(32, "the FFN hidden size is rounded up to a multiple of this")
    ffn_hidden_dim: int | None = setting(None, "FFN hidden size (default: Llama's rule with --multiple-of)")
    tie_embeddings: bool = setting(False, "share the input embedding and the output head")
    dropout: float = setting(0.0, "dropout probability in [0, 1)")
    init_from: str | None = setting(None, "start from the weights in this save_pretrained folder (default: a random "
                                          "init)")
    # optimisation
    batch_size: int = setting(16, "windows per micro-step, over all processes")
    grad_accum: int = setting(1, "micro-steps per optimiser step")
    steps: int = setting(1000, "optimiser steps; the cosine reaches --min-lr here")
    warmup_steps: int | None = setting(None, "steps of linear warm-up from 0 to --lr (default: 100, or every step of "
                                             "a shorter run: --steps 5 is a smoke test)")
    lr: float = setting(1e-3, "peak learning rate")
    min_lr: float = setting(1e-4, "learning rate at the end of the cosine")
    weight_decay: float = setting(0.1, "AdamW weight decay of the layers' matrices")
    beta1: float = setting(0.9, "AdamW beta1")
    beta2: float = setting(0.95, "AdamW beta2")
    grad_clip: float = setting(1.0, "clip the gradient norm to this; 0 turns clipping off")
    seed: int = setting(1337, "seed of the initial weights and of the data order")
    dtype: str = setting("auto", "autocast dtype: auto (bfloat16 on CUDA, float32 on the CPU), bfloat16 or float32")
    # bookkeeping (may change on resume)
    device: str = setting("auto", "auto (cuda when available, else cpu), cpu, cuda, cuda:N or mps")
    eval_interval: int = setting(100, "evaluate every this many steps")
    eval_windows: int = setting(64, "validation windows per evaluation (the same ones every time)")
    log_interval: int = setting(10, "log the training loss every this many steps")
    ckpt_interval: int = setting(100, "save a checkpoint every this many steps")
    save_dtype: str = setting("float32", "dtype of the exported model/ weights: float32 or bfloat16 (half the file)")
    resume: bool = setting(False, "continue the run in --out-dir from its checkpoint.pt")
    stop_after: int | None = setting(None, "stop (with a checkpoint) after this step, as if interrupted (default: "
                                           "at --steps)")
    max_minutes: float | None = setting(None, "stop (with a checkpoint) after this much training time in this "
                                              "process (default: no limit)")
    threads: int | None = setting(None, "CPU threads (default: torch's choice, shared out among DDP processes)")
    progress: bool = setting(True, "show a progress bar")
    compile: bool = setting(False, "torch.compile the decoder layers (llama3.loss.compile_for_training): faster "
                                   "steps after a minute of compiling")

    RESUMABLE = ("out_dir", "device", "eval_interval", "eval_windows", "log_interval", "ckpt_interval", "save_dtype",
                 "resume", "stop_after", "max_minutes", "threads", "progress", "data", "val_data", "tokenizer",
                 "compile")

    def __post_init__(self) -> None:
        if self.warmup_steps is None:
            self.warmup_steps = min(100, self.steps)

    def validate(self) -> None:
        """Refuse impossible settings with the flag's name (ValueError), before any work is done."""
        def flag(name: str) -> str:
            return "--" + name.replace("_", "-")

        for name in ("d_model", "heads", "group_size", "num_layers", "batch_size", "grad_accum", "steps", "seq_len",
                     "multiple_of", "eval_interval", "eval_windows", "log_interval", "ckpt_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{flag(name)} must be at least 1, got {getattr(self, name)}.")
        for name in ("ffn_hidden_dim", "stop_after", "threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{flag(name)} must be at least 1 (or left out), got {getattr(self, name)}.")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"--warmup-steps must be in [0, --steps={self.steps}], got {self.warmup_steps}.")
        if not (math.isfinite(self.lr) and self.lr > 0 and 0 <= self.min_lr <= self.lr):
            raise ValueError(f"Need 0 <= --min-lr <= --lr and --lr > 0, got lr={self.lr}, min_lr={self.min_lr}.")
        for name, low, high in (("dropout", 0.0, 1.0), ("beta1", 0.0, 1.0), ("beta2", 0.0, 1.0)):
            if not low <= getattr(self, name) < high:
                raise ValueError(f"{flag(name)} must be in [{low}, {high}), got {getattr(self, name)}.")
        for name in ("weight_decay", "grad_clip"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{flag(name)} must be a number >= 0, got {getattr(self, name)}.")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"--max-minutes must be > 0 (or left out), got {self.max_minutes}.")
        for name, allowed in (("dtype", ("auto", "float32", "bfloat16")), ("save_dtype", ("float32", "bfloat16"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{flag(name)} must be {' or '.join(allowed)}, got {getattr(self, name)!r}.")
        check_device(self.device)

    def model_args(self, tokenizer) -> ModelArgs:
        return ModelArgs(len(tokenizer), tokenizer, d_model=self.d_model, heads=self.heads, group_size=self.group_size,
                         num_layers=self.num_layers, max_seq_len=self.seq_len, multiple_of=self.multiple_of,
                         ffn_hidden_dim=self.ffn_hidden_dim, tie_embeddings=self.tie_embeddings, dropout=self.dropout)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------- device and processes
def check_device(device: str) -> None:
    """--device must name a device this torch build has (ValueError otherwise, before any work)."""
    if device == "auto":
        return
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {device!r} is not a device: use auto, cpu, cuda, cuda:N or mps.") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device} but CUDA is not available (this torch build or machine has no GPU): "
                         f"use --device cpu, or auto.")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device} but Apple's MPS is not available here: use --device cpu, or auto.")
    if kind not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {device!r} is not supported for training: use auto, cpu, cuda, cuda:N or mps.")


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def master(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Dist:
    """Under torchrun (WORLD_SIZE > 1): join the process group, nccl on CUDA, gloo on the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(device: str, ddp: Dist) -> str:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and ddp.world > 1:
        device = f"cuda:{ddp.local_rank}"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    return device


def agree(flag: bool, ddp: Dist, device: str) -> bool:
    """True on every process when it is true on any (all processes must take the same decision)."""
    if ddp.world == 1:
        return flag
    value = torch.tensor(float(flag), device=device)
    dist.all_reduce(value)
    return bool(value.item())


# ------------------------------------------------------------------------------------------- the out-dir
class OutDirBusy(RuntimeError):
    """Another training holds the lock of this --out-dir."""


def lock_out_dir(out: Path) -> IO:
    """Create ``out`` and lock it for this process (flock on out/.lock), so that two trainings never write the same
    checkpoint. The lock goes with the returned file (close it to release) or with the process, however it ends:
    a killed run leaves no stale lock."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = open(out / LOCK_NAME, "a+")
    except OSError as err:
        raise OSError(f"Cannot write in --out-dir {out} ({err.strerror or err}): choose a folder you can write "
                      f"to.") from err
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        owner = lock.read().strip() or "unknown"
        lock.close()
        raise OutDirBusy(f"{out} is in use by another training (pid {owner}): wait for it to end, or choose another "
                         f"--out-dir.") from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")  # for the message above; the lock itself is the flock
    lock.flush()
    remove_leftovers(out)
    return lock


def remove_leftovers(out: Path) -> None:
    """Delete the temporary files and folders a killed run left in ``out`` (llama3.files names them
    .NAME.*); safe only while holding the lock, when nothing else writes there."""
    for name in (CHECKPOINT_NAME, METRICS_NAME, LOSS_PLOT_NAME, MODEL_DIR_NAME):
        for leftover in out.glob(f".{name}.*"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


class StopOnInterrupt:
    """While active, Ctrl-C (SIGINT) only asks the loop to stop at the end of the current step, so the checkpoint
    saved then is a whole step's state and --resume continues bit-exactly. A second Ctrl-C quits at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: stopping after this step with a checkpoint (Ctrl-C again to quit at once, without one).",
              file=sys.stderr, flush=True)

    def __enter__(self) -> StopOnInterrupt:
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by ``train`` after Ctrl-C, once the checkpoint of the last whole step is saved (or could not be)."""

    def __init__(self, step: int, out: Path, saved: bool):
        self.step, self.out, self.saved = step, out, saved
        where = f"checkpoint saved in {out}; continue with --resume" if saved else "the checkpoint could not be saved"
        super().__init__(f"interrupted at step {step}: {where}.")


# ------------------------------------------------------------------------------------------------ the data
def load_data(config: TrainConfig, tokenizer) -> tuple[TokenDataset, TokenDataset]:
    """The training and validation token streams: the validation files beside --data (or --val-data), or, for a
    single text file, its last 5 %."""
    train_data = TokenDataset(load_tokens("train", tokenizer, config.data), config.seq_len)
    if config.val_data is not None or config.data in (None, HUB) or Path(config.data).is_dir():
        val_data = TokenDataset(load_tokens("validation", tokenizer, config.val_data or config.data), config.seq_len)
        return train_data, val_data
    tokens = train_data.tokens
    cut = int(len(tokens) * 0.95)
    return TokenDataset(tokens[:cut], config.seq_len), TokenDataset(tokens[cut:], config.seq_len)


def local_batch(data: TokenDataset, config: TrainConfig, generator: torch.Generator, ddp: Dist,
                device: str) -> torch.Tensor:
    """This process's share of the next global batch: rows [rank * B/world, (rank + 1) * B/world) of the
    ``--batch-size`` windows every process draws alike (same generator state), as (B/world, seq_len) ids."""
    x, _ = data.get_batch(config.batch_size, generator)  # (B, T); the targets are x shifted, inside the model
    share = config.batch_size // ddp.world
    return x[ddp.rank * share:(ddp.rank + 1) * share].to(device)


# ----------------------------------------------------------------------------------------------- the model
def build_model(config: TrainConfig, tokenizer, device: str) -> Llama3:
    """A fresh model from the seed, or the weights of --init-from (a second phase: same architecture)."""
    torch.manual_seed(config.seed)
    model_args = config.model_args(tokenizer)
    model = Llama3(model_args).to(device)
    if config.init_from is not None:
        start = Llama3.from_pretrained(config.init_from)
        if start.args.to_dict() != model_args.to_dict():
            raise ValueError(f"--init-from {config.init_from} holds a model with other settings than this run's: "
                             f"{start.args.to_dict()} vs {model_args.to_dict()}. Use the same --d-model, --heads...")
        model.load_state_dict({k: v.float() for k, v in start.state_dict().items()})
    return model


def configure_optimizer(model: Llama3, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; matrices in the layers decay, norms and the embedding do not (as in nanoGPT)."""
    params = {id(p): (n, p) for n, p in model.named_parameters() if p.requires_grad}.values()  # tied weights once
    decay = [p for n, p in params if p.dim() >= 2 and "tok_embeddings" not in n]
    no_decay = [p for n, p in params if not (p.dim() >= 2 and "tok_embeddings" not in n)]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), foreach=True)


def configure_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """lr_schedule as a multiplier of --lr, stepped once per optimiser step."""
    def factor(step: int) -> float:
        return lr_schedule(step, warmup_steps=config.warmup_steps, total_steps=config.steps, max_lr=config.lr,
                           min_lr=config.min_lr) / config.lr

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def autocast_dtype(config: TrainConfig, device: str) -> torch.dtype | None:
    if config.dtype == "bfloat16" or (config.dtype == "auto" and device.startswith("cuda")):
        return torch.bfloat16
    return None


def autocast(device: str, amp: torch.dtype | None):
    """bfloat16 autocast when ``amp`` says so, else a no-op context."""
    return torch.autocast(torch.device(device).type, dtype=amp or torch.float32, enabled=amp is not None)


# ------------------------------------------------------------------------------------------------- resuming
@dataclass
class Progress:
    """Where a run stands; saved in the checkpoint."""

    step: int = 0
    tokens: int = 0
    train_time: float = 0.0  # seconds spent in training steps, over all resumed sessions


def load_checkpoint(path: Path) -> dict:
    """Read a training checkpoint, with a clear error for a missing, corrupt or foreign file."""
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path} to resume from: run without --resume to start a new run.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, garbage bytes, an unpickling error...
        raise ValueError(f"The checkpoint {path} is corrupt or unreadable ({type(err).__name__}: {err}). Delete it to "
                         f"start again, or restore a good copy.") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a training checkpoint of this package (format "
                         f"{state.get('format') if isinstance(state, dict) else type(state).__name__!r}, expected "
                         f"{CHECKPOINT_FORMAT!r}).")
    return state


def check_resume_config(saved: dict, config: TrainConfig, path: Path) -> None:
    """A resumed run must be the same run: every setting outside TrainConfig.RESUMABLE must match."""
    current = config.to_dict()
    diffs = [f"{k}: checkpoint {saved.get(k)!r}, now {current[k]!r}" for k in current
             if k not in TrainConfig.RESUMABLE and saved.get(k) != current[k]]
    if diffs:
        raise ValueError(f"The checkpoint {path} was made with different settings, so resuming would not continue the "
                         f"same run: {'; '.join(diffs)}. Use the original settings, or a new --out-dir.")


def rng_state(device: str) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.startswith("cuda"):
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, device: str) -> None:
    torch.set_rng_state(state["torch"])
    if device.startswith("cuda") and "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def resume(path: Path, config: TrainConfig, model: Llama3, optimizer, scheduler, data_gen: torch.Generator,
           device: str) -> Progress:
    """Put the run back in the state of the checkpoint at ``path``: weights, optimiser, schedule, data position and
    RNG states; returns its progress."""
    state = load_checkpoint(path)
    check_resume_config(state["config"], config, path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    data_gen.set_state(state["data_generator"])
    set_rng_state(state["rng"], device)
    return Progress(state["step"], state["tokens"], state["train_time"])


# ------------------------------------------------------------------------------------------------- a step
def train_step(model, optimizer, scheduler, config: TrainConfig, next_batch, ddp: Dist, device: str,
               amp: torch.dtype | None) -> torch.Tensor:
    """One optimiser step over ``--grad-accum`` micro-batches (``next_batch()`` gives each); returns the mean loss
    of this process's windows (a tensor, not yet synchronised). Under DDP the gradients are averaged over the
    processes at the last micro-batch only."""
    loss_sum = torch.zeros((), device=device)
    for micro in range(config.grad_accum):
        x = next_batch()  # (B / world, T)
        sync = micro == config.grad_accum - 1 or ddp.world == 1
        with nullcontext() if sync else model.no_sync():
            with autocast(device, amp):
                # the model's loss (labels shift inside, as in transformers), the head and the loss by chunks
                # (llama3.loss): the (B, T, vocab) float32 logits are never built
                loss = model(x, labels=x, return_logits=False).loss
            (loss / config.grad_accum).backward()
        loss_sum += loss.detach()
    raw = model.module if ddp.world > 1 else model
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(raw.parameters(), config.grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum / config.grad_accum


# ------------------------------------------------------------------------------------------------ evaluating
@torch.no_grad()
def estimate_loss(model: Llama3, dataset: TokenDataset, windows: int, batch_size: int, device: str,
                  amp: torch.dtype | None) -> float:
    """Mean next-token loss (the model's own, per predicted token) on the first ``windows`` windows of ``dataset``:
    the same windows every time, so evaluations at different steps compare."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for x, _ in dataset.eval_batches(batch_size, windows, device):
        with autocast(device, amp):
            loss = model(x, labels=x, return_logits=False).loss  # mean over the B * (T - 1) predicted tokens
        n = x.shape[0] * (x.shape[1] - 1)
        total += loss.item() * n
        count += n
    model.train(was_training)
    return total / count


# ------------------------------------------------------------------------------------------------- saving
def warn(message: str) -> None:
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


def read_metrics(path: Path, up_to_step: int | None = None) -> list[dict]:
    """metrics.jsonl's rows up to ``up_to_step``. A cut-off last line (a crash while it was written) is dropped
    with a warning; a damaged line before it is an error naming the file and the line."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ValueError("not a metrics row")
        except ValueError as err:
            if number == len(lines):
                warn(f"dropped the cut-off last line of {path} (line {number}): {line[:60]!r}")
                continue
            raise ValueError(f"{path} line {number} is damaged ({err}): fix or delete that line.") from None
        rows.append(row)
    return [r for r in rows if up_to_step is None or r["step"] <= up_to_step]


def write_metrics(rows: list[dict], path: Path) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def checkpoint_state(config: TrainConfig, model: Llama3, optimizer, scheduler, data_gen: torch.Generator,
                     device: str, progress: Progress) -> dict:
    """Everything --resume needs to continue the run bit-exactly."""
    return {"format": CHECKPOINT_FORMAT, "config": config.to_dict(), "model_args": model.args.to_dict(),
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "data_generator": data_gen.get_state(), "rng": rng_state(device), "step": progress.step,
            "tokens": progress.tokens, "train_time": progress.train_time}


def save_checkpoint(state: dict, path: Path) -> None:
    """torch.save through llama3.files.atomic_write: the previous checkpoint survives any failure (OSError)."""
    with atomic_write(path) as f:
        torch.save(state, f)


def export_model(model: Llama3, tokenizer, folder: Path, dtype: str) -> None:
    """The model in save_pretrained form (config + safetensors + tokenizer), in ``dtype``, replacing ``folder`` as a
    whole only once every file is written (OSError otherwise, the previous folder untouched)."""
    export = copy.deepcopy(model).to(torch.bfloat16) if dtype == "bfloat16" else model
    with atomic_dir(folder) as tmp:
        export.save_pretrained(tmp, tokenizer=tokenizer)


def save_run(out: Path, state: dict, model: Llama3, tokenizer, rows: list[dict], config: TrainConfig) -> bool:
    """Write the checkpoint, model/, metrics.jsonl and loss.png. A failure (a full disk) warns and training goes on:
    every file is replaced atomically, so the previous version stays. Returns whether the checkpoint was saved."""
    step = state["step"]
    try:
        save_checkpoint(state, out / CHECKPOINT_NAME)
        saved = True
    except OSError as err:
        saved = False
        warn(f"could not save the checkpoint at step {step} ({err}); the previous checkpoint in {out} is unchanged. "
             f"Free some space: the next save is at step {step + config.ckpt_interval}.")
    writers = [("model/", lambda: export_model(model, tokenizer, out / MODEL_DIR_NAME, config.save_dtype)),
               (METRICS_NAME, lambda: write_metrics(rows, out / METRICS_NAME)),
               (LOSS_PLOT_NAME, lambda: plot_metrics(rows, out / LOSS_PLOT_NAME,
                                                     f"{model.num_parameters() / 1e6:.2f}M parameters"))]
    for name, write in writers:
        try:
            write()
        except OSError as err:
            warn(f"could not write {name} at step {step} ({err}); the previous one in {out} is unchanged.")
    return saved


# ------------------------------------------------------------------------------------------------- training
@dataclass
class Run:
    """A run's objects, built in the order of a run by ``Run.start``; ``loop`` trains, logs, evaluates and saves."""

    config: TrainConfig
    ddp: Dist
    device: str
    out: Path
    tokenizer: object
    train_data: TokenDataset
    val_data: TokenDataset
    model: Llama3  # the model itself (DDP wraps it in ``step_model``)
    step_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    data_gen: torch.Generator
    progress: Progress
    rows: list[dict]
    metrics_ok: bool = True

    @classmethod
    def start(cls, config: TrainConfig, ddp: Dist, device: str, out: Path) -> Run:
        """Data, model, optimiser and schedule; then the checkpoint's state on --resume."""
        ckpt_path, metrics_path = out / CHECKPOINT_NAME, out / METRICS_NAME
        if not config.resume and ckpt_path.exists():
            raise FileExistsError(f"{ckpt_path} exists: pass --resume to continue that run, or choose another "
                                  f"--out-dir.")
        with warnings.catch_warnings():  # AutoTokenizer reads a checkpoint folder's config.json too: noise
            warnings.simplefilter("ignore", FutureWarning)
            tokenizer = load_tokenizer(config.tokenizer)
        train_data, val_data = load_data(config, tokenizer)
        model = build_model(config, tokenizer, device)
        optimizer = configure_optimizer(model, config)
        scheduler = configure_scheduler(optimizer, config)
        data_gen = torch.Generator().manual_seed(config.seed + 1)  # the data position: every process draws the same
        progress = Progress()
        if config.resume:
            progress = resume(ckpt_path, config, model, optimizer, scheduler, data_gen, device)
        rows = read_metrics(metrics_path, progress.step) if config.resume else []
        if ddp.master:
            write_metrics(rows, metrics_path)  # without the rows of steps after the checkpoint
        if config.compile:
            compile_for_training(model)
        step_model = model
        if ddp.world > 1:
            step_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[ddp.local_rank] if device.startswith("cuda") else None)
        return cls(config, ddp, device, out, tokenizer, train_data, val_data, model, step_model, optimizer, scheduler,
                   data_gen, progress, rows)

    def log(self, row: dict) -> None:
        """Keep ``row`` and append it to metrics.jsonl (which every save rewrites whole, so a failed append heals)."""
        self.rows.append(row)
        if not self.ddp.master:
            return
        try:
            with open(self.out / METRICS_NAME, "a") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as err:
            if self.metrics_ok:
                warn(f"could not append to {self.out / METRICS_NAME} ({err}); the rows are kept and written at the "
                     f"next save.")
            self.metrics_ok = False

    def save(self) -> bool:
        """Checkpoint, model/, metrics and plot (the master process writes); whether the checkpoint was saved."""
        saved = True
        if self.ddp.master:
            state = checkpoint_state(self.config, self.model, self.optimizer, self.scheduler, self.data_gen,
                                     self.device, self.progress)
            saved = save_run(self.out, state, self.model, self.tokenizer, self.rows, self.config)
        if self.ddp.world > 1:
            dist.barrier()
        return saved

    def evaluate(self, amp: torch.dtype | None) -> None:
        if self.ddp.master:
            val = estimate_loss(self.model, self.val_data, self.config.eval_windows,
                                self.config.batch_size // self.ddp.world, self.device, amp)
            self.log({"step": self.progress.step, "tokens": self.progress.tokens, "val_loss": val,
                      "train_time_s": round(self.progress.train_time, 2)})
            if self.config.progress:
                tqdm.write(f"step {self.progress.step}: validation loss {val:.4f} "
                           f"({self.progress.tokens / 1e6:.2f}M tokens)", file=sys.stderr)
        if self.ddp.world > 1:
            dist.barrier()

    def loop(self) -> None:
        """Train to --steps (or --stop-after, --max-minutes, Ctrl-C), logging, evaluating and saving on the way."""
        config, ddp, device, progress = self.config, self.ddp, self.device, self.progress
        amp = autocast_dtype(config, device)
        tokens_per_step = config.batch_size * config.grad_accum * config.seq_len
        next_batch = lambda: local_batch(self.train_data, config, self.data_gen, ddp, device)
        if ddp.master:
            print(f"{self.model.num_parameters() / 1e6:.2f}M parameters, {len(self.train_data.tokens) / 1e6:.2f}M "
                  f"training tokens, {tokens_per_step} tokens per step, device {device}, {ddp.world} process(es)",
                  file=sys.stderr)
        bar = tqdm(total=config.steps, initial=progress.step, desc="train", mininterval=2.0,
                   disable=not (config.progress and ddp.master))
        last_stop = config.steps if config.stop_after is None else min(config.steps, config.stop_after)
        started = window_start = time.perf_counter()
        window_tokens, saved, stop = 0, True, False
        self.step_model.train()
        with StopOnInterrupt() as interrupt:
            while progress.step < last_stop and not stop:
                t0 = time.perf_counter()
                lr = self.optimizer.param_groups[0]["lr"]
                loss = train_step(self.step_model, self.optimizer, self.scheduler, config, next_batch, ddp, device,
                                  amp)
                progress.step += 1
                progress.tokens += tokens_per_step
                progress.train_time += time.perf_counter() - t0
                window_tokens += tokens_per_step
                step = progress.step
                if step % config.log_interval == 0 or step == last_stop:
                    if ddp.world > 1:
                        dist.all_reduce(loss)
                        loss = loss / ddp.world
                    now = time.perf_counter()
                    tok_s = window_tokens / max(now - window_start, 1e-9)
                    window_tokens, window_start = 0, now
                    self.log({"step": step, "tokens": progress.tokens, "loss": loss.item(), "lr": lr,
                              "tokens_per_s": tok_s, "train_time_s": round(progress.train_time, 2)})
                    bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}", tok_s=f"{tok_s:.0f}", refresh=False)
                if step % config.eval_interval == 0 or step == config.steps:
                    self.evaluate(amp)
                bar.update(1)
                out_of_time = config.max_minutes is not None and time.perf_counter() - started > 60 * config.max_minutes
                stop = agree(out_of_time or interrupt.requested, ddp, device)
                if step % config.ckpt_interval == 0 or step == last_stop or stop:
                    saved = self.save()
        bar.close()
        if interrupt.requested:
            raise TrainingInterrupted(progress.step, self.out, saved)


def train(config: TrainConfig) -> list[dict]:
    """Run (or resume) training as ``config`` says. Returns the metric rows (the content of metrics.jsonl).

    Raises TrainingInterrupted (a KeyboardInterrupt) after Ctrl-C, once the checkpoint is saved; OutDirBusy when
    another training uses --out-dir; ValueError / FileNotFoundError / FileExistsError for bad settings.
    """
    config.validate()
    ddp = setup_distributed(config.device if config.device != "auto" else
                            ("cuda" if torch.cuda.is_available() else "cpu"))
    if config.batch_size % ddp.world:
        raise ValueError(f"--batch-size {config.batch_size} must be divisible by the number of processes {ddp.world}.")
    device = resolve_device(config.device, ddp)
    if config.threads:
        torch.set_num_threads(config.threads)
    elif ddp.world > 1 and not device.startswith("cuda"):
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ddp.world))
    out = Path(config.out_dir)
    lock, error = None, None
    if ddp.master:  # one process locks; all of them stop if it could not
        try:
            lock = lock_out_dir(out)
        except (OSError, OutDirBusy) as err:
            error = err
    if agree(error is not None, ddp, device):
        raise error or OutDirBusy(f"The first process could not lock --out-dir {out}: see its message.")
    try:
        run = Run.start(config, ddp, device, out)
        run.loop()
        return run.rows
    finally:
        if lock is not None:
            lock.close()
        if ddp.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------------ CLI
class HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help ends with its default; an option whose default is None says in words what it does."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """One flag per TrainConfig field, with its help and its default."""
    parser = parser or argparse.ArgumentParser(prog="python -m llama3 train")
    parser.description = __doc__.split("\n\n")[0]
    parser.formatter_class = HelpWithDefaults
    kinds = {"int": int, "float": float, "str": str, "int | None": int, "float | None": float, "str | None": str}
    for f in dataclasses.fields(TrainConfig):
        flag, default, help_ = "--" + f.name.replace("_", "-"), f.default, f.metadata["help"]  # None stays None
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_)
        else:
            parser.add_argument(flag, type=kinds[f.type], default=default, help=help_)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m llama3 train``. Ctrl-C ends with one line saying where the checkpoint is, status 130; the other
    expected errors (bad settings, a busy or unwritable --out-dir) are raised for the command line's entry point,
    ``llama3.__main__.run``, which prints each as one line."""
    config = TrainConfig(**vars(build_parser().parse_args(argv)))
    try:
        train(config)
    except TrainingInterrupted as err:
        print(f"\n{err}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0

if __name__ == "__main__":
    sys.exit(main())
