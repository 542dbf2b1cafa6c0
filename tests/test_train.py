"""llama3.train: the schedule, exact resume, safe checkpoints, clear errors, and DDP equal to one process."""

import ast
import importlib.metadata
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llama3 import Llama3
from llama3 import train as train_module
from llama3.pretrained import PRETRAINED_DIR, evaluate, load_model
from llama3.train import TrainConfig, load_checkpoint, lr_schedule, save_checkpoint, train

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("isolated_token_cache")


def tiny_config(tmp_path, data, **overrides) -> TrainConfig:
    """A 2-layer, 32-wide model on 32-token windows: a step takes milliseconds."""
    values = dict(data=str(data), tokenizer=str(PRETRAINED_DIR), out_dir=str(tmp_path / "run"), d_model=32, heads=2,
                  group_size=1, num_layers=2, seq_len=32, multiple_of=16, batch_size=4, steps=8, warmup_steps=2,
                  lr=3e-3, min_lr=3e-4, eval_interval=4, eval_windows=4, log_interval=1, ckpt_interval=3,
                  threads=1, progress=False)
    values.update(overrides)
    return TrainConfig(**values)


def cli_flags(config: TrainConfig) -> list[str]:
    """The command-line flags that give ``config`` (None left out, booleans as --x / --no-x)."""
    flags = []
    for key, value in config.to_dict().items():
        if value is None:
            continue
        if isinstance(value, bool):
            flags.append(f"--{key.replace('_', '-')}" if value else f"--no-{key.replace('_', '-')}")
        else:
            flags += [f"--{key.replace('_', '-')}", str(value)]
    return flags


def losses(rows, key="loss"):
    return {r["step"]: r[key] for r in rows if key in r}


# ------------------------------------------------------------------------------------------------ schedule
def test_lr_schedule_warms_up_linearly_then_follows_a_cosine_to_min_lr():
    kw = dict(warmup_steps=10, total_steps=110, max_lr=1e-3, min_lr=1e-4)
    assert lr_schedule(0, **kw) == 0.0
    assert lr_schedule(5, **kw) == pytest.approx(5e-4)
    assert lr_schedule(10, **kw) == pytest.approx(1e-3)
    assert lr_schedule(60, **kw) == pytest.approx((1e-3 + 1e-4) / 2)  # half-way down the cosine
    assert lr_schedule(35, **kw) == pytest.approx(1e-4 + 0.5 * (1 + math.cos(math.pi / 4)) * 9e-4)
    assert lr_schedule(110, **kw) == pytest.approx(1e-4)
    assert lr_schedule(500, **kw) == pytest.approx(1e-4)
    decay = [lr_schedule(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    assert lr_schedule(0, warmup_steps=0, total_steps=10, max_lr=1.0, min_lr=0.0) == 1.0


def test_lr_schedule_refuses_impossible_lengths():
    with pytest.raises(ValueError, match="warmup_steps"):
        lr_schedule(0, warmup_steps=20, total_steps=10, max_lr=1.0, min_lr=0.0)


# ------------------------------------------------------------------------------------------------ training
def test_training_learns_and_writes_metrics_curve_and_model(tmp_path, stories):
    config = tiny_config(tmp_path, stories, steps=30, warmup_steps=3, lr=1e-2, eval_interval=10)
    rows = train(config)
    val = losses(rows, "val_loss")
    assert val[30] < val[10] < math.log(4096)  # the synthetic stories are easy: the loss must fall
    out = tmp_path / "run"
    assert [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] == rows
    assert (out / "loss.png").stat().st_size > 1000
    model, tokenizer = load_model(out / "model")
    assert model.args.d_model == 32 and len(tokenizer) == 4096
    assert evaluate(model, tokenizer, (stories / "TinyStories-valid.small.txt").read_text())["loss"] < math.log(4096)


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path, stories):
    full = train(tiny_config(tmp_path / "a", stories, dropout=0.1))  # dropout: the torch RNG state matters too
    first = train(tiny_config(tmp_path / "b", stories, dropout=0.1, stop_after=5))
    assert max(losses(first)) == 5
    rest = train(tiny_config(tmp_path / "b", stories, dropout=0.1, resume=True))
    assert losses(rest) == losses(full)  # bit-exact, every step
    assert losses(rest, "val_loss") == losses(full, "val_loss")
    assert json.loads((tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()[-1]) == rest[-1]


def test_gradient_accumulation_matches_one_big_batch(tmp_path, stories):
    big = train(tiny_config(tmp_path / "a", stories, batch_size=8, steps=3))
    accumulated = train(tiny_config(tmp_path / "b", stories, batch_size=4, grad_accum=2, steps=3))
    for step, loss in losses(big).items():
        assert losses(accumulated)[step] == pytest.approx(loss, abs=1e-5)


def test_resume_refuses_missing_corrupt_and_mismatched_checkpoints(tmp_path, stories):
    with pytest.raises(FileNotFoundError, match="without --resume"):
        train(tiny_config(tmp_path, stories, resume=True))
    train(tiny_config(tmp_path, stories, stop_after=2))
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_config(tmp_path, stories))
    with pytest.raises(ValueError, match="d_model: checkpoint 32, now 48"):
        train(tiny_config(tmp_path, stories, d_model=48, resume=True))
    ckpt = tmp_path / "run" / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # a truncated file
    with pytest.raises(ValueError, match="corrupt"):
        train(tiny_config(tmp_path, stories, resume=True))
    torch.save({"something": "else"}, ckpt)
    with pytest.raises(ValueError, match="not a training checkpoint"):
        load_checkpoint(ckpt)


def torch_save_disk_full(obj, f):
    """What torch.save does on a full disk: part of the file written, then a RuntimeError (not an OSError)."""
    f.write(b"half a checkpoint")
    raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 576 vs 485")


def test_a_failed_save_never_destroys_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"step": 1}, path)
    good = path.read_bytes()
    monkeypatch.setattr(train_module.torch, "save", torch_save_disk_full)
    with pytest.raises(OSError, match="checkpoint.pt"):  # torch's RuntimeError, as an OSError naming the file
        save_checkpoint({"step": 2}, path)
    assert path.read_bytes() == good
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_training_survives_a_full_disk_and_keeps_the_last_good_checkpoint(tmp_path, stories, monkeypatch, capsys):
    config = tiny_config(tmp_path, stories, steps=6, ckpt_interval=3)
    real_save = torch.save
    calls = []

    def save_then_fail(obj, f):
        calls.append(obj["step"])
        (real_save if obj["step"] <= 3 else torch_save_disk_full)(obj, f)

    monkeypatch.setattr(train_module.torch, "save", save_then_fail)
    rows = train(config)
    assert calls == [3, 6] and max(losses(rows)) == 6  # training went on after the failed save
    assert "could not save the checkpoint at step 6" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 3


def test_bad_settings_are_refused_with_the_flag_name(tmp_path, stories):
    with pytest.raises(ValueError, match="--warmup-steps"):
        train(tiny_config(tmp_path, stories, warmup_steps=20))
    with pytest.raises(ValueError, match="--dtype"):
        train(tiny_config(tmp_path, stories, dtype="float16"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(tiny_config(tmp_path, tmp_path / "no_such_data"))


# --------------------------------------------------------------------------------------------------- DDP
def test_ddp_two_processes_split_the_global_batch_and_give_the_losses_of_one_process(tmp_path, stories,
                                                                                       monkeypatch):
    """torchrun with 2 CPU processes (gloo). Each process must see its own half of the global batch (rank 0 the
    first rows, rank 1 the rest, together exactly the windows one process trains on), and the averaged gradients
    and losses must equal those of the one process that sees the whole batch."""
    seen, real_forward = [], Llama3.forward

    def recording_forward(self, tgt, *args, **kwargs):
        if self.training:
            seen.append(tgt.detach().clone())
        return real_forward(self, tgt, *args, **kwargs)

    monkeypatch.setattr(Llama3, "forward", recording_forward)
    single = train(tiny_config(tmp_path / "one", stories, steps=4, eval_interval=2))
    monkeypatch.undo()
    config = tiny_config(tmp_path / "two", stories, steps=4, eval_interval=2, threads=None)
    record = tmp_path / "batches"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "tests.train_child", "--record-batches", str(record), "--", *cli_flags(config)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stderr
    ranks = [torch.load(f"{record}.rank{r}") for r in (0, 1)]
    assert len(seen) == len(ranks[0]) == len(ranks[1]) == 4  # one forward per step and process
    for whole, first, second in zip(seen, *ranks):
        assert whole.shape == (4, 32) and first.shape == second.shape == (2, 32)
        assert torch.equal(first, whole[:2]) and torch.equal(second, whole[2:])
    rows = [json.loads(line) for line in (tmp_path / "two" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert losses(rows).keys() == losses(single).keys()
    for step, loss in losses(single).items():
        assert losses(rows)[step] == pytest.approx(loss, abs=1e-5)
    for step, loss in losses(single, "val_loss").items():
        assert losses(rows, "val_loss")[step] == pytest.approx(loss, abs=1e-5)


# ------------------------------------------------------------------------------------------------ packaging
def test_every_module_level_import_of_the_package_is_a_declared_dependency():
    """pip install . must give a package that imports and trains: each third-party module imported at the top of a
    llama3 module (matplotlib for loss.png included) belongs to a distribution in pyproject's dependencies."""
    tomllib = pytest.importorskip("tomllib")
    declared = {re.split(r"[<>=!~ \[;]", d)[0].lower().replace("_", "-")
                for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    distributions = importlib.metadata.packages_distributions()
    missing = set()
    for file in (REPO / "llama3").rglob("*.py"):
        for node in ast.parse(file.read_text()).body:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for top in {n.split(".")[0] for n in names}:
                if top in sys.stdlib_module_names or top in ("llama3", "__future__"):
                    continue
                dists = {d.lower().replace("_", "-") for d in distributions.get(top, [top])}
                if not dists & declared:
                    missing.add(f"{top} ({file.relative_to(REPO)})")
    assert not missing, f"imported but not in pyproject.toml's dependencies: {sorted(missing)}"


def test_the_default_warmup_fits_a_short_run():
    # `python -m llama3 train --steps 5` (a smoke test) must not be refused for its default warm-up of 100 steps
    short, usual = TrainConfig(steps=5), TrainConfig()
    short.validate()
    assert short.warmup_steps == 5 and usual.warmup_steps == 100
    assert TrainConfig(steps=5, warmup_steps=2).warmup_steps == 2
    args = train_module.build_parser().parse_args(["--steps", "5"])  # as `python -m llama3 train --steps 5` does
    assert TrainConfig(**vars(args)).warmup_steps == 5
