"""check_llama3 and check_loss: the learner's Llama3 and causal-LM loss against the reference.

check_loss compares the learner's loss function with ``Llama3.loss`` (transformers' convention: the shift
happens inside, -100 and padding are ignored) and names the convention that was missed. check_llama3 loads the
reference weights into the learner's Llama3 and compares logits and loss on a plain batch, a left-padded batch
and cached decoding (a prefill, a chunk and single steps), each against the reference run on the full sequence.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from llama3.checks._common import build, call, close, copy_weights, fail, passed
from llama3.config import ModelArgs
from llama3.kv_cache import KV_Cache
from llama3.model import Llama3

LOSS_ATOL = 1e-5
LOGITS_ATOL = 1e-4


# ------------------------------------------------------------------------------------------------------ the loss
def _loss_variants(logits, labels, attention_mask) -> dict[str, tuple[torch.Tensor, str]]:
    """Wrong losses a learner is likely to write, each with the hint that names the mistake."""
    vocab = logits.shape[-1]
    masked = labels  # labels with everything the reference ignores set to -100 (the shift is still to come)
    if attention_mask is not None:
        real = attention_mask.bool()
        masked = labels.masked_fill(~real, -100)
        masked[:, 1:] = masked[:, 1:].masked_fill(~real[:, :-1], -100)

    def ce(lg, lb):
        return F.cross_entropy(lg.reshape(-1, vocab).float(), lb.reshape(-1), ignore_index=-100)

    variants = {
        "no shift": (ce(logits, masked),
                     "The labels are not shifted: logits[:, t] predicts labels[:, t + 1]. Compare "
                     "logits[:, :-1] with labels[:, 1:] (the shift happens inside the loss, as in transformers)."),
        "shift reversed": (ce(logits[:, 1:], masked[:, :-1]),
                           "The shift goes the wrong way: logits[:, :-1] predicts labels[:, 1:], not "
                           "logits[:, 1:] with labels[:, :-1]."),
        "sum": (F.cross_entropy(logits[:, :-1].reshape(-1, vocab).float(), masked[:, 1:].reshape(-1),
                                ignore_index=-100, reduction="sum"),
                "The loss is a sum: return the MEAN cross-entropy over the counted positions."),
    }
    if attention_mask is not None:
        variants["padding counted"] = (
            ce(logits[:, :-1], labels[:, 1:]),
            "Padding is counted in the loss: ignore (label -100) every position whose input or target is padding, "
            "i.e. where attention_mask[:, :-1] & attention_mask[:, 1:] is 0, before the cross-entropy.")
        variants["prediction from padding counted"] = (
            ce(logits[:, :-1], labels.masked_fill(attention_mask == 0, -100)[:, 1:]),
            "The first real token of a left-padded row is counted, although its input is a padding token: a "
            "position counts only when both its input and its target are real tokens "
            "(attention_mask[:, :-1] & attention_mask[:, 1:]).")
        variants["padding counted, no shift"] = (
            ce(logits, labels),
            "The labels are not shifted AND padding is counted: compare logits[:, :-1] with labels[:, 1:], and "
            "ignore the positions where the input or the target is padding.")
    # per-row means averaged: wrong whenever rows count different numbers of tokens
    rows = []
    for b in range(logits.shape[0]):
        lb = masked[b, 1:]
        if (lb != -100).any():
            rows.append(ce(logits[b:b + 1, :-1], lb[None]))
    variants["mean of rows"] = (torch.stack(rows).mean(),
                                "The loss averages each row first and then the rows: take one mean over every "
                                "counted token of the batch (F.cross_entropy on the flattened tensors).")
    return variants


def _diagnose_loss(actual, logits, labels, attention_mask, what: str) -> None:
    for wrong, hint in _loss_variants(logits, labels, attention_mask).values():
        if close(actual, wrong, atol=LOSS_ATOL):
            fail(f"{what}: {hint}")


def _loss_cases():
    """Targeted batches: -100 labels, left and right padding with real token ids under the padding
    (as when labels = input_ids), rows with different numbers of counted tokens."""
    gen = torch.Generator().manual_seed(0)
    batch, seq, vocab = 3, 9, 13
    logits = 2 * torch.randn(batch, seq, vocab, generator=gen)  # (B, T, V)
    labels = torch.randint(0, vocab, (batch, seq), generator=gen)  # (B, T)
    labels_ignored = labels.clone()
    labels_ignored[0, 4:6] = -100
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, :4] = 0  # left padding
    mask[2, -3:] = 0  # right padding
    return [("plain labels", logits, labels, None),
            ("labels with -100", logits, labels_ignored, None),
            ("a padded batch", logits, labels, mask),
            ("a padded batch with -100", logits, labels_ignored, mask)]


def check_loss(loss_fn) -> None:
    """Check a learner's ``loss(logits, labels, attention_mask=None) -> scalar`` (a function, or a class with a
    ``loss`` static method) against ``Llama3.loss``."""
    fn = getattr(loss_fn, "loss", loss_fn)
    for name, logits, labels, mask in _loss_cases():
        what = f"loss on {name}"
        args = (logits, labels) if mask is None else (logits, labels, mask)
        actual = call(fn, *args, what=what)
        if not isinstance(actual, torch.Tensor):
            fail(f"{what}: return a scalar tensor, got {type(actual).__name__}.")
        if actual.dim() != 0:
            fail(f"{what}: return a scalar (the mean over counted tokens), got shape {tuple(actual.shape)}.")
        expected = Llama3.loss(logits, labels, mask)
        if close(actual, expected, atol=LOSS_ATOL):
            continue
        _diagnose_loss(actual, logits, labels, mask, what)
        if mask is None and "-100" in name:
            fail(f"{what}: labels equal to -100 must be ignored: F.cross_entropy(..., ignore_index=-100).")
        fail(f"{what}: {actual.item():.6f}, expected {expected.item():.6f}. The loss is the mean cross-entropy of "
             f"logits[:, :-1] against labels[:, 1:], ignoring -100 and positions whose input or target is padding.")
    # a mathematical property: uniform logits give log(V) whatever the labels
    uniform = torch.zeros(2, 5, 7)
    labels = torch.randint(0, 7, (2, 5), generator=torch.Generator().manual_seed(1))
    value = call(fn, uniform, labels, what="loss on uniform logits")
    if not close(value, torch.tensor(torch.log(torch.tensor(7.0)).item()), atol=LOSS_ATOL):
        fail("loss on uniform logits: expected log(vocab) = log 7; use the mean cross-entropy (natural log).")
    passed("loss: shifted cross-entropy, -100 and padding ignored, as in transformers.")


# ------------------------------------------------------------------------------------------------------ the model
def _args(seed: int) -> ModelArgs:
    if seed == 0:  # GQA, the flash path
        return ModelArgs(vocab_size=61, d_model=32, heads=4, group_size=2, num_layers=2, max_seq_len=24,
                         multiple_of=16, use_flash=True)
    return ModelArgs(vocab_size=50, d_model=24, heads=3, group_size=1, num_layers=3, max_seq_len=24,  # odd sizes
                     multiple_of=16, use_flash=False)


def _reference(args: ModelArgs, seed: int) -> Llama3:
    torch.manual_seed(seed)
    model = Llama3(args).eval()
    with torch.no_grad():  # norm weights away from 1, so that a missing norm shows
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1 + 0.5 * torch.randn_like(param))
    return model


def _by_hand(ref: Llama3, tgt, *, final_norm=True, chain=True, positions=None, rope=True):
    """The reference forward spelled out, with switches for the mistakes check_llama3 diagnoses."""
    seq = tgt.shape[1]
    positions = torch.arange(seq) if positions is None else positions
    cos, sin = ref.rope.cos_sin(positions)
    if not rope:
        cos, sin = torch.ones_like(cos), torch.zeros_like(sin)
    x = ref.tok_embeddings(tgt)
    h = x
    for layer in ref.layers:
        h = layer(h if chain else x, cos, sin)
    return ref.output(ref.norm(h) if final_norm else h)


def _forward_variants(ref: Llama3, tgt) -> dict[str, tuple[torch.Tensor, str]]:
    correct = ref(tgt).logits
    return {
        "no final norm": (_by_hand(ref, tgt, final_norm=False),
                          "The final RMSNorm is missing: apply self.norm to the last layer's output before "
                          "self.output."),
        "layers not chained": (_by_hand(ref, tgt, chain=False),
                               "Each layer reads the embeddings instead of the previous layer's output: "
                               "h = layer(h, cos, sin, ...) in the loop."),
        "no rope": (_by_hand(ref, tgt, rope=False),
                    "The positions never reach the layers (no rotation): compute cos, sin = "
                    "self.rope.cos_sin(positions) and pass them to every layer."),
        "probabilities": (correct.softmax(-1),
                          "forward returns probabilities: return the raw logits (the loss and sampling apply "
                          "the softmax themselves)."),
        "log-probabilities": (correct.log_softmax(-1),
                              "forward returns log-probabilities: return the raw logits of self.output."),
    }


def _logits_of(out, what: str) -> torch.Tensor:
    logits = getattr(out, "logits", None)
    if logits is None:
        fail(f"{what}: forward must return an object with .logits and .loss, e.g. CausalLMOutput(logits, loss); "
             f"got {type(out).__name__}.")
    return logits


def _expect_logits(logits, expected, what: str, hint: str) -> None:
    if not isinstance(logits, torch.Tensor):
        fail(f"{what}: .logits must be a tensor, got {type(logits).__name__}.")
    if logits.shape != expected.shape:
        fail(f"{what}: logits of shape {tuple(logits.shape)}, expected {tuple(expected.shape)} (batch, seq, vocab).")
    if not close(logits, expected, atol=LOGITS_ATOL):
        err = (logits.float() - expected.float()).abs().max().item()
        fail(f"{what}: logits differ from the reference (max abs error {err:.3g}). {hint}")


def _check_config(cls, seed: int) -> None:
    args = _args(seed)
    where = f"Llama3(d_model={args.d_model}, heads={args.heads}, group_size={args.group_size}, " \
            f"num_layers={args.num_layers})"
    ref = _reference(args, seed)
    learner = build(cls, args, what=where)
    copy_weights(learner, ref, where)
    learner.eval()
    params = inspect.signature(learner.forward).parameters
    gen = torch.Generator().manual_seed(seed)
    batch, seq = 2, 8
    tgt = torch.randint(0, args.vocab_size, (batch, seq), generator=gen)  # (B, T)

    with torch.no_grad():
        # 1. plain forward, no loss without labels
        what = f"{where}, forward(tgt)"
        out = call(learner, tgt, what=what)
        logits = _logits_of(out, what)
        expected = ref(tgt).logits
        if isinstance(logits, torch.Tensor) and logits.shape == expected.shape and not close(logits, expected,
                                                                                              atol=LOGITS_ATOL):
            for wrong, hint in _forward_variants(ref, tgt).values():
                if close(logits, wrong, atol=LOGITS_ATOL):
                    fail(f"{what}: {hint}")
        _expect_logits(logits, expected, what, "Embed, run every layer with the same cos/sin, final norm, output.")
        if getattr(out, "loss", "missing") is not None:
            fail(f"{what}: .loss must be None when no labels are given.")

        # 2. the loss: labels = tgt, as a language model is trained
        what = f"{where}, forward(tgt, labels=tgt)"
        out = call(learner, tgt, labels=tgt, what=what)
        loss = getattr(out, "loss", None)
        expected_loss = Llama3.loss(expected, tgt)
        if not close(loss, expected_loss, atol=LOSS_ATOL):
            if isinstance(loss, torch.Tensor) and loss.dim() == 0:
                _diagnose_loss(loss, expected, tgt, None, what)
            fail(f"{what}: .loss is {loss!r}, expected {expected_loss.item():.6f}: return "
                 f"CausalLMOutput(logits, self.loss(logits, labels, attention_mask)) when labels are given.")

        # 3. a left-padded batch: padding hidden, positions counted from each row's first real token
        mask = torch.ones(batch, seq, dtype=torch.long)
        mask[1, :3] = 0
        what = f"{where}, forward(tgt, attention_mask) on a left-padded batch"
        out = call(learner, tgt, mask, tgt, what=what)
        logits = _logits_of(out, what)
        ref_out = ref(tgt, mask, tgt)
        real = mask.bool()  # logits at padded positions are meaningless
        if not (isinstance(logits, torch.Tensor) and logits.shape == ref_out.logits.shape
                and close(logits[real], ref_out.logits[real], atol=LOGITS_ATOL)):
            if isinstance(logits, torch.Tensor) and logits.shape == ref_out.logits.shape:
                if close(logits[real], ref(tgt).logits[real], atol=LOGITS_ATOL):
                    fail(f"{what}: attention_mask is ignored: build the mask with build_attention_mask("
                         f"attention_mask, T, start_pos) and pass it to every layer.")
            _expect_logits(logits, ref_out.logits, what, "Compare only real tokens: are padded keys hidden?")
        loss = getattr(out, "loss", None)
        if not close(loss, ref_out.loss, atol=LOSS_ATOL):
            if isinstance(loss, torch.Tensor) and loss.dim() == 0:
                _diagnose_loss(loss, ref_out.logits, tgt, mask, what)
            fail(f"{what}: .loss is {loss!r}, expected {ref_out.loss.item():.6f}: pass attention_mask to the loss "
                 f"so that padding is ignored.")

        # 4. cached decoding: prefill 4, a chunk of 2, then single tokens, against the full forward
        full_seq = 10
        ids = torch.randint(0, args.vocab_size, (batch, full_seq), generator=gen)
        full = ref(ids).logits  # (B, S, V), the oracle: no cache at all
        caches = [KV_Cache(batch, args.n_kv_heads, full_seq, args.head_dim) for _ in range(args.num_layers)]
        bounds = [(0, 4), (4, 6), (6, 7), (7, 8), (8, 9)]
        for start, end in bounds:
            chunk = ids[:, start:end]
            what = f"{where}, forward(tgt[:, {start}:{end}], kv_caches=..., start_pos={start})"
            out = call(learner, chunk, kv_caches=caches, start_pos=start, what=what)
            logits = _logits_of(out, what)
            expected = full[:, start:end]
            if isinstance(logits, torch.Tensor) and logits.shape == expected.shape and start > 0 \
                    and not close(logits, expected, atol=LOGITS_ATOL):
                if close(logits, ref(chunk).logits, atol=LOGITS_ATOL) or \
                        close(logits, ref(chunk, position_ids=torch.arange(start, end)).logits, atol=LOGITS_ATOL):
                    fail(f"{what}: the cache is not used: pass kv_caches[i] and start_pos to layer i, so that the "
                         f"new tokens attend to the cached positions.")
                stale = [KV_Cache(batch, args.n_kv_heads, full_seq, args.head_dim) for _ in range(args.num_layers)]
                ref(ids[:, :start], kv_caches=stale)
                if close(logits, ref(chunk, kv_caches=stale, start_pos=start,
                                     position_ids=torch.arange(end - start)).logits, atol=LOGITS_ATOL):
                    fail(f"{what}: positions are not advanced with the cache: the new tokens sit at positions "
                         f"start_pos, ..., start_pos + T - 1 (torch.arange(start_pos, start_pos + T)).")
            _expect_logits(logits, expected, what,
                           "Cached decoding must give the logits of the full sequence at those positions: positions "
                           "from start_pos, kv_caches[i] and start_pos passed to layer i.")

        # 5. optional keyword-only arguments, when the learner's forward takes them
        if "logits_to_keep" in params:
            what = f"{where}, forward(tgt, logits_to_keep=1)"
            logits = _logits_of(call(learner, tgt, logits_to_keep=1, what=what), what)
            _expect_logits(logits, ref(tgt).logits[:, -1:], what,
                           "logits_to_keep=k keeps the LAST k positions: h[:, -k:] before self.output.")
        if "position_ids" in params:
            what = f"{where}, forward(tgt, position_ids=...)"
            positions = torch.arange(3, 3 + seq).expand(batch, seq)
            logits = _logits_of(call(learner, tgt, position_ids=positions, what=what), what)
            _expect_logits(logits, ref(tgt, position_ids=positions).logits, what,
                           "Explicit position_ids replace the default torch.arange(start_pos, start_pos + T).")


def check_llama3(Llama3Class) -> None:
    """Check a learner's ``Llama3(args)`` with ``forward(tgt, attention_mask=None, labels=None, *, kv_caches=None,
    start_pos=0, ...)`` returning an object with ``.logits`` and ``.loss``."""
    _check_config(Llama3Class, seed=0)
    _check_config(Llama3Class, seed=1)
    passed("Llama3: logits, loss, padding and cached decoding match the reference (GQA and MHA).")
