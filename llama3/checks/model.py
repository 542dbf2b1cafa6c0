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
from torch import nn

from llama3.checks._common import build, call, checker, close, copy_weights, fail, passed, prerequisite
from llama3.config import ModelArgs
from llama3.kv_cache import KV_Cache
from llama3.model import Llama3
from llama3.rope import RoPE

_REFERENCE_LOSS = inspect.getattr_static(Llama3, "loss").__func__

LOSS_ATOL = 1e-5
LOGITS_ATOL = 1e-4


# ------------------------------------------------------------------------------------------------------ the loss
LOSS_FIX = ("F.cross_entropy(logits[:, :-1].reshape(-1, V).float(), targets.reshape(-1), ignore_index=-100) with "
            "targets = labels[:, 1:], set to -100 where attention_mask[:, 1:] & attention_mask[:, :-1] is 0.")


def _loss_variants(logits, labels, attention_mask) -> list[tuple[torch.Tensor, str, str]]:
    """Wrong losses a learner is likely to write: (value, what is wrong, how to fix it)."""
    vocab = logits.shape[-1]
    masked = labels  # labels with everything the reference ignores set to -100 (the shift is still to come)
    if attention_mask is not None:
        real = attention_mask.bool()
        masked = labels.masked_fill(~real, -100)
        masked[:, 1:] = masked[:, 1:].masked_fill(~real[:, :-1], -100)

    def ce(lg, lb):
        return F.cross_entropy(lg.reshape(-1, vocab).float(), lb.reshape(-1), ignore_index=-100)

    variants = [
        (ce(logits, masked), "the labels are not shifted: logits[:, t] predicts labels[:, t + 1].",
         "compare logits[:, :-1] with labels[:, 1:] (the shift happens inside the loss, as in transformers)."),
        (ce(logits[:, 1:], masked[:, :-1]),
         "the shift goes the wrong way (logits[:, 1:] with labels[:, :-1]).",
         "logits[:, :-1] predicts labels[:, 1:]."),
        (F.cross_entropy(logits[:, :-1].reshape(-1, vocab).float(), masked[:, 1:].reshape(-1), ignore_index=-100,
                         reduction="sum"),
         "the loss is a sum, not the mean over the counted positions.", "F.cross_entropy(..., reduction='mean')."),
    ]
    if attention_mask is not None:
        variants += [
            (ce(logits[:, :-1], labels[:, 1:]), "padding is counted in the loss.",
             "ignore (label -100) every position whose input or target is padding, i.e. where "
             "attention_mask[:, :-1] & attention_mask[:, 1:] is 0, before the cross-entropy."),
            (ce(logits[:, :-1], labels.masked_fill(attention_mask == 0, -100)[:, 1:]),
             "the first real token of a left-padded row is counted, although its input is a padding token.",
             "a position counts only when both its input and its target are real tokens "
             "(attention_mask[:, :-1] & attention_mask[:, 1:])."),
            (ce(logits, labels), "the labels are not shifted AND padding is counted.",
             "compare logits[:, :-1] with labels[:, 1:], and ignore the positions where the input or the target is "
             "padding."),
        ]
    # per-row means averaged: wrong whenever rows count different numbers of tokens
    rows = []
    for b in range(logits.shape[0]):
        lb = masked[b, 1:]
        if (lb != -100).any():
            rows.append(ce(logits[b:b + 1, :-1], lb[None]))
    variants.append((torch.stack(rows).mean(), "the loss averages each row first and then the rows.",
                     "take one mean over every counted token of the batch (F.cross_entropy on the flattened "
                     "tensors)."))
    return variants


def _diagnose_loss(actual, logits, labels, attention_mask, what: str) -> None:
    for wrong, problem, fix in _loss_variants(logits, labels, attention_mask):
        if close(actual, wrong, atol=LOSS_ATOL):
            fail(f"{what}: {problem}", fix)


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


@checker
def check_loss(loss_fn) -> None:
    """Check a learner's ``loss(logits, labels, attention_mask=None) -> scalar`` (a function, or a class with a
    ``loss`` static method) against ``Llama3.loss``."""
    fn = getattr(loss_fn, "loss", loss_fn)
    for name, logits, labels, mask in _loss_cases():
        what = f"loss on {name}"
        args = (logits, labels) if mask is None else (logits, labels, mask)
        actual = call(fn, *args, what=what)
        if not isinstance(actual, torch.Tensor):
            fail(f"{what}: returned {type(actual).__name__}, not a scalar tensor.", LOSS_FIX)
        if actual.dim() != 0:
            fail(f"{what}: returned a tensor of shape {tuple(actual.shape)}, not a scalar (the mean over counted "
                 f"tokens).", LOSS_FIX)
        expected = Llama3.loss(logits, labels, mask)
        if close(actual, expected, atol=LOSS_ATOL):
            continue
        _diagnose_loss(actual, logits, labels, mask, what)
        if mask is None and "-100" in name:
            fail(f"{what}: labels equal to -100 are not ignored.", "F.cross_entropy(..., ignore_index=-100).")
        fail(f"{what}: {actual.item():.6f}, expected {expected.item():.6f}.", "the loss is the mean cross-entropy of "
             "logits[:, :-1] against labels[:, 1:], ignoring -100 and positions whose input or target is padding.")
    # a mathematical property: uniform logits give log(V) whatever the labels
    uniform = torch.zeros(2, 5, 7)
    labels = torch.randint(0, 7, (2, 5), generator=torch.Generator().manual_seed(1))
    value = call(fn, uniform, labels, what="loss on uniform logits")
    if not close(value, torch.tensor(torch.log(torch.tensor(7.0)).item()), atol=LOSS_ATOL):
        fail("loss on uniform logits: not log(vocab) = log 7.", "the mean cross-entropy (natural log).")
    passed("loss: shifted cross-entropy, -100 and padding ignored, as in transformers.")


# ------------------------------------------------------------------------------------------------------ the model
# Llama 3.1's scaling with a short original context, so that it changes the angles of the positions checked
SHORT_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                 "original_max_position_embeddings": 64}


def _args(seed: int, **overrides) -> ModelArgs:
    if seed == 0:  # GQA, the flash path, rope scaling on a theta that is not RoPE's default
        values = dict(vocab_size=61, d_model=32, heads=4, group_size=2, num_layers=2, max_seq_len=24, multiple_of=16,
                      use_flash=True, rope_theta=100000.0, rope_scaling=SHORT_SCALING)
    else:  # odd sizes, MHA, the manual path, Llama 2's theta, a large norm eps
        values = dict(vocab_size=50, d_model=24, heads=3, group_size=1, num_layers=3, max_seq_len=24, multiple_of=16,
                      use_flash=False, rope_theta=10000.0, norm_eps=0.1)
    values.update(overrides)
    return ModelArgs(**values)


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


FORWARD_FIX = ("positions -> cos, sin = self.rope.cos_sin(positions); h = self.tok_embeddings(tgt); for each layer "
               "h = layer(h, cos, sin, mask, kv_caches[i] or None, start_pos); logits = self.output(self.norm(h)).")


def _forward_variants(ref: Llama3, tgt) -> list[tuple[torch.Tensor, str, str]]:
    correct = ref(tgt).logits
    return [
        (_by_hand(ref, tgt, final_norm=False), "the final RMSNorm is missing.",
         "apply self.norm to the last layer's output before self.output."),
        (_by_hand(ref, tgt, chain=False), "each layer reads the embeddings instead of the previous layer's output.",
         "h = layer(h, cos, sin, ...) in the loop."),
        (_by_hand(ref, tgt, rope=False), "the positions never reach the layers (no rotation).",
         "compute cos, sin = self.rope.cos_sin(positions) and pass them to every layer."),
        (correct.softmax(-1), "forward returns probabilities instead of logits.",
         "return the raw logits of self.output (the loss and sampling apply the softmax themselves)."),
        (correct.log_softmax(-1), "forward returns log-probabilities instead of logits.",
         "return the raw logits of self.output."),
    ]


def _logits_of(out, what: str) -> torch.Tensor:
    logits = getattr(out, "logits", None)
    if logits is None:
        fail(f"{what}: forward returned {type(out).__name__}, not an object with .logits and .loss.",
             "return CausalLMOutput(logits=logits, loss=loss).")
    return logits


def _expect_logits(logits, expected, what: str, fix: str) -> None:
    if not isinstance(logits, torch.Tensor):
        fail(f"{what}: .logits is {type(logits).__name__}, not a tensor.", fix)
    if logits.shape != expected.shape:
        fail(f"{what}: logits of shape {tuple(logits.shape)}, expected {tuple(expected.shape)} (batch, seq, vocab).",
             fix)
    if not close(logits, expected, atol=LOGITS_ATOL):
        err = (logits.float() - expected.float()).abs().max().item()
        fail(f"{what}: logits differ from the reference (max abs error {err:.3g}).", fix)


def _check_structure(learner, args: ModelArgs, where: str) -> None:
    """Each field of args reaches its sub-module: RoPE's head_dim, theta and scaling, the norm's eps, the tying."""
    rope = getattr(learner, "rope", None)
    if rope is None or not hasattr(rope, "cos_sin"):
        fail(f"{where}: self.rope is missing (or has no cos_sin).",
             "self.rope = RoPE(args.head_dim, args.rope_theta, args.rope_scaling).")
    positions = torch.tensor([0, 1, 7, 300, 5000])
    got = call(rope.cos_sin, positions, what=f"{where}: self.rope.cos_sin(positions)")
    cos = got[0] if isinstance(got, tuple | list) else got
    rope_fix = "self.rope = RoPE(args.head_dim, args.rope_theta, args.rope_scaling)."
    if not isinstance(cos, torch.Tensor):
        fail(f"{where}: self.rope.cos_sin returned {type(got).__name__}, not (cos, sin).", rope_fix)
    if cos.shape[-1] == args.d_model // 2 and args.d_model != args.head_dim:
        fail(f"{where}: RoPE is built for d_model={args.d_model} dimensions, but each head rotates its own "
             f"head_dim={args.head_dim} dimensions (RoPE acts on q and k after the split into heads).", rope_fix)
    if cos.shape[-1] != args.head_dim // 2:
        fail(f"{where}: self.rope gives {cos.shape[-1]} angles per position, expected head_dim / 2 = "
             f"{args.head_dim // 2}.", rope_fix)
    expected = RoPE(args.head_dim, args.rope_theta, args.rope_scaling).cos_sin(positions)[0]
    if not close(cos, expected, atol=1e-4, rtol=1e-4):
        if close(cos, RoPE(args.head_dim).cos_sin(positions)[0], atol=1e-4, rtol=1e-4):
            fail(f"{where}: args.rope_theta={args.rope_theta:g} does not reach RoPE (yours uses RoPE's default theta).",
                 rope_fix)
        if close(cos, RoPE(args.head_dim, args.rope_theta).cos_sin(positions)[0], atol=1e-4, rtol=1e-4):
            fail(f"{where}: args.rope_scaling does not reach RoPE (yours rotates without the Llama 3.1 scaling).",
                 rope_fix)
        fail(f"{where}: self.rope's angles differ from RoPE(args.head_dim, args.rope_theta, args.rope_scaling).",
             rope_fix)
    eps = getattr(getattr(learner, "norm", None), "eps", args.norm_eps)
    if eps != args.norm_eps:
        fail(f"{where}: the final norm has eps={eps:g}; args.norm_eps={args.norm_eps:g} does not reach it.",
             "self.norm = RMSNorm(args.d_model, eps=args.norm_eps).")
    embedding, output = getattr(learner, "tok_embeddings", None), getattr(learner, "output", None)
    if isinstance(embedding, nn.Embedding) and isinstance(output, nn.Linear):
        tied = output.weight is embedding.weight
        if tied and not args.tie_embeddings:
            fail(f"{where}: the output head is tied to the embedding although args.tie_embeddings is False (Llama 3 "
                 f"8B and larger keep two matrices).",
                 "tie only `if args.tie_embeddings: self.output.weight = self.tok_embeddings.weight`.")
        if args.tie_embeddings and not tied:
            fail(f"{where}: args.tie_embeddings is True but the output head has its own weight (Llama 3.2 1B and 3B "
                 f"share one matrix).", "if args.tie_embeddings: self.output.weight = self.tok_embeddings.weight.")


def _check_config(cls, seed: int) -> None:
    args = _args(seed)
    where = f"Llama3(d_model={args.d_model}, heads={args.heads}, group_size={args.group_size}, " \
            f"num_layers={args.num_layers})"
    ref = _reference(args, seed)
    learner = build(cls, args, what=where)
    _check_structure(learner, args, where)
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
            for wrong, problem, fix in _forward_variants(ref, tgt):
                if close(logits, wrong, atol=LOGITS_ATOL):
                    fail(f"{what}: {problem}", fix)
        _expect_logits(logits, expected, what, FORWARD_FIX)
        if getattr(out, "loss", "missing") is not None:
            fail(f"{what}: .loss is not None although no labels are given.",
                 "loss = None if labels is None else self.loss(logits, labels, attention_mask).")

        # 2. the loss: labels = tgt, as a language model is trained
        what = f"{where}, forward(tgt, labels=tgt)"
        out = call(learner, tgt, labels=tgt, what=what)
        loss = getattr(out, "loss", None)
        expected_loss = Llama3.loss(expected, tgt)
        if not close(loss, expected_loss, atol=LOSS_ATOL):
            if isinstance(loss, torch.Tensor) and loss.dim() == 0:
                _diagnose_loss(loss, expected, tgt, None, what)
            fail(f"{what}: .loss is {loss!r}, expected {expected_loss.item():.6f}.",
                 "return CausalLMOutput(logits, self.loss(logits, labels, attention_mask)) when labels are given.")

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
                    fail(f"{what}: attention_mask is ignored: padded tokens are attended to.",
                         "build the mask with build_attention_mask(attention_mask, T, start_pos) and pass it to every "
                         "layer; count positions from each row's first real token.")
            _expect_logits(logits, ref_out.logits, what,
                           "hide padded keys with build_attention_mask(attention_mask, T, start_pos), and count "
                           "positions from each row's first real token: (attention_mask.cumsum(-1) - 1).clamp(min=0).")
        loss = getattr(out, "loss", None)
        if not close(loss, ref_out.loss, atol=LOSS_ATOL):
            if isinstance(loss, torch.Tensor) and loss.dim() == 0:
                _diagnose_loss(loss, ref_out.logits, tgt, mask, what)
            fail(f"{what}: .loss is {loss!r}, expected {ref_out.loss.item():.6f}: padding is not ignored by the "
                 f"loss.", "pass attention_mask to the loss: self.loss(logits, labels, attention_mask).")

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
                    fail(f"{what}: the cache is not used: the new tokens do not attend to the cached positions.",
                         "pass kv_caches[i] and start_pos to layer i.")
                stale = [KV_Cache(batch, args.n_kv_heads, full_seq, args.head_dim) for _ in range(args.num_layers)]
                ref(ids[:, :start], kv_caches=stale)
                if close(logits, ref(chunk, kv_caches=stale, start_pos=start,
                                     position_ids=torch.arange(end - start)).logits, atol=LOGITS_ATOL):
                    fail(f"{what}: positions are not advanced with the cache: the new tokens are rotated as if they "
                         f"started at position 0.",
                         "the new tokens sit at positions torch.arange(start_pos, start_pos + T).")
            _expect_logits(logits, expected, what,
                           "cached decoding must give the logits of the full sequence at those positions: positions "
                           "from start_pos, kv_caches[i] and start_pos passed to layer i.")

        # 5. optional keyword-only arguments, when the learner's forward takes them
        if "logits_to_keep" in params:
            what = f"{where}, forward(tgt, logits_to_keep=1)"
            logits = _logits_of(call(learner, tgt, logits_to_keep=1, what=what), what)
            kept = ref(tgt).logits
            if isinstance(logits, torch.Tensor) and close(logits, kept[:, :1], atol=LOGITS_ATOL):
                fail(f"{what}: logits_to_keep=1 keeps the FIRST position; it keeps the LAST k positions.",
                     "h = h[:, -logits_to_keep:] before self.output.")
            _expect_logits(logits, kept[:, -1:], what, "logits_to_keep=k keeps the LAST k positions: h[:, -k:] before "
                                                       "self.output.")
        if "position_ids" in params:
            what = f"{where}, forward(tgt, position_ids=...)"
            positions = torch.arange(3, 3 + seq).expand(batch, seq)
            logits = _logits_of(call(learner, tgt, position_ids=positions, what=what), what)
            _expect_logits(logits, ref(tgt, position_ids=positions).logits, what,
                           "explicit position_ids replace the default torch.arange(start_pos, start_pos + T).")


@checker
def check_llama3(Llama3Class, *, loss=None) -> None:
    """Check a learner's ``Llama3(args)`` with ``forward(tgt, attention_mask=None, labels=None, *, kv_caches=None,
    start_pos=0, ...)`` returning an object with ``.logits`` and ``.loss``.

    The learner's loss (exercise 1: ``loss``, or the class's ``loss`` when it is not the package's) is re-checked
    first, so that a wrong loss is reported as that exercise's mistake."""
    mine_loss = loss if loss is not None else inspect.getattr_static(Llama3Class, "loss", None)
    mine_loss = getattr(mine_loss, "__func__", mine_loss)  # a staticmethod
    if mine_loss is not None and mine_loss is not _REFERENCE_LOSS:
        prerequisite(check_loss, mine_loss, "causal_lm_loss", "Llama3 (self.loss)")
    # args.tie_embeddings must have its effect: a tied config shares one matrix (structure only, no forward needed)
    tied = _args(0, tie_embeddings=True)
    _check_structure(build(Llama3Class, tied, what="Llama3(args with tie_embeddings=True)"), tied,
                     "Llama3(args with tie_embeddings=True)")
    _check_config(Llama3Class, seed=0)
    _check_config(Llama3Class, seed=1)
    passed("Llama3: logits, loss, padding and cached decoding match the reference (GQA and MHA).")
