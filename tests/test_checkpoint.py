"""save_pretrained / from_pretrained round trips, readable mismatch errors, and the seed example."""

from pathlib import Path

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


# ------------------------------------------------------------------------------ one weights file per folder
@pytest.mark.parametrize("first_safe", [True, False], ids=["safetensors-then-pth", "pth-then-safetensors"])
def test_saving_in_the_other_format_replaces_the_old_weights(make_model, tmp_path, first_safe):
    make_model(seed=0).save_pretrained(tmp_path, safe_serialization=first_safe)
    newer = make_model(seed=1)
    newer.save_pretrained(tmp_path, safe_serialization=not first_safe)
    weights = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("model."))
    assert weights == ["model.pth" if first_safe else "model.safetensors"]
    loaded = Llama3.from_pretrained(tmp_path)
    assert torch.equal(loaded.layers[0].attention.wq.weight, newer.layers[0].attention.wq.weight)


def test_a_folder_with_both_weight_files_is_refused(make_model, tmp_path):
    model = make_model()
    model.save_pretrained(tmp_path)
    torch.save(make_model(seed=1).state_dict(), tmp_path / "model.pth")  # by hand, not by save_pretrained
    with pytest.raises(ValueError, match=r"holds both model\.safetensors and model\.pth.*delete the stale one"):
        Llama3.from_pretrained(tmp_path)
    loaded = Llama3.from_pretrained(tmp_path / "model.safetensors", model.args)  # the fix the message names
    assert torch.equal(loaded.output.weight, model.output.weight)


# ------------------------------------------------------------------------------------------ files and errors
def test_a_legacy_non_zip_pth_loads(make_model, tmp_path):
    """torch.save(..., _use_new_zipfile_serialization=False) files (torch < 1.6) cannot be memory-mapped; they are
    read whole, still with weights_only=True."""
    model = make_model()
    torch.save(model.state_dict(), tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    loaded = Llama3.from_pretrained(tmp_path / "legacy.pth", model.args)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_a_legacy_pth_that_is_not_a_state_dict_says_how_to_resave(tmp_path):
    torch.save({"model": {"w": torch.zeros(1)}, "opt": object()}, tmp_path / "legacy.pth",
               _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match=r"(?s)legacy \(non-zip\) format.*torch\.save\(torch\.load\("):
        Llama3.from_pretrained(tmp_path / "legacy.pth", tiny_args())


def test_a_missing_seed_checkpoint_says_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        Llama3.from_pretrained("tiny_stories_50M.pth", tiny_args())
    message = str(info.value)
    assert "No checkpoint at tiny_stories_50M.pth" in message
    assert "python -m llama3 train --d-model 256 --heads 4 --group-size 2 --num-layers 32 --seq-len 256" in message
    assert "torch.save(" in message and "'tiny_stories_50M.pth'" in message


def test_a_failed_save_keeps_the_previous_files(make_model, tmp_path, monkeypatch):
    """A writer that fails half-way (torch.save reports a full disk as RuntimeError) raises OSError naming the file,
    leaves no temporary file, and the previous save still loads."""
    from llama3 import convert

    old = make_model(seed=0)
    old.save_pretrained(tmp_path, safe_serialization=False)

    def full_disk(state, path, **kwargs):
        open(path, "wb").write(b"half")
        raise RuntimeError("PytorchStreamWriter failed writing file: No space left on device")

    monkeypatch.setattr(convert.torch, "save", full_disk)
    with pytest.raises(OSError, match=r"could not write .*model\.pth: RuntimeError"):
        make_model(seed=1).save_pretrained(tmp_path, safe_serialization=False)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.pth"]
    assert torch.equal(Llama3.from_pretrained(tmp_path).output.weight, old.output.weight)


def test_a_failed_tokenizer_save_leaves_the_old_tokenizer_whole(make_model, tmp_path):
    tokenizer = load_tokenizer()
    model = make_model()
    model.save_pretrained(tmp_path, tokenizer=tokenizer)
    before = (tmp_path / "tokenizer.json").read_bytes()
    assert load_tokenizer(tmp_path).encode("Hello world") == [15496, 995]

    class Broken:
        def save_pretrained(self, folder):
            (Path(folder) / "tokenizer.json").write_text('{"trunc')
            raise RuntimeError("No space left on device")

    with pytest.raises(OSError, match="could not write the tokenizer"):
        model.save_pretrained(tmp_path, tokenizer=Broken())
    assert (tmp_path / "tokenizer.json").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left
