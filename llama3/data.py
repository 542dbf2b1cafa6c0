"""TinyStories for training: find the text, tokenise it once into a cached uint16 file, draw random windows.

Where the text comes from, in this order:
1. ``path`` given by the caller: a text file, or a folder holding ``*train*.txt`` and ``*valid*.txt`` files;
2. the environment variable ``LLAMA3_TINYSTORIES`` (same meaning; the CI points it at a local folder);
3. the Hugging Face hub (``roneneldan/TinyStories``) when it answers within a few seconds.
Stories are separated by a line ``<|endoftext|>`` (TinyStories' own format), which the tokenizer turns into its EOS
token, so the model learns where a story ends.

Tokenising 15 MB of text takes a while, so it happens once: the ids go into a ``uint16`` file under
``data_cache/`` (or ``~/.cache/llama3``), keyed by the files and the tokenizer, and later runs read it by memory map.

    tokenizer = load_tokenizer()
    train = TokenDataset.from_split("train", tokenizer, seq_len=256)
    x, y = train.get_batch(8, generator=torch.Generator().manual_seed(0))  # (8, 256) each; y is x shifted by one
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

EOS_TOKEN = "<|endoftext|>"  # the separator line between stories in the TinyStories text files
PAD_TOKEN = "[PAD]"
ENV_VAR = "LLAMA3_TINYSTORIES"
HUB_REPO = "roneneldan/TinyStories"
HUB_FILES = {"train": "TinyStories-train.txt", "validation": "TinyStories-valid.txt"}
SPLIT_PATTERNS = {"train": "*train*.txt", "validation": "*valid*.txt"}
CACHE_VERSION = 1  # bump when the token-file format changes


# --------------------------------------------------------------------------------------------------- the text
def _check_split(split: str) -> str:
    aliases = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation"}
    if split not in aliases:
        raise ValueError(f"split must be 'train' or 'validation', got {split!r}.")
    return aliases[split]


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP connect to the hub, so that offline machines fall back at once instead of hanging."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def _download(split: str) -> list[Path]:
    from huggingface_hub import hf_hub_download

    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    return [Path(hf_hub_download(HUB_REPO, HUB_FILES[split], repo_type="dataset"))]


def text_files(split: str, path: str | os.PathLike | None = None) -> list[Path]:
    """The text files of ``split`` ('train' or 'validation'): from ``path``, else $LLAMA3_TINYSTORIES, else the hub.

    A file path is used as is for either split; a folder gives its ``*train*.txt`` or ``*valid*.txt`` files.
    """
    split = _check_split(split)
    if path is None:
        path = os.environ.get(ENV_VAR) or None
    if path is None:
        if _hub_reachable():
            return _download(split)
        raise FileNotFoundError(
            f"No TinyStories text: the hub ({HUB_REPO}) is unreachable and no local path was given. Pass a text file "
            f"or folder (path=..., or --data on the command line), or set {ENV_VAR}=/path/to/tinystories."
        )
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"The data path {path} does not exist: pass a TinyStories text file or a folder that "
                                f"holds TinyStories-train*.txt and TinyStories-valid*.txt (or fix {ENV_VAR}).")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.glob(SPLIT_PATTERNS[split]) if p.is_file())
    if not files:
        raise FileNotFoundError(f"The folder {path} holds no {SPLIT_PATTERNS[split]} file for the {split} split: "
                                f"pass a folder with TinyStories-train*.txt and TinyStories-valid*.txt, "
                                f"or a text file.")
    return files


def read_stories(file: Path) -> str:
    """A file's text. A story cut off at the end of the file (no closing separator) is dropped."""
    text = file.read_text(encoding="utf-8")
    if EOS_TOKEN in text and not text.rstrip().endswith(EOS_TOKEN):
        text = text[: text.rindex(EOS_TOKEN) + len(EOS_TOKEN)] + "\n"
    return text


def load_text(split: str, path: str | os.PathLike | None = None) -> str:
    """The whole text of ``split`` ('train' or 'validation') as one string, stories separated by <|endoftext|>."""
    return "".join(read_stories(f) for f in text_files(split, path))


def iter_training_texts(path: str | os.PathLike | None = None) -> Iterator[str]:
    """The training files' texts one at a time (for tokenizer training; never the validation text)."""
    for file in text_files("train", path):
        yield read_stories(file)


# ----------------------------------------------------------------------------------------------- tokenising
def eos_id(tokenizer) -> int:
    """The id of the story separator: the tokenizer's <|endoftext|> (GPT-2 and the course's BPE), else its EOS."""
    token_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    if token_id is None or token_id == tokenizer.unk_token_id:
        token_id = tokenizer.eos_token_id
    if token_id is None:
        raise ValueError("The tokenizer has neither an <|endoftext|> token nor an EOS token to separate stories.")
    return token_id


def tokenize(text: str, tokenizer) -> np.ndarray:
    """Token ids of ``text`` as uint16, each <|endoftext|> separator as the EOS id. Lossless: decoding the ids
    gives the text back. Stories are encoded as a batch (the Rust tokenizer runs them in parallel)."""
    if len(tokenizer) > 65536:
        raise ValueError(f"The tokenizer has {len(tokenizer)} tokens; the cache stores ids as uint16 (at most 65536).")
    pieces = text.split(EOS_TOKEN)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # the Rust tokenizer directly: parallel, and no "longer than model_max_length" warning
        encoded = [e.ids for e in backend.encode_batch(pieces, add_special_tokens=False)]
    else:
        encoded = tokenizer(pieces, add_special_tokens=False)["input_ids"]
    eos = eos_id(tokenizer)
    ids: list[int] = []
    for i, piece in enumerate(encoded):
        if i:
            ids.append(eos)
        ids.extend(piece)
    return np.asarray(ids, dtype=np.uint16)


def _tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    """$LLAMA3_DATA_CACHE, else data_cache/ in the repository (ignored by git), else ~/.cache/llama3."""
    if os.environ.get("LLAMA3_DATA_CACHE"):
        return Path(os.environ["LLAMA3_DATA_CACHE"])
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").is_file() and os.access(repo, os.W_OK):
        return repo / "data_cache"
    return Path.home() / ".cache" / "llama3"


def load_tokens(split: str, tokenizer, path: str | os.PathLike | None = None,
                cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """The token ids of ``split`` as a read-only uint16 memory map, tokenised on first use and cached."""
    files = text_files(split, path)
    key = hashlib.sha256()
    for f in files:
        stat = f.stat()
        key.update(f"{f.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    key.update(f"{_tokenizer_fingerprint(tokenizer)}|{len(tokenizer)}|v{CACHE_VERSION}".encode())
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / f"{_check_split(split)}-{key.hexdigest()[:20]}.uint16"
    if not target.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        ids = tokenize("".join(read_stories(f) for f in files), tokenizer)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")  # unique per process: DDP ranks may race
        ids.tofile(tmp)
        os.replace(tmp, target)
    if target.stat().st_size == 0:
        raise ValueError(f"{', '.join(map(str, files))} holds no text to train on.")
    return np.memmap(target, dtype=np.uint16, mode="r")


# ------------------------------------------------------------------------------------------------- batches
def get_batch(tokens: np.ndarray, batch_size: int, seq_len: int, generator: torch.Generator | None = None,
              device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows of ``seq_len + 1`` tokens -> inputs x and next-token targets y, (B, T) each.

    The start positions come from ``generator`` (seed it for a reproducible run; its state is the data position).
    """
    if len(tokens) < seq_len + 1:
        raise ValueError(f"The text has {len(tokens)} tokens, too short for one window of seq_len + 1 = {seq_len + 1}: "
                         f"give more text or a smaller seq_len.")
    starts = torch.randint(0, len(tokens) - seq_len, (batch_size,), generator=generator)  # start + T + 1 <= len
    windows = np.stack([np.asarray(tokens[s: s + seq_len + 1], dtype=np.int64) for s in starts.tolist()])
    windows = torch.from_numpy(windows)  # (B, T + 1)
    x, y = windows[:, :-1], windows[:, 1:]  # (B, T) each
    if torch.device(device).type == "cuda":
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


class TokenDataset:
    """A token stream with a window length: random training batches, and fixed windows for evaluation."""

    def __init__(self, tokens: np.ndarray, seq_len: int):
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
            raise ValueError(f"seq_len must be an int >= 1, got {seq_len!r}.")
        if len(tokens) < seq_len + 1:
            raise ValueError(f"The text has {len(tokens)} tokens, too short for one window of seq_len + 1 = "
                             f"{seq_len + 1}: give more text or a smaller seq_len.")
        self.tokens = tokens
        self.seq_len = seq_len

    @classmethod
    def from_split(cls, split: str, tokenizer, seq_len: int, path: str | os.PathLike | None = None,
                   cache_dir: str | os.PathLike | None = None) -> TokenDataset:
        """The tokenised ``split`` ('train' or 'validation') of TinyStories (see ``text_files`` for the source)."""
        return cls(load_tokens(split, tokenizer, path, cache_dir), seq_len)

    def __len__(self) -> int:
        return len(self.tokens)

    def get_batch(self, batch_size: int, generator: torch.Generator | None = None,
                  device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows: x, y LongTensors (batch_size, seq_len), y shifted by one token."""
        return get_batch(self.tokens, batch_size, self.seq_len, generator, device)

    def eval_batches(self, batch_size: int, max_windows: int | None = None,
                     device: str | torch.device = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Consecutive, non-overlapping windows from the start of the stream: the same every time, so evaluations
        at different steps are comparable."""
        n = (len(self.tokens) - 1) // self.seq_len
        if max_windows is not None:
            n = min(n, max_windows)
        for first in range(0, n, batch_size):
            rows = range(first, min(first + batch_size, n))
            windows = torch.from_numpy(np.stack([
                np.asarray(self.tokens[r * self.seq_len: (r + 1) * self.seq_len + 1], dtype=np.int64) for r in rows]))
            yield windows[:, :-1].to(device), windows[:, 1:].to(device)
