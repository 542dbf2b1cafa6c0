"""llama3.data: finding the text, lossless tokenisation, the uint16 cache, seeded random windows, clear errors."""

import gzip
import hashlib
import io
import random

import numpy as np
import pytest
import torch

from llama3 import data
from llama3.data import EOS_TOKEN, TokenDataset, get_batch, load_text, load_tokens, text_files, tokenize
from llama3.pretrained import PRETRAINED_DIR
from llama3.tokenizer import load_tokenizer

WORDS = ("the cat dog sun tree ball girl boy happy sad big little red blue ran jumped saw played with friend "
         "mom park home said smiled found lost day").split()


def synthetic_story(rng: random.Random) -> str:
    sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))).capitalize() + "."
                 for _ in range(rng.randint(2, 5))]
    return "Once upon a time, " + " ".join(sentences)


def write_tinystories(folder, n_train: int = 120, n_valid: int = 30, seed: int = 0):
    """A TinyStories-shaped folder: stories each followed by a line <|endoftext|>, split into train/valid files."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("TinyStories-train.part0.txt", n_train), ("TinyStories-valid.small.txt", n_valid)):
        (folder / name).write_text("".join(synthetic_story(rng) + f"\n{EOS_TOKEN}\n" for _ in range(n)))
    return folder


@pytest.fixture(scope="module")
def bpe():
    return load_tokenizer(PRETRAINED_DIR)


@pytest.fixture
def stories(tmp_path):
    """A fresh folder per test (tests here damage it), unlike conftest's one per module."""
    return write_tinystories(tmp_path / "tinystories")


def test_folder_gives_each_split_its_files(stories):
    assert [p.name for p in text_files("train", stories)] == ["TinyStories-train.part0.txt"]
    assert [p.name for p in text_files("validation", stories)] == ["TinyStories-valid.small.txt"]
    assert load_text("val", stories) == (stories / "TinyStories-valid.small.txt").read_text()


def test_environment_variable_is_the_default_source(stories, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(stories))
    assert load_text("train") == (stories / "TinyStories-train.part0.txt").read_text()


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No path, no $LLAMA3_TINYSTORIES, no hub; announcements forgotten; a private data cache."""
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setenv("LLAMA3_DATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "_hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(data, "_announced", set())


def sha256_of_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_offline_without_a_path_the_shipped_excerpt_is_used_and_said_once(offline, capsys):
    train, valid = load_text("train"), load_text("validation")
    # the sha256 values the excerpt's provenance note (assets/tinystories/README.md) gives for its two files
    assert sha256_of_text(train) == "e7a2d40d0d1f2f6c25b9b3d6dc5159d6202bbf0f2c62c96276e2ccf8a988a0d3"
    assert sha256_of_text(valid) == "f8f1499ca5274df8b7e8f8ff007c656d50ca1cbba27569026d6b9e1b043bf889"
    readme = (data.EXCERPT_DIR / "README.md").read_text()
    assert sha256_of_text(train) in readme and sha256_of_text(valid) in readme
    assert train.count(EOS_TOKEN) == 2255 and valid.count(EOS_TOKEN) == 500
    load_text("train")
    err = capsys.readouterr().err
    assert err.count("excerpt shipped") == 2  # once per split, not once per call
    assert "hub is unreachable" in err


def test_the_shipped_excerpt_is_small_licensed_and_never_mixes_the_splits(offline):
    files = [data.EXCERPT_DIR / name for name in data.EXCERPT_FILES.values()]
    assert sum(f.stat().st_size for f in files) <= 2_000_000
    assert "Community Data License Agreement" in (data.EXCERPT_DIR / "LICENSE-CDLA-Sharing-1.0.txt").read_text()
    stories = {split: {s.strip() for s in load_text(split).split(EOS_TOKEN) if s.strip()}
               for split in ("train", "validation")}
    assert not stories["train"] & stories["validation"]


def test_offline_without_the_excerpt_says_how_to_give_a_path(offline, monkeypatch, tmp_path):
    monkeypatch.setattr(data, "EXCERPT_DIR", tmp_path / "no-excerpt")
    with pytest.raises(FileNotFoundError, match=data.ENV_VAR):
        load_text("train")


class FakeHub:
    """huggingface_hub.HfFileSystem standing in for the hub: a 5 MB file, reads recorded."""

    content = ("".join(f"Story number {i} of the fake hub.\n{EOS_TOKEN}\n" for i in range(200_000))).encode()
    reads: list = []

    def __init__(self, *args, **kwargs):
        pass

    def open(self, path, mode="rb", **kwargs):
        FakeHub.reads.append((path, kwargs))
        return io.BytesIO(FakeHub.content)

    def info(self, path):
        return {"size": 1_924_281_556}


@pytest.fixture
def online(offline, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(data, "_hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(huggingface_hub, "HfFileSystem", FakeHub)
    FakeHub.reads = []


def test_online_a_slice_is_read_with_one_ranged_request_and_cached(online, monkeypatch, tmp_path):
    import huggingface_hub

    def no_full_download(*args, **kwargs):
        raise AssertionError("the full file was downloaded without being asked for")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_full_download)
    text = data.text_sample("train")
    n = data.SLICE_BYTES["train"]
    assert FakeHub.reads == [("datasets/roneneldan/TinyStories/TinyStories-train.txt",
                              {"block_size": n, "cache_type": "none"})]
    expected = FakeHub.content[:n].decode()
    assert text == expected[: expected.rindex(EOS_TOKEN) + len(EOS_TOKEN)] + "\n"
    [file] = text_files("train")
    assert file.is_relative_to(tmp_path / "cache") and file.stat().st_size == n
    assert load_text("train") == text  # the cached slice, whole stories only
    assert len(FakeHub.reads) == 1  # read from the hub once


def test_the_full_split_is_opt_in_and_says_its_size_first(online, monkeypatch, tmp_path, capsys):
    import huggingface_hub

    downloaded = tmp_path / "TinyStories-train.txt"
    downloaded.write_text(f"A story.\n{EOS_TOKEN}\n")

    def fake_download(repo, filename, repo_type):
        assert "1.92 GB" in capsys.readouterr().err  # said before the download starts
        assert (repo, filename, repo_type) == ("roneneldan/TinyStories", "TinyStories-train.txt", "dataset")
        return str(downloaded)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    assert text_files("train", "hub") == [downloaded]


def test_the_full_split_offline_is_refused(offline):
    with pytest.raises(FileNotFoundError, match="unreachable"):
        text_files("train", "hub")


def test_a_sample_is_the_whole_stories_within_its_first_bytes(tmp_path, offline):
    file = tmp_path / "stories.txt"
    file.write_text(f"First story.\n{EOS_TOKEN}\nSecond story.\n{EOS_TOKEN}\nThird.\n{EOS_TOKEN}\n")
    assert data.text_sample("train", file, max_bytes=53) == f"First story.\n{EOS_TOKEN}\n"  # 2nd ends at byte 54
    assert data.text_sample("train", file, max_bytes=54) == f"First story.\n{EOS_TOKEN}\nSecond story.\n{EOS_TOKEN}\n"
    with pytest.raises(ValueError, match="no complete story"):
        data.text_sample("train", file, max_bytes=10)
    with pytest.raises(ValueError, match="max_bytes"):
        data.text_sample("train", file, max_bytes=0)
    # offline, the default sample is the whole excerpt: it was cut to SLICE_BYTES the same way
    assert data.text_sample("train") == load_text("train")
    assert data.text_sample("validation") == load_text("validation")


def test_compressed_files_in_a_folder_are_read(tmp_path):
    folder = tmp_path / "gz"
    folder.mkdir()
    with gzip.open(folder / "TinyStories-train.part0.txt.gz", "wt", encoding="utf-8") as f:
        f.write(f"Zipped story.\n{EOS_TOKEN}\n")
    assert load_text("train", folder) == f"Zipped story.\n{EOS_TOKEN}\n"


def test_bad_paths_and_splits_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_text("train", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"\*train\*\.txt"):
        load_text("train", tmp_path)  # an empty folder
    with pytest.raises(ValueError, match="split"):
        load_text("test", tmp_path)


def test_a_story_cut_off_at_the_end_of_a_file_is_dropped(tmp_path):
    file = tmp_path / "stories.txt"
    file.write_text(f"One whole story.\n{EOS_TOKEN}\nA story cut off in the mid")
    assert load_text("train", file) == f"One whole story.\n{EOS_TOKEN}\n"


def test_tokenize_is_lossless_and_separators_become_eos(stories, bpe):
    text = load_text("train", stories)
    ids = tokenize(text, bpe)
    assert ids.dtype == np.uint16
    assert bpe.decode(ids.tolist()) == text
    assert int((ids == bpe.eos_token_id).sum()) == text.count(EOS_TOKEN)
    gpt2 = load_tokenizer()  # GPT-2's own <|endoftext|> is id 50256
    assert int((tokenize(text, gpt2) == 50256).sum()) == text.count(EOS_TOKEN)


def test_tokens_are_cached_once_and_read_by_memory_map(stories, bpe, tmp_path):
    cache = tmp_path / "cache"
    first = load_tokens("train", bpe, stories, cache_dir=cache)
    files = list(cache.glob("*.uint16"))
    assert isinstance(first, np.memmap) and first.dtype == np.uint16 and len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    second = load_tokens("train", bpe, stories, cache_dir=cache)
    assert files[0].stat().st_mtime_ns == stamp  # read back, not tokenised again
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, tokenize(load_text("train", stories), bpe))
    load_tokens("train", load_tokenizer(), stories, cache_dir=cache)  # another tokenizer gets its own file
    assert len(list(cache.glob("*.uint16"))) == 2


def test_batches_are_next_token_windows_of_the_stream(bpe, stories, tmp_path):
    tokens = load_tokens("train", bpe, stories, cache_dir=tmp_path)
    x, y = get_batch(tokens, 6, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (6, 16) and x.dtype == y.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    stream = torch.from_numpy(tokens.astype(np.int64))
    for row_x, row_y in zip(x, y):  # every row is a real window of the text
        window = torch.cat([row_x, row_y[-1:]])
        starts = (stream[: len(stream) - 16] == window[0]).nonzero().flatten()
        assert any(torch.equal(stream[s: s + 17], window) for s in starts.tolist())


def test_batches_follow_the_seed(bpe, stories, tmp_path):
    dataset = TokenDataset.from_split("train", bpe, seq_len=16, path=stories, cache_dir=tmp_path)
    a = dataset.get_batch(4, torch.Generator().manual_seed(1))
    b = dataset.get_batch(4, torch.Generator().manual_seed(1))
    c = dataset.get_batch(4, torch.Generator().manual_seed(2))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])


def test_eval_batches_are_consecutive_windows(bpe, stories, tmp_path):
    dataset = TokenDataset.from_split("validation", bpe, seq_len=8, path=stories, cache_dir=tmp_path)
    xs = torch.cat([x for x, _ in dataset.eval_batches(3, max_windows=7)])
    assert xs.shape == (7, 8)
    expected = torch.from_numpy(dataset.tokens[: 7 * 8].astype(np.int64)).view(7, 8)
    assert torch.equal(xs, expected)


def test_text_too_short_for_one_window_is_refused(tmp_path, bpe):
    file = tmp_path / "short.txt"
    file.write_text(f"Tiny.\n{EOS_TOKEN}\n")
    tokens = load_tokens("train", bpe, file, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="too short"):
        TokenDataset(tokens, seq_len=64)
    with pytest.raises(ValueError, match="too short"):
        get_batch(tokens, 2, 64)


# ------------------------------------------------------------------------------------------- a damaged cache
DAMAGES = {
    "truncated": lambda raw, rng: raw[: len(raw) // 2],
    "random ids": lambda raw, rng: rng.integers(0, 4096, len(raw) // 2, dtype=np.uint16).tobytes(),
    "odd size": lambda raw, rng: raw + b"\x01",
    "random bytes": lambda raw, rng: rng.bytes(1001),
    "empty": lambda raw, rng: b"",
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_token_cache_is_named_and_rebuilt(damage, stories, bpe, tmp_path, capsys):
    """The oracle: the ids of a fresh tokenisation of the same text. Whatever happened to the cache file, load_tokens
    must return those ids, say which file it rebuilt, and leave a cache that loads silently next time."""
    expected = tokenize(load_text("train", stories), bpe)
    cache = tmp_path / "cache"
    assert np.array_equal(load_tokens("train", bpe, stories, cache_dir=cache), expected)
    [token_file] = cache.glob("*.uint16")
    token_file.write_bytes(DAMAGES[damage](token_file.read_bytes(), np.random.default_rng(0)))
    capsys.readouterr()
    assert np.array_equal(load_tokens("train", bpe, stories, cache_dir=cache), expected)
    assert f"the token cache {token_file} is damaged" in capsys.readouterr().err
    assert np.array_equal(load_tokens("train", bpe, stories, cache_dir=cache), expected)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("record", ["missing", "garbage", "another tokenizer"])
def test_a_token_cache_without_a_valid_record_is_rebuilt(record, stories, bpe, tmp_path, capsys):
    """A crash between the token file and its record, or a damaged record: the cache cannot be trusted."""
    expected = tokenize(load_text("train", stories), bpe)
    cache = tmp_path / "cache"
    load_tokens("train", bpe, stories, cache_dir=cache)
    [record_file] = cache.glob("*.json")
    if record == "missing":
        record_file.unlink()
    elif record == "garbage":
        record_file.write_text('{"tokens": 12')
    else:
        record_file.write_text(record_file.read_text().replace('"tokenizer": "', '"tokenizer": "x'))
    capsys.readouterr()
    assert np.array_equal(load_tokens("train", bpe, stories, cache_dir=cache), expected)
    assert "is damaged" in capsys.readouterr().err


def test_a_damaged_cache_that_cannot_be_rebuilt_is_refused_by_name(stories, bpe, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    load_tokens("train", bpe, stories, cache_dir=cache)
    [token_file] = cache.glob("*.uint16")
    token_file.write_bytes(token_file.read_bytes()[:100])

    def disk_full(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data, "atomic_write_bytes", disk_full)
    with pytest.raises(OSError, match=f"token cache {token_file} could not be written.*LLAMA3_DATA_CACHE"):
        load_tokens("train", bpe, stories, cache_dir=cache)


def test_non_utf8_text_names_the_file(tmp_path, bpe):
    bad = tmp_path / "TinyStories-train.latin1.txt"
    bad.write_bytes("Once upon a time, a café.\n<|endoftext|>\n".encode("latin-1"))
    with pytest.raises(ValueError, match=f"{bad} is not UTF-8 text"):
        load_tokens("train", bpe, bad, cache_dir=tmp_path / "cache")
