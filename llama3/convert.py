"""Checkpoint formats: this package's own, Hugging Face's (LlamaForCausalLM) and Meta's (consolidated.*.pth).

The package pairs RoPE dimensions (2i, 2i+1) as Meta does; Hugging Face pairs (i, i + head_dim/2) and stores
its q/k projection rows permuted to match. ``permute_for_hf`` / ``unpermute_from_hf`` move between the two.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from llama3.config import ModelArgs, validate_rope_scaling

# our name -> Hugging Face name; "{i}" is the layer index
HF_NAMES = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "layers.{i}.attention.wq.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "layers.{i}.attention.wk.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "layers.{i}.attention.wv.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "layers.{i}.attention.wo.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "layers.{i}.feed_forward.w1.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "layers.{i}.feed_forward.w2.weight": "model.layers.{i}.mlp.down_proj.weight",
    "layers.{i}.feed_forward.w3.weight": "model.layers.{i}.mlp.up_proj.weight",
    "layers.{i}.attention_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "layers.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
}


# --------------------------------------------------------------------------------------------- RoPE pairing
def permute_for_hf(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """q/k rows from adjacent pairing (Meta, this package) to half-split pairing (Hugging Face)."""
    rows, cols = w.shape
    head_dim = rows // n_heads
    return w.view(n_heads, head_dim // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def unpermute_from_hf(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of ``permute_for_hf``."""
    rows, cols = w.shape
    head_dim = rows // n_heads
    return w.view(n_heads, 2, head_dim // 2, cols).transpose(1, 2).reshape(rows, cols)


# ----------------------------------------------------------------------------------------------- configs
def _hf_config_dict(config) -> dict:
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        path = path / "config.json" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"No config.json at {path}: a Hugging Face model folder holds config.json.")
        return json.loads(path.read_text())
    if isinstance(config, dict):
        return dict(config)
    return config.to_dict()


def args_from_hf_config(config, **overrides) -> ModelArgs:
    """ModelArgs from a Hugging Face LlamaConfig (object, dict or config.json path), transformers 4 or 5 layout."""
    cfg = _hf_config_dict(config)
    model_type = cfg.get("model_type")
    if model_type != "llama":
        raise ValueError(
            f"config model_type is {model_type!r}, not 'llama': this package loads Llama checkpoints only."
        )
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key):
            raise ValueError(f"config has {key}=true; Llama 3 has no biases and this package does not support them.")
    if cfg.get("hidden_act", "silu") != "silu":
        raise ValueError(f"config hidden_act={cfg['hidden_act']!r}; Llama uses 'silu'.")
    # transformers 5 moved rope_theta and rope_scaling into rope_parameters.
    rope = dict(cfg.get("rope_parameters") or {})
    scaling = cfg.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
    theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
    heads = cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads") or heads
    if heads % kv_heads:
        raise ValueError(f"num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}.")
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    eos = cfg.get("eos_token_id")
    values = dict(
        vocab_size=cfg["vocab_size"],
        d_model=cfg["hidden_size"],
        heads=heads,
        group_size=heads // kv_heads,
        num_layers=cfg["num_hidden_layers"],
        max_seq_len=cfg.get("max_position_embeddings", 2048),
        norm_eps=cfg.get("rms_norm_eps", 1e-6),
        rope_theta=float(theta),
        rope_scaling=validate_rope_scaling(scaling) if scaling else None,
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        ffn_hidden_dim=cfg["intermediate_size"],
        head_dim=head_dim,
        pad_token_id=cfg.get("pad_token_id"),
    )
    del eos
    values.update(overrides)
    return ModelArgs(**values)


def hf_config_from_args(args: ModelArgs):
    """The transformers.LlamaConfig equivalent to ``args``."""
    from transformers import LlamaConfig

    rope_scaling = None
    if args.rope_scaling is not None:
        rope_scaling = {**args.rope_scaling, "rope_type": "llama3"}
    return LlamaConfig(
        vocab_size=args.vocab_size,
        hidden_size=args.d_model,
        intermediate_size=args.hidden_dim,
        num_hidden_layers=args.num_layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.n_kv_heads,
        head_dim=args.head_dim,
        max_position_embeddings=args.max_seq_len,
        rms_norm_eps=args.norm_eps,
        rope_theta=args.rope_theta,
        rope_scaling=rope_scaling,
        tie_word_embeddings=args.tie_embeddings,
        attention_bias=False,
        mlp_bias=False,
        hidden_act="silu",
        pad_token_id=args.pad_token_id,
        bos_token_id=None,
        eos_token_id=None,
    )


# ------------------------------------------------------------------------------------------- state dicts
def hf_state_dict_from_ours(state: dict[str, torch.Tensor], args: ModelArgs) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in state.items():
        parts = name.split(".")
        key = name if parts[0] != "layers" else ".".join(["layers", "{i}", *parts[2:]])
        hf_key = HF_NAMES[key].replace("{i}", parts[1]) if parts[0] == "layers" else HF_NAMES[key]
        if name.endswith("attention.wq.weight"):
            tensor = permute_for_hf(tensor, args.heads)
        elif name.endswith("attention.wk.weight"):
            tensor = permute_for_hf(tensor, args.n_kv_heads)
        out[hf_key] = tensor
    return out


def ours_from_hf_state_dict(state: dict[str, torch.Tensor], args: ModelArgs) -> dict[str, torch.Tensor]:
    reverse = {v: k for k, v in HF_NAMES.items()}
    out = {}
    for hf_name, tensor in state.items():
        parts = hf_name.split(".")
        is_layer = parts[:2] == ["model", "layers"]
        key = ".".join(["model", "layers", "{i}", *parts[3:]]) if is_layer else hf_name
        if key not in reverse:
            if hf_name.endswith("rotary_emb.inv_freq"):
                continue  # old transformers saved this buffer; it is recomputed
            raise ValueError(f"Unexpected key {hf_name!r} in a Hugging Face Llama checkpoint.")
        name = reverse[key].replace("{i}", parts[2]) if is_layer else reverse[key]
        if name.endswith("attention.wq.weight"):
            tensor = unpermute_from_hf(tensor, args.heads)
        elif name.endswith("attention.wk.weight"):
            tensor = unpermute_from_hf(tensor, args.n_kv_heads)
        out[name] = tensor
    return out


def from_hf(folder_or_model, **overrides):
    """Llama3 from a transformers LlamaForCausalLM (in memory) or a Hugging Face folder."""
    from llama3.model import Llama3

    if isinstance(folder_or_model, (str, os.PathLike)):
        return _from_hf_folder(Path(folder_or_model), **overrides)
    hf_model = folder_or_model
    args = args_from_hf_config(hf_model.config, **overrides)
    state = {k: v.detach().clone() for k, v in hf_model.state_dict().items()}
    if args.tie_embeddings:
        state.pop("lm_head.weight", None)
    return Llama3.from_state_dict(ours_from_hf_state_dict(state, args), args)


def to_hf(model):
    """A transformers LlamaForCausalLM with copies of ``model``'s weights, in the same dtype."""
    from transformers import LlamaForCausalLM

    config = hf_config_from_args(model.args)
    dtype = model.tok_embeddings.weight.dtype
    with torch.device("meta"):
        hf_model = LlamaForCausalLM(config)
    state = hf_state_dict_from_ours({k: v.detach().clone() for k, v in model.state_dict_for_saving().items()},
                                    model.args)
    hf_model.load_state_dict(state, strict=False, assign=True)
    if model.args.tie_embeddings:
        hf_model.tie_weights()
    # Non-persistent buffers (the rotary inv_freq) were created on "meta": rebuild them for real.
    rotary = hf_model.model.rotary_emb
    hf_model.model.rotary_emb = type(rotary)(config=config)
    hf_model.to(dtype)
    leftover = [n for n, t in list(hf_model.named_parameters()) + list(hf_model.named_buffers()) if t.is_meta]
    if leftover:
        raise RuntimeError(f"to_hf left tensors uninitialised: {leftover}")
    return hf_model.eval()


def _from_hf_folder(folder: Path, **overrides):
    raise NotImplementedError("Loading Hugging Face folders is implemented in llama3.convert (issue 3).")


def save_hf(model, folder, **kwargs):
    raise NotImplementedError("save_hf is implemented in llama3.convert (issue 3).")


def from_meta(folder, max_seq_len=None, rope_scaling=None, **kwargs):
    raise NotImplementedError("from_meta is implemented in llama3.convert (issue 3).")


# ---------------------------------------------------------------------------------------- files, checks
def clean_state_dict(state: dict) -> dict[str, torch.Tensor]:
    """Accept training checkpoints ({"model": ...}) and strip torch.compile / DDP prefixes."""
    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    out = {}
    for name, tensor in state.items():
        for prefix in ("_orig_mod.", "module."):
            if name.startswith(prefix):
                name = name[len(prefix):]
        out[name] = tensor
    return out


def check_state_dict(model, state: dict[str, torch.Tensor]) -> None:
    """Raise ValueError naming every missing, unexpected and wrongly shaped key."""
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if model.args.tie_embeddings:
        expected.pop("output.weight", None)
        state = {k: v for k, v in state.items() if k != "output.weight"}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(expected[k])}"
                         for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k]))
    if missing or unexpected or wrong_shape:
        def show(items):
            return ", ".join(items[:8]) + (f" ... ({len(items)} in all)" if len(items) > 8 else "") or "none"

        a = model.args
        raise ValueError(
            "The checkpoint does not fit the model's ModelArgs "
            f"(d_model={a.d_model}, heads={a.heads}, group_size={a.group_size}, num_layers={a.num_layers}, "
            f"vocab_size={a.vocab_size}, hidden_dim={a.hidden_dim}, tie_embeddings={a.tie_embeddings}).\n"
            f"  missing keys: {show(missing)}\n  unexpected keys: {show(unexpected)}\n"
            f"  wrong shapes: {show(wrong_shape)}\n"
            "Build ModelArgs with the values the checkpoint was trained with (a save_pretrained folder stores them "
            "in config.json)."
        )


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A .safetensors file (memory-mapped) or a .pth / .pt / .bin state dict (torch.load, weights only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, OSError, ValueError, EOFError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise ValueError(f"Could not read the checkpoint {path}: it is corrupt or not a state dict ({error}).") from error
    except Exception as error:  # safetensors raises its own SafetensorError
        raise ValueError(f"Could not read the checkpoint {path}: it is corrupt or not a state dict ({error}).") from error


def atomic_save(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write to ``path.tmp`` then rename: a crash or a full disk never leaves a half-written file at ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, tmp, metadata={"format": "pt"})
        else:
            torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
