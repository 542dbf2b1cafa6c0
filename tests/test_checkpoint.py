"""save_pretrained / from_pretrained round trips, readable mismatch errors, and the seed example."""

import pytest
import torch

from llama3 import Llama3, ModelArgs, load_tokenizer
from tests.conftest import tiny_args


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("safe", [True, False])
def test_save_and_load_round_trip(make_model, tmp_path, tie, safe):
    model = make_model(tie_embeddings=tie)
    model.save_pretrained(tmp_path, safe_serialization=safe)
    assert (tmp_path / ("model.safetensors" if safe else "model.pth")).is_file()
    assert not list(tmp_path.glob("*.tmp"))
    loaded = Llama3.from_pretrained(tmp_path)  # config read from the folder
    assert loaded.args == model.args
    tgt = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        assert torch.equal(model(tgt).logits, loaded(tgt).logits)
    if tie:
        assert loaded.output.weight is loaded.tok_embeddings.weight
    file = tmp_path / ("model.safetensors" if safe else "model.pth")
    again = Llama3.from_pretrained(file, model.args)  # a bare state dict needs args
    assert torch.equal(again.output.weight, model.output.weight)


def test_pth_state_dict_from_torch_save_and_training_checkpoints(make_model, tmp_path):
    model = make_model()
    torch.save(model.state_dict(), tmp_path / "plain.pth")
    compiled_names = {f"_orig_mod.{k}": v for k, v in model.state_dict().items()}
    torch.save({"model": compiled_names, "step": 3}, tmp_path / "train.pth")
    for name in ("plain.pth", "train.pth"):
        loaded = Llama3.from_pretrained(tmp_path / name, model.args)
        assert torch.equal(loaded.layers[1].feed_forward.w2.weight, model.layers[1].feed_forward.w2.weight)


def test_checkpoint_that_does_not_fit_names_the_keys(make_model, tmp_path):
    model = make_model()
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError) as info:
        Llama3.from_pretrained(tmp_path / "model.safetensors", tiny_args(num_layers=3, d_model=48))
    message = str(info.value)
    assert "missing keys: layers.2." in message
    assert "wrong shapes: " in message
    assert "layers.0.attention.wq.weight: checkpoint (32, 32), model (48, 48)" in message
    with pytest.raises(ValueError) as info:
        Llama3.from_pretrained(tmp_path / "model.safetensors", tiny_args(num_layers=1))
    assert "unexpected keys: layers.1." in str(info.value)
    with pytest.raises(ValueError, match="pass the ModelArgs"):
        Llama3.from_pretrained(tmp_path / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="No checkpoint at"):
        Llama3.from_pretrained(tmp_path / "nope.pth", model.args)
    (tmp_path / "broken.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        Llama3.from_pretrained(tmp_path / "broken.safetensors", model.args)


def test_the_seed_example_runs_as_written(tmp_path, monkeypatch):
    """DESIGN.md's example, verbatim except for the size (2 layers instead of 32) and the checkpoint path."""
    torch.manual_seed(0)
    tokenizer = load_tokenizer()
    assert len(tokenizer) == 50258 and tokenizer("Hello world")["input_ids"] == [15496, 995]
    args = ModelArgs(vocab_size=len(tokenizer), tokenizer=tokenizer, d_model=256, heads=4, group_size=2,
                     num_layers=2, max_seq_len=256, use_flash=True)
    torch.save(Llama3(args).state_dict(), tmp_path / "tiny_stories_50M.pth")
    monkeypatch.chdir(tmp_path)
    device = "cpu"
    model = Llama3.from_pretrained("tiny_stories_50M.pth", args).to(device)
    model.eval()
    text = model.generate_kv("There once was a strong man called Bene who liked to play on the computer.",
                             tokenizer=tokenizer, top_p=0.8, max_new_tokens=8, seed=0)
    assert text.startswith("There once was a strong man called Bene who liked to play on the computer.")
    assert len(tokenizer(text)["input_ids"]) > 19
