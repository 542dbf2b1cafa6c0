"""TinyStories for training: find the text, tokenise it once into a cached uint16 file, draw random windows.

Where the text comes from, in this order (the first source found is said once, on stderr):
1. ``path`` given by the caller: a text file, or a folder holding ``*train*.txt`` and ``*valid*.txt`` files
   (``.txt.xz`` and ``.txt.gz`` too); ``path="hub"`` downloads the full split from the hub (opt-in: the training
   file is 1.9 GB, and its size is printed before the download starts);
2. the environment variable ``LLAMA3_TINYSTORIES`` (same meaning; the CI points it at a local folder);
3. the Hugging Face hub (``roneneldan/TinyStories``) when it answers within a few seconds: a slice, the first
   ``SLICE_BYTES`` of the split's file, read with one ranged request (no full download) and cached;
4. the excerpt shipped in ``assets/tinystories/`` (the same first bytes of both splits, CDLA-Sharing-1.0), so that
   the course works offline from a bare clone.
Stories are separated by a line ``<|endoftext|>`` (TinyStories' own format), which the tokenizer turns into its EOS
token, so the model learns where a story ends.

Tokenising 15 MB of text takes a while, so it happens once: the ids go into a ``uint16`` file under
``data_cache/`` (or ``~/.cache/llama3``), keyed by the files and the tokenizer, and later runs read it by memory map.
A small JSON record beside it (token count, checksums of the ids and the text, the tokenizer's fingerprint) is checked
at every load: a damaged cache is rebuilt with a warning naming it, never trained on.

    tokenizer = load_tokenizer()
    train = TokenDataset.from_split("train", tokenizer, seq_len=256)
    x, y = train.get_batch(8, generator=torch.Generator().manual_seed(0))  # (8, 256) each; y is x shifted by one
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from llama3.files import atomic_write_bytes, atomic_write_text
from llama3.tokenizer import ASSETS

EOS_TOKEN = "<|endoftext|>"  # the separator line between stories in the TinyStories text files
ENV_VAR = "LLAMA3_TINYSTORIES"
HUB = "hub"  # path="hub" (--data hub): the full split from the hub, an explicit opt-in
HUB_REPO = "roneneldan/TinyStories"
HUB_FILES = {"train": "TinyStories-train.txt", "validation": "TinyStories-valid.txt"}
HUB_SIZES = {"train": "1.9 GB", "validation": "19 MB"}  # said before a full download when the hub gives no size
SPLIT_PATTERNS = {"train": "*train*.txt", "validation": "*valid*.txt"}
COMPRESSED = (".xz", ".gz")  # a folder's *train*.txt.xz / .txt.gz files count too (read with the stdlib)
# The slice read from the hub and the excerpt shipped in assets/tinystories/ hold the same first bytes of each split:
# 2 MB of training stories (2,255 stories), and the 500 validation stories of TinyStories-valid.dev500.txt.
SLICE_BYTES = {"train": 2_000_000, "validation": 412_731}
EXCERPT_DIR = ASSETS / "tinystories"
EXCERPT_FILES = {"train": "TinyStories-train.excerpt.txt.xz", "validation": "TinyStories-valid.excerpt.txt.xz"}
CACHE_VERSION = 2  # bump when the token-file format changes (2: a JSON record beside each token file verifies it)

_announced: set[str] = set()  # the sources already said, once per process


# --------------------------------------------------------------------------------------------------- the text
def _check_split(split: str) -> str:
    aliases = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation"}
    if split not in aliases:
        raise ValueError(f"split must be 'train' or 'validation', got {split!r}.")
    return aliases[split]


def _announce(message: str) -> None:
    """Say once per process where a split's text comes from (stderr: it is not part of any result)."""
    if message not in _announced:
        _announced.add(message)
        print(message, file=sys.stderr)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP connect to the hub, so that offline machines fall back at once instead of hanging."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_path(split: str) -> str:
    return f"datasets/{HUB_REPO}/{HUB_FILES[split]}"


def _download(split: str) -> list[Path]:
    """The full split from the hub (cached by huggingface_hub), after saying how big it is."""
    from huggingface_hub import HfFileSystem, hf_hub_download

    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    try:
        size = f"{HfFileSystem().info(_hub_path(split))['size'] / 1e9:.2f} GB"
    except Exception:  # the size is only information: the download itself reports real errors
        size = f"about {HUB_SIZES[split]}"
    print(f"Downloading {HUB_FILES[split]} ({size}) from the hub ({HUB_REPO}); cached for later runs.",
          file=sys.stderr)
    return [Path(hf_hub_download(HUB_REPO, HUB_FILES[split], repo_type="dataset"))]


def _hub_slice(split: str) -> Path:
    """The first SLICE_BYTES of the split's hub file, read with one ranged request and cached as a text file."""
    target = default_cache_dir() / "hub" / f"{Path(HUB_FILES[split]).stem}.first{SLICE_BYTES[split]}B.txt"
    if not target.is_file():
        from huggingface_hub import HfFileSystem

        with HfFileSystem().open(_hub_path(split), "rb", block_size=SLICE_BYTES[split], cache_type="none") as f:
            raw = f.read(SLICE_BYTES[split])
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, raw)  # DDP ranks may race: each renames a whole file into place
    return target


def text_files(split: str, path: str | os.PathLike | None = None) -> list[Path]:
    """The text files of ``split`` ('train' or 'validation'): from ``path``, else $LLAMA3_TINYSTORIES, else a slice
    of the hub's file, else the excerpt shipped in assets/tinystories/ (see the module docstring).

    A file path is used as is for either split; a folder gives its ``*train*.txt`` or ``*valid*.txt`` files;
    ``path="hub"`` downloads the full split.
    """
    split = _check_split(split)
    if path is None and os.environ.get(ENV_VAR):
        path = os.environ[ENV_VAR]
        _announce(f"TinyStories {split} text: the folder or file in ${ENV_VAR} ({path}).")
    if path is None:
        if _hub_reachable():
            _announce(f"TinyStories {split} text: the first {SLICE_BYTES[split]:,} bytes of {HUB_FILES[split]} on the "
                      f"hub ({HUB_REPO}); the full split is opt-in: path='{HUB}' (--data {HUB}).")
            return [_hub_slice(split)]
        excerpt = EXCERPT_DIR / EXCERPT_FILES[split]
        if not excerpt.is_file():
            raise FileNotFoundError(
                f"No TinyStories text: the hub ({HUB_REPO}) is unreachable, no local path was given and the shipped "
                f"excerpt {excerpt} is missing. Pass a text file or folder (path=..., or --data on the command "
                f"line), or set {ENV_VAR}=/path/to/tinystories.")
        _announce(f"TinyStories {split} text: the excerpt shipped in {EXCERPT_DIR.parent.name}/{EXCERPT_DIR.name}/ "
                  f"({EXCERPT_FILES[split]}), "
                  f"as the hub is unreachable and neither a path nor ${ENV_VAR} was given.")
        return [excerpt]
    if str(path) == HUB:
        if not _hub_reachable():
            raise FileNotFoundError(f"path='{HUB}' downloads TinyStories from the hub ({HUB_REPO}), which is "
                                    f"unreachable: pass a local text file or folder instead.")
        return _download(split)
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"The data path {path} does not exist: pass a TinyStories text file or a folder that "
                                f"holds TinyStories-train*.txt and TinyStories-valid*.txt (or fix {ENV_VAR}).")
    if path.is_file():
        return [path]
    patterns = [SPLIT_PATTERNS[split]] + [SPLIT_PATTERNS[split] + suffix for suffix in COMPRESSED]
    files = sorted(p for pattern in patterns for p in path.glob(pattern) if p.is_file())
    if not files:
        raise FileNotFoundError(f"The folder {path} holds no {SPLIT_PATTERNS[split]} file for the {split} split: "
                                f"pass a folder with TinyStories-train*.txt and TinyStories-valid*.txt, "
                                f"or a text file.")
    return files


def _open(file: Path, mode: str = "rt"):
    """The file, decompressed when it ends in .xz or .gz; text modes read UTF-8 with universal newlines."""
    opener = {".xz": lzma.open, ".gz": gzip.open}.get(file.suffix, open)
    return opener(file, mode, encoding="utf-8") if "t" in mode else opener(file, mode)


def _whole_stories(text: str) -> str:
    """``text`` without a story cut off at its end (after the last <|endoftext|> line)."""
    if EOS_TOKEN in text and not text.rstrip().endswith(EOS_TOKEN):
        text = text[: text.rindex(EOS_TOKEN) + len(EOS_TOKEN)] + "\n"
    return text


def read_stories(file: Path) -> str:
    """A file's text (.xz and .gz decompressed). A story cut off at the end of the file is dropped."""
    try:
        with _open(file) as f:
            return _whole_stories(f.read())
    except UnicodeDecodeError as err:
        raise ValueError(f"{file} is not UTF-8 text (byte {err.start}: {err.reason}): TinyStories files are UTF-8; "
                         f"convert it (iconv -f latin1 -t utf-8, for example) or pass another file.") from None


def load_text(split: str, path: str | os.PathLike | None = None) -> str:
    """The whole text of ``split`` ('train' or 'validation') as one string, stories separated by <|endoftext|>."""
    return "".join(read_stories(f) for f in text_files(split, path))


def text_sample(split: str, path: str | os.PathLike | None = None, max_bytes: int | None = None) -> str:
    """The whole stories within the first ``max_bytes`` bytes (default ``SLICE_BYTES[split]``) of the split's first
    file: the same text from a local copy, the hub's slice or the shipped excerpt, for demos that need a little text.
    """
    split = _check_split(split)
    max_bytes = SLICE_BYTES[split] if max_bytes is None else max_bytes
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max_bytes must be an int >= 1, got {max_bytes!r}.")
    file = text_files(split, path)[0]
    with _open(file, "rb") as f:  # bytes, as the hub's slice is cut: a character cut in two sits after the last story
        text = f.read(max_bytes).decode("utf-8", errors="ignore").replace("\r\n", "\n")
    if EOS_TOKEN not in text:
        raise ValueError(f"The first {max_bytes:,} bytes of {file} hold no complete story (no {EOS_TOKEN} line): "
                         f"raise max_bytes or pass a TinyStories file.")
    return text[: text.rindex(EOS_TOKEN) + len(EOS_TOKEN)] + "\n"


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
    return hashlib.sha256(f"{spec}|{len(tokenizer)}".encode()).hexdigest()[:16]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cache_problem(target: Path, record_path: Path, tokenizer) -> str | None:
    """None when the token file ``target`` is exactly what its record says it is; else what is wrong with it."""
    try:
        record = json.loads(record_path.read_text())
        tokens, ids_sha256 = int(record["tokens"]), record["ids_sha256"]
    except FileNotFoundError:
        return f"its record {record_path.name} is missing"
    except (OSError, ValueError, TypeError, KeyError) as err:
        return f"its record {record_path.name} is unreadable ({type(err).__name__}: {err})"
    if record.get("version") != CACHE_VERSION or record.get("tokenizer") != _tokenizer_fingerprint(tokenizer):
        return "it was made by another version of the cache or another tokenizer"
    size = target.stat().st_size
    if size != 2 * tokens:
        return f"it holds {size:,} bytes, its record says {tokens:,} uint16 tokens ({2 * tokens:,} bytes)"
    if _file_sha256(target) != ids_sha256:
        return "its bytes do not match the checksum in its record"
    return None


def _build_cache(files: list[Path], tokenizer, target: Path, record_path: Path) -> None:
    """Tokenise ``files`` into ``target`` (uint16 ids), then write its record: the token count, the checksums of
    the ids and of the text, the tokenizer's fingerprint. Both atomically, the record last, so a record always
    describes a whole token file."""
    text = "".join(read_stories(f) for f in files)
    ids = tokenize(text, tokenizer)
    record = {"version": CACHE_VERSION, "tokens": int(ids.size),
              "ids_sha256": hashlib.sha256(ids.tobytes()).hexdigest(),
              "text_sha256": hashlib.sha256(text.encode()).hexdigest(),
              "tokenizer": _tokenizer_fingerprint(tokenizer), "files": [str(f) for f in files]}
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, ids.tobytes())
    atomic_write_text(record_path, json.dumps(record, indent=1) + "\n")


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
    """The token ids of ``split`` as a read-only uint16 memory map, tokenised on first use and cached.

    The cache file ``<split>-<key>.uint16`` is keyed by the text files (path, size, modification time) and the
    tokenizer, and checked at every load against ``<split>-<key>.json`` (token count, checksum): a damaged cache
    (cut short, overwritten, emptied) is rebuilt with a warning that names it, or refused when it cannot be.
    """
    files = text_files(split, path)
    key = hashlib.sha256()
    for f in files:
        stat = f.stat()
        key.update(f"{f.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    key.update(f"{_tokenizer_fingerprint(tokenizer)}|v{CACHE_VERSION}".encode())
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / f"{_check_split(split)}-{key.hexdigest()[:20]}.uint16"
    record_path = target.with_suffix(".json")
    problem = _cache_problem(target, record_path, tokenizer) if target.is_file() else "missing"
    if problem is not None:
        if problem != "missing":
            print(f"WARNING: the token cache {target} is damaged ({problem}): rebuilding it.", file=sys.stderr)
        try:
            _build_cache(files, tokenizer, target, record_path)
        except OSError as err:
            raise OSError(f"The token cache {target} could not be written ({err}): make {cache} writable, or set "
                          f"LLAMA3_DATA_CACHE to a folder that is.") from err
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
