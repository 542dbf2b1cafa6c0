"""Build solutions/07_training.ipynb: the training loop on TinyStories (llama3/train.py, llama3/data.py).

    .venv/bin/python tools/notebooks/build_07.py
    LLAMA3_TINYSTORIES=../shared/tinystories nice -n 10 .venv/bin/jupyter nbconvert --to notebook --execute \
        --inplace solutions/07_training.ipynb
    .venv/bin/python tools/make_exercises.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbbuild_late import check, code, exercise, md, versions, write  # noqa: E402

cells = [
    md(r"""
    # 07 · Training Llama 3 on TinyStories

    Notebook 06 ended with a model whose loss was $\log V$: it knows nothing. Training changes the weights, step
    after step, to lower the loss you wrote on real text. This notebook writes the two pieces of the loop that
    carry the ideas, the **learning-rate schedule** and the **training step**, then runs a short training on
    TinyStories with a loss curve, saves a checkpoint and **resumes** from it exactly.

    **Learning goals**

    1. Turn a text corpus into training batches: token windows $x$ and their next tokens $y$.
    2. Write the warm-up + cosine learning-rate schedule used by Llama and nanoGPT.
    3. Write a training step: forward, loss, backward, gradient clipping, AdamW update, reset.
    4. Train, read the loss curve, and checkpoint a run so that it can resume bit for bit.

    The run below takes about a minute on a laptop CPU and is far too short to write good stories: it shows that
    the loss falls. **Notebook 08** uses the checkpoint that ships with the course, trained the same way for
    longer. To train longer here, set `FULL_RUN = True` in the next cell (much longer: a GPU helps).
    """),
    versions(),
    code("""
    FULL_RUN = False  # True: a bigger model on all of the training text, for many more steps (hours on a CPU)
    """),
    code("""
    %matplotlib inline
    import math
    import shutil
    import tempfile
    import time
    import warnings
    from pathlib import Path

    import matplotlib.pyplot as plt
    import torch
    import torch.nn.functional as F

    from llama3 import Llama3, ModelArgs, load_tokenizer
    from llama3.checks import check_lr_schedule, check_train_step
    from llama3.data import EOS_TOKEN, TokenDataset, load_text, text_files, tokenize
    from llama3.pretrained import PRETRAINED_DIR
    from llama3.train import TrainConfig, configure_optimizer, estimate_loss
    """),
    md(r"""
    ## The data: TinyStories

    TinyStories (Eldan & Li, 2023) is a corpus of short stories written by GPT-3.5 and GPT-4 in the vocabulary
    of a three-year-old. It was made to show that *small* language models can learn fluent English if the
    language is simple enough; a model of a few million parameters already writes coherent stories.

    `llama3.data` finds the text: a path you pass, the folder named by the environment variable
    `LLAMA3_TINYSTORIES`, or the Hugging Face hub. Stories are separated by `<|endoftext|>`, which becomes the
    end-of-sequence token, so the model learns where a story ends.

    **The tokenizer.** GPT-2's tokenizer has 50,257 tokens; TinyStories uses a few thousand words. The course's
    checkpoint therefore uses a 4,096-token byte-level BPE trained on TinyStories itself (it ships in
    `assets/checkpoints/llama3-tinystories/`). A small vocabulary makes the embedding and the output head 12
    times smaller and the softmax 12 times cheaper, which matters more than anything else for a small model.
    """),
    code("""
    with warnings.catch_warnings():  # transformers reads the folder's config.json (ours, not a transformers config)
        warnings.simplefilter("ignore", FutureWarning)  # and warns about its rope_scaling key; harmless here
        tokenizer = load_tokenizer(PRETRAINED_DIR)  # the course's TinyStories BPE (+ "[PAD]")
    print(f"{len(tokenizer)} tokens; EOS {tokenizer.eos_token!r} = {tokenizer.eos_token_id}")
    print(tokenizer.tokenize("Once upon a time, there was a little girl named Lily."))

    if FULL_RUN:  # all of the training text, tokenised once and cached on disk
        train_data = TokenDataset.from_split("train", tokenizer, seq_len=256)
    else:         # the first 2 MB of stories: plenty for a one-minute run
        with open(text_files("train")[0], encoding="utf-8") as f:
            text = f.read(2_000_000)
        text = text[: text.rindex(EOS_TOKEN) + len(EOS_TOKEN)]  # end at the last complete story
        train_data = TokenDataset(tokenize(text, tokenizer), seq_len=128)
    val_data = TokenDataset(tokenize(load_text("validation"), tokenizer), seq_len=train_data.seq_len)
    print(f"training tokens: {len(train_data):,}   validation tokens: {len(val_data):,}")
    """),
    md(r"""
    ## Batches

    A batch is `B` windows of `T + 1` consecutive tokens cut at random places of the token stream. The first `T`
    are the input $x$, the last `T` the targets $y$: $y_t = x_{t+1}$, the next token at every position. So one
    window gives `T` training examples at once, one per position, each seeing only its past (the causal mask).
    Because `y` is already shifted, the loss here is a plain cross-entropy of `logits` against `y`; notebook 06's
    `labels` convention (shift inside) is the same thing, seen from `transformers`' side.
    """),
    code("""
    x, y = train_data.get_batch(4, generator=torch.Generator().manual_seed(0))
    print("x", tuple(x.shape), "  y", tuple(y.shape))
    print("x[0]:", repr(tokenizer.decode(x[0, :24])))
    print("y[0]:", repr(tokenizer.decode(y[0, :24])))
    print("y[:, :-1] == x[:, 1:]:", torch.equal(y[:, :-1], x[:, 1:]))
    """),
    md(r"""
    ## Exercise 1: the learning-rate schedule

    Adam's first steps are noisy: its moment estimates start from zero and the weights are random, so large
    steps at the start can throw the model into a bad region. A **linear warm-up** from 0 avoids that. After it,
    the learning rate follows a **half cosine** down to a floor $\eta_{\min}$ (Loshchilov & Hutter, 2017), which
    lets the model settle into a minimum as training ends. With $w$ warm-up steps and $S$ total steps:

    $$
    \eta(s) =
    \begin{cases}
      \eta_{\max}\, \dfrac{s}{w} & s < w \\[2mm]
      \eta_{\min} + \tfrac12 \big(1 + \cos(\pi p)\big)(\eta_{\max} - \eta_{\min}),
      \quad p = \dfrac{s - w}{S - w} & w \le s < S \\[2mm]
      \eta_{\min} & s \ge S
    \end{cases}
    $$

    Write `lr_schedule(step, *, warmup_steps, total_steps, max_lr, min_lr)` returning a float. Llama 3 405B used
    8,000 warm-up steps, a peak of $8 \times 10^{-5}$ and a cosine down to $8 \times 10^{-7}$ over 1.2 M steps.
    """),
    exercise("lr_schedule", '''
    def lr_schedule(step, *, warmup_steps, total_steps, max_lr, min_lr):
        """Linear warm-up from 0 to max_lr over warmup_steps, cosine decay to min_lr at total_steps, then min_lr."""
        ### BEGIN SOLUTION
        ### HINT: three regimes: step < warmup_steps, warmup_steps <= step < total_steps, step >= total_steps
        if step < warmup_steps:
            return max_lr * step / warmup_steps
        if step >= total_steps:
            return min_lr
        progress = (step - warmup_steps) / (total_steps - warmup_steps)  # 0 -> 1
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)
        ### END SOLUTION
    '''),
    check("lr_schedule", "check_lr_schedule(lr_schedule)"),
    code("""
    steps = range(0, 1101)
    lrs = [lr_schedule(s, warmup_steps=100, total_steps=1000, max_lr=1e-3, min_lr=1e-4) for s in steps]
    plt.figure(figsize=(7, 3))
    plt.plot(steps, lrs)
    plt.axvline(100, color="grey", ls=":", label="end of warm-up")
    plt.axvline(1000, color="grey", ls="--", label="total_steps")
    plt.xlabel("step")
    plt.ylabel("learning rate")
    plt.title("Warm-up, then cosine decay to min_lr")
    plt.legend()
    plt.tight_layout()
    plt.show()
    for s in (0, 50, 100, 550, 1000, 1100):
        print(f"step {s:4d}: lr = {lrs[s]:.2e}")
    """, "uses-exercise"),
    md(r"""
    ## Exercise 2: one training step

    One step of gradient descent with AdamW (Loshchilov & Hutter, 2019) and the safeguards every LLM recipe
    uses:

    1. set the learning rate of every parameter group to `lr` (the schedule's value for this step);
    2. forward pass and the loss, $\mathcal{L} = \operatorname{CE}(\text{logits}, y)$ in float32, over all
       `B * T` positions (`y` is already shifted: no `labels=` here);
    3. `loss.backward()` computes $\nabla \mathcal{L}$ for every parameter;
    4. **gradient clipping**: if the global norm $\lVert g \rVert$ exceeds `grad_clip`, scale all gradients by
       `grad_clip / ||g||` (`torch.nn.utils.clip_grad_norm_`). A rare bad batch then cannot wreck the weights;
    5. `optimizer.step()` updates the weights; `optimizer.zero_grad(set_to_none=True)` resets the gradients,
       which PyTorch otherwise *adds up* from one backward pass to the next.

    Return the loss as a float (`loss.item()`).
    """),
    exercise("train_step", '''
    def train_step(model, optimizer, x, y, lr, grad_clip=1.0):
        """One AdamW step on the batch (x, y), both (B, T); returns the loss before the update."""
        ### BEGIN SOLUTION
        ### HINT: lr into param_groups; CE(logits, y); backward; clip_grad_norm_; step; zero_grad
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits = model(x).logits                                     # (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()
        ### END SOLUTION
    '''),
    check("train_step", "check_train_step(train_step)"),
    md(r"""
    ## The model and the optimiser

    A small Llama 3 (the reference class from notebook 06). `configure_optimizer` builds AdamW as nanoGPT does:
    the weight matrices of the layers get weight decay, the norms and the embedding do not (decaying a norm's
    gain towards 0 or shrinking rare tokens' embeddings only hurts).
    """),
    code("""
    if FULL_RUN:
        settings = dict(d_model=256, heads=8, group_size=2, num_layers=6, batch_size=32, steps=2000, warmup=100,
                        max_lr=1e-3, min_lr=1e-4, eval_every=100, checkpoint_at=1000)
    else:
        settings = dict(d_model=128, heads=4, group_size=2, num_layers=4, batch_size=8, steps=120, warmup=10,
                        max_lr=3e-3, min_lr=3e-4, eval_every=20, checkpoint_at=80)
    args = ModelArgs(len(tokenizer), tokenizer, d_model=settings["d_model"], heads=settings["heads"],
                     group_size=settings["group_size"], num_layers=settings["num_layers"],
                     max_seq_len=train_data.seq_len, multiple_of=32)
    device = "cuda" if FULL_RUN and torch.cuda.is_available() else "cpu"


    def fresh_run(seed=0):
        \"\"\"A new model, its optimiser and the generator that decides which windows are drawn.\"\"\"
        torch.manual_seed(seed)
        model = Llama3(args).to(device)
        optimizer = configure_optimizer(model, TrainConfig(weight_decay=0.1))
        return model, optimizer, torch.Generator().manual_seed(seed + 1)


    model, optimizer, data_gen = fresh_run()
    print(f"{model.num_parameters():,} parameters; {settings['batch_size']} x {train_data.seq_len} = "
          f"{settings['batch_size'] * train_data.seq_len:,} tokens per step, {settings['steps']} steps")
    print(f"loss before training should be about log V = {math.log(len(tokenizer)):.2f}")
    """),
    md(r"""
    ## The run

    The loop calls your two functions. Every `eval_every` steps it measures the loss on validation text the
    model never trains on (the same windows each time, so the numbers compare). At step `checkpoint_at` it
    saves a **checkpoint**: everything needed to continue the run as if it had never stopped. (The grader,
    `python -m llama3.grade`, skips the run and the cells that need it: they are marked `skip-grade`.)
    """),
    code('''
    def save_checkpoint(path, model, optimizer, step, data_gen):
        """The run's full state: weights, AdamW's moment estimates, the step, and the data position."""
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                    "data_generator": data_gen.get_state(), "torch_rng": torch.get_rng_state()}, path)


    def run(model, optimizer, data_gen, start, end, checkpoint=None, log_every=20):
        """Steps start..end-1 with your lr_schedule and train_step; returns the losses and validation points."""
        losses, val_points = [], []
        model.train()
        started = time.perf_counter()
        for step in range(start, end):
            lr = lr_schedule(step, warmup_steps=settings["warmup"], total_steps=settings["steps"],
                             max_lr=settings["max_lr"], min_lr=settings["min_lr"])
            x, y = train_data.get_batch(settings["batch_size"], data_gen, device)
            losses.append(train_step(model, optimizer, x, y, lr, grad_clip=1.0))
            if (step + 1) % settings["eval_every"] == 0:
                val_points.append((step + 1, estimate_loss(model, val_data, 16, 8, device, None)))
            if (step + 1) % log_every == 0:
                print(f"step {step + 1:4d}  loss {losses[-1]:.3f}  lr {lr:.1e}  "
                      f"({time.perf_counter() - started:.0f} s)")
            if checkpoint is not None and step + 1 == settings["checkpoint_at"]:
                save_checkpoint(checkpoint, model, optimizer, step + 1, data_gen)
        return losses, val_points
    '''),
    code("""
    workdir = Path(tempfile.mkdtemp())  # checkpoints of this notebook; deleted at the end
    checkpoint_path = workdir / "checkpoint.pt"
    losses, val_points = run(model, optimizer, data_gen, 0, settings["steps"], checkpoint=checkpoint_path)
    """, "uses-exercise", "nbval-ignore-output", "skip-grade"),
    code("""
    first_val, last_val = val_points[0][1], val_points[-1][1]
    print("validation loss went down during the run:", last_val < first_val)
    print("training loss fell by more than 2 nats from log V:", losses[-1] < math.log(len(tokenizer)) - 2)
    """, "uses-exercise", "skip-grade"),
    code("""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    ax1.plot(range(1, len(losses) + 1), losses, label="training batch", alpha=0.8)
    ax1.plot(*zip(*val_points), "o-", label="validation")
    ax1.axhline(math.log(len(tokenizer)), color="grey", ls=":", label="log V (knows nothing)")
    ax1.axvline(settings["checkpoint_at"], color="grey", ls="--", label="checkpoint")
    ax1.set(xlabel="step", ylabel="cross-entropy (nats / token)", title="Loss")
    ax1.legend()
    schedule = [lr_schedule(s, warmup_steps=settings["warmup"], total_steps=settings["steps"],
                            max_lr=settings["max_lr"], min_lr=settings["min_lr"]) for s in range(settings["steps"])]
    ax2.plot(range(1, settings["steps"] + 1), schedule)
    ax2.set(xlabel="step", ylabel="learning rate", title="Schedule")
    plt.tight_layout()
    plt.show()
    """, "uses-exercise", "skip-grade"),
    md(r"""
    **Reading the curve.** The loss starts at $\log V \approx 8.3$ (uniform guesses) and falls fast at first:
    the model learns which tokens are frequent, then which follow which. The training curve is noisy because
    each step sees a different small batch; the validation loss, on fixed held-out windows, is smooth and falls
    with it: the model learns the statistics of English stories, not the training windows by heart (in so short
    a run it sees almost every window once).

    ## Checkpoint and resume

    Long runs get interrupted (a pre-empted GPU, a crash, a laptop lid). A checkpoint must hold **everything**
    that influences the next steps: the weights, AdamW's two moment estimates per parameter (without them the
    first steps after a resume are wild), the step (the schedule depends on it) and the data generator's state
    (which windows come next). Restore all of it and the resumed run is the *same* run: the losses after
    the resume equal those of the uninterrupted run, exactly.
    """),
    code("""
    state = torch.load(checkpoint_path, weights_only=True)
    resumed_model, resumed_optimizer, resumed_gen = fresh_run(seed=123)  # other weights: all are overwritten
    resumed_model.load_state_dict(state["model"])
    resumed_optimizer.load_state_dict(state["optimizer"])
    resumed_gen.set_state(state["data_generator"])
    torch.set_rng_state(state["torch_rng"])
    start = state["step"]
    print(f"resuming at step {start}; checkpoint keys: {sorted(state)}")
    resumed_losses, _ = run(resumed_model, resumed_optimizer, resumed_gen, start, settings["steps"], log_every=10**9)
    print("losses after the resume == uninterrupted run:", resumed_losses == losses[start:])
    """, "uses-exercise", "skip-grade"),
    md(r"""
    ## From a training checkpoint to a model you can use

    The checkpoint is for training. For inference, `save_pretrained` writes the weights and the `ModelArgs`
    (and the tokenizer) in a folder that `Llama3.from_pretrained` reads back, which is how
    `assets/checkpoints/llama3-tinystories/` was made. After a one-minute run, expect words and fragments of
    sentences rather than stories.
    """),
    code("""
    export = workdir / "model"
    model.save_pretrained(export, tokenizer=tokenizer)
    print(sorted(p.name for p in export.iterdir()))
    trained = Llama3.from_pretrained(export).eval()
    """, "uses-exercise", "skip-grade"),
    code("""
    print(trained.generate_kv("Once upon a time", tokenizer=tokenizer, max_new_tokens=40, temperature=0))
    shutil.rmtree(workdir)  # the notebook's checkpoints
    """, "uses-exercise", "nbval-ignore-output", "skip-grade"),
    md(r"""
    ## Longer runs: `python -m llama3 train`

    `llama3/train.py` is this loop with what a real run adds: gradient accumulation, bfloat16 autocast on GPUs,
    several GPUs with `torchrun` (DDP), a progress bar, metrics in `metrics.jsonl`, periodic checkpoints written
    atomically (a crash while saving never destroys the previous one) and `--resume`. The shipped checkpoint was
    trained with it (see the model card in the README):

    ```bash
    python -m llama3 train --data path/to/tinystories --tokenizer assets/checkpoints/llama3-tinystories \
        --d-model 256 --num-layers 6 --heads 8 --group-size 2 --steps 2000 --out-dir runs/main
    python -m llama3 train ... --resume      # continues runs/main/checkpoint.pt where it stopped
    ```
    """),
    code("""
    from llama3.train import lr_schedule as reference_lr_schedule

    same = all(math.isclose(lr_schedule(s, warmup_steps=10, total_steps=100, max_lr=1.0, min_lr=0.1),
                            reference_lr_schedule(s, warmup_steps=10, total_steps=100, max_lr=1.0, min_lr=0.1))
               for s in range(120))
    print("your lr_schedule == llama3.train.lr_schedule:", same)
    """, "uses-exercise"),
    md(r"""
    ## Hand-over

    `llama3.train` holds the reference `lr_schedule` and the full loop (`train`, `TrainConfig`); `llama3.data`
    the data pipeline. **Notebook 08** turns a trained model's logits into text: greedy decoding, temperature,
    top-k and top-p sampling, and the generation loop with the KV cache, on the checkpoint that ships with the
    course.
    """),
]

if __name__ == "__main__":
    write("07_training", cells)
