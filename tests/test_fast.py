"""The fast decode path (llama3.fast) gives the same greedy tokens as the readable paths."""

import pytest
import torch

from llama3 import fast


@pytest.fixture
def prompt():
    return torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(0))


def test_fast_readable_and_uncached_paths_agree(make_model, prompt):
    model = make_model()
    fast_tokens = model.generate_kv(prompt, max_new_tokens=40, temperature=0)
    readable = model.generate_kv(prompt, max_new_tokens=40, temperature=0, fast=False)
    uncached = model.generate(prompt, max_new_tokens=40, temperature=0)
    assert torch.equal(fast_tokens, readable) and torch.equal(fast_tokens, uncached)


def test_fast_step_logits_match_the_model(make_model, prompt):
    model = make_model(group_size=1)
    weights = fast.fast_weights(model)
    caches = [(torch.zeros(2, 4, 10, 8), torch.zeros(2, 4, 10, 8)) for _ in range(2)]
    visible = torch.zeros(2, 1, 1, 10, dtype=torch.bool)
    with torch.no_grad():
        full = model(prompt).logits  # (2, 7, V)
        for t in range(7):
            visible[..., t] = True
            logits = fast.decode_step(weights, caches, prompt[:, t:t + 1], torch.tensor([t]),
                                      torch.full((2, 1), t), visible)
            torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=1e-5)


def test_fast_weights_follow_parameter_updates(make_model, prompt):
    model = make_model()
    before = model.generate_kv(prompt, max_new_tokens=10, temperature=0)
    with torch.no_grad():
        model.output.weight.mul_(-1)  # an in-place update, as an optimiser step makes
    after = model.generate_kv(prompt, max_new_tokens=10, temperature=0)
    assert torch.equal(after, model.generate_kv(prompt, max_new_tokens=10, temperature=0, fast=False))
    assert not torch.equal(before, after)


def test_compiled_step_gives_identical_greedy_tokens(make_model, prompt):
    model = make_model(seed=1)
    mask = torch.ones_like(prompt)
    mask[1, :3] = 0  # a left-padded row
    plain = model.generate_kv(prompt, attention_mask=mask, max_new_tokens=25, temperature=0, fast=False)
    compiled = model.generate_kv(prompt, attention_mask=mask, max_new_tokens=25, temperature=0, compile=True)
    assert torch.equal(plain, compiled)
