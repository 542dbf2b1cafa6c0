"""The output head and the cross-entropy together, by chunks of rows: a language model's loss without its logits.

    loss = linear_cross_entropy(h, model.output.weight, targets)   # h (N, d_model), targets (N,), -100 ignored

The plain way, ``F.cross_entropy(F.linear(h, W).float(), targets)``, builds the (N, vocab) logits in float32, their
log-softmax, and in the backward pass a gradient of the same size: at batch 16 x 256 with a 4096-token vocabulary
that is three 67 MB tensors per step, written and read again, more memory traffic than the whole rest of a small
model's step. Here the rows go through in chunks: each chunk's logits live only while their loss and their gradient
(softmax minus one-hot) are computed, and the gradients of ``h`` and ``W`` are accumulated then, in the forward pass
(as Liger-Kernel's fused linear cross-entropy does), so the backward pass only scales them. Same loss and gradients
as the plain way, up to float rounding.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100
DEFAULT_CHUNK_ROWS = 256  # 256 x 4096 float32 logits = 4 MB: near the CPU's L2/L3; measured fastest of 256-4096


class _LinearCrossEntropy(torch.autograd.Function):
    """Forward: the mean cross-entropy, and (when asked) the gradients, chunk by chunk. Backward: scale them."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_rows, compute_dtype):
        # hidden (N, d), weight (V, d), targets (N,) with IGNORE_INDEX for rows without a target
        needs_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        keep = targets != IGNORE_INDEX
        rows = None if bool(keep.all()) else keep.nonzero().squeeze(1)  # (n,) the rows that count
        h = hidden if rows is None else hidden.index_select(0, rows)
        t = targets if rows is None else targets.index_select(0, rows)
        n = t.numel()
        h = h.to(compute_dtype)
        w = weight.to(compute_dtype)
        acc = torch.promote_types(compute_dtype, torch.float32)  # the softmax and the sums: float32 or float64
        loss = torch.zeros((), dtype=acc, device=hidden.device)
        grad_h = torch.empty_like(h) if needs_grad else None
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if needs_grad else None
        for start in range(0, n, chunk_rows):
            h_c, t_c = h[start:start + chunk_rows], t[start:start + chunk_rows]  # (c, d), (c,)
            logits = (h_c @ w.t()).to(acc)  # (c, V): the only logits that ever exist
            log_probs = torch.log_softmax(logits, dim=-1)  # one fused pass; 2x faster than logsumexp + sub + exp
            loss -= log_probs.gather(1, t_c[:, None]).sum()
            if needs_grad:
                # d(mean loss)/d logits = (softmax - one_hot) / n, computed in place
                probs = log_probs.exp_()
                probs[torch.arange(len(t_c), device=probs.device), t_c] -= 1.0
                probs = probs.div_(n).to(compute_dtype)
                grad_h[start:start + chunk_rows] = probs @ w  # (c, d)
                grad_w += probs.t() @ h_c  # (V, d), accumulated in float32 (or float64)
        if needs_grad:
            if rows is not None:  # rows without a target get no gradient
                full = torch.zeros(hidden.shape, dtype=grad_h.dtype, device=hidden.device)
                grad_h = full.index_copy_(0, rows, grad_h)
            ctx.save_for_backward(grad_h.to(hidden.dtype), grad_w.to(weight.dtype))
        return loss / n  # n == 0 gives nan, as F.cross_entropy does

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_loss.to(grad_h.dtype), grad_w * grad_loss.to(grad_w.dtype), None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         chunk_rows: int = DEFAULT_CHUNK_ROWS) -> torch.Tensor:
    """Mean of ``F.cross_entropy(hidden @ weight.T, targets, ignore_index=-100)``, computed by chunks of rows.

    hidden (..., d) and targets (...) are flattened together; weight (vocab, d) is the output head. Under autocast
    the matmuls run in the autocast dtype, as ``nn.Linear`` would, and the softmax in float32.
    """
    if not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive int, got {chunk_rows!r}.")
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(f"targets must have shape {tuple(hidden.shape[:-1])} (hidden without its last dimension), "
                         f"got {tuple(targets.shape)}.")
    if hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"hidden has {hidden.shape[-1]} features but the weight expects {weight.shape[1]}.")
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
    with torch.autocast(device, enabled=False):  # the dtypes are set by hand inside
        return _LinearCrossEntropy.apply(hidden.reshape(-1, hidden.shape[-1]), weight, targets.reshape(-1),
                                         chunk_rows, dtype)


def compile_for_training(model: torch.nn.Module) -> torch.nn.Module:
    """Put every decoder layer of ``model`` under ``torch.compile`` (in place; returns the model).

    The layers only: the chunked loss above is a Python loop over chunks, which compiles poorly and gains nothing
    (its work is three matmuls per chunk). The first step pays the compilation (tens of seconds on a CPU)."""
    for layer in model.layers:
        layer.compile()
    return model
