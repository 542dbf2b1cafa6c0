"""Training throughput at the shipped model's size: today's loop, the chunked loss, torch.compile, and transformers.

    python benchmarks/train_speed.py                 # bfloat16 autocast and float32, two threads: the README's table
    python benchmarks/train_speed.py --quick         # fewer repeats, for a smoke test
    python benchmarks/train_speed.py --update-readme # and replace this CPU vendor's table in README.md

One training step as ``python -m llama3 train`` takes it (forward, loss, backward, gradient clipping, AdamW), on
batch 16 x 256 tokens of the shipped model's configuration (read from its config.json; ``--config`` another).
Every variant starts from the same weights and sees the same batches; they run alternately, each keeping its best
of several repeats (the machine is shared and noisy), and every figure is a ratio of two measurements of this run:

- ``today``: the loop before issue 14, ``F.cross_entropy(model(x).logits.float(), y)``: the (B, T, vocab) logits in
  float32, their log-softmax and its gradient, all materialised;
- ``chunked``: ``model(x, shift_labels=y, return_logits=False).loss``, the head and the loss by chunks
  (``llama3.loss``);
- ``chunked + compile``: the same with every decoder layer under ``torch.compile`` (``--compile`` in train);
- ``transformers``: ``LlamaForCausalLM`` with the same configuration and weights, ``hf(x, labels=x).loss``.

Writes benchmarks/results/train-speed-cpu-<vendor>.{md,json} (amd, intel: each vendor keeps its own).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_name, cpu_vendor, update_readme  # noqa: E402
from llama3 import Llama3, ModelArgs  # noqa: E402
from llama3.loss import compile_for_training  # noqa: E402
from llama3.pretrained import PRETRAINED_DIR  # noqa: E402


def make_step(model, loss_fn, amp: torch.dtype | None):
    """One optimiser step of ``python -m llama3 train``: autocast forward, backward, clip at 1.0, AdamW."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, foreach=True)

    def step(x, y):
        with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
            loss = loss_fn(model, x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


def today_loss(model, x, y):
    logits = model(x).logits
    return F.cross_entropy(logits.float().flatten(0, 1), y.flatten())


def chunked_loss(model, x, y):
    return model(x, shift_labels=y, return_logits=False).loss


def hf_loss(model, x, y):
    return model(x, labels=x).loss  # shifts inside: 255 targets per row instead of 256


def measure(args: ModelArgs, amp: torch.dtype | None, batch: int, seq: int, steps: int, repeats: int,
            compile_too: bool) -> dict:
    torch.manual_seed(0)
    base = Llama3(args)
    variants = {"today": (copy.deepcopy(base), today_loss), "chunked": (copy.deepcopy(base), chunked_loss)}
    if compile_too:
        variants["chunked + compile"] = (compile_for_training(copy.deepcopy(base)), chunked_loss)
    variants["transformers"] = (base.to_hf(), hf_loss)
    for model, _ in variants.values():
        model.train()
    steps_fn = {name: make_step(m, fn, amp) for name, (m, fn) in variants.items()}
    gen = torch.Generator().manual_seed(1)
    data = torch.randint(0, args.vocab_size, (steps, batch, seq + 1), generator=gen)
    first_loss = {}
    for name, step in steps_fn.items():  # warm-up (and compilation): not timed
        first_loss[name] = step(data[0, :, :-1], data[0, :, 1:])
    best = {name: float("inf") for name in steps_fn}
    for _ in range(repeats):
        for name, step in steps_fn.items():
            start = time.perf_counter()
            for i in range(steps):
                step(data[i, :, :-1], data[i, :, 1:])
            best[name] = min(best[name], time.perf_counter() - start)
    tok_s = {name: batch * seq * steps / t for name, t in best.items()}
    return {"tok_s": tok_s, "first_loss": first_loss}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4, help="optimiser steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2, help="2, as the shipped model was trained")
    parser.add_argument("--config", default=str(PRETRAINED_DIR / "config.json"),
                        help="the model's config.json (default: the shipped model's)")
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--update-readme", action="store_true", help="replace this CPU vendor's table in README.md")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    opts = parser.parse_args(argv)
    if opts.quick:
        opts.steps, opts.repeats = 2, 2
    torch.set_num_threads(opts.threads)
    args = ModelArgs.load(opts.config)
    results = {}
    for name in opts.dtypes.split(","):
        amp = {"bfloat16": torch.bfloat16, "float32": None}[name]
        results[name] = measure(args, amp, opts.batch, opts.seq, opts.steps, opts.repeats, not opts.no_compile)
        print(name, json.dumps(results[name]), flush=True)

    import transformers

    head = (f"Measured {datetime.date.today()} on {cpu_name()}, {opts.threads} thread(s), torch {torch.__version__}, "
            f"transformers {transformers.__version__}; batch {opts.batch} x {opts.seq}, the shipped model's "
            f"configuration (d_model {args.d_model}, {args.num_layers} layers, {args.heads} heads / {args.n_kv_heads} "
            f"K/V, vocabulary {args.vocab_size}); best of {opts.repeats} alternating repeats of {opts.steps} "
            f"optimiser steps; produced by `python benchmarks/train_speed.py`.")
    lines = [head, "", "| autocast | variant | tokens/s | vs today | vs transformers |",
             "| --- | --- | ---: | ---: | ---: |"]
    for name, r in results.items():
        tok = r["tok_s"]
        for variant, value in tok.items():
            lines.append(f"| {name} | {variant} | {value:,.0f} | {value / tok['today']:.2f}x | "
                         f"{value / tok['transformers']:.2f}x |")
    table = "\n".join(lines) + "\n"
    print(table)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"train-speed-cpu-{cpu_vendor()}" + ("-quick" if opts.quick else "")
    (out / f"{stem}.md").write_text(table)
    (out / f"{stem}.json").write_text(json.dumps({"header": head, "results": results}, indent=2) + "\n")
    if opts.update_readme and not opts.quick:
        update_readme(f"train-speed-{cpu_vendor()}", table.rstrip("\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
