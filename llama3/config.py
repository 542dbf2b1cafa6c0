"""ModelArgs: every hyper-parameter of a Llama 3 model in one dataclass.

The field names are the course's own (``d_model``, ``heads``, ``group_size``...). ``from_hf_config`` and
``to_hf_config`` translate to and from a Hugging Face ``LlamaConfig`` (transformers 4 and 5 layouts).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

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
            if len(self.tokenizer) != self.vocab_size:
                raise ValueError(
                    f"vocab_size={self.vocab_size} does not match the tokenizer, which has {len(self.tokenizer)} "
                    f"tokens: pass vocab_size=len(tokenizer)."
                )
            if self.pad_token_id is None:
                self.pad_token_id = self.tokenizer.pad_token_id
        for name in ("vocab_size", "d_model", "heads", "group_size", "num_layers", "max_seq_len", "max_batch_size",
                     "multiple_of"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"ModelArgs.{name} must be an int, got {type(value).__name__} ({value!r}).")
            if value < 1:
                raise ValueError(f"ModelArgs.{name} must be at least 1, got {value}.")
        if self.head_dim is None:
            if self.d_model % self.heads:
                raise ValueError(
                    f"ModelArgs.d_model={self.d_model} is not divisible by heads={self.heads}: each head gets "
                    f"d_model // heads dimensions, so choose heads that divide d_model."
                )
            self.head_dim = self.d_model // self.heads
        if self.head_dim % 2:
            raise ValueError(
                f"ModelArgs head_dim={self.head_dim} (d_model // heads) is odd: RoPE rotates pairs of dimensions, "
                f"so choose d_model and heads with an even quotient."
            )
        if self.heads % self.group_size:
            raise ValueError(
                f"ModelArgs.heads={self.heads} is not divisible by group_size={self.group_size}: group_size is "
                f"the number of query heads sharing one K/V head, so it must divide heads."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelArgs.dropout must be in [0, 1), got {self.dropout}.")
        if self.norm_eps <= 0:
            raise ValueError(f"ModelArgs.norm_eps must be positive, got {self.norm_eps}.")
        if self.rope_theta <= 0:
            raise ValueError(f"ModelArgs.rope_theta must be positive, got {self.rope_theta}.")
        if self.ffn_dim_multiplier is not None and self.ffn_dim_multiplier <= 0:
            raise ValueError(f"ModelArgs.ffn_dim_multiplier must be positive or None, got {self.ffn_dim_multiplier}.")
        if self.ffn_hidden_dim is not None and self.ffn_hidden_dim < 1:
            raise ValueError(f"ModelArgs.ffn_hidden_dim must be at least 1 or None, got {self.ffn_hidden_dim}.")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"ModelArgs.pad_token_id={self.pad_token_id} is outside the vocabulary (vocab_size={self.vocab_size})."
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
        known = {f.name for f in dataclasses.fields(cls)} - {"_"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"Unknown ModelArgs fields {sorted(unknown)} in the config; known fields: {sorted(known)}."
            )
        return cls(**{**data, **overrides})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path, **overrides) -> ModelArgs:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No config file at {path}: a folder written by save_pretrained holds config.json.")
        return cls.from_dict(json.loads(path.read_text()), **overrides)

    @classmethod
    def from_hf_config(cls, config: Any, **overrides) -> ModelArgs:
        """Args from a Hugging Face Llama config: a ``LlamaConfig``, a dict, or a path to ``config.json``."""
        from llama3.convert import args_from_hf_config

        return args_from_hf_config(config, **overrides)

    def to_hf_config(self):
        """The equivalent ``transformers.LlamaConfig``."""
        from llama3.convert import hf_config_from_args

        return hf_config_from_args(self)


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
    out = {"rope_type": "llama3", **{k: float(rope_scaling[k]) for k in ROPE_SCALING_KEYS}}
    out["original_max_position_embeddings"] = int(out["original_max_position_embeddings"])
    if out["factor"] < 1 or out["high_freq_factor"] <= out["low_freq_factor"]:
        raise ValueError(
            f"rope_scaling needs factor >= 1 and high_freq_factor > low_freq_factor, got {rope_scaling}."
        )
    return out
