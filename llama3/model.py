"""Llama3: token embedding, a stack of decoder layers, a final RMSNorm and the output head."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from llama3 import generation
from llama3.attention import build_attention_mask, check_attention_mask
from llama3.config import ModelArgs
from llama3.convert import (
    args_from_hf_config,
    atomic_save,
    check_state_dict,
    clean_state_dict,
    hf_folder_args,
    hf_folder_index,
    hf_model_from_state_dict,
    iter_hf_shards,
    load_state_dict_file,
    ours_from_hf_state_dict,
    read_meta_folder,
    save_hf_folder,
)
from llama3.decoder import DecoderLayer
from llama3.files import CONFIG_NAME, PTH_NAME, SAFETENSORS_NAME, atomic_write_text, read_json
from llama3.kv_cache import KV_Cache
from llama3.loss import linear_cross_entropy
from llama3.norm import RMSNorm
from llama3.rope import RoPE
from llama3.tokenizer import save_tokenizer

# Where a state dict such as the seed's "tiny_stories_50M.pth" comes from: none ships with the course (README,
# "Use the package", has the same recipe).
MAKE_A_CHECKPOINT = (
    "No .pth ships with the course; make one for the seed's ModelArgs by training briefly, `python -m llama3 train "
    "--d-model 256 --heads 4 --group-size 2 --num-layers 32 --seq-len 256 --multiple-of 256 --steps 200 --out-dir "
    "runs/seed`, then `torch.save(Llama3.from_pretrained('runs/seed/model').state_dict(), 'tiny_stories_50M.pth')` "
    "(or load the folder runs/seed/model itself, or the shipped model: llama3.pretrained.PRETRAINED_DIR)"
)


@dataclass
class CausalLMOutput:
    logits: torch.Tensor | None  # (B, T, vocab_size), or (B, logits_to_keep, vocab_size); None if not asked for
    loss: torch.Tensor | None = None  # mean cross-entropy of next-token prediction, when labels are given


class Llama3(nn.Module):
    """The Llama 3 decoder-only language model (Grattafiori et al., 2024, "The Llama 3 Herd of Models")."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.d_model)
        self.rope = RoPE(args.head_dim, args.rope_theta, args.rope_scaling)
        self.layers = nn.ModuleList(DecoderLayer(args) for _ in range(args.num_layers))
        self.norm = RMSNorm(args.d_model, eps=args.norm_eps)
        self.output = nn.Linear(args.d_model, args.vocab_size, bias=False)
        if args.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.apply(self._init_weights)
        # GPT-2's scaled init: the projections that write into the residual stream shrink with depth.
        for name, param in self.named_parameters():
            if name.endswith(("attention.wo.weight", "feed_forward.w2.weight")):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * args.num_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, tgt: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, *, kv_caches: list[KV_Cache] | None = None, start_pos: int = 0,
                position_ids: torch.Tensor | None = None, logits_to_keep: int = 0,
                shift_labels: torch.Tensor | None = None, return_logits: bool = True) -> CausalLMOutput:
        """tgt (B, T) token ids -> logits (B, T, vocab) and, given labels, the loss.

        attention_mask (B, S): 1 for real tokens, 0 for padding; S = start_pos + T covers the cached positions
        too. Positions are counted from each row's first real token, so a left-padded row gets the same logits
        as the row alone. labels (B, T) follow transformers: the shift happens here, -100 and padding are
        ignored. kv_caches (one per layer) turn on cached decoding from start_pos. logits_to_keep > 0 computes
        the head for the last positions only (generation needs one).

        Training: shift_labels (B, T) are targets already shifted (position t predicts shift_labels[:, t]; -100
        ignored), as a data loader's (x, y) windows give them. return_logits=False computes the loss by chunks
        (``llama3.loss``) without ever building the (B, T, vocab) logits, and returns logits=None: the same loss and
        gradients, less memory, faster.
        """
        if not isinstance(tgt, torch.Tensor) or tgt.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"tgt must be a LongTensor of token ids, got {getattr(tgt, 'dtype', type(tgt).__name__)}.")
        if tgt.dim() != 2:
            raise ValueError(f"tgt must be a (batch, seq) tensor of token ids, got shape {tuple(tgt.shape)}.")
        batch, seq = tgt.shape
        end = start_pos + seq
        if end > self.args.max_seq_len:
            raise ValueError(
                f"Sequence of {end} positions is longer than max_seq_len={self.args.max_seq_len}: truncate the "
                f"input or build the model with a larger max_seq_len."
            )
        if labels is not None and shift_labels is not None:
            raise ValueError("Pass labels (shifted here) or shift_labels (already shifted), not both.")
        if not return_logits and labels is None and shift_labels is None:
            raise ValueError("return_logits=False returns only the loss: pass labels or shift_labels.")
        for name, given in (("labels", labels), ("shift_labels", shift_labels)):
            if given is not None and given.shape != (batch, seq):
                raise ValueError(f"{name} must have shape {(batch, seq)} (like tgt), got {tuple(given.shape)}.")
        vocab = self.args.vocab_size
        if seq and bool(((tgt < 0) | (tgt >= vocab)).any()):
            bad = tgt[(tgt < 0) | (tgt >= vocab)][0].item()
            raise ValueError(f"Token id {bad} is outside the vocabulary [0, {vocab}): encode with the model's own "
                             f"tokenizer, or build the model with a larger vocab_size.")
        if attention_mask is not None:
            check_attention_mask(attention_mask, (batch, end))
            if bool(attention_mask.all()):
                attention_mask = None  # no padding: the fast causal path applies
        if position_ids is None:
            if attention_mask is None:
                position_ids = torch.arange(start_pos, end, device=tgt.device)
            else:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, start_pos:]
        cos, sin = self.rope.cos_sin(position_ids)
        mask = None
        if attention_mask is not None or (start_pos > 0 and seq > 1):
            mask = build_attention_mask(attention_mask, seq, start_pos).to(tgt.device)

        h = self.tok_embeddings(tgt)  # (B, T, d_model)
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, mask, None if kv_caches is None else kv_caches[i], start_pos)
        h = self.norm(h)
        if not return_logits:
            targets = shift_labels if shift_labels is not None else self.shift_targets(labels, attention_mask)
            return CausalLMOutput(logits=None, loss=linear_cross_entropy(h, self.output.weight, targets))
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        logits = self.output(h)  # (B, T, vocab_size)

        loss = None
        if labels is not None:
            loss = self.loss(logits, labels, attention_mask)
        elif shift_labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), shift_labels.flatten(), ignore_index=-100)
        return CausalLMOutput(logits=logits, loss=loss)

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy of predicting labels[:, t+1] from logits[:, t].

        Ignored: labels equal to -100, padded labels, and (under left padding) the first real token, whose only
        "context" would be a padded position.
        """
        if labels.shape != logits.shape[:2]:
            raise ValueError(f"labels must have shape {tuple(logits.shape[:2])} (like tgt), got {tuple(labels.shape)}.")
        shift_labels = Llama3.shift_targets(labels, attention_mask)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), shift_labels.reshape(-1),
                               ignore_index=-100)

    @staticmethod
    def shift_targets(labels: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """labels (B, T) -> the target of each position (B, T): labels[:, t + 1], -100 where there is none."""
        # Shift the labels left rather than the logits right: slicing the (B, T, vocab) logits would copy them,
        # and its backward would allocate another tensor of that size.
        shift_labels = F.pad(labels[:, 1:], (0, 1), value=-100)  # (B, T): the target of position t is t + 1
        if attention_mask is not None:
            mask = attention_mask[:, -labels.shape[1]:].bool()
            seen = F.pad(mask[:, 1:] & mask[:, :-1], (0, 1), value=False)
            shift_labels = shift_labels.masked_fill(~seen, -100)
        return shift_labels

    # ------------------------------------------------------------------------------------------- generation
    def generate(self, prompt, tokenizer=None, **kwargs):
        """Sample a continuation, recomputing the whole sequence at every step (no cache). See
        ``llama3.generation.generate`` for the arguments; generation stops at EOS (per sequence), after
        max_new_tokens, or when the sequence reaches max_seq_len."""
        return generation.generate(self, prompt, tokenizer, use_cache=False, **kwargs)

    def generate_kv(self, prompt, tokenizer=None, **kwargs):
        """Like ``generate``, but with a KV cache: each step feeds only the newest token, through
        ``llama3.fast.FastDecoder`` (fused weights, rebuilt per call). ``fast=False`` uses the readable decoder that
        calls this model with its caches. ``compile=True`` runs the step under torch.compile with a CUDA graph on
        CUDA (the first call pays the compilation); on the CPU, where the compiled step measured no faster, it
        runs the same eager fast step."""
        return generation.generate(self, prompt, tokenizer, use_cache=True, **kwargs)

    # ---------------------------------------------------------------------------------------- checkpoints
    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        params = {id(p): p for p in self.parameters()}  # tied weights count once
        total = sum(p.numel() for p in params.values())
        if exclude_embeddings:
            total -= self.tok_embeddings.weight.numel()
        return total

    def state_dict_for_saving(self) -> dict[str, torch.Tensor]:
        """The state dict without the tied head (safetensors refuses shared tensors; loading re-ties it)."""
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        if self.args.tie_embeddings:
            state.pop("output.weight", None)
        return state

    def save_pretrained(self, folder: str | os.PathLike, safe_serialization: bool = True, tokenizer=None) -> Path:
        """Write config.json and model.safetensors (or model.pth) into ``folder``, and the tokenizer's files when
        one is given. Every file is written atomically (``llama3.files``; failures are OSError naming the file),
        config.json after the weights, and the other weights format is removed last: a folder holds one weights
        file, so loading can never pick up the weights of an earlier save."""
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"save_pretrained needs a folder, but {folder} is a file: pass a folder path.")
        folder.mkdir(parents=True, exist_ok=True)
        name, other = (SAFETENSORS_NAME, PTH_NAME) if safe_serialization else (PTH_NAME, SAFETENSORS_NAME)
        atomic_save(self.state_dict_for_saving(), folder / name)
        atomic_write_text(folder / CONFIG_NAME, json.dumps(self.args.to_dict(), indent=2) + "\n")
        (folder / other).unlink(missing_ok=True)
        if tokenizer is not None:
            save_tokenizer(tokenizer, folder)
        return folder

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, args: ModelArgs | None = None, **overrides) -> Llama3:
        """Load a model from a ``.pth`` or ``.safetensors`` state dict (``args`` required), from a folder
        written by ``save_pretrained`` (config inside; ``args`` optional), or from a Hugging Face folder.

        A checkpoint that does not fit the args raises ValueError naming the missing, unexpected and wrongly
        shaped keys; a folder with both model.safetensors and model.pth is refused (which one is current?).
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(
                f"No checkpoint at {path}: pass a .pth/.safetensors file or a folder written by save_pretrained. "
                f"{MAKE_A_CHECKPOINT}."
            )
        if path.is_dir():
            config = path / CONFIG_NAME
            if config.is_file() and read_json(config, "a ModelArgs or Hugging Face config").get("model_type"):
                return cls.from_hf(path, **overrides)
            if args is None:
                args = ModelArgs.load(config, **overrides)
            weights = [path / name for name in (SAFETENSORS_NAME, PTH_NAME) if (path / name).is_file()]
            if not weights:
                raise FileNotFoundError(
                    f"{path} holds no {SAFETENSORS_NAME} or {PTH_NAME}: pass a folder written by save_pretrained.")
            if len(weights) > 1:
                raise ValueError(
                    f"{path} holds both {SAFETENSORS_NAME} and {PTH_NAME}, and nothing says which is current: "
                    f"delete the stale one, or pass the file itself, Llama3.from_pretrained({str(weights[0])!r}, args)."
                )
            path = weights[0]
        elif args is None:
            raise ValueError(
                f"{path.name} is a bare state dict: pass the ModelArgs it was trained with, "
                f"Llama3.from_pretrained(path, args), or load a folder written by save_pretrained."
            )
        elif overrides:
            raise TypeError(f"Unexpected keyword arguments {sorted(overrides)} with an explicit args.")
        return cls.from_state_dict(load_state_dict_file(path), args)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], args: ModelArgs) -> Llama3:
        """Build the model and load ``state`` into it, with a readable error when the two do not fit."""
        state = clean_state_dict(state)
        model = cls._empty(args, {name: tuple(t.shape) for name, t in state.items()})
        model.load_state_dict(state, strict=False, assign=True)
        return model._finish_loading()

    @classmethod
    def _empty(cls, args: ModelArgs, shapes: dict[str, tuple[int, ...]], source: str | None = None) -> Llama3:
        """The model on the "meta" device (no memory, no random init), after checking a checkpoint's key names and
        shapes against it, so that a mismatch is reported before any weight is read. ``source`` names the
        checkpoint and its config in that report."""
        with torch.device("meta"):
            model = cls(args)
        expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
        try:
            check_state_dict(expected, shapes, args)
        except ValueError as error:
            if source is None:
                raise
            raise ValueError(f"The weights in {source} do not match its config. {error}") from None
        return model

    def _finish_loading(self) -> Llama3:
        """After assigning weights into a "meta" model: re-tie the head, rebuild the RoPE buffers (created on
        "meta") and check that nothing is left without a value."""
        if self.args.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.rope = RoPE(self.args.head_dim, self.args.rope_theta, self.args.rope_scaling)
        leftover = [n for n, t in list(self.named_parameters()) + list(self.named_buffers()) if t.is_meta]
        if leftover:
            raise RuntimeError(f"Loading left tensors without values: {leftover}")
        return self

    @classmethod
    def from_hf(cls, folder_or_model, dtype: torch.dtype | None = None, **overrides) -> Llama3:
        """From a Hugging Face Llama: a ``LlamaForCausalLM`` in memory, or a folder (config.json and
        model.safetensors or a sharded model.safetensors.index.json). ``dtype`` casts the weights while loading
        (None keeps the checkpoint's: bfloat16 for Meta's releases); ``overrides`` replace ModelArgs fields
        (``max_seq_len=4096`` for example). A folder is loaded shard by shard into a model built on "meta", so the
        weights exist once."""
        if isinstance(folder_or_model, (str, os.PathLike)):
            folder = Path(folder_or_model)
            args = hf_folder_args(folder, **overrides)
            index = hf_folder_index(folder, args)
            model = cls._empty(args, {name: shape for name, (_, _, shape) in index.items()},
                               f"{folder} ({CONFIG_NAME})")
            for shard in iter_hf_shards(index, args, dtype):
                model.load_state_dict(shard, strict=False, assign=True)
            return model._finish_loading().eval()
        hf_model = folder_or_model
        args = args_from_hf_config(hf_model.config, **overrides)
        state = {k: v.detach().clone() for k, v in hf_model.state_dict().items()}
        if args.tie_embeddings:
            state.pop("lm_head.weight", None)
        model = cls.from_state_dict(ours_from_hf_state_dict(state, args), args)
        return model if dtype is None else model.to(dtype)

    def to_hf(self):
        """An equivalent ``transformers.LlamaForCausalLM`` holding copies of these weights, in the same dtype."""
        return hf_model_from_state_dict(self.state_dict_for_saving(), self.args, self.tok_embeddings.weight.dtype)

    def save_hf(self, folder: str | os.PathLike, max_shard_size: int | str = "5GB", tokenizer=None) -> Path:
        """Write a Hugging Face folder (config.json + model.safetensors, or shards above ``max_shard_size``) that
        AutoModelForCausalLM loads; see ``llama3.convert.save_hf_folder``."""
        return save_hf_folder(self.state_dict_for_saving(), self.args, folder, self.tok_embeddings.weight.dtype,
                              max_shard_size=max_shard_size, tokenizer=tokenizer)

    @classmethod
    def from_meta(cls, folder: str | os.PathLike, max_seq_len: int | None = None,
                  rope_scaling: dict | None = None, dtype: torch.dtype | None = None, **overrides) -> Llama3:
        """From Meta's format: params.json + consolidated.00.pth (memory-mapped and assigned into a model built on
        "meta"); see ``llama3.convert.read_meta_folder`` for tied heads and Llama 3.2's ``rope_scaling``."""
        args, state, file = read_meta_folder(folder, max_seq_len, rope_scaling, **overrides)
        model = cls._empty(args, {name: tuple(t.shape) for name, t in state.items()}, f"{file} (params.json)")
        if dtype is not None:
            state = {name: t.to(dtype) for name, t in state.items()}
        model.load_state_dict(state, strict=False, assign=True)
        return model._finish_loading().eval()
