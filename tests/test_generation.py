"""generate and generate_kv: identical greedy tokens, left-padded batches, sampling, stopping, bad input."""

import pytest
import torch

from llama3 import KV_Cache, Llama3, ModelArgs
from llama3.generation import sample_next_token, top_k_filter, top_p_filter


@pytest.mark.parametrize("use_flash", [True, False])
def test_greedy_generate_and_generate_kv_give_identical_tokens(make_model, use_flash):
    model = make_model(use_flash=use_flash, max_seq_len=64)
    prompt = torch.randint(0, 97, (1, 7), generator=torch.Generator().manual_seed(0))
    slow = model.generate(prompt, max_new_tokens=50, temperature=0)
    fast = model.generate_kv(prompt, max_new_tokens=50, temperature=0)
    assert slow.shape == (1, 57) and torch.equal(slow, fast)
    # and both equal transformers' greedy search on the same weights
    hf = model.to_hf()
    theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=50, do_sample=False,
                         eos_token_id=None, pad_token_id=0)
    assert torch.equal(fast, theirs)


def test_flash_and_manual_decode_agree(make_model):
    flash, manual = make_model(), make_model(use_flash=False)
    manual.load_state_dict(flash.state_dict())
    prompt = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(1))
    logits = []
    for model in (flash, manual):
        caches = [KV_Cache(2, 2, 12, 8) for _ in range(2)]
        with torch.no_grad():
            prefill = model(prompt, kv_caches=caches).logits
            step = model(prompt[:, :1], kv_caches=caches, start_pos=9).logits
        logits.append(torch.cat([prefill, step], 1))
    torch.testing.assert_close(logits[0], logits[1], atol=1e-5, rtol=1e-5)


def test_left_padded_batch_gives_each_row_its_own_tokens(make_model):
    model = make_model(seed=3)
    g = torch.Generator().manual_seed(2)
    rows = [torch.randint(0, 96, (n,), generator=g) for n in (3, 8, 5)]
    width = 8
    ids = torch.full((3, width), 96)  # 96 is padding
    mask = torch.zeros(3, width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = row
        mask[i, width - len(row):] = 1
    for fn in (model.generate_kv, model.generate):
        batch = fn(ids, attention_mask=mask, max_new_tokens=20, temperature=0)
        for i, row in enumerate(rows):
            alone = fn(row[None], max_new_tokens=20, temperature=0)
            assert torch.equal(batch[i, width:], alone[0, len(row):]), f"row {i} of {fn.__name__}"


def test_text_prompts_with_the_real_tokenizer(tokenizer):
    torch.manual_seed(0)
    args = ModelArgs(vocab_size=len(tokenizer), tokenizer=tokenizer, d_model=32, heads=4, group_size=2, num_layers=2,
                     max_seq_len=64)
    model = Llama3(args).eval()
    text = model.generate_kv("Once upon a time", max_new_tokens=5, temperature=0)
    assert isinstance(text, str) and text.startswith("Once upon a time") and len(text) > len("Once upon a time")
    batch = model.generate_kv(["Once upon a time", "Hi"], max_new_tokens=5, temperature=0)
    assert batch[0] == text
    assert batch[1] == model.generate_kv("Hi", max_new_tokens=5, temperature=0)
    assert "[PAD]" not in batch[1]


def first(row: list[int], token: int) -> int:
    return row.index(token)


@pytest.mark.parametrize("path", ["generate", "generate_kv", "readable"])
def test_a_row_stops_at_its_eos_is_padded_after_it_and_the_loop_ends_when_all_rows_have(make_model, path):
    """The oracle is a free run (no EOS): with EOS, each row must equal its free run up to and including its first
    EOS, then hold the pad token; the loop must end at the step where the last row emits EOS."""
    model = make_model(seed=6, max_seq_len=40, pad_token_id=96)
    run = {"generate": model.generate, "generate_kv": model.generate_kv,
           "readable": lambda *a, **k: model.generate_kv(*a, fast=False, **k)}[path]
    base = torch.randint(0, 96, (6,), generator=torch.Generator().manual_seed(5))
    solo = model.generate_kv(base[None], max_new_tokens=2, temperature=0)[0]
    # row 1 is row 0 two greedy tokens ahead, so it meets any token of row 0's continuation two steps earlier
    ids = torch.stack([torch.cat([torch.tensor([96, 96]), base]), solo])
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    free = run(ids, attention_mask=mask, max_new_tokens=20, temperature=0, eos_token_id=None)[:, 8:].tolist()
    assert free[1][:18] == free[0][2:20]  # the construction holds
    eos = next(t for j, t in enumerate(free[0]) if j >= 4 and t not in free[0][:j])
    stop0, stop1 = first(free[0], eos), first(free[1], eos)
    assert stop1 == stop0 - 2
    out = run(ids, attention_mask=mask, max_new_tokens=20, temperature=0, eos_token_id=eos)[:, 8:].tolist()
    assert len(out[0]) == stop0 + 1  # stopped when the last row finished, not at max_new_tokens
    assert out[0] == free[0][:stop0 + 1]
    assert out[1] == free[1][:stop1 + 1] + [96] * (stop0 - stop1)  # padded after its EOS
    # an EOS that only row 0 meets: row 1 goes on to max_new_tokens, unchanged by row 0 stopping
    only0 = [t for t in free[0] if t not in free[1]]
    assert only0, "the construction needs a token that row 0 meets and row 1 does not"
    stop0 = first(free[0], only0[0])
    out = run(ids, attention_mask=mask, max_new_tokens=20, temperature=0, eos_token_id=only0[0])[:, 8:].tolist()
    assert out[1] == free[1] and out[0] == free[0][:stop0 + 1] + [96] * (19 - stop0)


def test_stops_at_max_seq_len(make_model):
    model = make_model(max_seq_len=20)
    prompt = torch.randint(0, 97, (2, 4), generator=torch.Generator().manual_seed(5))
    assert model.generate_kv(prompt, max_new_tokens=100, temperature=0).shape == (2, 20)
    assert model.generate(prompt, max_new_tokens=100, temperature=0).shape == (2, 20)


def test_seeded_sampling_is_reproducible_and_seeds_differ(make_model):
    model = make_model()
    prompt = torch.randint(0, 97, (1, 4), generator=torch.Generator().manual_seed(0))
    a = model.generate_kv(prompt, max_new_tokens=30, top_p=0.9, seed=7)
    b = model.generate_kv(prompt, max_new_tokens=30, top_p=0.9, seed=7)
    c = model.generate_kv(prompt, max_new_tokens=30, top_p=0.9, seed=8)
    d = model.generate(prompt, max_new_tokens=30, top_p=0.9, seed=7)
    assert torch.equal(a, b) and not torch.equal(a, c) and torch.equal(a, d)


def test_top_p_keeps_the_token_that_crosses_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda p: torch.isfinite(top_p_filter(logits, p))[0].tolist()
    assert kept(0.5) == [True, False, False, False]  # 0.5 alone reaches 0.5
    assert kept(0.6) == [True, True, False, False]  # 0.5 < 0.6: the token that crosses p is kept
    assert kept(0.95) == [True, True, True, False]
    assert kept(1.0) == [True, True, True, True]
    shuffled = logits[:, [2, 0, 3, 1]]  # order must not matter
    assert torch.isfinite(top_p_filter(shuffled, 0.6))[0].tolist() == [False, True, False, True]
    assert torch.isfinite(top_k_filter(logits, 2))[0].tolist() == [True, True, False, False]


def test_sampling_follows_the_filtered_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(20000, 4)
    g = torch.Generator().manual_seed(0)
    tokens = sample_next_token(logits, temperature=1.0, top_p=0.6, generator=g)
    freq = torch.bincount(tokens, minlength=4) / len(tokens)
    torch.testing.assert_close(freq, torch.tensor([0.625, 0.375, 0.0, 0.0]), atol=0.015, rtol=0)
    assert torch.equal(sample_next_token(logits[:2], temperature=0), torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize("kwargs,error,phrase", [
    (dict(top_p=0.0), ValueError, "top_p must be in"),
    (dict(top_p=1.5), ValueError, "top_p must be in"),
    (dict(temperature=-0.1), ValueError, "temperature must be >= 0"),
    (dict(top_k=0), ValueError, "top_k must be >= 1"),
    (dict(max_new_tokens=0), ValueError, "max_new_tokens"),
    (dict(temperature=float("nan")), ValueError, "temperature must be >= 0 and finite"),
    (dict(temperature=float("inf")), ValueError, "temperature must be >= 0 and finite"),
    (dict(top_p=float("nan")), ValueError, "top_p must be in"),
])
def test_bad_sampling_arguments_are_refused(make_model, kwargs, error, phrase):
    model = make_model()
    with pytest.raises(error, match=phrase):
        model.generate_kv(torch.tensor([[1, 2, 3]]), **kwargs)


def test_bad_prompts_are_refused(make_model, tokenizer):
    model = make_model(max_seq_len=16, max_batch_size=2)
    with pytest.raises(ValueError, match="prompt has 16 tokens but max_seq_len is 16"):
        model.generate_kv(torch.ones(1, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="exceeds max_batch_size=2"):
        model.generate_kv(torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        model.generate_kv("", tokenizer=tokenizer)
    with pytest.raises(ValueError, match="empty"):
        model.generate(torch.ones(1, 0, dtype=torch.long))
    with pytest.raises(TypeError, match="needs a tokenizer"):
        model.generate_kv("Once upon a time")
    with pytest.raises(TypeError, match="prompt must be"):
        model.generate_kv(42)
    with pytest.raises(ValueError, match="longer than max_seq_len=16"):
        model(torch.ones(1, 17, dtype=torch.long))


@pytest.mark.parametrize("ids,phrase", [
    (torch.tensor([[1, 2, 97]]), "Token id 97 is outside the vocabulary \\[0, 97\\)"),
    (torch.tensor([[1, -1, 3]]), "Token id -1 is outside the vocabulary"),
])
def test_token_ids_outside_the_vocabulary_are_refused(make_model, ids, phrase):
    model = make_model()
    for call in (model, model.generate, model.generate_kv):
        with pytest.raises(ValueError, match=phrase):
            call(ids) if call is model else call(ids, max_new_tokens=2)


@pytest.mark.parametrize("mask,phrase", [
    (torch.ones(3, 2, dtype=torch.long), r"attention_mask must have shape \(batch, seq\) = \(2, 3\), got \(3, 2\)"),
    (torch.ones(6, dtype=torch.long), "must have shape"),
    (torch.tensor([[1, 1, 1], [0, 2, 1]]), "only 0 \\(padding\\) and 1"),
    (torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.5, 1.0]]), "only 0 \\(padding\\) and 1"),
    (torch.tensor([[1, 1, 1], [0, 0, 0]]), "row 1 has no real token"),
])
def test_bad_attention_masks_are_refused_by_forward_and_generate(make_model, mask, phrase):
    model = make_model()
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    for call in (lambda: model(ids, mask), lambda: model.generate(ids, attention_mask=mask, max_new_tokens=2),
                 lambda: model.generate_kv(ids, attention_mask=mask, max_new_tokens=2)):
        with pytest.raises(ValueError, match=phrase):
            call()


def test_generation_refuses_right_padding(make_model):
    model = make_model()
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    with pytest.raises(ValueError, match="row 1 has padding \\(0\\) after a real token.*LEFT padding"):
        model.generate_kv(ids, attention_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]), max_new_tokens=2)
    model(ids, torch.tensor([[1, 1, 1], [1, 1, 0]]))  # forward takes any 0/1 mask (training pads on the right)
