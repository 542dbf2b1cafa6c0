"""check_top_p, check_sample_next_token, check_generate_kv: sampling and the cached generation loop.

Nucleus filtering is compared token by token with ``llama3.generation.top_p_filter`` on targeted
distributions (the token that crosses p, a peaked row, unsorted logits, rows that need different cut-offs).
Sampling is random, so ``check_sample_next_token`` compares the empirical distribution of many seeded draws with
the distribution the reference samples from. ``check_generate_kv`` runs the learner's loop on a small model,
records every call into the model, and compares the greedy tokens with ``Llama3.generate_kv``.
"""

from __future__ import annotations

import inspect

import torch

from llama3.checks._common import call, fail, passed
from llama3.config import ModelArgs
from llama3.generation import top_k_filter, top_p_filter
from llama3.model import Llama3


# ------------------------------------------------------------------------------------------------------- top-p
def _kept_by_cumsum(logits, p, rule):
    """Which tokens a cumulative-probability rule keeps, mapped back to the vocabulary order."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    keep_sorted = rule(probs.cumsum(-1), probs)
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def _top_p_variants(logits, p) -> dict[str, tuple[torch.Tensor, str]]:
    """Kept-token masks of the usual wrong nucleus rules, each with its hint."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs_sorted = sorted_logits.softmax(-1)
    keep_sorted = probs_sorted.cumsum(-1) - probs_sorted < p
    ascending_probs = torch.sort(logits, dim=-1).values.softmax(-1)
    asc_keep = ascending_probs.cumsum(-1) - ascending_probs < p
    asc_order = torch.sort(logits, dim=-1).indices
    return {
        "drops the crossing token": (
            _kept_by_cumsum(logits, p, lambda cum, pr: cum <= p),
            "The token whose probability crosses p is dropped: keep a token while the probability of the tokens "
            "BEFORE it is < p (cumsum - probs < p), so the nucleus always reaches p."),
        "keeps one token too many": (
            _kept_by_cumsum(logits, p, lambda cum, pr: cum - pr - torch.cat([torch.zeros_like(pr[..., :1]),
                                                                             pr[..., :-1]], -1) < p),
            "Tokens outside the nucleus are kept (one token after the one that crosses p): keep a token only while "
            "the probability of the tokens before it is < p."),
        "no scatter back": (
            keep_sorted,
            "The keep/drop decision is made in sorted order but applied to the unsorted logits: map it back to the "
            "vocabulary order (scatter with the sort indices) before masking."),
        "ascending sort": (
            torch.zeros_like(asc_keep).scatter(-1, asc_order, asc_keep),
            "The nucleus is built from the LEAST likely tokens: sort the probabilities in descending order."),
        "p ignored": (
            torch.ones_like(logits, dtype=torch.bool),
            "Every token is kept: drop the tokens outside the nucleus (set their logits to -inf)."),
        "threshold on each probability": (
            logits.softmax(-1) >= p,
            "Tokens are kept by their own probability (prob >= p): the nucleus is the smallest set of most likely "
            "tokens whose probabilities ADD UP to p (a cumulative sum over the sorted probabilities)."),
    }


def _top_p_cases():
    gen = torch.Generator().manual_seed(0)
    crossing = torch.tensor([[0.05, 0.5, 0.15, 0.3]]).log()  # sorted: 0.5, 0.3 (crosses 0.7), 0.15, 0.05
    peaked = torch.tensor([[0.1, 0.02, 0.85, 0.03]]).log()  # the top token alone crosses p
    two_rows = torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.1, 0.15, 0.05, 0.7]]).log()  # rows need different cut-offs
    return [("a row where the second token crosses p=0.7", crossing, 0.7),
            ("a peaked row (the top token alone crosses p=0.6)", peaked, 0.6),
            ("two rows with different cut-offs, p=0.65", two_rows, 0.65),
            ("random logits, p=0.9", 3 * torch.randn(4, 50, generator=gen), 0.9),
            ("random logits, p=0.3", 3 * torch.randn(4, 50, generator=gen), 0.3),
            ("random logits, p=1.0 (keep everything)", 3 * torch.randn(2, 20, generator=gen), 1.0)]


def check_top_p(top_p_fn) -> None:
    """Check a learner's ``top_p_filter(logits (B, V), p) -> logits with the tokens outside the nucleus at -inf``."""
    for name, logits, p in _top_p_cases():
        what = f"top_p_filter on {name}"
        out = call(top_p_fn, logits.clone(), p, what=what)
        if not isinstance(out, torch.Tensor) or out.shape != logits.shape:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            fail(f"{what}: return the filtered logits, shape {tuple(logits.shape)}; got {shape}.")
        expected_keep = torch.isfinite(top_p_filter(logits, p))
        keep = torch.isfinite(out)
        if not torch.equal(keep, expected_keep):
            if bool((out == 0).any()) and not bool(torch.isinf(out).any()):
                fail(f"{what}: dropped tokens must get the logit -inf (a logit of 0 still has probability).")
            for wrong, hint in _top_p_variants(logits, p).values():
                if torch.equal(keep, wrong):
                    fail(f"{what}: {hint}")
            kept, expected = keep.nonzero()[:, -1].tolist(), expected_keep.nonzero()[:, -1].tolist()
            fail(f"{what}: kept tokens {kept}, expected {expected}. Keep the smallest set of most likely tokens whose "
                 f"probabilities add up to at least p.")
        if bool(out[keep].ne(logits[keep]).any()):
            fail(f"{what}: the kept logits must be returned unchanged (return logits, not probabilities; the "
                 f"softmax afterwards renormalises).")
    passed("top_p_filter: keeps exactly the nucleus, the token that crosses p included.")


# ---------------------------------------------------------------------------------------------------- sampling
def _expected_probs(logits, temperature, top_p, top_k):
    """The distribution the reference sample_next_token draws from. logits (B, V) -> probs (B, V)."""
    logits = logits.float() / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    return top_p_filter(logits, top_p).softmax(-1)


def _frequencies(tokens, vocab):
    return torch.bincount(tokens.reshape(-1), minlength=vocab).float() / tokens.numel()


DRAWS = 20000  # std of a frequency <= 0.0036; the wrong variants below differ by > 0.1 in total variation
TV_LIMIT = 0.03


def _sampling_variants(row, temperature, top_p, top_k) -> dict[str, tuple[torch.Tensor, str]]:
    variants = {
        "temperature after softmax": (
            _expected_probs(row, 1.0, top_p, top_k),
            "temperature has no effect: divide the LOGITS by temperature before the softmax (dividing the "
            "probabilities changes nothing once they are renormalised)."),
        "temperature multiplied": (
            _expected_probs(row * temperature * temperature, temperature, top_p, top_k),
            "The logits are multiplied by temperature: divide them (logits / temperature), so that a high "
            "temperature flattens the distribution."),
        "top_p before temperature": (
            torch.softmax(top_p_filter(row if top_k is None else top_k_filter(row, top_k), top_p) / temperature, -1),
            "top-p is applied before the temperature: divide by temperature first, then filter (top-k, then top-p), "
            "then the softmax, as transformers does."),
    }
    if top_k is not None and top_p < 1:
        variants["filters ignored"] = (
            _expected_probs(row, temperature, 1.0, None),
            "top_k and top_p have no effect: filter the tempered logits with top_k_filter and top_p_filter before "
            "the softmax.")
    if top_k is not None:
        variants["top_k ignored"] = (
            _expected_probs(row, temperature, top_p, None),
            "top_k has no effect: when top_k is given, keep only the k largest logits (top_k_filter) before top-p.")
    if top_p < 1:
        variants["top_p ignored"] = (
            _expected_probs(row, temperature, 1.0, top_k),
            "top_p has no effect: filter with top_p_filter(logits, top_p) before the softmax.")
    return variants


def check_sample_next_token(sample_fn) -> None:
    """Check a learner's ``sample_next_token(logits (B, V), temperature=1.0, top_p=1.0, top_k=None,
    generator=None) -> token ids (B,)``: greedy at temperature 0, otherwise a draw from softmax(filtered
    logits / temperature)."""
    gen = torch.Generator().manual_seed(0)
    logits = 2 * torch.randn(5, 9, generator=gen)  # (B, V)

    # greedy: exactly the argmax of each row
    what = "sample_next_token(logits, temperature=0)"
    out = call(sample_fn, logits, 0.0, what=what)
    if not isinstance(out, torch.Tensor):
        fail(f"{what}: return a LongTensor of token ids, got {type(out).__name__}.")
    if out.shape != (logits.shape[0],):
        fail(f"{what}: return one token id per row, shape ({logits.shape[0]},); got {tuple(out.shape)} "
             f"(squeeze the sample dimension).")
    if not torch.equal(out.long(), logits.argmax(-1)):
        fail(f"{what}: temperature 0 means greedy decoding: return logits.argmax(dim=-1) (no sampling, no "
             f"division by zero). Got {out.tolist()}, expected {logits.argmax(-1).tolist()}.")

    # sampling: the empirical distribution of many seeded draws against the reference's distribution
    row = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0])
    cases = [(0.5, 1.0, None), (2.0, 1.0, None), (1.0, 0.75, None), (1.5, 1.0, 3), (0.7, 0.9, 4)]
    for temperature, top_p, top_k in cases:
        what = f"sample_next_token(temperature={temperature}, top_p={top_p}, top_k={top_k})"
        batch = row.expand(DRAWS, -1).clone()
        torch.manual_seed(1)  # also covers a learner who ignores the generator
        tokens = call(sample_fn, batch, temperature, top_p, top_k, torch.Generator().manual_seed(2), what=what)
        if not isinstance(tokens, torch.Tensor) or tokens.shape != (DRAWS,):
            shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            fail(f"{what}: return one token id per row, shape ({DRAWS},); got {shape}.")
        freq = _frequencies(tokens.long(), row.numel())
        expected = _expected_probs(row[None], temperature, top_p, top_k)[0]
        outside = (expected == 0) & (freq > 0)
        tv = 0.5 * (freq - expected).abs().sum().item()
        if tv < TV_LIMIT and not outside.any():
            continue
        for probs, hint in _sampling_variants(row[None], temperature, top_p, top_k).values():
            if 0.5 * (freq - probs[0]).abs().sum().item() < TV_LIMIT:
                fail(f"{what}: {hint}")
        if outside.any():
            fail(f"{what}: tokens {outside.nonzero()[:, 0].tolist()} were sampled although top-k/top-p removes "
                 f"them: sample from the FILTERED logits.")
        fail(f"{what}: the sampled frequencies {[round(f, 3) for f in freq.tolist()]} do not follow "
             f"softmax(filtered logits / temperature) = {[round(p, 3) for p in expected.tolist()]}. Order: divide by "
             f"temperature, top_k_filter, top_p_filter, softmax, torch.multinomial.")

    # the generator makes sampling reproducible
    what = "sample_next_token(..., generator=torch.Generator().manual_seed(0)) twice"
    batch = row.expand(64, -1).clone()
    first = call(sample_fn, batch, 1.0, 1.0, None, torch.Generator().manual_seed(0), what=what)
    torch.manual_seed(12345)  # a different global state: only the generator may decide
    second = call(sample_fn, batch, 1.0, 1.0, None, torch.Generator().manual_seed(0), what=what)
    if not torch.equal(first, second):
        fail(f"{what}: the same seeded generator gave different tokens: pass generator=generator to "
             f"torch.multinomial, so that a seed makes generation reproducible.")
    passed("sample_next_token: greedy at temperature 0; temperature, top-k and top-p sample the right distribution.")


# ------------------------------------------------------------------------------------------- the generation loop
def _model(seed: int) -> Llama3:
    args = ModelArgs(vocab_size=67, d_model=32, heads=4, group_size=2, num_layers=2, max_seq_len=40, multiple_of=16)
    torch.manual_seed(seed)
    model = Llama3(args).eval()
    with torch.no_grad():  # wide logits, so that greedy decoding never hinges on a near-tie
        model.output.weight.mul_(25)
    return model


class _CallLog:
    """Records (number of tokens, start_pos, whether caches were given) for every call into the model."""

    def __init__(self, model):
        self.calls = []
        self.handle = model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        tgt = args[0] if args else kwargs.get("tgt")
        self.calls.append((tgt.shape[1], int(kwargs.get("start_pos", 0)), kwargs.get("kv_caches") is not None))


def _reference_ids(model, ids, new_tokens):
    return model.generate_kv(ids, max_new_tokens=new_tokens, temperature=0.0, eos_token_id=None)


def check_generate_kv(generate_fn) -> None:
    """Check a learner's ``generate_kv(model, ids (B, T), max_new_tokens, temperature=0.0, ...) -> ids
    (B, T + max_new_tokens)``: a prefill of the whole prompt into fresh KV caches, then one token per step at
    start_pos = current length. Greedy tokens must equal ``Llama3.generate_kv``."""
    params = inspect.signature(generate_fn).parameters
    for seed, (batch, prompt_len, new_tokens) in enumerate([(1, 5, 8), (2, 7, 6)]):
        model = _model(seed)
        gen = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, model.args.vocab_size, (batch, prompt_len), generator=gen)  # (B, T)
        expected = _reference_ids(model, ids, new_tokens)
        what = f"generate_kv(model, ids of shape {tuple(ids.shape)}, max_new_tokens={new_tokens}, temperature=0)"
        log = _CallLog(model)
        try:
            out = call(generate_fn, model, ids.clone(), new_tokens, temperature=0.0, what=what)
        finally:
            log.handle.remove()
        if not isinstance(out, torch.Tensor):
            fail(f"{what}: return the LongTensor of ids (B, T + max_new_tokens), got {type(out).__name__}.")
        if out.shape != expected.shape:
            fail(f"{what}: returned shape {tuple(out.shape)}, expected {tuple(expected.shape)}: the prompt followed "
                 f"by exactly max_new_tokens new tokens.")
        if not torch.equal(out[:, :prompt_len], ids):
            fail(f"{what}: the returned ids must start with the prompt unchanged.")
        calls = log.calls
        if not calls:
            fail(f"{what}: the model was never called.")
        if not calls[0][2]:
            fail(f"{what}: the first call gets no kv_caches: build one KV_Cache per layer, sized (batch, "
                 f"T + max_new_tokens), and pass kv_caches=caches to every call.")
        if calls[0][0] != prompt_len:
            if calls[0][0] == 1 and not torch.equal(out, expected):
                fail(f"{what}: the prompt is not prefilled: run the WHOLE prompt through the model once "
                     f"(start_pos=0) to fill the caches, then feed one token per step.")
            if calls[0][0] != 1:
                fail(f"{what}: the first call feeds {calls[0][0]} tokens, expected the whole prompt ({prompt_len}).")
        decode = calls[1:] if calls[0][0] == prompt_len else []
        if any(n != 1 for n, _, _ in decode):
            fail(f"{what}: after the prefill, feed only the newest token (B, 1) each step; the model was called "
                 f"with {[n for n, _, _ in calls]} tokens. With a cache the past is already stored: this is what "
                 f"makes decoding linear instead of quadratic.")
        if any(not cached for _, _, cached in decode):
            fail(f"{what}: a decode step was called without kv_caches: the cache is not used.")
        positions = [pos for _, pos, _ in decode]
        right = list(range(prompt_len, prompt_len + len(decode)))
        if positions != right:
            fail(f"{what}: decode steps were called with start_pos {positions}, expected {right}: start_pos is the "
                 f"number of tokens already in the cache (the prompt length, then +1 per step).")
        if not torch.equal(out, expected):
            fail(f"{what}: greedy tokens {out[:, prompt_len:].tolist()} differ from the reference "
                 f"{expected[:, prompt_len:].tolist()}: at temperature 0 take the argmax of the LAST position's "
                 f"logits and append it.")

    # sampling runs, and with top-p/top-k never leaves the vocabulary; a seed (when accepted) reproduces the draw
    model = _model(0)
    ids = torch.randint(0, model.args.vocab_size, (2, 4), generator=torch.Generator().manual_seed(3))
    kwargs = {"temperature": 0.8}
    for name, value in (("top_p", 0.9), ("top_k", 20)):
        if name in params:
            kwargs[name] = value
    what = f"generate_kv(model, ids, 5, {', '.join(f'{k}={v}' for k, v in kwargs.items())})"
    torch.manual_seed(0)
    out = call(generate_fn, model, ids.clone(), 5, what=what, **kwargs)
    if not isinstance(out, torch.Tensor) or out.shape != (2, 9):
        fail(f"{what}: expected ids of shape (2, 9) when sampling, got "
             f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}.")
    if bool((out < 0).any()) or bool((out >= model.args.vocab_size).any()):
        fail(f"{what}: sampled ids outside the vocabulary.")
    passed("generate_kv: prefill once, one token per step at the right start_pos; greedy tokens equal the reference.")
