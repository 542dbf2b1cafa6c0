"""Train a Llama 3 on TinyStories: one process, or several under ``torchrun`` (DDP).

    python -m llama3 train --data ../shared/tinystories --tokenizer assets/checkpoints/llama3-tinystories \\
        --d-model 256 --num-layers 6 --heads 8 --group-size 2 --steps 2000 --out-dir runs/main
    torchrun --nproc_per_node=2 -m llama3 train ...   # the same run, the batch split over 2 processes

What it does, following nanoGPT's train.py: AdamW (no weight decay on norms and embeddings), linear warm-up then
cosine decay (``lr_schedule``), gradient clipping, gradient accumulation, bfloat16 autocast on CUDA (and on the CPU
when asked), an evaluation on held-out text every ``--eval-interval`` steps, a tqdm bar (loss, lr, tokens/s), the
metrics in ``metrics.jsonl`` and the curves in ``loss.png``.

Checkpoints (``checkpoint.pt``, every ``--ckpt-interval`` steps) hold the model, the optimiser, the scheduler, the
step, the RNG states and the data sampler's generator, so ``--resume`` continues exactly where the run stopped: the
losses after a resume equal those of an uninterrupted run. A checkpoint is written under a temporary name and renamed,
so a crash or a full disk while saving never destroys the previous one. ``model/`` beside it is the latest model in
``save_pretrained`` form (config, safetensors and tokenizer), ready for ``python -m llama3 generate --model``.

The batch: ``--batch-size`` windows of ``--seq-len`` tokens per micro-step, for the whole job (split evenly over the
DDP processes, so a run gives the same losses on 1 or N processes), times ``--grad-accum`` micro-steps per step.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from llama3.config import ModelArgs
from llama3.data import HUB, TokenDataset, load_tokens
from llama3.model import Llama3
from llama3.tokenizer import load_tokenizer

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "llama3-train-checkpoint-v1"


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


# ------------------------------------------------------------------------------------------------ the config
@dataclass
class TrainConfig:
    """Every setting of a run. Fields in ``RESUMABLE`` may change on ``--resume``; the rest must match."""

    data: str | None = None  # TinyStories file or folder, or 'hub' for the full data (1.9 GB, opt-in); default:
    # $LLAMA3_TINYSTORIES, else a 2 MB slice read from the hub, else the excerpt in assets/tinystories/
    val_data: str | None = None  # validation text (default: the validation split next to --data)
    tokenizer: str | None = None  # tokenizer folder (default: the vendored GPT-2)
    out_dir: str = "runs/train"
    # model
    d_model: int = 256
    heads: int = 8
    group_size: int = 2
    num_layers: int = 6
    seq_len: int = 256  # training window; also the model's max_seq_len
    multiple_of: int = 32
    ffn_hidden_dim: int | None = None
    tie_embeddings: bool = False
    dropout: float = 0.0
    init_from: str | None = None  # start from these weights (a save_pretrained folder) instead of a random init
    # optimisation
    batch_size: int = 16  # windows per micro-step, over all processes
    grad_accum: int = 1  # micro-steps per optimiser step
    steps: int = 1000  # optimiser steps; the cosine reaches min_lr here
    warmup_steps: int | None = None  # None: 100, or every step of a shorter run (`--steps 5` is a smoke test)
    lr: float = 1e-3
    min_lr: float = 1e-4
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 turns clipping off
    seed: int = 1337
    dtype: str = "auto"  # autocast dtype: auto = bfloat16 on CUDA, float32 on the CPU; or bfloat16 / float32
    # bookkeeping (may change on resume)
    device: str = "auto"
    eval_interval: int = 100
    eval_windows: int = 64  # validation windows per evaluation (the same ones every time)
    log_interval: int = 10
    ckpt_interval: int = 100
    save_dtype: str = "float32"  # dtype of the exported model/ weights (bfloat16 halves the file)
    resume: bool = False
    stop_after: int | None = None  # stop (with a checkpoint) after this step, as if interrupted
    max_minutes: float | None = None  # stop (with a checkpoint) after this much training time in this process
    threads: int | None = None
    progress: bool = True

    RESUMABLE = ("out_dir", "device", "eval_interval", "eval_windows", "log_interval", "ckpt_interval", "save_dtype",
                 "resume", "stop_after", "max_minutes", "threads", "progress", "data", "val_data", "tokenizer")

    def __post_init__(self) -> None:
        if self.warmup_steps is None:
            self.warmup_steps = min(100, self.steps)

    def validate(self) -> None:
        for name in ("batch_size", "grad_accum", "steps", "seq_len", "eval_interval", "eval_windows", "log_interval",
                     "ckpt_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}.")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"--warmup-steps must be in [0, --steps={self.steps}], got {self.warmup_steps}.")
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError(f"Need 0 <= --min-lr <= --lr and --lr > 0, got lr={self.lr}, min_lr={self.min_lr}.")
        for name in ("dtype", "save_dtype"):
            allowed = ("auto", "float32", "bfloat16") if name == "dtype" else ("float32", "bfloat16")
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name.replace('_', '-')} must be float32 or bfloat16"
                                 f"{' or auto' if name == 'dtype' else ''}, got {getattr(self, name)!r}.")

    def model_args(self, tokenizer) -> ModelArgs:
        return ModelArgs(len(tokenizer), tokenizer, d_model=self.d_model, heads=self.heads, group_size=self.group_size,
                         num_layers=self.num_layers, max_seq_len=self.seq_len, multiple_of=self.multiple_of,
                         ffn_hidden_dim=self.ffn_hidden_dim, tie_embeddings=self.tie_embeddings, dropout=self.dropout)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------- distributed
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


# ------------------------------------------------------------------------------------------------ checkpoints
def atomic_torch_save(obj, path: Path) -> None:
    """torch.save to ``path`` through a temporary file and a rename. On any error (a full disk) the temporary file
    is removed and the previous file at ``path`` is left as it was; the error is raised again."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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


# --------------------------------------------------------------------------------------------------- helpers
def configure_optimizer(model: Llama3, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; matrices in the layers decay, norms and the embedding do not (as in nanoGPT)."""
    params = {id(p): (n, p) for n, p in model.named_parameters() if p.requires_grad}.values()  # tied weights once
    decay = [p for n, p in params if p.dim() >= 2 and "tok_embeddings" not in n]
    no_decay = [p for n, p in params if not (p.dim() >= 2 and "tok_embeddings" not in n)]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), foreach=True)


def autocast_dtype(config: TrainConfig, device: str) -> torch.dtype | None:
    if config.dtype == "bfloat16" or (config.dtype == "auto" and device.startswith("cuda")):
        return torch.bfloat16
    return None


@torch.no_grad()
def estimate_loss(model: Llama3, dataset: TokenDataset, windows: int, batch_size: int, device: str,
                  amp: torch.dtype | None) -> float:
    """Mean next-token loss on the first ``windows`` windows of ``dataset`` (the same windows every time)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for x, y in dataset.eval_batches(batch_size, windows, device):
        with torch.autocast(torch.device(device).type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(x).logits
        total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return total / count


def read_metrics(path: Path, up_to_step: int | None = None) -> list[dict]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if up_to_step is None or r["step"] <= up_to_step]


def plot_metrics(rows: list[dict], path: Path, title: str = "") -> None:
    """Train and validation loss against tokens seen, written to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot([r["tokens"] / 1e6 for r in train], [r["loss"] for r in train], label="train", alpha=0.7)
    if val:
        ax.plot([r["tokens"] / 1e6 for r in val], [r["val_loss"] for r in val], "o-", label="validation")
    ax.set_xlabel("tokens seen (millions)")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def plot_runs(runs: dict[str, tuple[str | os.PathLike, int]], path: str | os.PathLike,
              max_tokens: float | None = None) -> None:
    """Loss against tokens seen (left) and against training compute (right) for several runs: the model sizes
    compared before choosing one. ``runs`` maps a label to (run folder, parameters without the input embedding);
    compute is Kaplan et al.'s 6 * parameters * tokens. Lines: training loss (mean of 5 logs); dots: validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_tokens, by_flops) = plt.subplots(1, 2, figsize=(11, 4))
    for label, (folder, n_params) in runs.items():
        rows = read_metrics(Path(folder) / "metrics.jsonl")
        rows = [r for r in rows if max_tokens is None or r["tokens"] <= max_tokens]
        train_rows = [r for r in rows if "loss" in r]
        val = [r for r in rows if "val_loss" in r]
        smooth = [sum(r["loss"] for r in train_rows[max(0, i - 4): i + 1]) / len(train_rows[max(0, i - 4): i + 1])
                  for i in range(len(train_rows))]
        for ax, scale in ((by_tokens, 1e-6), (by_flops, 6 * n_params / 1e15)):
            line, = ax.plot([r["tokens"] * scale for r in train_rows], smooth, lw=1.2, label=label)
            ax.plot([r["tokens"] * scale for r in val], [r["val_loss"] for r in val], "o", ms=4, color=line.get_color())
    by_tokens.set_xlabel("tokens seen (millions)")
    by_flops.set_xlabel("training compute (PFLOP, 6 x parameters x tokens)")
    for ax in (by_tokens, by_flops):
        ax.set_ylabel("loss (nats / token); dots: validation")
        ax.set_ylim(top=5.0)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def export_model(model: Llama3, tokenizer, folder: Path, dtype: str) -> None:
    """The model in save_pretrained form (config + safetensors + tokenizer), in ``dtype``."""
    export = model
    if dtype == "bfloat16":
        export = copy.deepcopy(model).to(torch.bfloat16)
    export.save_pretrained(folder, tokenizer=tokenizer)


# ------------------------------------------------------------------------------------------------- training
def train(config: TrainConfig) -> list[dict]:
    """Run (or resume) training as ``config`` says. Returns the metric rows (the content of metrics.jsonl)."""
    config.validate()
    ddp = setup_distributed(config.device if config.device != "auto" else
                            ("cuda" if torch.cuda.is_available() else "cpu"))
    device = resolve_device(config.device, ddp)
    if config.threads:
        torch.set_num_threads(config.threads)
    elif ddp.world > 1 and not device.startswith("cuda"):
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ddp.world))
    if config.batch_size % ddp.world:
        raise ValueError(f"--batch-size {config.batch_size} must be divisible by the number of processes {ddp.world}.")
    out = Path(config.out_dir)
    ckpt_path = out / CHECKPOINT_NAME
    metrics_path = out / "metrics.jsonl"
    if ddp.master:
        out.mkdir(parents=True, exist_ok=True)
    if not config.resume and ckpt_path.exists():
        raise FileExistsError(f"{ckpt_path} exists: pass --resume to continue that run, or choose another --out-dir.")

    with warnings.catch_warnings():  # AutoTokenizer reads a checkpoint folder's config.json too: noise
        warnings.simplefilter("ignore", FutureWarning)
        tokenizer = load_tokenizer(config.tokenizer)
    train_data = TokenDataset(load_tokens("train", tokenizer, config.data), config.seq_len)
    if config.val_data is not None or config.data in (None, HUB) or Path(config.data).is_dir():
        val_data = TokenDataset(load_tokens("validation", tokenizer, config.val_data or config.data), config.seq_len)
    else:  # a single text file: hold out its last 5 %
        tokens = train_data.tokens
        cut = int(len(tokens) * 0.95)
        train_data, val_data = TokenDataset(tokens[:cut], config.seq_len), TokenDataset(tokens[cut:], config.seq_len)

    torch.manual_seed(config.seed)  # the initial weights
    model_args = config.model_args(tokenizer)
    model = Llama3(model_args).to(device)
    if config.init_from is not None:  # a second phase: same architecture, a fresh optimiser and schedule
        start = Llama3.from_pretrained(config.init_from)
        if start.args.to_dict() != model_args.to_dict():
            raise ValueError(f"--init-from {config.init_from} holds a model with other settings than this run's: "
                             f"{start.args.to_dict()} vs {model_args.to_dict()}. Use the same --d-model, --heads...")
        model.load_state_dict({k: v.float() for k, v in start.state_dict().items()})
    optimizer = configure_optimizer(model, config)
    schedule = lambda step: lr_schedule(step, warmup_steps=config.warmup_steps, total_steps=config.steps,
                                        max_lr=config.lr, min_lr=config.min_lr) / config.lr
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    data_gen = torch.Generator().manual_seed(config.seed + 1)  # the data position: every process draws the same
    step, tokens_seen, train_time = 0, 0, 0.0
    if config.resume:
        state = load_checkpoint(ckpt_path)
        check_resume_config(state["config"], config, ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        data_gen.set_state(state["data_generator"])
        set_rng_state(state["rng"], device)
        step, tokens_seen, train_time = state["step"], state["tokens"], state["train_time"]
    rows = read_metrics(metrics_path, step) if config.resume else []
    if ddp.master:
        metrics_path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    raw_model = model
    if ddp.world > 1:
        device_ids = [ddp.local_rank] if device.startswith("cuda") else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    amp = autocast_dtype(config, device)
    local_batch = config.batch_size // ddp.world
    tokens_per_step = config.batch_size * config.grad_accum * config.seq_len
    n_params = raw_model.num_parameters()

    def log(row: dict) -> None:
        rows.append(row)
        if ddp.master:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")

    def save() -> None:
        if ddp.master:
            state = {"format": CHECKPOINT_FORMAT, "config": config.to_dict(), "model_args": model_args.to_dict(),
                     "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "data_generator": data_gen.get_state(),
                     "rng": rng_state(device), "step": step, "tokens": tokens_seen, "train_time": train_time}
            try:
                atomic_torch_save(state, ckpt_path)
                export_model(raw_model, tokenizer, out / "model", config.save_dtype)
            except OSError as err:  # a full disk: keep training, the previous checkpoint is intact
                print(f"WARNING: could not save the checkpoint at step {step} ({err}); the previous checkpoint in "
                      f"{out} is unchanged. Free some space: the next save is at step "
                      f"{step + config.ckpt_interval}.", file=sys.stderr)
            plot_metrics(rows, out / "loss.png", f"{n_params / 1e6:.2f}M parameters")
        if ddp.world > 1:
            dist.barrier()

    if ddp.master:
        print(f"{n_params / 1e6:.2f}M parameters, {len(train_data.tokens) / 1e6:.2f}M training tokens, "
              f"{tokens_per_step} tokens per step, device {device}, {ddp.world} process(es)", file=sys.stderr)
    bar = None
    if config.progress and ddp.master:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=step, desc="train", mininterval=2.0)
    last_stop = config.steps if config.stop_after is None else min(config.steps, config.stop_after)
    started = time.perf_counter()
    window_tokens, window_start = 0, time.perf_counter()
    model.train()
    while step < last_stop:
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        for micro in range(config.grad_accum):
            x, y = train_data.get_batch(config.batch_size, data_gen)  # the global batch, same on every process
            x = x[ddp.rank * local_batch:(ddp.rank + 1) * local_batch].to(device)
            y = y[ddp.rank * local_batch:(ddp.rank + 1) * local_batch].to(device)
            sync = micro == config.grad_accum - 1 or ddp.world == 1
            with (nullcontext() if sync else model.no_sync()):
                with torch.autocast(torch.device(device).type, dtype=amp or torch.float32, enabled=amp is not None):
                    logits = model(x).logits
                loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
                (loss / config.grad_accum).backward()
            loss_sum += loss.detach()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(raw_model.parameters(), config.grad_clip)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens_seen += tokens_per_step
        train_time += time.perf_counter() - t0
        window_tokens += tokens_per_step

        if step % config.log_interval == 0 or step == last_stop:
            loss_value = loss_sum / config.grad_accum
            if ddp.world > 1:
                dist.all_reduce(loss_value)
                loss_value = loss_value / ddp.world
            now = time.perf_counter()
            tok_s = window_tokens / max(now - window_start, 1e-9)
            window_tokens, window_start = 0, now
            log({"step": step, "tokens": tokens_seen, "loss": loss_value.item(), "lr": lr, "tokens_per_s": tok_s,
                 "train_time_s": round(train_time, 2)})
            if bar is not None:
                bar.set_postfix(loss=f"{loss_value.item():.3f}", lr=f"{lr:.2e}", tok_s=f"{tok_s:.0f}", refresh=False)
        if step % config.eval_interval == 0 or step == config.steps:
            if ddp.master:
                val = estimate_loss(raw_model, val_data, config.eval_windows, local_batch, device, amp)
                log({"step": step, "tokens": tokens_seen, "val_loss": val, "train_time_s": round(train_time, 2)})
                if bar is not None:
                    bar.write(f"step {step}: validation loss {val:.4f} ({tokens_seen / 1e6:.2f}M tokens)")
            if ddp.world > 1:
                dist.barrier()
        if bar is not None:
            bar.update(1)
        out_of_time = config.max_minutes is not None and time.perf_counter() - started > 60 * config.max_minutes
        if ddp.world > 1:  # every process must take the same decision
            flag = torch.tensor(float(out_of_time), device=device)
            dist.all_reduce(flag)
            out_of_time = bool(flag.item())
        if step % config.ckpt_interval == 0 or step == last_stop or out_of_time:
            save()
        if out_of_time:
            break
    if bar is not None:
        bar.close()
    if ddp.world > 1:
        dist.destroy_process_group()
    return rows


# ------------------------------------------------------------------------------------------------------ CLI
def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="python -m llama3 train")
    parser.description = __doc__.split("\n\n")[0]
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.epilog = ("--data: a TinyStories text file or folder; 'hub' downloads the full data (1.9 GB, its size said "
                     "first). Without it: $LLAMA3_TINYSTORIES, else a 2 MB slice read from the hub, else the excerpt "
                     "shipped in assets/tinystories/ (offline).")
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else getattr(defaults, f.name)  # None stays None
        if f.type in ("bool",):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            kind = {"int": int, "float": float, "str": str, "int | None": int, "float | None": float,
                    "str | None": str}[f.type]
            parser.add_argument(flag, type=kind, default=default)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    train(TrainConfig(**vars(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
