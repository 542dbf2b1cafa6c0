"""Sampling (temperature, top-k, top-p) and the two generation loops: without a cache and with one."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llama3.kv_cache import KV_Cache

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
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}.")
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


# ---------------------------------------------------------------------------------------------------- the loops
@torch.inference_mode()
def generate(model, prompt, tokenizer=None, *, max_new_tokens: int | None = DEFAULT_MAX_NEW_TOKENS,
             temperature: float = 1.0, top_p: float = 1.0, top_k: int | None = None, eos_token_id: int | None = None,
             seed: int | None = None, attention_mask: torch.Tensor | None = None, use_cache: bool = True,
             compile: bool = False, fast: bool = True, stream=None):
    """Continue ``prompt`` with ``model``.

    prompt: a str (returns prompt + continuation as a str, special tokens skipped), a list of str (a left-padded
    batch; returns a list of str), or a LongTensor of ids (B, T) (returns the ids with the new tokens appended;
    an ``attention_mask`` may mark left padding). temperature=0 is greedy; top_p in (0, 1] and top_k filter
    the distribution before sampling; seed makes sampling reproducible. Each row stops at ``eos_token_id``
    (default: the tokenizer's EOS); the loop ends when every row has stopped, after max_new_tokens, or when
    the sequence reaches max_seq_len. Finished rows are padded. ``stream(token_ids)`` is called with each new
    (B,) tensor of tokens as it is sampled.

    With the cache, decoding runs on ``llama3.fast`` (fused, transposed weights; ``compile=True`` adds
    torch.compile); ``fast=False`` runs the readable loop that calls the model with its KV caches instead.
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
        mask = attention_mask.to(device).reshape(ids.shape).long()
        mask = None if bool(mask.all()) else mask
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
            from llama3.fast import start_fast_decoding

            logits, next_logits = start_fast_decoding(model, ids, mask, total_len, compile=compile)
        else:
            logits, next_logits = start_decoding(model, ids, mask, total_len, use_cache)
        new_tokens = sample_loop(logits, next_logits, prompt_len, total_len, temperature, top_p, top_k,
                                 eos_token_id, pad_token_id, generator, stream)
    finally:
        model.train(was_training)
    out = torch.cat([ids, new_tokens], dim=1)
    if mask is not None:
        mask = torch.cat([mask, torch.ones_like(new_tokens)], dim=1)
    return decode_output(prompt, out, mask, tokenizer)


def new_kv_caches(model, batch: int, length: int) -> list[KV_Cache]:
    """One KV_Cache per layer, sized for this call: `batch` rows of `length` positions."""
    args, weight = model.args, model.tok_embeddings.weight
    return [KV_Cache(batch, args.n_kv_heads, length, args.head_dim, weight.dtype, weight.device)
            for _ in range(args.num_layers)]


def start_decoding(model, ids, mask, total_len, use_cache):
    """The readable path: prefill, and a function that feeds one new token (with the KV caches) or the whole
    sequence (without) back into the model. Returns (logits (B, vocab) of the last prompt position, next_logits)."""
    caches = new_kv_caches(model, ids.shape[0], total_len) if use_cache else None
    seq = ids

    def next_logits(token: torch.Tensor, cur_len: int) -> torch.Tensor:
        """token (B,) sits at position cur_len; returns the logits (B, vocab) that follow it."""
        nonlocal seq, mask
        if mask is not None:
            mask = F.pad(mask, (0, 1), value=1)
        if use_cache:
            return model(token[:, None], mask, kv_caches=caches, start_pos=cur_len, logits_to_keep=1).logits[:, -1]
        seq = torch.cat([seq, token[:, None]], dim=1)
        return model(seq, mask, logits_to_keep=1).logits[:, -1]

    return model(ids, mask, kv_caches=caches, logits_to_keep=1).logits[:, -1], next_logits


def sample_loop(logits, next_logits, prompt_len, total_len, temperature, top_p, top_k, eos_token_id, pad_token_id,
                generator, stream) -> torch.Tensor:
    """Sample a token from ``logits``, feed it back through ``next_logits(token, position)``, repeat. A row that
    has produced EOS is padded from then on; the loop ends when every row has, or at total_len.
    Returns the new tokens (B, N)."""
    finished = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
    new_tokens = []
    for cur_len in range(prompt_len, total_len):
        token = sample_next_token(logits, temperature, top_p, top_k, generator)  # (B,)
        if eos_token_id is not None:
            token = token.masked_fill(finished, pad_token_id)
            finished |= token == eos_token_id
        new_tokens.append(token)
        if stream is not None:
            stream(token)
        if cur_len + 1 == total_len or (eos_token_id is not None and bool(finished.all())):
            break
        logits = next_logits(token, cur_len)
    return torch.stack(new_tokens, dim=1)
