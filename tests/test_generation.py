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


def test_stops_at_eos_per_row_and_at_max_seq_len(make_model):
    model = make_model(max_seq_len=20)
    prompt = torch.randint(0, 97, (2, 4), generator=torch.Generator().manual_seed(5))
    free = model.generate_kv(prompt, max_new_tokens=100, temperature=0)
    assert free.shape == (2, 20)  # stopped by max_seq_len, not by max_new_tokens
    eos = int(free[0, 6])  # the third greedy token of row 0 becomes EOS
    out = model.generate_kv(prompt, max_new_tokens=100, temperature=0, eos_token_id=eos)
    first_eos_row0 = (out[0, 4:] == eos).nonzero()[0].item()
    assert first_eos_row0 <= 2
    assert torch.equal(out, model.generate(prompt, max_new_tokens=100, temperature=0, eos_token_id=eos))


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
