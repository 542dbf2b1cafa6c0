"""Sampling (temperature, top-k, top-p) and the generation loop, on any model that keeps the forward contract.

The loop samples a token, feeds it to a decoder (``llama3.decoding``: ``prefill`` once, then ``step`` per token)
and repeats; which decoder runs decides the speed, never the tokens: the readable one without a cache (``generate``),
the readable one with KV caches (``generate_kv(fast=False)``) or the fused one (``generate_kv``, ``llama3.fast``).
"""

from __future__ import annotations

import math

import torch

from llama3.attention import check_attention_mask
from llama3.decoding import Decoder
from llama3.fast import FastDecoder

DEFAULT_MAX_NEW_TOKENS = 256


# ----------------------------------------------------------------------------------------------------- sampling
def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row, set the rest to -inf. logits (B, V)."""
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al., 2020): keep the smallest set of most likely tokens whose probability
    adds up to at least p, set the rest to -inf. The token whose probability crosses p is kept. logits (B, V)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.float().softmax(-1)
    mass_before = probs.cumsum(-1) - probs  # probability of the tokens strictly more likely than this one
    drop_sorted = mass_before >= p  # the first token always has mass_before 0 < p and is kept
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next_token(logits: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0, top_k: int | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (B, V) of the last position -> next token ids (B,). temperature=0 is greedy (argmax)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    logits = top_p_filter(logits, top_p)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def check_sampling_args(temperature, top_p, top_k) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a number, got {type(temperature).__name__}.")
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be >= 0 and finite (0 means greedy), got {temperature}.")
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)):
        raise TypeError(f"top_p must be a number in (0, 1], got {type(top_p).__name__}.")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}: top_p=1 keeps every token.")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int):
            raise TypeError(f"top_k must be an int >= 1 or None, got {type(top_k).__name__}.")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None (no top-k filtering), got {top_k}.")


# ----------------------------------------------------------------------------------------------- prompt handling
def encode_prompt(prompt, tokenizer, pad_token_id: int | None, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """str / list[str] / LongTensor -> ids (B, T) and a (B, T) attention mask (None when nothing is padded).
    A batch of strings is LEFT-padded, so that every row's newest token sits in the last column."""
    if isinstance(prompt, torch.Tensor):
        if prompt.dtype not in (torch.int64, torch.int32) or prompt.dim() not in (1, 2):
            raise TypeError(f"A tensor prompt must hold token ids, shape (batch, seq), got {prompt.dtype} "
                            f"of shape {tuple(prompt.shape)}.")
        ids = prompt.long().to(device)
        ids = ids[None] if ids.dim() == 1 else ids
        if ids.shape[1] == 0:
            raise ValueError("The prompt is empty: give at least one token.")
        return ids, None
    if isinstance(prompt, str):
        texts = [prompt]
    elif isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, str) for p in prompt):
        texts = list(prompt)
    elif isinstance(prompt, (list, tuple)) and not prompt:
        raise ValueError("The prompt list is empty: give at least one string.")
    else:
        raise TypeError(f"prompt must be a str, a list of str or a LongTensor of ids, got {type(prompt).__name__}.")
    if tokenizer is None:
        raise TypeError("A text prompt needs a tokenizer: pass tokenizer=... or build ModelArgs with tokenizer=.")
    encoded = [tokenizer(t, add_special_tokens=True)["input_ids"] for t in texts]
    for text, ids in zip(texts, encoded):
        if not ids:
            raise ValueError(f"The prompt {text!r} is empty (it encodes to no tokens): give some text.")
    longest = max(len(ids) for ids in encoded)
    if all(len(ids) == longest for ids in encoded):
        return torch.tensor(encoded, device=device), None
    if pad_token_id is None:
        pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.full((len(encoded), longest), pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(encoded), longest, dtype=torch.long)
    for row, seq in enumerate(encoded):
        ids[row, longest - len(seq):] = torch.tensor(seq)
        mask[row, longest - len(seq):] = 1
    return ids.to(device), mask.to(device)


def decode_output(prompt, ids: torch.Tensor, mask: torch.Tensor | None, tokenizer):
    """Mirror the prompt's type: str -> str, list[str] -> list[str], tensor -> tensor of ids."""
    if isinstance(prompt, torch.Tensor):
        return ids if prompt.dim() == 2 else ids[0]
    rows = ids.tolist() if mask is None else [row[m.bool()].tolist() for row, m in zip(ids.cpu(), mask.cpu())]
    texts = [tokenizer.decode(row, skip_special_tokens=True) for row in rows]
    return texts[0] if isinstance(prompt, str) else texts


# ---------------------------------------------------------------------------------------------------- the loop
@torch.inference_mode()
def generate(model, prompt, tokenizer=None, *, max_new_tokens: int | None = DEFAULT_MAX_NEW_TOKENS,
             temperature: float = 1.0, top_p: float = 1.0, top_k: int | None = None, eos_token_id: int | None = None,
             seed: int | None = None, attention_mask: torch.Tensor | None = None, use_cache: bool = True,
             compile: bool = False, fast: bool = True, stream=None):
    """Continue ``prompt`` with ``model``.

    prompt: a str (returns prompt + continuation as a str, special tokens skipped), a list of str (a left-padded
    batch; returns a list of str), or a LongTensor of ids (B, T) (returns the ids with the new tokens appended;
    an ``attention_mask`` (B, T) of 0/1 may mark LEFT padding). temperature=0 is greedy; top_p in (0, 1] and
    top_k filter the distribution before sampling; seed makes sampling reproducible. Each row stops at
    ``eos_token_id`` (default: the tokenizer's EOS) and is padded from then on; the loop ends when every row has
    stopped, after max_new_tokens, or when the sequence reaches max_seq_len. ``stream(token_ids)`` is called with
    each new (B,) tensor of tokens as it is sampled.

    Decoders (same tokens, different speed): ``use_cache=False`` recomputes the whole sequence at every step;
    ``use_cache=True, fast=False`` calls the model with its KV caches; ``use_cache=True`` (default fast=True) runs
    ``llama3.fast.FastDecoder``. ``compile=True`` asks for its torch.compile'd static-shape step, which is used on
    CUDA (a CUDA graph); on the CPU it measured no faster than the eager step (``benchmarks/bench.py``), so there
    ``compile=True`` runs the eager fast step and never pays a compilation.
    """
    args = model.args
    tokenizer = tokenizer if tokenizer is not None else args.tokenizer
    check_sampling_args(temperature, top_p, top_k)
    if max_new_tokens is None:
        max_new_tokens = args.max_seq_len
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}.")
    device = next(model.parameters()).device
    pad_token_id = args.pad_token_id
    ids, mask = encode_prompt(prompt, tokenizer, pad_token_id, device)
    if attention_mask is not None:
        if not isinstance(prompt, torch.Tensor):
            raise TypeError("attention_mask is only for tensor prompts; text batches are padded for you.")
        mask = check_left_padding(attention_mask.to(device)[None] if attention_mask.dim() == 1 else
                                  attention_mask.to(device), ids.shape)
    batch, prompt_len = ids.shape
    if prompt_len >= args.max_seq_len:
        raise ValueError(
            f"The prompt has {prompt_len} tokens but max_seq_len is {args.max_seq_len}: nothing is left to generate. "
            f"Shorten the prompt to at most {args.max_seq_len - 1} tokens."
        )
    if batch > args.max_batch_size:
        raise ValueError(
            f"Batch of {batch} prompts exceeds max_batch_size={args.max_batch_size}: split it or raise "
            f"ModelArgs.max_batch_size."
        )
    if eos_token_id is None and tokenizer is not None:
        eos_token_id = tokenizer.eos_token_id
    if pad_token_id is None:
        pad_token_id = eos_token_id if eos_token_id is not None else 0
    total_len = min(prompt_len + max_new_tokens, args.max_seq_len)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)

    was_training = model.training
    model.eval()
    try:
        if use_cache and fast:
            # compile only where it measured faster: CUDA (CUDA graphs); see the docstring
            decoder = FastDecoder(model, batch, total_len, compile=compile and device.type == "cuda")
        else:
            decoder = Decoder(model, batch, total_len, use_cache=use_cache)
        new_tokens = sample_loop(decoder, ids, mask, total_len - prompt_len, temperature, top_p, top_k,
                                 eos_token_id, pad_token_id, generator, stream)
    finally:
        model.train(was_training)
    out = torch.cat([ids, new_tokens], dim=1)
    if mask is not None:
        mask = torch.cat([mask, torch.ones_like(new_tokens)], dim=1)
    return decode_output(prompt, out, mask, tokenizer)


def check_left_padding(attention_mask: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    """A tensor prompt's attention_mask: exactly (B, T) of 0/1, every row with a real token, padding on the left
    (new tokens are appended on the right). Returns it as longs, or None when nothing is padded."""
    check_attention_mask(attention_mask, tuple(shape))
    mask = attention_mask.long()
    if bool((mask.cummax(-1).values != mask).any()):
        row = int((mask.cummax(-1).values != mask).any(-1).nonzero()[0])
        raise ValueError(f"attention_mask row {row} has padding (0) after a real token (1): generation needs LEFT "
                         f"padding, so that new tokens follow each row's last real token.")
    return None if bool(mask.all()) else mask


def sample_loop(decoder, ids: torch.Tensor, mask: torch.Tensor | None, max_new_tokens: int, temperature: float,
                top_p: float, top_k: int | None, eos_token_id: int | None, pad_token_id: int,
                generator: torch.Generator | None, stream) -> torch.Tensor:
    """Prefill ``decoder`` with ids (B, T), then sample a token, feed it back with ``decoder.step``, repeat.
    A row that has produced EOS gets ``pad_token_id`` from then on; the loop ends when every row has, or after
    max_new_tokens. Returns the new tokens (B, N), N <= max_new_tokens."""
    logits = decoder.prefill(ids, mask)  # (B, vocab)
    finished = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    new_tokens = []
    for i in range(max_new_tokens):
        token = sample_next_token(logits, temperature, top_p, top_k, generator)  # (B,)
        if eos_token_id is not None:
            token = token.masked_fill(finished, pad_token_id)
            finished |= token == eos_token_id
        new_tokens.append(token)
        if stream is not None:
            stream(token)
        if i + 1 == max_new_tokens or (eos_token_id is not None and bool(finished.all())):
            break
        logits = decoder.step(token)
    return torch.stack(new_tokens, dim=1)
