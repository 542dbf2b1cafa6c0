"""The course's tokenizer: OpenAI's GPT-2 byte-level BPE, vendored in assets/, plus a "[PAD]" token."""

from __future__ import annotations

import json
import os
from pathlib import Path

ASSETS = Path(os.environ.get("LLAMA3_ASSETS", Path(__file__).resolve().parent.parent / "assets"))
GPT2_DIR = ASSETS / "tokenizer" / "gpt2"
PAD_TOKEN = "[PAD]"


def load_tokenizer(path: str | os.PathLike | None = None, add_pad: bool | None = None):
    """GPT2TokenizerFast from local files (offline), with "[PAD]" added: 50258 tokens, pad id 50257.

    ``path`` may name another tokenizer folder (anything ``AutoTokenizer.from_pretrained`` reads, e.g. one
    saved next to a checkpoint). "[PAD]" is added to the GPT-2 tokenizer only, unless ``add_pad`` says otherwise:
    a checkpoint's own tokenizer must keep the vocabulary its embedding table was trained with (Llama 3's has no
    pad token; generation then pads with EOS). The length is checked: transformers 5 returns an EMPTY tokenizer,
    without an error, when asked for "gpt2" offline, and that must never pass silently.
    """
    from transformers import AutoTokenizer, GPT2TokenizerFast, PreTrainedTokenizerFast

    folder = Path(path) if path is not None else GPT2_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"No tokenizer folder at {folder}: pass the folder that holds the tokenizer files.")
    if path is None:
        tokenizer = GPT2TokenizerFast.from_pretrained(folder)
        if len(tokenizer) != 50257:
            raise RuntimeError(f"The GPT-2 tokenizer in {folder} has {len(tokenizer)} tokens instead of 50257: "
                               f"the vendored files are damaged.")
    elif (folder / "tokenizer.json").is_file() and not _is_hf_model_folder(folder):
        # A save_pretrained folder of this package: its config.json is ModelArgs, which AutoTokenizer would try
        # (and fail, noisily) to read as a transformers config.
        tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
    else:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        if len(tokenizer) < 2:
            raise RuntimeError(f"The tokenizer in {folder} is empty ({len(tokenizer)} tokens).")
    if add_pad is None:
        add_pad = path is None
    if add_pad and tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    return tokenizer


def _is_hf_model_folder(folder: Path) -> bool:
    config = folder / "config.json"
    return config.is_file() and "model_type" in json.loads(config.read_text())
