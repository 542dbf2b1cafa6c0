"""check_attention accepts correct attention classes and rejects each planted mistake with its own hint."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llama3 import MultiHeadGQAttention
from llama3.checks import check_attention
from llama3.rope import apply_rotary
from tests.checks_util import assert_named


class EinsumAttention(nn.Module):
    """An independent correct solution (einsum, an additive float mask, heads grouped by a view instead of
    repeat_interleave). The class attribute ``mistake`` plants one error for the tests below."""

    mistake = None

    def __init__(self, args):
        super().__init__()
        self.heads, self.n_kv_heads, self.head_dim = args.heads, args.n_kv_heads, args.head_dim
        self.group_size, self.use_flash = args.group_size, args.use_flash
        self.wq = nn.Linear(args.d_model, args.heads * args.head_dim, bias=False)
        self.wk = nn.Linear(args.d_model, args.n_kv_heads * args.head_dim, bias=False)
        self.wv = nn.Linear(args.d_model, args.n_kv_heads * args.head_dim, bias=False)
        self.wo = nn.Linear(args.heads * args.head_dim, args.d_model, bias=False)

    def forward(self, x, cos, sin, mask=None, kv_cache=None, start_pos=0):
        batch, seq, _ = x.shape
        q = apply_rotary(self.wq(x).view(batch, seq, self.heads, self.head_dim), cos, sin)
        k = apply_rotary(self.wk(x).view(batch, seq, self.n_kv_heads, self.head_dim), cos, sin)
        v = self.wv(x).view(batch, seq, self.n_kv_heads, self.head_dim)
        k, v = k.transpose(1, 2), v.transpose(1, 2)  # (B, KV, T, D)
        if kv_cache is not None and self.mistake != "cache ignored":
            k, v = kv_cache.update(start_pos, k, v)
        kv_len = k.shape[2]
        if self.mistake == "repeat":
            k, v = k.repeat(1, self.group_size, 1, 1), v.repeat(1, self.group_size, 1, 1)
            q = q.transpose(1, 2)  # (B, H, T, D)
            scores = torch.einsum("bhtd,bhsd->bhts", q, k)
        else:  # query head h = g * group_size + j reads K/V head g
            q = q.transpose(1, 2).reshape(batch, self.n_kv_heads, self.group_size, seq, self.head_dim)
            scores = torch.einsum("bkgtd,bksd->bkgts", q, k).flatten(1, 2)  # (B, H, T, S)
        if self.mistake != "no scale":
            scores = scores / math.sqrt(self.head_dim)
        if mask is None or self.mistake == "padding ignored":
            past = 0 if self.mistake == "top-left" and seq > 1 else kv_len - seq
            past += {"shift-1": -1, "shift+1": 1}.get(self.mistake, 0)
            mask = torch.ones(seq, kv_len, dtype=torch.bool).tril(past)
            if self.mistake == "no causal":
                mask = torch.ones_like(mask)
        elif self.mistake == "no causal":
            mask = mask | torch.ones(seq, kv_len, dtype=torch.bool).tril(kv_len - seq).logical_not()
        if self.use_flash and self.mistake is None:  # the fused path: SDPA with the same additive mask
            additive = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
            out = F.scaled_dot_product_attention(q.flatten(1, 2), k.repeat_interleave(self.group_size, 1),
                                                 v.repeat_interleave(self.group_size, 1), attn_mask=additive)
            return self.wo(out.transpose(1, 2).reshape(batch, seq, -1))
        if self.mistake == "add-bool":
            scores = scores + mask
        elif self.mistake == "fill-zero":
            scores = scores.masked_fill(~mask, 0.0)
        else:
            scores = scores + torch.zeros_like(scores).masked_fill(~mask, float("-inf"))
        probs = F.softmax(scores, dim=-2 if self.mistake == "softmax over queries" else -1)
        if self.mistake == "repeat":
            out = torch.einsum("bhts,bhsd->bhtd", probs, v)
        else:
            probs = probs.view(batch, self.n_kv_heads, self.group_size, seq, kv_len)
            out = torch.einsum("bkgts,bksd->bkgtd", probs, v).flatten(1, 2)
        if self.mistake == "no-transpose":
            return self.wo(out.reshape(batch, seq, -1))
        return self.wo(out.transpose(1, 2).reshape(batch, seq, -1))


def planted(name):
    return type(f"Planted_{name.replace(' ', '_')}", (EinsumAttention,), {"mistake": name})


class TopLeftFlashAttention(MultiHeadGQAttention):
    """The fused path only, with is_causal=True whatever the cache holds: right for training and one-token decoding,
    wrong for queries on top of a filled cache (SDPA aligns its triangle top-left)."""

    def forward(self, x, cos, sin, mask=None, kv_cache=None, start_pos=0):
        if not self.use_flash:  # the by-hand path builds its triangle top-left too (tril without offset)
            return super().forward(x, cos, sin, mask, kv_cache, start_pos)
        batch, seq, _ = x.shape
        q = apply_rotary(self.wq(x).view(batch, seq, self.heads, self.head_dim), cos, sin).transpose(1, 2)
        k = apply_rotary(self.wk(x).view(batch, seq, self.n_kv_heads, self.head_dim), cos, sin).transpose(1, 2)
        v = self.wv(x).view(batch, seq, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if kv_cache is not None:
            k, v = kv_cache.update(start_pos, k, v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and seq > 1,
                                             enable_gqa=True)
        return self.wo(out.transpose(1, 2).reshape(batch, seq, -1))


class MissingRopeOnKeys(MultiHeadGQAttention):
    """Rotates the queries only."""

    def forward(self, x, cos, sin, mask=None, kv_cache=None, start_pos=0):
        batch, seq, _ = x.shape
        q = apply_rotary(self.wq(x).view(batch, seq, self.heads, self.head_dim), cos, sin).transpose(1, 2)
        k = self.wk(x).view(batch, seq, self.n_kv_heads, self.head_dim).transpose(1, 2)  # the keys stay unrotated
        v = self.wv(x).view(batch, seq, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if kv_cache is not None:
            k, v = kv_cache.update(start_pos, k, v)
        if mask is None and seq > 1 and k.shape[2] != seq:
            from llama3 import build_attention_mask

            mask = build_attention_mask(None, seq, k.shape[2] - seq)
        out = self.attention_by_hand(q, k, v, mask, 0.0)
        return self.wo(out.transpose(1, 2).reshape(batch, seq, -1))


@pytest.mark.parametrize("solution", [MultiHeadGQAttention, EinsumAttention])
def test_correct_solutions_pass(solution, capsys):
    check_attention(solution)
    assert capsys.readouterr().out.startswith("PASSED MultiHeadGQAttention")


class FlashAlways(MultiHeadGQAttention):
    """Takes the fused path whatever use_flash says."""

    def __init__(self, args):
        super().__init__(args)
        self.use_flash = True


class ByHandAlways(MultiHeadGQAttention):
    def __init__(self, args):
        super().__init__(args)
        self.use_flash = False


MISTAKES = [
    (planted("no causal"), "the causal mask is missing"),
    (planted("shift-1"), "query t does not see itself"),
    (planted("shift+1"), "query t also sees key t + 1"),
    (planted("add-bool"), "the boolean mask is added to the scores"),
    (planted("fill-zero"), "filled with 0 instead of -inf"),
    (planted("no-transpose"), "merged without transposing back"),
    (planted("no scale"), "the scores are not scaled"),
    (planted("softmax over queries"), "the softmax runs over the queries"),
    (planted("repeat"), "expanded with repeat (kv0, kv1, kv0, kv1"),
    (planted("padding ignored"), "the padding mask is ignored"),
    (planted("cache ignored"), "the KV cache is not used"),
    (planted("top-left"), "aligned top-left"),
    (TopLeftFlashAttention, "aligned top-left"),
    (MissingRopeOnKeys, "RoPE is applied to q only"),
    (FlashAlways, "use_flash=False still calls F.scaled_dot_product_attention"),
    (ByHandAlways, "use_flash=True never calls F.scaled_dot_product_attention"),
]


@pytest.mark.parametrize("planted_class,phrase", MISTAKES)
def test_planted_mistakes_are_named(planted_class, phrase):
    assert_named(check_attention, planted_class, phrase, [p for _, p in MISTAKES] + ["Is the mask inverted"])


def test_wrong_kv_projection_size_is_explained():
    class FullSizeKV(MultiHeadGQAttention):  # forgot that K/V have n_kv_heads, not heads
        def __init__(self, args):
            super().__init__(args)
            self.wk = nn.Linear(args.d_model, args.heads * args.head_dim, bias=False)

    error = assert_named(check_attention, FullSizeKV, "self.wk.weight has shape")
    assert "wk and wv map d_model -> n_kv_heads" in error.fix


# ------------------------------------------------------------------------------------------------- the masks
def mask_written_out(attention_mask, q_len, start_pos=0):
    """An independent correct mask: loops over queries and keys."""
    kv_len = start_pos + q_len if attention_mask is None else attention_mask.shape[-1]
    batch = 1 if attention_mask is None else attention_mask.shape[0]
    mask = torch.zeros(batch, 1, q_len, kv_len, dtype=torch.bool)
    for b in range(batch):
        for t in range(q_len):
            for s in range(kv_len):
                real = attention_mask is None or bool(attention_mask[b, s])
                mask[b, 0, t, s] = (s <= start_pos + t and real) or s == start_pos + t
    return mask


def _reference_mask(attention_mask, q_len, start_pos=0):
    from llama3 import build_attention_mask

    return build_attention_mask(attention_mask, q_len, start_pos)


def mask_inverted(attention_mask, q_len, start_pos=0):
    return ~_reference_mask(attention_mask, q_len, start_pos)


def mask_without_diagonal(attention_mask, q_len, start_pos=0):
    kv_len = start_pos + q_len if attention_mask is None else attention_mask.shape[-1]
    mask = torch.ones(q_len, kv_len, dtype=torch.bool).tril(start_pos - 1)[None, None]
    if attention_mask is not None:
        mask = (mask & attention_mask[:, None, None, :].bool()) | torch.eye(q_len, kv_len, start_pos, dtype=torch.bool)
    return mask


def mask_top_left(attention_mask, q_len, start_pos=0):
    return _reference_mask(attention_mask, q_len, 0) if attention_mask is not None else torch.ones(
        q_len, start_pos + q_len, dtype=torch.bool).tril()[None, None]


def mask_padding_on_queries(attention_mask, q_len, start_pos=0):
    causal = _reference_mask(None, q_len, start_pos)
    if attention_mask is None:
        return causal
    causal = causal[..., :attention_mask.shape[-1]] if causal.shape[-1] >= attention_mask.shape[-1] else \
        _reference_mask(torch.ones_like(attention_mask), q_len, start_pos)
    keep = causal & attention_mask[:, None, -q_len:, None].bool()
    kv = torch.arange(attention_mask.shape[-1])
    return keep | (kv[None, :] == torch.arange(start_pos, start_pos + q_len)[:, None])[None, None]


def mask_padded_rows_empty(attention_mask, q_len, start_pos=0):
    causal = _reference_mask(None if attention_mask is None else torch.ones_like(attention_mask), q_len, start_pos)
    return causal if attention_mask is None else causal & attention_mask[:, None, None, :].bool()


def mask_float(attention_mask, q_len, start_pos=0):
    return _reference_mask(attention_mask, q_len, start_pos).float()


def test_correct_masks_pass(capsys):
    from llama3 import build_attention_mask
    from llama3.checks import check_attention_mask

    for fn in (build_attention_mask, mask_written_out):
        check_attention_mask(fn)
    assert capsys.readouterr().out.count("PASSED build_attention_mask") == 2


MASK_MISTAKES = [
    (mask_inverted, "the mask is inverted"),
    (mask_without_diagonal, "excludes the diagonal"),
    (mask_top_left, "start_pos is ignored"),
    (mask_padding_on_queries, "hides padded QUERIES instead of padded KEYS"),
    (mask_padded_rows_empty, "a padded query sees no key at all"),
    (mask_float, "the lesson's masks are boolean"),
]


@pytest.mark.parametrize("planted_fn,phrase", MASK_MISTAKES)
def test_planted_mask_mistakes_are_named(planted_fn, phrase):
    from llama3.checks import check_attention_mask

    assert_named(check_attention_mask, planted_fn, phrase, [p for _, p in MASK_MISTAKES])


# ---------------------------------------------------------------------------------------- attention by hand
def by_hand_einsum(q, k, v, mask=None, dropout=0.0):
    """An independent correct solution: grouped einsum, an additive mask, dropout on the weights."""
    batch, heads, seq, dim = q.shape
    n_kv, kv_len = k.shape[1], k.shape[2]
    grouped = q.reshape(batch, n_kv, heads // n_kv, seq, dim)
    scores = torch.einsum("bkgtd,bksd->bkgts", grouped, k).flatten(1, 2) / dim ** 0.5
    if mask is None and seq > 1:
        mask = torch.ones(seq, kv_len, dtype=torch.bool).tril()
    if mask is not None:
        scores = scores + torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
    probs = F.dropout(scores.softmax(-1), dropout, training=dropout > 0)
    out = torch.einsum("bkgts,bksd->bkgtd", probs.view(batch, n_kv, heads // n_kv, seq, kv_len), v)
    return out.flatten(1, 2)


def _by_hand_with(mistake):
    def planted_fn(q, k, v, mask=None, dropout=0.0):
        group = q.shape[1] // k.shape[1]
        if mistake == "repeat":
            k, v = k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1)
        else:
            k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
        scores = q @ k.transpose(-2, -1) / (1.0 if mistake == "no scale" else math.sqrt(q.shape[-1]))
        seq, kv_len = scores.shape[-2:]
        if mask is None and (seq > 1 or mistake == "tril always"):
            mask = torch.ones(seq, kv_len, dtype=torch.bool).tril(-1 if mistake == "shift-1" else 0)
        if mask is not None:
            if mistake == "add-bool":
                scores = scores + mask
            elif mistake == "fill-zero":
                scores = scores.masked_fill(~mask, 0.0)
            else:
                scores = scores.masked_fill(~mask, float("-inf"))
        probs = F.softmax(scores, dim=-2 if mistake == "softmax over queries" else -1)
        if mistake != "dropout ignored":
            probs = F.dropout(probs, dropout, training=dropout > 0)
        return probs @ v

    planted_fn.__name__ = f"by_hand_{str(mistake).replace(' ', '_')}"
    return planted_fn


def test_correct_by_hand_passes(capsys):
    from llama3.checks import check_attention_by_hand

    check_attention_by_hand(by_hand_einsum)
    check_attention_by_hand(_by_hand_with(None))
    assert capsys.readouterr().out.count("PASSED attention_by_hand") == 2


BY_HAND_MISTAKES = [
    (_by_hand_with("repeat"), "expanded with repeat"),
    (_by_hand_with("no scale"), "not scaled by 1 / sqrt(head_dim)"),
    (_by_hand_with("shift-1"), "query t does not see itself"),
    (_by_hand_with("tril always"), "a causal triangle is built for a single query"),
    (_by_hand_with("add-bool"), "the boolean mask is added to the scores"),
    (_by_hand_with("fill-zero"), "filled with 0 instead of -inf"),
    (_by_hand_with("softmax over queries"), "the softmax runs over the queries"),
    (_by_hand_with("dropout ignored"), "the dropout argument has no effect"),
]


@pytest.mark.parametrize("planted_fn,phrase", BY_HAND_MISTAKES)
def test_planted_by_hand_mistakes_are_named(planted_fn, phrase):
    from llama3.checks import check_attention_by_hand

    assert_named(check_attention_by_hand, planted_fn, phrase, [p for _, p in BY_HAND_MISTAKES])


# the notebook's class calls the notebook's own mask builder and attention_by_hand (exercises 1 and 2) by name
def attention_by_hand(q, k, v, mask=None, dropout=0.0):
    return by_hand_einsum(q, k, v, mask, dropout)


class NotebookAttention(MultiHeadGQAttention):
    def attention_by_hand(self, q, k, v, mask, dropout):
        return attention_by_hand(q, k, v, mask, dropout)


def test_attention_with_a_wrong_attention_by_hand_says_fix_exercise_2_first(monkeypatch):
    from llama3.checks import check_attention

    monkeypatch.setitem(globals(), "attention_by_hand", _by_hand_with("no scale"))
    error = assert_named(check_attention, NotebookAttention, "Fix notebook 04, exercise 2 (attention_by_hand) first")
    assert "not scaled" in error.what


def test_attention_cascade_takes_an_explicit_mask_builder():
    from llama3.checks import check_attention

    assert_named(check_attention, MultiHeadGQAttention, "exercise 1 (build_attention_mask) first",
                 build_attention_mask=mask_inverted)
