"""The course's tokenizer: OpenAI's GPT-2 byte-level BPE, vendored in assets/, plus a "[PAD]" token."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from llama3.files import CONFIG_NAME, PAD_TOKEN, atomic_write_bytes, read_json

ASSETS = Path(os.environ.get("LLAMA3_ASSETS", Path(__file__).resolve().parent.parent / "assets"))
GPT2_DIR = ASSETS / "tokenizer" / "gpt2"


def load_tokenizer(path: str | os.PathLike | None = None, add_pad: bool | None = None):
    """GPT2TokenizerFast from local files (offline), with "[PAD]" added: 50258 tokens, pad id 50257.

    ``path`` may name another tokenizer folder (anything ``AutoTokenizer.from_pretrained`` reads, e.g. one
    saved next to a checkpoint). "[PAD]" is added to the GPT-2 tokenizer only, unless ``add_pad`` says otherwise:
    a checkpoint's own tokenizer must keep the vocabulary its embedding table was trained with (Llama 3's has no
    pad token; generation then pads with EOS). The length is checked: transformers 5 returns an EMPTY tokenizer,
    without an error, when asked for "gpt2" offline, and that must never pass silently.
    """
    from transformers import AutoTokenizer, GPT2TokenizerFast, PreTrainedTokenizerFast  # heavy: import on use

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


def save_tokenizer(tokenizer, folder: str | os.PathLike) -> None:
    """``tokenizer.save_pretrained(folder)``, atomically file by file: the files are written to a temporary folder
    beside them and each moved into ``folder`` with ``llama3.files.atomic_write_bytes``, so a full disk or a crash
    never leaves a truncated tokenizer.json (any failure is an OSError naming the file)."""
    folder = Path(folder)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".tokenizer.") as tmp:
        try:
            tokenizer.save_pretrained(tmp)
        except OSError:
            raise
        except Exception as error:
            raise OSError(f"could not write the tokenizer into {folder}: {type(error).__name__}: {error}") from error
        for file in sorted(Path(tmp).iterdir()):
            if file.is_file():
                atomic_write_bytes(folder / file.name, file.read_bytes())


def _is_hf_model_folder(folder: Path) -> bool:
    config = folder / CONFIG_NAME
    return config.is_file() and "model_type" in read_json(config, "a model config")
