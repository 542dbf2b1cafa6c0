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

from llama3.checks._common import call, checker, fail, learner_dependency, passed, prerequisite
from llama3.config import ModelArgs
from llama3.generation import sample_next_token as reference_sample_next_token
from llama3.generation import top_k_filter, top_p_filter
from llama3.kv_cache import KV_Cache
from llama3.model import Llama3

_reference_top_p, _reference_top_k = top_p_filter, top_k_filter


# ------------------------------------------------------------------------------------------------------- top-p
def _kept_by_cumsum(logits, p, rule):
    """Which tokens a cumulative-probability rule keeps, mapped back to the vocabulary order."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    keep_sorted = rule(probs.cumsum(-1), probs)
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


TOP_P_FIX = ("sorted_logits, order = torch.sort(logits, dim=-1, descending=True); probs = sorted_logits.softmax(-1); "
             "drop = probs.cumsum(-1) - probs >= p (the mass BEFORE each token); drop = drop.scatter(-1, order, drop); "
             "return logits.masked_fill(drop, float('-inf')).")


def _top_p_variants(logits, p) -> list[tuple[torch.Tensor, str]]:
    """Kept-token masks of the usual wrong nucleus rules, each with what is wrong."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs_sorted = sorted_logits.softmax(-1)
    keep_sorted = probs_sorted.cumsum(-1) - probs_sorted < p
    ascending_probs = torch.sort(logits, dim=-1).values.softmax(-1)
    asc_keep = ascending_probs.cumsum(-1) - ascending_probs < p
    asc_order = torch.sort(logits, dim=-1).indices
    return [
        (_kept_by_cumsum(logits, p, lambda cum, pr: cum <= p),
         "the token whose probability crosses p is dropped, so the nucleus holds less than p."),
        (_kept_by_cumsum(logits, p, lambda cum, pr: cum - pr - torch.cat([torch.zeros_like(pr[..., :1]),
                                                                         pr[..., :-1]], -1) < p),
         "tokens outside the nucleus are kept (one token after the one that crosses p)."),
        (keep_sorted,
         "the keep/drop decision is made in sorted order but applied to the unsorted logits (no scatter back to the "
         "vocabulary order)."),
        (torch.zeros_like(asc_keep).scatter(-1, asc_order, asc_keep),
         "the nucleus is built from the LEAST likely tokens (the sort is ascending)."),
        (torch.ones_like(logits, dtype=torch.bool), "every token is kept: p has no effect."),
        (logits.softmax(-1) >= p,
         "tokens are kept by their own probability (prob >= p); the nucleus is the smallest set of most likely "
         "tokens whose probabilities ADD UP to p."),
    ]


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


@checker
def check_top_p(top_p_fn) -> None:
    """Check a learner's ``top_p_filter(logits (B, V), p) -> logits with the tokens outside the nucleus at -inf``."""
    for name, logits, p in _top_p_cases():
        if p < 1.0:  # softmax ignores a constant added to every logit, so the nucleus must too
            what = f"top_p_filter on {name}, every logit + 5"
            shifted = call(top_p_fn, logits.clone() + 5.0, p, what=what)
            if isinstance(shifted, torch.Tensor) and shifted.shape == logits.shape and not torch.equal(
                    torch.isfinite(shifted), torch.isfinite(top_p_filter(logits, p))):
                plain = call(top_p_fn, logits.clone(), p, what=f"top_p_filter on {name}")
                if isinstance(plain, torch.Tensor) and plain.shape == logits.shape and not torch.equal(
                        torch.isfinite(plain), torch.isfinite(shifted)):
                    fail(f"{what}: adding 5 to every logit changes which tokens you keep, although it changes no "
                         f"probability: the cumulative sum runs over the logits (or unnormalised scores), not over "
                         f"the probabilities.", "softmax the sorted logits first: " + TOP_P_FIX)
        what = f"top_p_filter on {name}"
        out = call(top_p_fn, logits.clone(), p, what=what)
        if not isinstance(out, torch.Tensor) or out.shape != logits.shape:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            fail(f"{what}: returned {shape}, not the filtered logits of shape {tuple(logits.shape)}.", TOP_P_FIX)
        expected_keep = torch.isfinite(top_p_filter(logits, p))
        keep = torch.isfinite(out)
        if not torch.equal(keep, expected_keep):
            if bool((out == 0).any()) and not bool(torch.isinf(out).any()):
                fail(f"{what}: dropped tokens get the logit 0 instead of -inf (a logit of 0 still has probability).",
                     "logits.masked_fill(drop, float('-inf')).")
            for wrong, problem in _top_p_variants(logits, p):
                if torch.equal(keep, wrong):
                    fail(f"{what}: {problem}", TOP_P_FIX)
            kept, expected = keep.nonzero()[:, -1].tolist(), expected_keep.nonzero()[:, -1].tolist()
            fail(f"{what}: kept tokens {kept}, expected {expected} (the smallest set of most likely tokens whose "
                 f"probabilities add up to at least p).", TOP_P_FIX)
        if bool(out[keep].ne(logits[keep]).any()):
            fail(f"{what}: the kept logits are changed (probabilities returned?); they must be returned unchanged, "
                 f"the softmax afterwards renormalises.", "return logits.masked_fill(drop, float('-inf')).")
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


SAMPLE_FIX = ("if temperature == 0: return logits.argmax(-1); logits = logits / temperature; if top_k is not None: "
              "logits = top_k_filter(logits, top_k); logits = top_p_filter(logits, top_p); return "
              "torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1).")


def _sampling_variants(row, temperature, top_p, top_k) -> list[tuple[torch.Tensor, str]]:
    """Distributions of the usual wrong samplers, each with what is wrong."""
    tempered = row / temperature
    variants = [
        (_expected_probs(row, 1.0, top_p, top_k),
         "temperature has no effect (dividing the probabilities instead of the logits changes nothing once they are "
         "renormalised)."),
        (_expected_probs(row * temperature * temperature, temperature, top_p, top_k),
         "the logits are multiplied by temperature instead of divided, so a high temperature sharpens the "
         "distribution."),
        (torch.softmax(top_p_filter(row if top_k is None else top_k_filter(row, top_k), top_p) / temperature, -1),
         "the filters run before the temperature: top-k/top-p must see the tempered logits."),
    ]
    if top_k is not None and top_p < 1:
        variants.append((torch.softmax(top_k_filter(top_p_filter(tempered, top_p), top_k), -1),
                         "top-p is applied before top-k: top-k runs first, then top-p on what is left (as "
                         "transformers does)."))
        variants.append((_expected_probs(row, temperature, 1.0, None), "top_k and top_p have no effect."))
    if top_k is not None:
        variants.append((_expected_probs(row, temperature, top_p, None), "top_k has no effect."))
    if top_p < 1:
        variants.append((_expected_probs(row, temperature, 1.0, top_k), "top_p has no effect."))
    return variants


def _top_k_prerequisite(top_k_fn) -> None:
    """The notebook imports llama3's top_k_filter; a learner who wrote their own gets it checked here."""
    gen = torch.Generator().manual_seed(5)
    logits = 2 * torch.randn(3, 11, generator=gen)
    for k in (1, 4, 11):
        out = call(top_k_fn, logits.clone(), k, what=f"your top_k_filter(logits, {k})")
        if not (isinstance(out, torch.Tensor) and torch.equal(out, top_k_filter(logits, k))):
            fail(f"Fix your top_k_filter first: sample_next_token uses it, and top_k_filter(logits, {k}) does not keep "
                 f"exactly the {k} largest logits of each row (the others at -inf).",
                 "values = torch.topk(logits, k).values; return logits.masked_fill(logits < values[..., -1:], "
                 "float('-inf')).")


@checker
def check_sample_next_token(sample_fn, *, top_p_filter=None, top_k_filter=None) -> None:
    """Check a learner's ``sample_next_token(logits (B, V), temperature=1.0, top_p=1.0, top_k=None,
    generator=None) -> token ids (B,)``: greedy at temperature 0, otherwise a draw from softmax(filtered
    logits / temperature).

    The learner's own ``top_p_filter`` (the previous exercise; passed explicitly or the one sample_next_token calls)
    is re-checked first, and a ``top_k_filter`` of their own too."""
    mine_top_p = learner_dependency(sample_fn, "top_p_filter", top_p_filter, reference=_reference_top_p)
    if mine_top_p is not None:
        prerequisite(check_top_p, mine_top_p, "top_p_filter", "sample_next_token")
    mine_top_k = learner_dependency(sample_fn, "top_k_filter", top_k_filter, reference=_reference_top_k)
    if mine_top_k is not None:
        _top_k_prerequisite(mine_top_k)
    gen = torch.Generator().manual_seed(0)
    logits = 2 * torch.randn(5, 9, generator=gen)  # (B, V)

    # greedy: exactly the argmax of each row
    what = "sample_next_token(logits, temperature=0)"
    out = call(sample_fn, logits, 0.0, what=what)
    if not isinstance(out, torch.Tensor):
        fail(f"{what}: returned {type(out).__name__}, not a LongTensor of token ids.", SAMPLE_FIX)
    if out.shape != (logits.shape[0],):
        fail(f"{what}: returned shape {tuple(out.shape)}, not one token id per row ({logits.shape[0]},).",
             "squeeze the sample dimension: torch.multinomial(probs, 1, generator=generator).squeeze(-1).")
    if not torch.equal(out.long(), logits.argmax(-1)):
        fail(f"{what}: temperature 0 must be greedy decoding; got {out.tolist()}, expected the argmax "
             f"{logits.argmax(-1).tolist()}.", "if temperature == 0: return logits.argmax(dim=-1) (no sampling, no "
                                               "division by zero).")

    # sampling: the empirical distribution of many seeded draws against the reference's distribution
    row = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0])
    cases = [(0.5, 1.0, None), (2.0, 1.0, None), (1.0, 0.75, None), (1.5, 1.0, 3), (1.5, 0.8, 5), (2.0, 0.6, 6)]
    for temperature, top_p, top_k in cases:
        what = f"sample_next_token(temperature={temperature}, top_p={top_p}, top_k={top_k})"
        batch = row.expand(DRAWS, -1).clone()
        torch.manual_seed(1)  # also covers a learner who ignores the generator
        tokens = call(sample_fn, batch, temperature, top_p, top_k, torch.Generator().manual_seed(2), what=what)
        if not isinstance(tokens, torch.Tensor) or tokens.shape != (DRAWS,):
            shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            fail(f"{what}: returned {shape}, not one token id per row ({DRAWS},).", SAMPLE_FIX)
        freq = _frequencies(tokens.long(), row.numel())
        expected = _expected_probs(row[None], temperature, top_p, top_k)[0]
        outside = (expected == 0) & (freq > 0)
        tv = 0.5 * (freq - expected).abs().sum().item()
        if tv < TV_LIMIT and not outside.any():
            continue
        distances = [(0.5 * (freq - probs[0]).abs().sum().item(), problem)
                     for probs, problem in _sampling_variants(row[None], temperature, top_p, top_k)]
        best, problem = min(distances, key=lambda pair: pair[0])
        if best < TV_LIMIT:
            fail(f"{what}: {problem}", SAMPLE_FIX)
        if outside.any():
            fail(f"{what}: tokens {outside.nonzero()[:, 0].tolist()} were sampled although top-k/top-p removes "
                 f"them: the draw does not use the FILTERED logits.", SAMPLE_FIX)
        fail(f"{what}: the sampled frequencies {[round(f, 3) for f in freq.tolist()]} do not follow "
             f"softmax(filtered logits / temperature) = {[round(p, 3) for p in expected.tolist()]}.", SAMPLE_FIX)

    # the generator makes sampling reproducible
    what = "sample_next_token(..., generator=torch.Generator().manual_seed(0)) twice"
    batch = row.expand(64, -1).clone()
    first = call(sample_fn, batch, 1.0, 1.0, None, torch.Generator().manual_seed(0), what=what)
    torch.manual_seed(12345)  # a different global state: only the generator may decide
    second = call(sample_fn, batch, 1.0, 1.0, None, torch.Generator().manual_seed(0), what=what)
    if not torch.equal(first, second):
        fail(f"{what}: the same seeded generator gave different tokens: the generator argument is not used.",
             "torch.multinomial(probs, 1, generator=generator), so that a seed makes generation reproducible.")
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
    """Records (number of tokens, start_pos, whether caches were given) for every call into the model, and the
    kv_caches list of the first call."""

    def __init__(self, model):
        self.calls = []
        self.caches = None
        self.handle = model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        tgt = args[0] if args else kwargs.get("tgt")
        caches = kwargs.get("kv_caches")
        if self.caches is None and caches is not None:
            self.caches = list(caches)
        self.calls.append((tgt.shape[1], int(kwargs.get("start_pos", 0)), caches is not None))


def _reference_ids(model, ids, new_tokens):
    return model.generate_kv(ids, max_new_tokens=new_tokens, temperature=0.0, eos_token_id=None)


@torch.no_grad()
def _first_position_ids(model, ids, new_tokens):
    """Greedy decoding that takes the argmax of the FIRST position's logits after the prefill (a typical slip)."""
    args, (batch, prompt_len) = model.args, ids.shape
    caches = [KV_Cache(batch, args.n_kv_heads, prompt_len + new_tokens, args.head_dim)
              for _ in range(args.num_layers)]
    logits = model(ids, kv_caches=caches).logits[:, 0]
    for step in range(new_tokens):
        token = logits.argmax(-1)
        ids = torch.cat([ids, token[:, None]], dim=1)
        if step + 1 < new_tokens:
            logits = model(token[:, None], kv_caches=caches, start_pos=prompt_len + step).logits[:, -1]
    return ids


LOOP_FIX = ("caches = [KV_Cache(B, args.n_kv_heads, T + max_new_tokens, args.head_dim, dtype, device) for _ in "
            "range(args.num_layers)]; logits = model(ids, kv_caches=caches, start_pos=0).logits[:, -1]; then per step: "
            "token = sample_next_token(logits, temperature, top_p, top_k, generator); append it; logits = "
            "model(token[:, None], kv_caches=caches, start_pos=T + step).logits[:, -1].")


def _check_caches(log, model, what: str) -> None:
    """One KV_Cache per layer, with the model's K/V heads, head size and dtype."""
    args = model.args
    caches = log.caches or []
    if len({id(c) for c in caches}) < len(caches):
        fail(f"{what}: one KV_Cache object is shared by all {args.num_layers} layers, so each layer overwrites the "
             f"keys and values of the others.",
             "a list with one cache per layer: [KV_Cache(...) for _ in range(args.num_layers)], not [cache] * n.")
    if len(caches) != args.num_layers:
        fail(f"{what}: kv_caches holds {len(caches)} caches for {args.num_layers} layers.",
             "[KV_Cache(...) for _ in range(args.num_layers)].")
    dtype = next(model.parameters()).dtype
    for cache in caches:
        buffer = getattr(cache, "k_cache", None)
        if not isinstance(buffer, torch.Tensor):
            continue
        if buffer.shape[1] != args.n_kv_heads or buffer.shape[3] != args.head_dim:
            fail(f"{what}: the caches hold {buffer.shape[1]} heads of size {buffer.shape[3]}, the model has "
                 f"n_kv_heads={args.n_kv_heads} K/V heads of size head_dim={args.head_dim}.", LOOP_FIX)
        if buffer.dtype != dtype:
            fail(f"{what}: the caches are {buffer.dtype} for a {dtype} model (the keys and values are stored in the "
                 f"model's dtype).", "KV_Cache(..., dtype=next(model.parameters()).dtype, device=ids.device).")


def _run_loop(generate_fn, model, ids, new_tokens, what, **kwargs):
    log = _CallLog(model)
    try:
        out = call(generate_fn, model, ids.clone(), new_tokens, what=what, **kwargs)
    finally:
        log.handle.remove()
    if not isinstance(out, torch.Tensor):
        fail(f"{what}: returned {type(out).__name__}, not the LongTensor of ids (B, T + max_new_tokens).", LOOP_FIX)
    return out, log


@checker
def check_generate_kv(generate_fn, *, sample_next_token=None) -> None:
    """Check a learner's ``generate_kv(model, ids (B, T), max_new_tokens, temperature=0.0, top_p=1.0, top_k=None,
    generator=None) -> ids (B, T + max_new_tokens)``: a prefill of the whole prompt into fresh KV caches (one per
    layer), then one token per step at start_pos = current length. Greedy tokens must equal ``Llama3.generate_kv``,
    and every sampling argument must have its effect.

    The learner's own ``sample_next_token`` (the previous exercise; passed explicitly or the one the loop calls) is
    re-checked first, and with it their ``top_p_filter``."""
    mine_sample = learner_dependency(generate_fn, "sample_next_token", sample_next_token,
                                     reference=reference_sample_next_token)
    if mine_sample is not None:
        prerequisite(check_sample_next_token, mine_sample, "sample_next_token", "generate_kv")
    params = inspect.signature(generate_fn).parameters
    for seed, (batch, prompt_len, new_tokens) in enumerate([(1, 5, 8), (2, 7, 6)]):
        model = _model(seed)
        gen = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, model.args.vocab_size, (batch, prompt_len), generator=gen)  # (B, T)
        expected = _reference_ids(model, ids, new_tokens)
        what = f"generate_kv(model, ids of shape {tuple(ids.shape)}, max_new_tokens={new_tokens}, temperature=0)"
        out, log = _run_loop(generate_fn, model, ids, new_tokens, what, temperature=0.0)
        if out.shape != expected.shape:
            fail(f"{what}: returned shape {tuple(out.shape)}, expected {tuple(expected.shape)}: the prompt followed "
                 f"by exactly max_new_tokens new tokens.", LOOP_FIX)
        if not torch.equal(out[:, :prompt_len], ids):
            fail(f"{what}: the returned ids do not start with the prompt unchanged.", LOOP_FIX)
        calls = log.calls
        if not calls:
            fail(f"{what}: the model was never called.", LOOP_FIX)
        if not calls[0][2]:
            fail(f"{what}: the first call gets no kv_caches, so nothing is cached.", LOOP_FIX)
        _check_caches(log, model, what)
        if calls[0][0] != prompt_len:
            if calls[0][0] == 1 and not torch.equal(out, expected):
                fail(f"{what}: the prompt is not prefilled: only its last token reaches the caches.",
                     "run the WHOLE prompt through the model once (start_pos=0) to fill the caches, then feed one "
                     "token per step.")
            if calls[0][0] != 1:
                fail(f"{what}: the first call feeds {calls[0][0]} tokens, not the whole prompt ({prompt_len}).",
                     LOOP_FIX)
        decode = calls[1:] if calls[0][0] == prompt_len else []
        if any(n != 1 for n, _, _ in decode):
            fail(f"{what}: after the prefill the model was called with {[n for n, _, _ in calls]} tokens, not only the "
                 f"newest token each step; with a cache the past is already stored, which is what makes decoding "
                 f"linear instead of quadratic.", "feed token[:, None] (B, 1) at each step.")
        if any(not cached for _, _, cached in decode):
            fail(f"{what}: a decode step was called without kv_caches: the cache is not used.", LOOP_FIX)
        positions = [pos for _, pos, _ in decode]
        right = list(range(prompt_len, prompt_len + len(decode)))
        if positions != right:
            fail(f"{what}: decode steps were called with start_pos {positions}, expected {right}.",
                 "start_pos is the number of tokens already in the cache: the prompt length, then +1 per step.")
        if not torch.equal(out, expected):
            if torch.equal(out, _first_position_ids(model, ids, new_tokens)):
                fail(f"{what}: after the prefill the next token is taken from the FIRST position's logits; it is the "
                     f"LAST position that predicts the next token.", "logits = model(...).logits[:, -1].")
            fail(f"{what}: greedy tokens {out[:, prompt_len:].tolist()} differ from the reference "
                 f"{expected[:, prompt_len:].tolist()}.", LOOP_FIX)

    # a bfloat16 model: the caches follow the model's dtype
    model = _model(0).to(torch.bfloat16)
    ids = torch.randint(0, model.args.vocab_size, (1, 4), generator=torch.Generator().manual_seed(3))
    what = "generate_kv(bfloat16 model, ids, 2, temperature=0)"
    log = _CallLog(model)
    try:
        generate_fn(model, ids.clone(), 2, temperature=0.0)
    except Exception:  # noqa: BLE001 - a wrong cache dtype crashes inside attention; the cache check names it
        pass
    finally:
        log.handle.remove()
    if log.caches is not None:
        _check_caches(log, model, what)
    _check_arguments(generate_fn, params)
    # the same line as before the argument checks, so that the stored outputs of the solution notebooks stay valid
    passed("generate_kv: prefill once, one token per step at the right start_pos; greedy tokens equal the reference.")


def _check_arguments(generate_fn, params) -> None:
    """Every sampling argument of the loop's signature must reach the sampler: each is given a value whose effect is
    certain (top_k=1 and a tiny top_p are greedy; temperature 50 is not; a seeded generator repeats its draw)."""
    model = _model(0)
    ids = torch.randint(0, model.args.vocab_size, (2, 4), generator=torch.Generator().manual_seed(3))
    greedy = _reference_ids(model, ids, 5)

    def run(**kwargs):
        what = f"generate_kv(model, ids, 5, {', '.join(f'{k}={v}' for k, v in kwargs.items())})"
        out, _ = _run_loop(generate_fn, model, ids, 5, what, **kwargs)
        if out.shape != greedy.shape or bool((out < 0).any()) or bool((out >= model.args.vocab_size).any()):
            fail(f"{what}: returned {tuple(out.shape)} ids, or ids outside the vocabulary, when sampling.", LOOP_FIX)
        return out, what

    def seeded(seed):
        return torch.Generator().manual_seed(seed) if "generator" in params else None

    sampling = {"generator": seeded(7)} if "generator" in params else {}
    torch.manual_seed(0)
    out, what = run(temperature=50.0, **sampling)
    if torch.equal(out, greedy):
        fail(f"{what}: at temperature 50 the tokens are the greedy ones: the temperature argument does not reach "
             f"the sampler.", "pass temperature on: sample_next_token(logits, temperature, top_p, top_k, generator).")
    if "top_k" in params:
        out, what = run(temperature=1.0, top_k=1, **sampling)
        if not torch.equal(out, greedy):
            fail(f"{what}: top_k=1 keeps only the most likely token, so the tokens must be the greedy ones; yours are "
                 f"not: the top_k argument does not reach the sampler.",
                 "pass top_k on: sample_next_token(logits, temperature, top_p, top_k, generator).")
    if "top_p" in params:
        out, what = run(temperature=1.0, top_p=1e-6, **sampling)
        if not torch.equal(out, greedy):
            fail(f"{what}: top_p=1e-6 keeps only the most likely token, so the tokens must be the greedy ones; yours "
                 f"are not: the top_p argument does not reach the sampler.",
                 "pass top_p on: sample_next_token(logits, temperature, top_p, top_k, generator).")
    if "generator" in params:
        torch.manual_seed(1)
        first, what = run(temperature=50.0, generator=seeded(11))
        torch.manual_seed(2)  # another global state: only the generator may decide
        second, _ = run(temperature=50.0, generator=seeded(11))
        if not torch.equal(first, second):
            fail(f"{what} twice under different global seeds: the same seeded generator gave different tokens: the "
                 f"generator argument does not reach the sampler.",
                 "pass generator on: sample_next_token(logits, temperature, top_p, top_k, generator).")
        torch.manual_seed(1)
        other, _ = run(temperature=50.0, generator=seeded(12))
        if torch.equal(first, other):
            fail(f"{what}: generators seeded 11 and 12 give the same tokens: the generator passed in is not the one "
                 f"that draws.", "pass generator on: sample_next_token(logits, temperature, top_p, top_k, generator).")
