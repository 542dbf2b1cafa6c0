"""python -m llama3: --help everywhere, generate streams what generate_kv returns, eval's figures checked against
Llama3.forward's own loss, and the shipped checkpoint (size, loading, a story)."""

import dataclasses
import math
import os
import re
import subprocess
import sys

import pytest
import torch

from llama3 import Llama3, ModelArgs, pretrained
from llama3.__main__ import main, run
from llama3.data import EOS_TOKEN, load_text
from llama3.pretrained import PRETRAINED_DIR, evaluate, load_model, load_pretrained
from llama3.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A random 2-layer model saved with the shipped tokenizer, as save_pretrained writes it."""
    tokenizer = load_tokenizer(PRETRAINED_DIR)
    torch.manual_seed(0)
    args = ModelArgs(len(tokenizer), tokenizer, d_model=32, heads=2, group_size=1, num_layers=2, max_seq_len=48,
                     multiple_of=16)
    folder = tmp_path_factory.mktemp("tiny_model")
    Llama3(args).save_pretrained(folder, tokenizer=tokenizer)
    return folder


@pytest.mark.parametrize("command", [[], ["train"], ["eval"], ["generate"]])
def test_every_command_has_help(command, capsys):
    argv = [*command, "--help"]
    if command:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
    else:
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert "usage:" in out and (not command or f"python -m llama3 {command[0]}" in out)


def test_help_of_the_installed_module_in_a_fresh_process():
    result = subprocess.run([sys.executable, "-m", "llama3", "generate", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "--top-p" in result.stdout and "--max-new-tokens" in result.stdout


def test_unknown_command_is_refused(capsys):
    assert main(["fly"]) == 2
    assert "Unknown command 'fly'" in capsys.readouterr().err


def test_grade_forwards_its_arguments(monkeypatch):
    grade = pytest.importorskip("llama3.grade", reason="llama3/grade.py is not there yet")
    seen = []
    monkeypatch.setattr(grade, "main", lambda argv: seen.append(argv) or 0)
    assert main(["grade", "notebook.ipynb", "--json"]) == 0
    assert seen == [["notebook.ipynb", "--json"]]


def test_generate_streams_exactly_what_generate_kv_returns(tiny_folder, capsys):
    assert main(["generate", "Once upon a time", "--model", str(tiny_folder), "--max-new-tokens", "20",
                 "--seed", "3", "--top-p", "0.9", "--temperature", "1.0"]) == 0
    streamed = capsys.readouterr().out
    model, tokenizer = load_model(tiny_folder)
    expected = model.generate_kv("Once upon a time", tokenizer, max_new_tokens=20, seed=3, top_p=0.9)
    assert streamed == expected + "\n"
    assert main(["generate", "Once upon a time", "--model", str(tiny_folder), "--max-new-tokens", "20",
                 "--seed", "3", "--top-p", "0.9", "--temperature", "1.0", "--no-stream"]) == 0
    assert capsys.readouterr().out == expected + "\n"


def test_generate_refuses_missing_models(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        main(["generate", "Hi", "--model", str(tmp_path)])


@pytest.mark.parametrize("argv,message", [
    (["eval", "--batch-size", "-1"], "argument --batch-size: must be >= 1, got -1"),
    (["eval", "--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
    (["eval", "--stride", "0"], "argument --stride: must be >= 1, got 0"),
    (["eval", "--batch-size", "2.5"], "argument --batch-size: expected an integer, got '2.5'"),
    (["generate", "--max-new-tokens", "0"], "argument --max-new-tokens: must be >= 1, got 0"),
    (["generate", "--temperature", "-1"], "argument --temperature: must be >= 0, got -1"),
    (["generate", "--temperature", "nan"], "argument --temperature: must be finite, got 'nan'"),
    (["generate", "--top-p", "0"], "argument --top-p: must be > 0, got 0"),
    (["generate", "--top-p", "1.5"], "argument --top-p: must be <= 1, got 1.5"),
    (["generate", "--top-k", "0"], "argument --top-k: must be >= 1, got 0"),
    (["generate", "--seed", "-1"], "argument --seed: must be >= 0, got -1"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_every_number_on_the_command_line_is_checked(argv, message, capsys):
    """Refused by the parser, before any model is loaded: exit status 2 and one line naming the option."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_evaluate_refuses_a_batch_size_below_one(tiny_folder):
    model, tokenizer = load_model(tiny_folder)
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="batch_size must be an int of at least 1"):
            evaluate(model, tokenizer, "Once upon a time", batch_size=bad)


@pytest.mark.parametrize("device,message", [
    ("foo", "Unknown device 'foo': use cpu, cuda, cuda:N or mps."),
    ("cuda:99", "Device 'cuda:99'"),
])
def test_a_device_that_does_not_exist_is_one_line(tiny_folder, device, message, capsys):
    assert run(["generate", "Hi", "--model", str(tiny_folder), "--device", device]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch build has CUDA")
def test_cuda_on_a_cpu_build_is_one_line(tiny_folder, capsys):
    assert run(["eval", "--model", str(tiny_folder), "--device", "cuda"]) == 1
    assert capsys.readouterr().err.startswith("error: Device 'cuda': this torch build has no CUDA")


def test_expected_errors_are_one_line_unless_debugging(monkeypatch, capsys):
    """OSError (a read-only output folder), RuntimeError and ValueError end with one line and status 1; --debug or
    LLAMA3_DEBUG=1 lets the exception through; Ctrl-C is status 130."""
    def fail(error):
        def command(argv):
            raise error
        return command

    monkeypatch.delenv("LLAMA3_DEBUG", raising=False)
    for error in (PermissionError(13, "Permission denied", "/read-only/runs"),
                  RuntimeError("CUDA error: invalid device ordinal\nCUDA kernel errors might be reported later"),
                  ValueError("a\n  multi-line\n  message")):
        monkeypatch.setattr(pretrained, "generate_main", fail(error))
        assert run(["generate", "Hi"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "Permission denied: '/read-only/runs'" in str(PermissionError(13, "Permission denied", "/read-only/runs"))
    with pytest.raises(ValueError, match="multi-line"):
        run(["generate", "Hi", "--debug"])
    monkeypatch.setenv("LLAMA3_DEBUG", "1")
    with pytest.raises(ValueError, match="multi-line"):
        run(["generate", "Hi"])
    monkeypatch.setattr(pretrained, "generate_main", fail(KeyboardInterrupt()))
    monkeypatch.delenv("LLAMA3_DEBUG")
    assert run(["generate", "Hi"]) == 130


def test_an_error_after_streaming_starts_on_its_own_line(tiny_folder, capsys):
    """The prompt is streamed before generation starts: if generation then fails (here the prompt is longer than
    max_seq_len), stdout ends the line, so the error is not glued to the prompt."""
    prompt = "Once upon a time " * 20
    assert run(["generate", prompt, "--model", str(tiny_folder)]) == 1
    captured = capsys.readouterr()
    assert captured.out == prompt + "\n"
    assert captured.err.startswith("error: The prompt has")


def test_help_shows_each_default_once_and_both_temperatures(capsys):
    for command in ("generate", "eval"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        assert "(default: None)" not in text
        for option in text.split(" --")[1:]:  # each option's help, as wrapped by argparse
            assert option.count("(default:") <= 1, option
        assert "(default: 8)" in text if command == "eval" else "(default: 300)" in text
        if command == "generate":
            assert "--temperature TEMPERATURE 0 is greedy (default: 0.8; the API's generate/generate_kv default: 1.0)" \
                in text
            assert "(default: 0.95; the API's default: 1.0)" in text
            assert "--device DEVICE cpu, cuda, cuda:N or mps (default: cpu)" in text


def test_evaluate_equals_the_models_own_loss_on_a_text_within_one_window(tiny_folder):
    model, tokenizer = load_model(tiny_folder)
    text = f"Once upon a time there was a cat.\n{EOS_TOKEN}\nThe dog ran."
    result = evaluate(model, tokenizer, text)
    ids = torch.tensor([[tokenizer.eos_token_id, *tokenizer(text)["input_ids"]]])  # leading EOS, as evaluate does
    assert ids.shape[1] <= model.args.max_seq_len
    with torch.no_grad():
        loss = model(ids, labels=ids).loss.item()  # transformers-style shift inside the model
    assert result["tokens"] == ids.shape[1] - 1 and result["bytes"] == len(text.encode())
    assert result["loss"] == pytest.approx(loss, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert result["bits_per_byte"] == pytest.approx(loss * result["tokens"] / math.log(2) / result["bytes"], rel=1e-5)


def test_evaluate_scores_every_token_once_whatever_the_stride(tiny_folder):
    """Long text, several windows: stride = window must equal the sum over consecutive chunks computed by hand,
    and a smaller stride (more context) must give a finite loss over exactly the same number of tokens."""
    model, tokenizer = load_model(tiny_folder)
    text = " ".join(f"word{i}" for i in range(150))
    ids = torch.tensor([tokenizer.eos_token_id, *tokenizer(text)["input_ids"]])
    window = model.args.max_seq_len
    nll = 0.0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, window):
            chunk = ids[start: start + window + 1][None]
            nll += model(chunk[:, :-1]).logits.log_softmax(-1).gather(-1, chunk[:, 1:, None]).sum().neg().item()
    full = evaluate(model, tokenizer, text, stride=window)
    assert full["tokens"] == len(ids) - 1
    assert full["loss"] == pytest.approx(nll / (len(ids) - 1), rel=1e-5)
    assert evaluate(model, tokenizer, text, stride=7)["tokens"] == len(ids) - 1
    with pytest.raises(ValueError, match="stride"):
        evaluate(model, tokenizer, text, stride=0)


def test_eval_command_prints_loss_perplexity_and_bits_per_byte(tiny_folder, tmp_path, capsys):
    text_file = tmp_path / "text.txt"
    text_file.write_text(f"Once upon a time there was a cat.\n{EOS_TOKEN}\n")
    assert main(["eval", str(text_file), "--model", str(tiny_folder)]) == 0
    out = capsys.readouterr().out
    model, tokenizer = load_model(tiny_folder)
    result = evaluate(model, tokenizer, text_file.read_text())
    assert f"loss: {result['loss']:.4f}" in out and f"bits per byte: {result['bits_per_byte']:.4f}" in out
    assert "perplexity:" in out
    with pytest.raises(FileNotFoundError, match="text file"):
        main(["eval", str(tmp_path / "missing.txt"), "--model", str(tiny_folder)])


def test_eval_with_a_negative_batch_size_fails_in_a_fresh_process():
    """The issue's case verbatim: it used to exit 0 printing loss 0.0000."""
    result = subprocess.run([sys.executable, "-m", "llama3", "eval", "--batch-size", "-1"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == "python -m llama3 eval: error: argument --batch-size: must be >= 1, got -1"


# ------------------------------------------------------------------------------------------ the shipped model
def test_the_shipped_checkpoint_fits_25_mb_and_loads():
    files = {p.name: p.stat().st_size for p in PRETRAINED_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(files)
    assert sum(files.values()) <= 25 * 1024 * 1024
    model, tokenizer = load_pretrained()
    assert model.args.vocab_size == len(tokenizer) == 4096
    assert tokenizer.decode(tokenizer("Once upon a time")["input_ids"]) == "Once upon a time"
    assert load_tokenizer().encode("Hello world") == [15496, 995]  # the seed's GPT-2 default is untouched


def test_the_shipped_model_writes_a_story(capsys):
    assert main(["generate", "Once upon a time", "--max-new-tokens", "40", "--seed", "0"]) == 0
    story = capsys.readouterr().out
    assert story.startswith("Once upon a time") and len(story.split()) > 20


def test_the_shipped_model_knows_tinystories_better_than_chance():
    """On held-out-style text it must beat a uniform guess over 4096 tokens by far (ln 4096 = 8.3 nats)."""
    model, tokenizer = load_pretrained()
    text = ("Once upon a time, there was a little girl named Lily. She loved to play with her ball in the park. "
            "One day, she saw a big dog. The dog was friendly and wanted to play too. Lily and the dog played all "
            "day. They were very happy.")
    assert evaluate(model, tokenizer, text)["loss"] < 3.0


def test_the_model_card_states_what_the_shipped_weights_score():
    """The README's validation metrics are what the shipped weights give on dev500 (the first 500 validation
    stories, also the shipped excerpt), so a new checkpoint cannot ship with a stale card."""
    readme = (PRETRAINED_DIR.parents[2] / "README.md").read_text()
    card = re.search(r"text: the TinyStories validation split \(([\d,]+) bytes, ([\d,]+) tokens\)\n"
                     r"loss: ([\d.]+) nats/token\nperplexity: [\d.]+\nbits per byte: ([\d.]+)", readme)
    assert card, "README.md has lost the printed output of `python -m llama3 eval` in the model card"
    n_bytes, n_tokens, loss, bits_per_byte = card.groups()
    text = load_text("validation")
    assert len(text.encode()) == int(n_bytes.replace(",", ""))  # dev500 here, or the excerpt: the same stories
    model, tokenizer = load_pretrained()
    result = evaluate(model, tokenizer, text)
    assert result["tokens"] == int(n_tokens.replace(",", ""))
    assert result["loss"] == pytest.approx(float(loss), abs=2e-4)
    assert result["bits_per_byte"] == pytest.approx(float(bits_per_byte), abs=1e-4)


def test_the_command_line_prints_a_one_line_error_for_bad_input(tmp_path):
    result = subprocess.run([sys.executable, "-m", "llama3", "generate", "Hi", "--model", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith("error: No model at") and "Traceback" not in result.stderr


# ------------------------------------------------------------------------------------------------------- train
def test_train_help_gives_every_option_its_help_and_default(capsys):
    from llama3.train import TrainConfig

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        assert flag in out, flag
        help_ = field.metadata["help"].replace("%%", "%")
        if field.default is None:  # the help says in words what happens by default, once
            assert f"{help_}" in out and help_.count("(default: ") == 1, flag
            assert f"{help_} (default: None)" not in out, flag
        else:
            assert f"{help_} (default: {field.default})" in out, flag
    assert "--d-model D_MODEL model width (default: 256)" in out


@pytest.mark.parametrize("flags, message", [
    (["--steps", "0"], "--steps must be at least 1, got 0."),
    (["--steps", "-1"], "--steps must be at least 1, got -1."),
    (["--batch-size", "-1"], "--batch-size must be at least 1, got -1."),
    (["--threads", "-1"], "--threads must be at least 1 (or left out), got -1."),
    (["--lr", "nan"], "Need 0 <= --min-lr <= --lr and --lr > 0, got lr=nan"),
    (["--dropout", "1.5"], "--dropout must be in [0.0, 1.0), got 1.5."),
    (["--device", "foo"], "--device 'foo' is not a device: use auto, cpu, cuda, cuda:N or mps."),
])
def test_train_refuses_bad_numbers_and_devices_with_one_line(flags, message, tmp_path, capsys):
    assert run(["train", "--out-dir", str(tmp_path / "run"), *flags]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()  # refused before anything is written


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_train_on_cuda_without_cuda_says_so(tmp_path, capsys):
    assert run(["train", "--out-dir", str(tmp_path / "run"), "--device", "cuda"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --device cuda but CUDA is not available") and "--device cpu" in err


def test_train_into_a_folder_it_cannot_write_says_so(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert run(["train", "--out-dir", str(blocker / "run")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: Cannot write in --out-dir {blocker / 'run'} (") and err.count("\n") == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_train_into_a_read_only_folder_says_so(tmp_path, capsys):
    read_only = tmp_path / "read_only"
    read_only.mkdir(mode=0o555)
    assert run(["train", "--out-dir", str(read_only / "run")]) == 1
    assert capsys.readouterr().err.startswith(f"error: Cannot write in --out-dir {read_only / 'run'} (Permission")


def test_train_errors_from_the_installed_module_have_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "llama3", "train", "--steps", "-1", "--out-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith("error: --steps must be at least 1, got -1.") and result.stderr.count("\n") == 1
