"""Checkpoint formats: this package's own, Hugging Face's (LlamaForCausalLM) and Meta's (consolidated.*.pth).

The package pairs RoPE dimensions (2i, 2i+1) as Meta does; Hugging Face pairs (i, i + head_dim/2) and stores
its q/k projection rows permuted to match. ``permute_for_hf`` / ``unpermute_from_hf`` move between the two.

Everything here works on configs, state dicts and files, never on the model class: ``Llama3.from_hf``,
``from_meta``, ``save_hf`` and ``to_hf`` (in model.py, above this module) call these functions and build the model.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from llama3.config import ModelArgs, validate_rope_scaling
from llama3.files import (
    CONFIG_NAME,
    SAFETENSORS_INDEX_NAME,
    SAFETENSORS_NAME,
    atomic_write_text,
    atomic_write_with,
    read_json,
)

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
HF_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


def _hf_config_dict(config) -> tuple[dict, str]:
    """The config as a dict, and how to name it in an error."""
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        path = path / CONFIG_NAME if path.is_dir() else path
        return read_json(path, "a Hugging Face LlamaConfig"), str(path)
    if isinstance(config, dict):
        return dict(config), "the config"
    return config.to_dict(), "the config"


def args_from_hf_config(config, **overrides) -> ModelArgs:
    """ModelArgs from a Hugging Face LlamaConfig (object, dict or config.json path), transformers 4 or 5 layout."""
    cfg, source = _hf_config_dict(config)
    missing = [key for key in HF_REQUIRED if key not in cfg]
    if missing:
        raise ValueError(f"{source} has no {', '.join(missing)}: a Llama config.json needs {', '.join(HF_REQUIRED)} "
                         f"(re-download it, or re-save the model with transformers' save_pretrained).")
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
    values.update(overrides)
    return ModelArgs(**values)


def hf_config_from_args(args: ModelArgs):
    """The transformers.LlamaConfig equivalent to ``args``."""
    from transformers import LlamaConfig  # optional heavy dependency: only this conversion needs it

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


def our_name_from_hf(hf_name: str) -> str | None:
    """The package's name for a Hugging Face key; None for keys to skip; the key itself when it is unknown
    (``check_state_dict`` then reports it as unexpected)."""
    if hf_name.endswith("rotary_emb.inv_freq"):
        return None  # old transformers saved this buffer; it is recomputed from the config
    parts = hf_name.split(".")
    is_layer = parts[:2] == ["model", "layers"] and len(parts) > 2
    key = ".".join(["model", "layers", "{i}", *parts[3:]]) if is_layer else hf_name
    name = _HF_TO_OURS.get(key)
    if name is None:
        return hf_name
    return name.replace("{i}", parts[2]) if is_layer else name


_HF_TO_OURS = {v: k for k, v in HF_NAMES.items()}


def _unpermute_if_qk(name: str, tensor: torch.Tensor, args: ModelArgs) -> torch.Tensor:
    if name.endswith("attention.wq.weight"):
        return unpermute_from_hf(tensor, args.heads)
    if name.endswith("attention.wk.weight"):
        return unpermute_from_hf(tensor, args.n_kv_heads)
    return tensor


def ours_from_hf_state_dict(state: dict[str, torch.Tensor], args: ModelArgs) -> dict[str, torch.Tensor]:
    out = {}
    for hf_name, tensor in state.items():
        name = our_name_from_hf(hf_name)
        if name is None:
            continue
        if name == hf_name:
            raise ValueError(f"Unexpected key {hf_name!r} in a Hugging Face Llama checkpoint.")
        out[name] = _unpermute_if_qk(name, tensor, args)
    return out


def hf_model_from_state_dict(state: dict[str, torch.Tensor], args: ModelArgs, dtype: torch.dtype):
    """A transformers LlamaForCausalLM holding copies of ``state`` (this package's names), in ``dtype``."""
    from transformers import LlamaForCausalLM  # optional heavy dependency: only this conversion needs it

    config = hf_config_from_args(args)
    with torch.device("meta"):
        hf_model = LlamaForCausalLM(config)
    state = hf_state_dict_from_ours({k: v.detach().clone() for k, v in state.items()}, args)
    hf_model.load_state_dict(state, strict=False, assign=True)
    if args.tie_embeddings:
        hf_model.tie_weights()
    # Non-persistent buffers (the rotary inv_freq) were created on "meta": rebuild them for real.
    rotary = hf_model.model.rotary_emb
    hf_model.model.rotary_emb = type(rotary)(config=config)
    hf_model.to(dtype)
    leftover = [n for n, t in list(hf_model.named_parameters()) + list(hf_model.named_buffers()) if t.is_meta]
    if leftover:
        raise RuntimeError(f"to_hf left tensors uninitialised: {leftover}")
    return hf_model.eval()


# ------------------------------------------------------------------------------------ Hugging Face folders
_SHARD_PATTERN = re.compile(r"model-\d+-of-\d+\.safetensors")
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")


def _require_folder(folder: Path, what: str, fix: str) -> None:
    """FileNotFoundError for a missing or empty folder, ValueError for a file where a folder belongs."""
    if not folder.exists():
        hint = ""
        if _REPO_ID.fullmatch(str(folder)):
            hint = (f" If {str(folder)!r} is a Hub repository id, download it first: "
                    f"huggingface_hub.snapshot_download({str(folder)!r}) returns the local folder to pass here.")
        raise FileNotFoundError(f"No folder at {folder}: pass the {what} folder ({fix}).{hint}")
    if not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder: pass the {what} folder that contains it ({fix}).")
    if not any(folder.iterdir()):
        raise FileNotFoundError(f"The folder {folder} is empty: it should hold the {what} files ({fix}).")


def hf_weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a Hugging Face folder: the shards named by model.safetensors.index.json, or
    model.safetensors."""
    index = folder / SAFETENSORS_INDEX_NAME
    if index.is_file():
        weight_map = read_json(index, "a safetensors index with a 'weight_map'").get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index} is not a safetensors index (it needs a 'weight_map' object): download it again.")
        files = [folder / name for name in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{index.name} names shards that are not in {folder}: {missing}. Download the whole checkpoint "
                f"again (an interrupted download leaves shards out)."
            )
        return files
    if (folder / SAFETENSORS_NAME).is_file():
        return [folder / SAFETENSORS_NAME]
    present = sorted(p.name for p in folder.iterdir())
    if any(name.endswith((".bin", ".pth")) for name in present):
        fix = ("it holds PyTorch .bin/.pth weights: re-save them as safetensors with transformers' "
               "save_pretrained(folder) (safetensors is its default), or use Llama3.from_meta for Meta's "
               "consolidated.00.pth")
    else:
        fix = "download the model's *.safetensors files too"
    raise FileNotFoundError(
        f"{folder} has no {SAFETENSORS_NAME} or {SAFETENSORS_INDEX_NAME} ({fix}). It holds: {present}."
    )


def hf_folder_args(folder: Path, **overrides) -> ModelArgs:
    """ModelArgs from a Hugging Face folder's config.json, after checking the folder is one."""
    folder = Path(folder)
    _require_folder(folder, "Hugging Face model", "config.json and model*.safetensors, as save_pretrained writes")
    if not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(
            f"{folder} has no {CONFIG_NAME}: a Hugging Face model folder holds {CONFIG_NAME} next to its "
            f"*.safetensors (Meta's format has params.json instead: use Llama3.from_meta)."
        )
    return args_from_hf_config(folder / CONFIG_NAME, **overrides)


def hf_folder_index(folder: Path, args: ModelArgs) -> dict[str, tuple[Path, str, tuple[int, ...]]]:
    """Our name -> (file, Hugging Face name, shape) for every tensor of a Hugging Face folder, read from the
    safetensors headers only (no weight is loaded), the tied head and stale buffers left out."""
    index = {}
    for file in hf_weight_files(Path(folder)):
        with safe_open(file, framework="pt") as f:
            for hf_name in f.keys():
                name = our_name_from_hf(hf_name)
                if name is None or (args.tie_embeddings and name == "output.weight"):
                    continue
                if name in index:
                    raise ValueError(f"{hf_name!r} is stored twice, in {index[name][0].name} and {file.name}.")
                index[name] = (file, hf_name, tuple(f.get_slice(hf_name).get_shape()))
    return index


def iter_hf_shards(index: dict[str, tuple[Path, str, tuple[int, ...]]], args: ModelArgs,
                   dtype: torch.dtype | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """One state dict (our names, q/k rows in our pairing, cast to ``dtype`` unless None) per safetensors file:
    safetensors memory-maps the file, so only the permuted q/k rows and any cast are copies."""
    for file in sorted({file for file, _, _ in index.values()}):
        with safe_open(file, framework="pt") as f:
            shard = {}
            for name, (origin, hf_name, _) in index.items():
                if origin == file:
                    tensor = _unpermute_if_qk(name, f.get_tensor(hf_name), args)
                    shard[name] = tensor if dtype is None else tensor.to(dtype)
        yield shard


def save_hf_folder(state: dict[str, torch.Tensor], args: ModelArgs, folder, dtype: torch.dtype,
                   max_shard_size: int | str = "5GB", tokenizer=None) -> Path:
    """Write ``state`` (this package's names, the tied head left out) as a Hugging Face folder that
    ``transformers.AutoModelForCausalLM.from_pretrained`` loads: config.json and model.safetensors, or
    model-0000k-of-0000n.safetensors shards plus model.safetensors.index.json when the weights exceed
    ``max_shard_size`` (bytes, or a string such as "2GB"). ``dtype`` is the one config.json announces.

    The q/k rows are permuted to Hugging Face's pairing; a tied head is not written (transformers re-ties it from
    ``tie_word_embeddings``). Files are written under a temporary name and renamed, config.json last, and
    weight files of an earlier save in the same folder that the new one does not use are removed, so the
    folder never mixes two saves.
    """
    from huggingface_hub import split_torch_state_dict_into_shards  # optional: only save_hf needs it

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"save_hf needs a folder, but {folder} is a file: pass a folder path.")
    folder.mkdir(parents=True, exist_ok=True)
    state = hf_state_dict_from_ours(state, args)
    split = split_torch_state_dict_into_shards(state, max_shard_size=max_shard_size)
    for filename, names in split.filename_to_tensors.items():
        atomic_save({name: state[name] for name in names}, folder / filename)
    written = set(split.filename_to_tensors)
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        atomic_write_text(folder / SAFETENSORS_INDEX_NAME, json.dumps(index, indent=2) + "\n")
        written.add(SAFETENSORS_INDEX_NAME)
    for stale in folder.iterdir():
        if stale.name not in written and (stale.name in (SAFETENSORS_NAME, SAFETENSORS_INDEX_NAME)
                                          or _SHARD_PATTERN.fullmatch(stale.name)):
            stale.unlink()

    config = hf_config_from_args(args).to_dict()
    config["architectures"] = ["LlamaForCausalLM"]
    config["torch_dtype" if "torch_dtype" in config else "dtype"] = str(dtype).removeprefix("torch.")
    atomic_write_text(folder / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------------------------- Meta format
# Meta's use_scaled_rope flag carries no numbers: these are Llama 3.1's. Llama 3.2 1B/3B use factor 32
# (pass rope_scaling={"factor": 32.0}); Hugging Face's converter makes the same choice.
META_ROPE_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192}
META_CONTEXT = {False: 8192, True: 131072}  # Llama 3 / Llama 3.1+ context lengths


def args_from_meta_params(params: dict, max_seq_len: int | None = None, rope_scaling: dict | None = None,
                          **overrides) -> ModelArgs:
    """ModelArgs from Meta's params.json. The FFN hidden size follows Meta's rule from dim, multiple_of and
    ffn_dim_multiplier (ModelArgs applies the same rule). ``rope_scaling`` (a full or partial dict) overrides
    the Llama 3.1 defaults that ``use_scaled_rope`` stands for; ``max_seq_len`` defaults to 131072 for scaled
    RoPE and 8192 otherwise."""
    for key in ("dim", "n_layers", "n_heads", "vocab_size"):
        if key not in params:
            raise ValueError(f"params.json has no {key!r}: Meta's Llama params.json holds dim, n_layers, n_heads, "
                             f"n_kv_heads, vocab_size, multiple_of, ffn_dim_multiplier, norm_eps and rope_theta.")
    scaled = bool(params.get("use_scaled_rope", False))
    scaling = None
    if scaled or rope_scaling is not None:
        scaling = dict(META_ROPE_SCALING)
        # Later releases of Meta's code may spell the numbers out in params.json.
        for meta_key, key in (("rope_scaling_factor", "factor"), ("rope_high_freq_factor", "high_freq_factor")):
            if params.get(meta_key) is not None:
                scaling[key] = params[meta_key]
        if rope_scaling is not None:
            if not isinstance(rope_scaling, dict):
                raise TypeError(f"rope_scaling must be a dict such as {{'factor': 32.0}}, got "
                                f"{type(rope_scaling).__name__}.")
            scaling.update(rope_scaling)
    heads = params["n_heads"]
    kv_heads = params.get("n_kv_heads") or heads
    if heads % kv_heads:
        raise ValueError(f"params.json n_heads={heads} is not a multiple of n_kv_heads={kv_heads}.")
    values = dict(
        vocab_size=params["vocab_size"],
        d_model=params["dim"],
        heads=heads,
        group_size=heads // kv_heads,
        num_layers=params["n_layers"],
        max_seq_len=max_seq_len or params.get("max_seq_len") or META_CONTEXT[scaled],
        multiple_of=params.get("multiple_of", 256),
        ffn_dim_multiplier=params.get("ffn_dim_multiplier"),
        norm_eps=params.get("norm_eps", 1e-5),
        rope_theta=float(params.get("rope_theta", 500000.0)),
        rope_scaling=scaling,
    )
    values.update(overrides)
    return ModelArgs(**values)


def read_meta_folder(folder, max_seq_len: int | None = None, rope_scaling: dict | None = None,
                     **overrides) -> tuple[ModelArgs, dict[str, torch.Tensor], Path]:
    """(args, state dict, weights file) of Meta's format: a folder with params.json and consolidated.00.pth (Meta's
    key names are this package's, and Meta pairs RoPE dimensions as this package does: no permutation).

    The .pth file is memory-mapped (torch.load(mmap=True)). A checkpoint without ``output.weight``, or whose
    ``output.weight`` equals the embedding, gets tied embeddings (Llama 3.2 1B/3B), and the head is left out of the
    state. ``rope_scaling={"factor": 32.0}`` is needed for Llama 3.2 (see META_ROPE_SCALING). Model-parallel
    checkpoints (several consolidated.*.pth) are refused.
    """
    folder = Path(folder)
    _require_folder(folder, "Meta checkpoint", "params.json and consolidated.00.pth, as Meta's download gives")
    params_file = folder / "params.json"
    if not params_file.is_file():
        hint = f" It holds {CONFIG_NAME}: use Llama3.from_hf for Hugging Face folders." if (
            folder / CONFIG_NAME).is_file() else ""
        raise FileNotFoundError(f"{folder} has no params.json: Meta's checkpoint folder holds params.json and "
                                f"consolidated.00.pth.{hint}")
    params = read_json(params_file, "Meta's Llama params (dim, n_layers, n_heads, ...)")
    shards = sorted(folder.glob("consolidated.*.pth"))
    if not shards:
        raise FileNotFoundError(f"{folder} has no consolidated.00.pth: download the weights next to params.json.")
    if len(shards) > 1:
        raise ValueError(
            f"{folder} holds {len(shards)} model-parallel shards ({', '.join(s.name for s in shards)}); from_meta "
            f"loads single-shard checkpoints (Llama 3.x 1B, 3B, 8B). For larger models use the Hugging Face "
            f"release with Llama3.from_hf."
        )
    state = load_state_dict_file(shards[0])
    state.pop("rope.freqs", None)  # Llama 2 era checkpoints stored the RoPE table; it is recomputed
    tie = "output.weight" not in state or (
        "tok_embeddings.weight" in state
        and state["output.weight"].shape == state["tok_embeddings.weight"].shape
        and torch.equal(state["output.weight"], state["tok_embeddings.weight"])
    )
    if tie:
        state.pop("output.weight", None)
    args = args_from_meta_params(params, max_seq_len, rope_scaling, tie_embeddings=tie, **overrides)
    return args, state, shards[0]


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


def check_state_dict(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], args: ModelArgs) -> None:
    """Raise ValueError naming every missing, unexpected and wrongly shaped key: ``found`` holds a checkpoint's
    names and shapes, ``expected`` those of the model built from ``args`` (both name -> shape)."""
    expected, found = dict(expected), dict(found)
    if args.tie_embeddings:  # the head is the embedding: never stored separately
        expected.pop("output.weight", None)
        found.pop("output.weight", None)
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong_shape = sorted(f"{k}: checkpoint {tuple(found[k])}, model {tuple(expected[k])}"
                         for k in set(expected) & set(found) if tuple(found[k]) != tuple(expected[k]))
    if missing or unexpected or wrong_shape:
        def show(items):
            return ", ".join(items[:8]) + (f" ... ({len(items)} in all)" if len(items) > 8 else "") or "none"

        a = args
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
    """A .safetensors file (memory-mapped) or a .pth / .pt / .bin state dict (torch.load, weights only: a pickle
    that would run code is refused). A file in torch's legacy (pre-1.6, non-zip) format cannot be memory-mapped and
    is read whole."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except Exception as error:  # safetensors raises its own SafetensorError
            raise ValueError(f"Could not read the checkpoint {path}: it is corrupt or not a safetensors file "
                             f"({error}); save it again.") from error
    legacy = not zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=not legacy)
    except Exception as error:  # torch raises RuntimeError/EOFError/UnpicklingError
        if legacy:
            raise ValueError(
                f"Could not read the checkpoint {path}: it is in torch's legacy (non-zip) format and not a plain "
                f"state dict of tensors, or it is damaged ({error}). If you trust the file, re-save it in the "
                f"current format: torch.save(torch.load(path, weights_only=False), new_path)."
            ) from error
        raise ValueError(
            f"Could not read the checkpoint {path}: it is corrupt or not a state dict ({error}); save it again."
        ) from error


def atomic_save(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write a state dict as safetensors (``.safetensors``) or a torch pickle (any other suffix), atomically
    (``llama3.files.atomic_write_with``: a crash or a full disk never leaves half a file; errors are OSError)."""
    if Path(path).suffix == ".safetensors":
        atomic_write_with(path, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    else:
        atomic_write_with(path, lambda tmp: torch.save(state, tmp))
