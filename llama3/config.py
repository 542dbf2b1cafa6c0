"""ModelArgs: every hyper-parameter of a Llama 3 model in one dataclass.

The field names are the course's own (``d_model``, ``heads``, ``group_size``...); ``llama3.convert`` translates
them to and from a Hugging Face ``LlamaConfig`` and Meta's params.json. Every field is checked at construction:
a wrong type raises TypeError (a bool is not an int, an int field refuses floats, a float field takes ints), an
impossible value ValueError, each naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

from llama3.files import atomic_write_text, read_json

ROPE_SCALING_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


@dataclass
class ModelArgs:
    vocab_size: int  # rows of the embedding table; len(tokenizer) when a tokenizer is given
    tokenizer: Any = field(default=None, repr=False, compare=False)  # optional; fills pad_token_id
    _: KW_ONLY
    d_model: int  # width of the residual stream
    heads: int  # query heads
    group_size: int  # query heads that share one K/V head: n_kv_heads = heads // group_size
    num_layers: int  # decoder layers
    max_seq_len: int  # longest sequence the model accepts (an upper bound, not an allocation)
    use_flash: bool = True  # F.scaled_dot_product_attention (True) or the spelled-out softmax (False)
    multiple_of: int = 256  # FFN hidden size is rounded up to a multiple of this
    ffn_dim_multiplier: float | None = None  # scales the FFN hidden size before rounding
    norm_eps: float = 1e-5  # RMSNorm epsilon
    rope_theta: float = 500000.0  # RoPE base; Llama 3 uses 500000 (Llama 2 used 10000)
    rope_scaling: dict | None = None  # Llama 3.1 style: factor, low/high_freq_factor, original_max_position_embeddings
    max_batch_size: int = 32  # upper bound on the generation batch (the KV cache is sized per call)
    tie_embeddings: bool = False  # output head shares the embedding matrix (Llama 3.2 1B/3B)
    dropout: float = 0.0  # attention and residual dropout while training
    pad_token_id: int | None = None  # taken from the tokenizer when one is given
    ffn_hidden_dim: int | None = None  # explicit FFN hidden size (a checkpoint's intermediate_size)
    head_dim: int | None = None  # defaults to d_model // heads; some checkpoints set it explicitly

    def __post_init__(self):
        if self.tokenizer is not None:
            _check_int("vocab_size", self.vocab_size, minimum=1)
            if len(self.tokenizer) != self.vocab_size:
                raise ValueError(
                    f"vocab_size={self.vocab_size} does not match the tokenizer, which has {len(self.tokenizer)} "
                    f"tokens: pass vocab_size=len(tokenizer)."
                )
            if self.pad_token_id is None:
                self.pad_token_id = self.tokenizer.pad_token_id
        for name in INT_FIELDS:
            _check_int(name, getattr(self, name), minimum=1)
        for name in BOOL_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, bool):  # json's "false" is truthy: never guess
                raise TypeError(f"ModelArgs.{name} must be a bool (true or false in config.json), "
                                f"got {type(value).__name__} {value!r}.")
        self.norm_eps = _check_float("norm_eps", self.norm_eps, positive=True)
        self.rope_theta = _check_float("rope_theta", self.rope_theta, positive=True)
        self.dropout = _check_float("dropout", self.dropout)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelArgs.dropout must be in [0, 1), got {self.dropout}.")
        if self.ffn_dim_multiplier is not None:
            self.ffn_dim_multiplier = _check_float("ffn_dim_multiplier", self.ffn_dim_multiplier, positive=True)
        if self.ffn_hidden_dim is not None:
            _check_int("ffn_hidden_dim", self.ffn_hidden_dim, minimum=1)
        if self.pad_token_id is not None:
            _check_int("pad_token_id", self.pad_token_id, minimum=0)
            if self.pad_token_id >= self.vocab_size:
                raise ValueError(f"ModelArgs.pad_token_id={self.pad_token_id} is outside the vocabulary "
                                 f"(vocab_size={self.vocab_size}): pass an id below vocab_size, or None.")
        if self.head_dim is None:
            if self.d_model % self.heads:
                raise ValueError(
                    f"ModelArgs.d_model={self.d_model} is not divisible by heads={self.heads}: each head gets "
                    f"d_model // heads dimensions, so choose heads that divide d_model."
                )
            self.head_dim = self.d_model // self.heads
        _check_int("head_dim", self.head_dim, minimum=2)
        if self.head_dim % 2:
            raise ValueError(
                f"ModelArgs.head_dim={self.head_dim} (d_model // heads unless given) is odd: RoPE rotates pairs of "
                f"dimensions, so choose d_model and heads with an even quotient, or an even head_dim."
            )
        if self.heads % self.group_size:
            raise ValueError(
                f"ModelArgs.heads={self.heads} is not divisible by group_size={self.group_size}: group_size is "
                f"the number of query heads sharing one K/V head, so it must divide heads."
            )
        if self.rope_scaling is not None:
            self.rope_scaling = validate_rope_scaling(self.rope_scaling)

    @property
    def n_kv_heads(self) -> int:
        return self.heads // self.group_size

    @property
    def hidden_dim(self) -> int:
        """The FFN hidden size: explicit ``ffn_hidden_dim``, else the Llama rule (see ``ffn_hidden_size``)."""
        if self.ffn_hidden_dim is not None:
            return self.ffn_hidden_dim
        return ffn_hidden_size(self.d_model, self.multiple_of, self.ffn_dim_multiplier)

    # ----------------------------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict:
        """Every field except the tokenizer, JSON-ready."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("tokenizer", "_")}

    @classmethod
    def from_dict(cls, data: dict, **overrides) -> ModelArgs:
        if not isinstance(data, dict):
            raise TypeError(f"ModelArgs.from_dict needs a dict of fields, got {type(data).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)} - {"_"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"Unknown ModelArgs fields {sorted(unknown)} in the config; known fields: {sorted(known)}."
            )
        return cls(**{**data, **overrides})

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path, **overrides) -> ModelArgs:
        """ModelArgs from a config.json written by ``save``; every error names the file."""
        data = read_json(path, "the ModelArgs of a save_pretrained folder")
        try:
            return cls.from_dict(data, **overrides)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{path}: {error}") from None


INT_FIELDS = ("vocab_size", "d_model", "heads", "group_size", "num_layers", "max_seq_len", "max_batch_size",
              "multiple_of")  # required positive ints (head_dim, ffn_hidden_dim, pad_token_id: optional ints)
BOOL_FIELDS = ("use_flash", "tie_embeddings")


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"ModelArgs.{name} must be an int, got {type(value).__name__} {value!r}.")
    if value < minimum:
        raise ValueError(f"ModelArgs.{name} must be at least {minimum}, got {value}.")


def _check_float(name: str, value, positive: bool = False) -> float:
    """A real number (ints welcome, bools and strings not), finite, and > 0 when ``positive``; returned as float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"ModelArgs.{name} must be a number, got {type(value).__name__} {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"ModelArgs.{name} must be finite, got {value}.")
    if positive and value <= 0:
        raise ValueError(f"ModelArgs.{name} must be positive, got {value}.")
    return value


def ffn_hidden_size(d_model: int, multiple_of: int = 256, ffn_dim_multiplier: float | None = None) -> int:
    """Llama's SwiGLU hidden size: 2/3 of 4*d_model (three matrices cost what two 4*d ones would),
    optionally scaled by ``ffn_dim_multiplier``, then rounded up to a multiple of ``multiple_of``."""
    hidden = int(2 * (4 * d_model) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * math.ceil(hidden / multiple_of)


def validate_rope_scaling(rope_scaling: dict) -> dict:
    """Check a Llama 3.1 style rope-scaling dict and return it with float/int values."""
    if not isinstance(rope_scaling, dict):
        raise TypeError(f"rope_scaling must be a dict or None, got {type(rope_scaling).__name__}.")
    rope_type = rope_scaling.get("rope_type", rope_scaling.get("type", "llama3"))
    if rope_type == "default":
        return None
    if rope_type != "llama3":
        raise ValueError(
            f"rope_scaling rope_type={rope_type!r} is not supported: this package implements Llama 3.1's "
            f"'llama3' scaling (or 'default' for none)."
        )
    missing = [k for k in ROPE_SCALING_KEYS if k not in rope_scaling]
    if missing:
        raise ValueError(f"rope_scaling is missing {missing}; Llama 3.1 scaling needs {list(ROPE_SCALING_KEYS)}.")
    out = {"rope_type": "llama3"}
    for key in ROPE_SCALING_KEYS:
        if key == "original_max_position_embeddings":
            _check_int(f"rope_scaling[{key!r}]", rope_scaling[key], minimum=1)
            out[key] = int(rope_scaling[key])
        else:
            out[key] = _check_float(f"rope_scaling[{key!r}]", rope_scaling[key], positive=True)
    if out["factor"] < 1 or out["high_freq_factor"] <= out["low_freq_factor"]:
        raise ValueError(
            f"rope_scaling needs factor >= 1 and high_freq_factor > low_freq_factor, got {rope_scaling}."
        )
    return out
