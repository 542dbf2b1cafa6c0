import pytest
import torch

from llama3 import Llama3, ModelArgs


def tiny_args(**overrides) -> ModelArgs:
    """A model small enough to run in milliseconds, with GQA on by default."""
    values = dict(vocab_size=97, d_model=32, heads=4, group_size=2, num_layers=2, max_seq_len=64, multiple_of=16)
    values.update(overrides)
    return ModelArgs(**values)


@pytest.fixture
def make_model():
    def make(seed: int = 0, **overrides) -> Llama3:
        torch.manual_seed(seed)
        return Llama3(tiny_args(**overrides)).eval()

    return make


@pytest.fixture(scope="session")
def tokenizer():
    from llama3 import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="module")
def stories(tmp_path_factory):
    """A small TinyStories-style folder (train and validation files), one per test module that trains."""
    from tests.test_data import write_tinystories

    return write_tinystories(tmp_path_factory.mktemp("tinystories"))


@pytest.fixture
def isolated_token_cache(tmp_path_factory, monkeypatch):
    """Token caches go to this session's temporary folder, never to the user's cache."""
    monkeypatch.setenv("LLAMA3_DATA_CACHE", str(tmp_path_factory.getbasetemp() / "token_cache"))
