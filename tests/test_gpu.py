"""CUDA checks: bfloat16 generation through the flash kernel, and a bf16-autocast training step."""

import pytest
import torch

from llama3 import Llama3
from tests.conftest import tiny_args

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def make_cuda_model(dtype):
    torch.manual_seed(0)
    # head_dim 64: the flash kernel wants head dims that are multiples of 8
    args = tiny_args(d_model=256, heads=4, group_size=2, num_layers=4, vocab_size=512, max_seq_len=256)
    return Llama3(args).to("cuda", dtype).eval()


def test_bf16_generate_kv_with_the_flash_kernel_tracks_float32():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model32 = make_cuda_model(torch.float32)
    model16 = make_cuda_model(torch.bfloat16)
    prompt = torch.randint(0, 512, (2, 32), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.no_grad():
        out = model16.generate_kv(prompt, max_new_tokens=20, temperature=0)
        logits16 = model16(prompt).logits.float()
    assert out.shape == (2, 52)
    logits32 = model32(prompt).logits
    scale = logits32.abs().max()
    assert (logits16 - logits32).abs().max() / scale < 0.05  # bf16 keeps about 3 significant digits


def test_bf16_autocast_training_step():
    model = make_cuda_model(torch.float32).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tgt = torch.randint(0, 512, (4, 64), device="cuda")
    losses = []
    for _ in range(3):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(tgt, labels=tgt).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def test_compiled_decode_with_cuda_graphs_gives_the_plain_tokens():
    model = make_cuda_model(torch.float32)
    prompt = torch.randint(0, 512, (2, 16), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    plain = model.generate_kv(prompt, max_new_tokens=24, temperature=0, fast=False)
    compiled = model.generate_kv(prompt, max_new_tokens=24, temperature=0, compile=True)
    again = model.generate_kv(prompt, max_new_tokens=24, temperature=0, compile=True)  # graph replay
    assert torch.equal(plain, compiled) and torch.equal(plain, again)
