"""CUDA checks: bfloat16 generation through the flash kernel (the test prints which SDPA backends ran), a padded
batch on a masked kernel, CUDA-graph decoding, and a bf16-autocast training step."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from llama3 import Llama3
from tests.conftest import tiny_args

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def make_cuda_model(dtype):
    torch.manual_seed(0)
    # head_dim 64: the flash kernel wants head dims that are multiples of 8
    args = tiny_args(d_model=256, heads=4, group_size=2, num_layers=4, vocab_size=512, max_seq_len=256)
    return Llama3(args).to("cuda", dtype).eval()


def sdpa_ops(fn) -> set[str]:
    """The aten SDPA operators (one per backend: flash, efficient, cudnn, math) that ``fn()`` ran."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {e.name for e in prof.events() if "scaled_dot_product" in e.name and e.name.startswith("aten::_")}


@pytest.mark.parametrize("fast", [True, False])
def test_bf16_generate_kv_runs_on_the_flash_kernel_and_tracks_float32(fast):
    """CUDA's flash kernel takes no attn_mask: an unpadded prompt must prefill with is_causal=True and every decode
    step run without a mask. With SDPA restricted to flash, any other call would fail with "No available kernel"."""
    model32 = make_cuda_model(torch.float32)
    model16 = make_cuda_model(torch.bfloat16)
    prompt = torch.randint(0, 512, (2, 32), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    out = {}
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.no_grad():
        ops = sdpa_ops(lambda: out.update(tokens=model16.generate_kv(prompt, max_new_tokens=20, temperature=0,
                                                                     fast=fast)))
        logits16 = model16(prompt).logits.float()
    print(f"SDPA backends that ran (fast={fast}): {sorted(ops)}")
    assert ops == {"aten::_scaled_dot_product_flash_attention"}
    assert out["tokens"].shape == (2, 52)
    logits32 = model32(prompt).logits
    scale = logits32.abs().max()
    assert (logits16 - logits32).abs().max() / scale < 0.05  # bf16 keeps about 3 significant digits


def test_padded_batch_falls_back_to_a_masked_kernel_and_keeps_each_row():
    """Left padding needs a mask, which flash refuses: SDPA picks another kernel; each row keeps its tokens."""
    model = make_cuda_model(torch.float32)  # float32: the padded and the lone row agree to the last bit or nearly
    g = torch.Generator("cuda").manual_seed(2)
    ids = torch.randint(0, 512, (2, 24), device="cuda", generator=g)
    mask = torch.ones_like(ids)
    mask[1, :8] = 0
    out = {}
    ops = sdpa_ops(lambda: out.update(batch=model.generate_kv(ids, attention_mask=mask, max_new_tokens=12,
                                                               temperature=0)))
    print(f"SDPA backends that ran with left padding: {sorted(ops)}")
    alone = model.generate_kv(ids[1:, 8:], max_new_tokens=12, temperature=0)
    assert torch.equal(out["batch"][1, 24:], alone[0, 16:])


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
