"""check_top_p, check_sample_next_token and check_generate_kv accept correct solutions and reject each planted
mistake with its own hint."""

import pytest
import torch

from llama3.checks import check_generate_kv, check_sample_next_token, check_top_p
from llama3.generation import sample_next_token, top_k_filter, top_p_filter
from llama3.generation import sample_next_token as reference_sample
from llama3.kv_cache import KV_Cache
from tests.checks_util import assert_named


# ------------------------------------------------------------------------------------------------------- top-p
def _sorted(logits):
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    return sorted_logits.softmax(-1), order


def top_p_by_loop(logits, p):
    """An independent correct solution: walk down each row's sorted tokens until the mass reaches p."""
    out = torch.full_like(logits, float("-inf"))
    for row in range(logits.shape[0]):
        probs = logits[row].softmax(-1)
        mass = 0.0
        for token in torch.argsort(probs, descending=True).tolist():
            out[row, token] = logits[row, token]
            mass += probs[token].item()
            if mass >= p:
                break
    return out


def top_p_drops_crossing_token(logits, p):
    probs, order = _sorted(logits)
    drop = probs.cumsum(-1) > p
    return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


def top_p_keeps_one_too_many(logits, p):
    probs, order = _sorted(logits)
    mass_before = probs.cumsum(-1) - probs
    drop = torch.zeros_like(mass_before, dtype=torch.bool)
    drop[..., 1:] = mass_before[..., :-1] >= p  # looks one token too far back
    return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


def top_p_without_scatter(logits, p):
    probs, order = _sorted(logits)
    return logits.masked_fill(probs.cumsum(-1) - probs >= p, float("-inf"))


def top_p_ascending(logits, p):
    sorted_logits, order = torch.sort(logits, dim=-1)
    probs = sorted_logits.softmax(-1)
    drop = probs.cumsum(-1) - probs >= p
    return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


def top_p_threshold_each(logits, p):
    return logits.masked_fill(logits.softmax(-1) < p, float("-inf"))


def top_p_zero_fill(logits, p):
    return top_p_filter(logits, p).nan_to_num(neginf=0.0)


def top_p_returns_probabilities(logits, p):
    return top_p_filter(logits, p).softmax(-1).log().nan_to_num(neginf=float("-inf")) + 1.0


def top_p_cumsum_over_logits(logits, p):
    """Accumulates the sorted LOGITS instead of their probabilities."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    drop = sorted_logits.cumsum(-1) - sorted_logits >= p
    return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


@pytest.mark.parametrize("fn", [top_p_filter, top_p_by_loop])
def test_correct_top_p_passes(fn, capsys):
    check_top_p(fn)
    assert "PASSED" in capsys.readouterr().out


TOP_P_MISTAKES = [
    (top_p_drops_crossing_token, "crosses p is dropped"),
    (top_p_keeps_one_too_many, "tokens outside the nucleus are kept"),
    (top_p_without_scatter, "no scatter back to the vocabulary order"),
    (top_p_ascending, "LEAST likely"),
    (top_p_threshold_each, "ADD UP to p"),
    (top_p_zero_fill, "the logit 0 instead of -inf"),
    (top_p_returns_probabilities, "the kept logits are changed"),
    (top_p_cumsum_over_logits, "the cumulative sum runs over the logits"),
]


@pytest.mark.parametrize("fn, hint", TOP_P_MISTAKES)
def test_planted_top_p_mistakes_get_their_own_hint(fn, hint):
    assert_named(check_top_p, fn, hint, [h for _, h in TOP_P_MISTAKES] + ["sort the probabilities in descending"])


# ---------------------------------------------------------------------------------------------------- sampling
def sample_with_categorical(logits, temperature=1.0, top_p=1.0, top_k=None, generator=None):
    """An independent correct sampler: inverse-CDF sampling with its own uniform draws."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    probs = top_p_filter(logits, top_p).softmax(-1)
    u = torch.rand(logits.shape[0], 1, generator=generator)
    return (probs.cumsum(-1) < u).sum(-1).clamp(max=logits.shape[-1] - 1)


def temperature_after_softmax(logits, temperature=1.0, top_p=1.0, top_k=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    probs = top_p_filter(logits, top_p).softmax(-1) / temperature
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def temperature_multiplied(logits, temperature=1.0, top_p=1.0, top_k=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    return reference_sample(logits * temperature * temperature, temperature, top_p, top_k, generator)


def top_p_before_temperature(logits, temperature=1.0, top_p=1.0, top_k=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    probs = (top_p_filter(logits, top_p) / temperature).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def top_k_ignored(logits, temperature=1.0, top_p=1.0, top_k=None, generator=None):
    return sample_next_token(logits, temperature, top_p, None, generator)


def top_p_before_top_k(logits, temperature=1.0, top_p=1.0, top_k=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    logits = top_p_filter(logits / temperature, top_p)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def greedy_by_sampling(logits, temperature=1.0, top_p=1.0, top_k=None, generator=None):
    return sample_next_token(logits, max(temperature, 1.0), top_p, top_k, generator)


def generator_ignored(logits, temperature=1.0, top_p=1.0, top_k=None, generator=None):
    return sample_next_token(logits, temperature, top_p, top_k, None)


def keeps_sample_dimension(logits, temperature=1.0, top_p=1.0, top_k=None, generator=None):
    return sample_next_token(logits, temperature, top_p, top_k, generator)[:, None]


@pytest.mark.parametrize("fn", [sample_next_token, sample_with_categorical])
def test_correct_samplers_pass(fn, capsys):
    check_sample_next_token(fn)
    assert "PASSED" in capsys.readouterr().out


SAMPLING_MISTAKES = [
    (temperature_after_softmax, "temperature has no effect"),
    (temperature_multiplied, "multiplied by temperature instead of divided"),
    (top_p_before_temperature, "the filters run before the temperature"),
    (top_p_before_top_k, "top-p is applied before top-k"),
    (top_k_ignored, "top_k has no effect"),
    (greedy_by_sampling, "temperature 0 must be greedy"),
    (generator_ignored, "the generator argument is not used"),
    (keeps_sample_dimension, "not one token id per row"),
]


@pytest.mark.parametrize("fn, hint", SAMPLING_MISTAKES)
def test_planted_sampling_mistakes_get_their_own_hint(fn, hint):
    assert_named(check_sample_next_token, fn, hint, [h for _, h in SAMPLING_MISTAKES])


# the notebook's sample_next_token calls the notebook's own top_p_filter (exercise 1) by its global name
def notebook_sample_next_token(logits, temperature=1.0, top_p=1.0, top_k=None, generator=None):
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    probs = top_p_filter(logits, top_p).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def test_sampling_with_a_wrong_top_p_says_fix_exercise_1_first(monkeypatch):
    """The cascade of the issue: a correct sampler over a wrong top_p_filter is not blamed for the order."""
    monkeypatch.setitem(globals(), "top_p_filter", top_p_drops_crossing_token)
    error = assert_named(check_sample_next_token, notebook_sample_next_token,
                         "Fix notebook 08, exercise 1 (top_p_filter) first", [h for _, h in SAMPLING_MISTAKES])
    assert "crosses p is dropped" in error.what


def test_sampling_with_a_wrong_top_k_of_ones_own_is_named(monkeypatch):
    monkeypatch.setitem(globals(), "top_k_filter", lambda logits, k: logits)
    assert_named(check_sample_next_token, notebook_sample_next_token, "Fix your top_k_filter first")


def test_sampling_cascade_takes_an_explicit_top_p():
    assert_named(check_sample_next_token, sample_next_token, "exercise 1 (top_p_filter) first",
                 top_p_filter=top_p_ascending)


# ------------------------------------------------------------------------------------------- the generation loop
def _caches(model, batch, length):
    args, dtype = model.args, next(model.parameters()).dtype
    return [KV_Cache(batch, args.n_kv_heads, length, args.head_dim, dtype) for _ in range(args.num_layers)]


@torch.no_grad()
def generate_kv(model, ids, max_new_tokens, temperature=0.0, top_p=1.0, top_k=None, generator=None):
    """A correct solution, the shape the notebook asks for."""
    batch, prompt_len = ids.shape
    caches = _caches(model, batch, prompt_len + max_new_tokens)
    logits = model(ids, kv_caches=caches, start_pos=0).logits[:, -1]
    for step in range(max_new_tokens):
        token = sample_next_token(logits, temperature, top_p, top_k, generator)
        ids = torch.cat([ids, token[:, None]], dim=1)
        if step + 1 < max_new_tokens:
            logits = model(token[:, None], kv_caches=caches, start_pos=prompt_len + step).logits[:, -1]
    return ids


@torch.no_grad()
def generate_kv_one_extra_call(model, ids, max_new_tokens, temperature=0.0):
    """Also correct: feeds the last token once more (a wasted step), greedy only."""
    batch, prompt_len = ids.shape
    caches = _caches(model, batch, prompt_len + max_new_tokens)
    logits = model(ids, kv_caches=caches).logits[:, -1]
    for step in range(max_new_tokens):
        token = logits.argmax(-1) if temperature == 0 else sample_next_token(logits, temperature)
        ids = torch.cat([ids, token[:, None]], dim=1)
        logits = model(token[:, None], kv_caches=caches, start_pos=prompt_len + step).logits[:, -1]
    return ids


@torch.no_grad()
def generate_without_cache(model, ids, max_new_tokens, temperature=0.0):
    for _ in range(max_new_tokens):
        ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids


@torch.no_grad()
def generate_feeding_everything(model, ids, max_new_tokens, temperature=0.0):
    """Passes caches but feeds the whole sequence every step (start_pos 0 each time)."""
    caches = _caches(model, ids.shape[0], ids.shape[1] + max_new_tokens)
    for _ in range(max_new_tokens):
        for cache in caches:
            cache.reset()
        logits = model(ids, kv_caches=caches, start_pos=0).logits[:, -1]
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids


@torch.no_grad()
def generate_without_prefill(model, ids, max_new_tokens, temperature=0.0):
    """Starts from the last prompt token only: the rest of the prompt never reaches the cache."""
    batch, prompt_len = ids.shape
    caches = _caches(model, batch, 1 + max_new_tokens)
    logits = model(ids[:, -1:], kv_caches=caches, start_pos=0).logits[:, -1]
    for step in range(max_new_tokens):
        token = logits.argmax(-1)
        ids = torch.cat([ids, token[:, None]], dim=1)
        if step + 1 < max_new_tokens:
            logits = model(token[:, None], kv_caches=caches, start_pos=1 + step).logits[:, -1]
    return ids


@torch.no_grad()
def generate_wrong_positions(model, ids, max_new_tokens, temperature=0.0):
    """Off by one: the first decode step writes over the last prompt position."""
    batch, prompt_len = ids.shape
    caches = _caches(model, batch, prompt_len + max_new_tokens)
    logits = model(ids, kv_caches=caches).logits[:, -1]
    for step in range(max_new_tokens):
        token = logits.argmax(-1)
        ids = torch.cat([ids, token[:, None]], dim=1)
        if step + 1 < max_new_tokens:
            logits = model(token[:, None], kv_caches=caches, start_pos=prompt_len + step - 1).logits[:, -1]
    return ids


@torch.no_grad()
def generate_from_first_position(model, ids, max_new_tokens, temperature=0.0):
    """Takes the argmax of the FIRST position's logits after the prefill."""
    batch, prompt_len = ids.shape
    caches = _caches(model, batch, prompt_len + max_new_tokens)
    logits = model(ids, kv_caches=caches).logits[:, 0]
    for step in range(max_new_tokens):
        token = logits.argmax(-1)
        ids = torch.cat([ids, token[:, None]], dim=1)
        if step + 1 < max_new_tokens:
            logits = model(token[:, None], kv_caches=caches, start_pos=prompt_len + step).logits[:, -1]
    return ids


@torch.no_grad()
def generate_one_shared_cache(model, ids, max_new_tokens, temperature=0.0, top_p=1.0, top_k=None, generator=None):
    """One KV_Cache object for every layer."""
    batch, prompt_len = ids.shape
    cache = _caches(model, batch, prompt_len + max_new_tokens)[0]
    caches = [cache] * model.args.num_layers
    logits = model(ids, kv_caches=caches).logits[:, -1]
    for step in range(max_new_tokens):
        token = sample_next_token(logits, temperature, top_p, top_k, generator)
        ids = torch.cat([ids, token[:, None]], dim=1)
        if step + 1 < max_new_tokens:
            logits = model(token[:, None], kv_caches=caches, start_pos=prompt_len + step).logits[:, -1]
    return ids


def _loop_dropping(name):
    """The correct loop with one sampling argument not passed on to sample_next_token."""
    @torch.no_grad()
    def loop(model, ids, max_new_tokens, temperature=0.0, top_p=1.0, top_k=None, generator=None):
        given = dict(temperature=temperature, top_p=top_p, top_k=top_k, generator=generator)
        given[name] = {"temperature": 0.0, "top_p": 1.0, "top_k": None, "generator": None}[name]
        return generate_kv(model, ids, max_new_tokens, **given)

    loop.__name__ = f"generate_kv_dropping_{name}"
    return loop


@torch.no_grad()
def generate_float32_caches(model, ids, max_new_tokens, temperature=0.0, top_p=1.0, top_k=None, generator=None):
    """Builds float32 caches whatever the model's dtype."""
    batch, prompt_len = ids.shape
    args = model.args
    caches = [KV_Cache(batch, args.n_kv_heads, prompt_len + max_new_tokens, args.head_dim, torch.float32)
              for _ in range(args.num_layers)]
    logits = model(ids, kv_caches=caches).logits[:, -1]
    for step in range(max_new_tokens):
        token = sample_next_token(logits, temperature, top_p, top_k, generator)
        ids = torch.cat([ids, token[:, None]], dim=1)
        if step + 1 < max_new_tokens:
            logits = model(token[:, None], kv_caches=caches, start_pos=prompt_len + step).logits[:, -1]
    return ids


def notebook_generate_kv(model, ids, max_new_tokens, temperature=0.0, top_p=1.0, top_k=None, generator=None):
    """The notebook's loop: calls the notebook's own sample_next_token by its global name."""
    with torch.no_grad():
        batch, prompt_len = ids.shape
        caches = _caches(model, batch, prompt_len + max_new_tokens)
        logits = model(ids, kv_caches=caches).logits[:, -1]
        for step in range(max_new_tokens):
            token = sample_next_token(logits, temperature, top_p, top_k, generator)
            ids = torch.cat([ids, token[:, None]], dim=1)
            if step + 1 < max_new_tokens:
                logits = model(token[:, None], kv_caches=caches, start_pos=prompt_len + step).logits[:, -1]
        return ids


def test_loop_with_a_wrong_sampler_says_fix_exercise_2_first(monkeypatch):
    monkeypatch.setitem(globals(), "sample_next_token", temperature_multiplied)
    error = assert_named(check_generate_kv, notebook_generate_kv,
                         "Fix notebook 08, exercise 2 (sample_next_token) first")
    assert "multiplied by temperature" in error.what


def test_loop_cascade_reaches_top_p_through_the_sampler(monkeypatch):
    monkeypatch.setitem(globals(), "sample_next_token", notebook_sample_next_token)
    monkeypatch.setitem(globals(), "top_p_filter", top_p_ascending)
    error = assert_named(check_generate_kv, notebook_generate_kv, "exercise 2 (sample_next_token) first")
    assert "exercise 1 (top_p_filter) first" in error.what


def generate_new_tokens_only(model, ids, max_new_tokens, temperature=0.0):
    return generate_kv(model, ids, max_new_tokens, temperature)[:, ids.shape[1]:]


@pytest.mark.parametrize("fn", [generate_kv, generate_kv_one_extra_call])
def test_correct_loops_pass(fn, capsys):
    check_generate_kv(fn)
    assert "PASSED" in capsys.readouterr().out


LOOP_MISTAKES = [
    (generate_without_cache, "the first call gets no kv_caches"),
    (generate_feeding_everything, "not only the newest token each step"),
    (generate_without_prefill, "the prompt is not prefilled"),
    (generate_wrong_positions, "start_pos [4, 5, 6"),
    (generate_from_first_position, "FIRST position's logits"),
    (generate_new_tokens_only, "the prompt followed by exactly max_new_tokens"),
    (generate_one_shared_cache, "one KV_Cache object is shared by all 2 layers"),
    (generate_float32_caches, "the caches are torch.float32 for a torch.bfloat16 model"),
    (_loop_dropping("temperature"), "the temperature argument does not reach the sampler"),
    (_loop_dropping("top_k"), "the top_k argument does not reach the sampler"),
    (_loop_dropping("top_p"), "the top_p argument does not reach the sampler"),
    (_loop_dropping("generator"), "the generator argument does not reach the sampler"),
]


@pytest.mark.parametrize("fn, hint", LOOP_MISTAKES)
def test_planted_loop_mistakes_get_their_own_hint(fn, hint):
    assert_named(check_generate_kv, fn, hint, [h for _, h in LOOP_MISTAKES])
