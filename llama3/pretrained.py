"""The model that ships with the course, and the ``eval`` and ``generate`` commands.

``assets/checkpoints/llama3-tinystories/`` holds a small Llama 3 trained on TinyStories with ``python -m llama3 train``
(see the model card in README.md): config.json and model.safetensors written by ``Llama3.save_pretrained``, and the
4096-token byte-level BPE it was trained with (``load_tokenizer(PRETRAINED_DIR)`` reads it). Everything is local: it
works offline.

    model, tokenizer = load_pretrained()
    print(model.generate_kv("Once upon a time", tokenizer=tokenizer, top_p=0.9, max_new_tokens=200))
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from llama3.data import eos_id, load_text, tokenize
from llama3.files import CONFIG_NAME
from llama3.model import Llama3
from llama3.tokenizer import ASSETS, load_tokenizer

PRETRAINED_NAME = "llama3-tinystories"
PRETRAINED_DIR = ASSETS / "checkpoints" / PRETRAINED_NAME


def load_model(folder: str | os.PathLike = PRETRAINED_DIR, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32, tokenizer: str | os.PathLike | None = None):
    """A ``save_pretrained`` folder -> (model in eval mode, tokenizer). The tokenizer comes from the same folder
    (or from ``tokenizer``, a folder; GPT-2 when the folder holds none). Weights stored in bfloat16 are upcast to
    ``dtype`` (float32 by default: exactly the shipped values, computed at full precision)."""
    folder = Path(folder)
    device = resolve_device(device)
    if not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"No model at {folder} (config.json missing): pass a folder written by "
                                f"Llama3.save_pretrained, such as the model/ folder of a training run.")
    if tokenizer is None and (folder / "tokenizer_config.json").is_file():
        tokenizer = folder
    with warnings.catch_warnings():  # AutoTokenizer also reads our config.json as a transformers config: noise
        warnings.simplefilter("ignore", FutureWarning)
        tok = load_tokenizer(tokenizer)
    model = Llama3.from_pretrained(folder)
    if model.args.vocab_size != len(tok):
        raise ValueError(f"The model in {folder} has vocab_size={model.args.vocab_size} but the tokenizer has "
                         f"{len(tok)} tokens: pass the tokenizer it was trained with (--tokenizer).")
    model.args.tokenizer = tok  # generate() then needs no tokenizer argument
    return model.to(device=device, dtype=dtype).eval(), tok


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device that exists here; ValueError naming it otherwise (torch would raise a
    RuntimeError for an unknown name and an AssertionError for CUDA on a CPU-only build)."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"Unknown device {device!r}: use cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"Device {str(device)!r}: this torch build has no CUDA or no GPU is visible; use cpu.")
        if device.index is not None and device.index >= count:
            raise ValueError(f"Device {str(device)!r} does not exist: there are {count} GPUs (cuda:0 to "
                             f"cuda:{count - 1}).")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"Device {str(device)!r} is not available here (Apple GPUs only); use cpu.")
    elif device.type not in ("cpu", "meta", "cuda", "mps"):
        try:
            torch.empty(0, device=device)
        except (RuntimeError, AssertionError) as error:
            raise ValueError(f"Device {str(device)!r} is not available here ({error}); use cpu.") from None
    return device


def load_pretrained(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """The shipped TinyStories model and its tokenizer: ``model, tokenizer = load_pretrained()``."""
    return load_model(PRETRAINED_DIR, device, dtype)


# --------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model: Llama3, tokenizer, text: str, stride: int | None = None, batch_size: int = 8) -> dict:
    """Loss, perplexity and bits per byte of ``model`` on ``text``.

    The text is tokenised losslessly (each <|endoftext|> separator is the EOS token) after one leading EOS, so
    every token of the text is predicted exactly once. Windows of max_seq_len tokens slide by ``stride`` (default:
    half a window), and each window scores only the tokens the previous one did not, so each prediction sees at
    least max_seq_len - stride tokens of context. bits per byte = total NLL (nats) / ln 2 / UTF-8 bytes of the text:
    it does not depend on the tokenizer, so models with different vocabularies compare.
    """
    if not text:
        raise ValueError("The text to evaluate is empty.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int of at least 1, got {batch_size!r}.")
    window = model.args.max_seq_len
    stride = window // 2 if stride is None else stride
    if not 1 <= stride <= window:
        raise ValueError(f"stride must be in [1, max_seq_len={window}], got {stride}.")
    device = next(model.parameters()).device
    ids = torch.cat([torch.tensor([eos_id(tokenizer)]), torch.from_numpy(tokenize(text, tokenizer).astype("int64"))])
    n = len(ids) - 1  # tokens to predict: ids[1:]
    spans = []  # (input start, input end, first scored target offset within the window)
    start, scored_to = 0, 0  # targets ids[1 : scored_to + 1] are scored
    while scored_to < n:
        end = min(start + window, n)  # inputs ids[start:end], targets ids[start + 1 : end + 1]
        spans.append((start, end, scored_to - start))
        scored_to = end
        start = max(0, end - (window - stride))
    model.eval()
    nll = 0.0
    for first in range(0, len(spans), batch_size):
        group = spans[first:first + batch_size]
        for length in sorted({e - s for s, e, _ in group}):  # the last window may be shorter
            rows = [(s, e, o) for s, e, o in group if e - s == length]
            x = torch.stack([ids[s:e] for s, e, _ in rows]).to(device)
            y = torch.stack([ids[s + 1:e + 1] for s, e, _ in rows]).to(device)
            logits = model(x).logits.float()
            losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(len(rows), length)
            for row, (_, _, offset) in enumerate(rows):
                nll += losses[row, offset:].double().sum().item()
    n_bytes = len(text.encode("utf-8"))
    loss = nll / n
    return {"loss": loss, "perplexity": math.exp(loss), "bits_per_byte": nll / math.log(2) / n_bytes,
            "tokens": n, "bytes": n_bytes}


# ------------------------------------------------------------------------------------- the commands' parsers
class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each default once: appended as "(default: X)" unless the help text already says what the
    default is (it mentions "default"), and never as "(default: None)" for an option that is simply off."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)


def _number(kind: type, low: float | None = None, high: float | None = None, low_open: bool = False):
    """An argparse ``type`` that parses ``kind`` and checks the range: one line naming the bound on a bad value."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


POSITIVE_INT = _number(int, 1)


def _parser(command: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m llama3 {command}", formatter_class=HelpFormatter,
                                     description=description)
    parser.add_argument("--model", default=str(PRETRAINED_DIR), help="folder written by save_pretrained")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the one in --model)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    return parser


def eval_main(argv: list[str] | None = None) -> int:
    parser = _parser("eval", "Loss, perplexity and bits per byte of a model on a text file (default: the shipped "
                             "model on the TinyStories validation text).")
    parser.add_argument("text", nargs="?", default=None,
                        help="text file to evaluate (default: the validation split from --data, $LLAMA3_TINYSTORIES, "
                             "a slice of the hub, or the shipped excerpt)")
    parser.add_argument("--data", default=None, help="TinyStories folder whose validation split is the default text")
    parser.add_argument("--stride", type=POSITIVE_INT, default=None,
                        help="window stride, at most max_seq_len (default: half of max_seq_len)")
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=8, help="windows per forward pass")
    args = parser.parse_args(argv)
    resolve_device(args.device)  # before reading a long text
    if args.text is not None:
        path = Path(args.text)
        if not path.is_file():
            raise FileNotFoundError(f"No text file at {path}: pass an existing UTF-8 text file.")
        text, source = path.read_text(encoding="utf-8"), str(path)
    else:
        text, source = load_text("validation", args.data), "the TinyStories validation split"
    model, tokenizer = load_model(args.model, args.device, tokenizer=args.tokenizer)
    result = evaluate(model, tokenizer, text, args.stride, args.batch_size)
    print(f"model: {args.model} ({model.num_parameters() / 1e6:.2f}M parameters)")
    print(f"text: {source} ({result['bytes']:,} bytes, {result['tokens']:,} tokens)")
    print(f"loss: {result['loss']:.4f} nats/token")
    print(f"perplexity: {result['perplexity']:.3f}")
    print(f"bits per byte: {result['bits_per_byte']:.4f}")
    return 0


# --------------------------------------------------------------------------------------------- generation
def generate_main(argv: list[str] | None = None) -> int:
    parser = _parser("generate", "Continue a prompt with the shipped TinyStories model (or --model), printing tokens "
                                 "as they come. The sampling defaults here (temperature 0.8, top-p 0.95) are the "
                                 "command's; the API's generate/generate_kv default to temperature 1.0, top_p 1.0.")
    parser.add_argument("prompt", nargs="?", default="Once upon a time", help="the text to continue")
    parser.add_argument("--max-new-tokens", type=POSITIVE_INT, default=300,
                        help="tokens to add at most; generation also stops at EOS and at max_seq_len")
    parser.add_argument("--temperature", type=_number(float, 0), default=0.8,
                        help="0 is greedy (default: %(default)s; the API's generate/generate_kv default: 1.0)")
    parser.add_argument("--top-p", type=_number(float, 0, 1, low_open=True), default=0.95,
                        help="nucleus sampling: keep the smallest set of tokens with this much probability, in (0, 1] "
                             "(default: %(default)s; the API's default: 1.0)")
    parser.add_argument("--top-k", type=POSITIVE_INT, default=None, help="keep the k likeliest tokens (default: all)")
    parser.add_argument("--seed", type=_number(int, 0), default=None,
                        help="fix the sampling for a reproducible story (default: a different story each time)")
    parser.add_argument("--no-stream", action="store_true", help="print the text once, at the end")
    args = parser.parse_args(argv)
    model, tokenizer = load_model(args.model, args.device, tokenizer=args.tokenizer)
    eos = tokenizer.eos_token_id

    new_ids: list[int] = []
    printed = 0

    def stream(token: torch.Tensor) -> None:  # token (1,): decode everything so far, print what is new
        nonlocal printed
        if int(token[0]) == eos:
            return
        new_ids.append(int(token[0]))
        text = tokenizer.decode(new_ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            return
        print(text[printed:], end="", flush=True)
        printed = len(text)

    if args.no_stream:
        print(model.generate_kv(args.prompt, tokenizer, max_new_tokens=args.max_new_tokens,
                                temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed))
        return 0
    print(args.prompt, end="", flush=True)
    try:
        model.generate_kv(args.prompt, tokenizer, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                          top_p=args.top_p, top_k=args.top_k, seed=args.seed, stream=stream)
    finally:
        print(flush=True)  # end the streamed line, so that an error (or the shell prompt) starts on its own line
    return 0


if __name__ == "__main__":
    sys.exit(generate_main())
