"""The decoders behind generate / generate_kv: every step's logits equal the full forward's, the fast decoder never
serves stale weights, and the attention calls leave CUDA's fused kernels usable."""

import pytest
import torch
import torch.nn.functional as F

from llama3.decoding import Decoder
from llama3.fast import FastDecoder


def sharpen(model, scale: float = 8.0):
    """Scale the query and key projections so that attention scores are O(1), not ~0.03 as with std-0.02 weights,
    and the head so that logits are O(1), as in a trained model: attention then depends on the RoPE positions, and
    a decoder that gets a position wrong gives other logits."""
    with torch.no_grad():
        for layer in model.layers:
            layer.attention.wq.weight.mul_(scale)
            layer.attention.wk.weight.mul_(scale)
        model.output.weight.mul_(scale)
    return model


@pytest.fixture
def sharp_model(make_model):
    return sharpen(make_model(seed=4, max_seq_len=32))


@pytest.fixture
def padded_batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 96, (3, 20), generator=g)
    mask = torch.ones(3, 20, dtype=torch.long)
    mask[1, :4] = 0  # left padding
    mask[2, :6] = 0
    return ids, mask


def test_positions_matter_in_the_sharp_model(sharp_model, padded_batch):
    """The oracle below is only worth something if a wrong position changes the logits: check that it does."""
    ids, _ = padded_batch
    with torch.no_grad():
        right = sharp_model(ids).logits
        frozen = torch.arange(20).clamp(max=7)  # positions that stop advancing after the 8-token "prompt"
        wrong = sharp_model(ids, position_ids=frozen).logits
    assert (right[:, 8:] - wrong[:, 8:]).abs().max() > 0.2


DECODERS = {
    "readable, cached": lambda m, b, n: Decoder(m, b, n),
    "readable, no cache": lambda m, b, n: Decoder(m, b, n, use_cache=False),
    "fast": lambda m, b, n: FastDecoder(m, b, n),
    "fast, static shapes": lambda m, b, n: FastDecoder(m, b, n, static=True),
}


@pytest.mark.parametrize("name", list(DECODERS))
@pytest.mark.parametrize("padded", [False, True])
def test_every_decode_step_matches_the_full_forward(sharp_model, padded_batch, name, padded):
    ids, mask = padded_batch
    mask = mask if padded else None
    prompt = 8
    with torch.no_grad():
        full = sharp_model(ids, mask).logits  # (B, 20, V): the oracle
        decoder = DECODERS[name](sharp_model, 3, 24)
        got = [decoder.prefill(ids[:, :prompt], None if mask is None else mask[:, :prompt])]
        for t in range(prompt, 20):
            assert decoder.pos == t
            got.append(decoder.step(ids[:, t]))
    for t, logits in enumerate(got, start=prompt - 1):
        torch.testing.assert_close(logits, full[:, t], atol=1e-4, rtol=1e-4, msg=f"{name}: logits after position {t}")


def test_fast_readable_and_uncached_paths_agree(sharp_model, padded_batch):
    ids, mask = padded_batch
    kw = dict(attention_mask=mask, max_new_tokens=10, temperature=0)
    fast_tokens = sharp_model.generate_kv(ids, **kw)
    assert torch.equal(fast_tokens, sharp_model.generate_kv(ids, fast=False, **kw))
    assert torch.equal(fast_tokens, sharp_model.generate(ids, **kw))
    assert torch.equal(fast_tokens, sharp_model.generate_kv(ids, compile=True, **kw))  # CPU: the same eager step


def mutate_with_fused_adamw(model):
    model.output.weight.grad = torch.randn_like(model.output.weight)
    torch.optim.AdamW([model.output.weight], lr=0.5, fused=True).step()
    model.output.weight.grad = None


def mutate_through_data(model):
    model.output.weight.data.add_(torch.randn_like(model.output.weight))


def mutate_through_numpy(model):
    model.output.weight.detach().numpy()[:] *= -1  # shares memory, invisible to torch's version counters


@pytest.mark.parametrize("mutate", [mutate_with_fused_adamw, mutate_through_data, mutate_through_numpy])
def test_generate_kv_never_serves_stale_weights(sharp_model, mutate):
    prompt = torch.randint(0, 97, (2, 5), generator=torch.Generator().manual_seed(3))
    before = sharp_model.generate_kv(prompt, max_new_tokens=12, temperature=0)
    version = sharp_model.output.weight._version
    mutate(sharp_model)
    after = sharp_model.generate_kv(prompt, max_new_tokens=12, temperature=0)
    assert not torch.equal(before, after), "the mutation should change greedy tokens"
    assert torch.equal(after, sharp_model.generate(prompt, max_new_tokens=12, temperature=0))
    if mutate is not mutate_with_fused_adamw:
        assert sharp_model.output.weight._version == version  # what made a version-keyed cache go stale


class SDPARecorder:
    """Records, for every F.scaled_dot_product_attention call, (query rows, key length, mask given, is_causal)."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = F.scaled_dot_product_attention

        def record(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kwargs):
            self.calls.append((q.shape[-2], k.shape[-2], attn_mask is not None, is_causal))
            return real(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, **kwargs)

        monkeypatch.setattr(F, "scaled_dot_product_attention", record)


@pytest.mark.parametrize("fast", [True, False])
def test_unpadded_decoding_passes_no_mask_so_cuda_flash_applies(make_model, monkeypatch, fast):
    """CUDA's flash kernel refuses any attn_mask: a prompt without padding must run with is_causal=True, and a
    decode step without padding with no mask at all (one query row attends to every cached key)."""
    model = make_model(max_seq_len=32)
    prompt = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(0))
    recorder = SDPARecorder(monkeypatch)
    model.generate_kv(prompt, max_new_tokens=4, temperature=0, fast=fast)
    layers = model.args.num_layers
    prefill, steps = recorder.calls[:layers], recorder.calls[layers:]
    assert prefill == [(6, 6, False, True)] * layers
    assert len(steps) == 3 * layers and all(not masked and not causal for _, _, masked, causal in steps)
    # the query heads of a group are folded into rows of their K/V head: 2 rows per K/V head here
    assert {(rows, keys) for rows, keys, _, _ in steps} == {(2, 7), (2, 8), (2, 9)}


def test_padded_decoding_masks_the_padding(make_model, monkeypatch):
    model = make_model(max_seq_len=32)
    prompt = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(prompt)
    mask[0, :2] = 0
    recorder = SDPARecorder(monkeypatch)
    model.generate_kv(prompt, attention_mask=mask, max_new_tokens=3, temperature=0)
    assert recorder.calls and all(masked for _, _, masked, _ in recorder.calls)


def test_compiled_static_step_gives_the_plain_tokens(sharp_model, padded_batch):
    """FastDecoder(compile=True) directly (generate_kv uses it on CUDA only; on the CPU it measured no faster)."""
    ids, mask = padded_batch
    with torch.no_grad():
        full = sharp_model(ids, mask).logits
        decoder = FastDecoder(sharp_model, 3, 24, compile=True)
        decoder.prefill(ids[:, :12], mask[:, :12])
        for t in range(12, 16):
            torch.testing.assert_close(decoder.step(ids[:, t]), full[:, t], atol=1e-4, rtol=1e-4)
