"""Build solutions/08_generation.ipynb: sampling and the cached generation loop (llama3/generation.py).

The outputs depend on the shipped checkpoint (assets/checkpoints/llama3-tinystories): re-execute when it changes.

    .venv/bin/python tools/notebooks/build_08.py
    nice -n 10 .venv/bin/jupyter nbconvert --to notebook --execute --inplace solutions/08_generation.ipynb
    .venv/bin/python tools/make_exercises.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbbuild_late import check, code, exercise, md, versions, write  # noqa: E402

cells = [
    md(r"""
    # 08 · Generation: from logits to stories

    A language model gives, for the last position of a text, a score (logit) for every token that could come
    next. *Generation* turns those scores into one token, appends it, and repeats. How the token is chosen
    (greedy, temperature, top-k, top-p) decides whether the text is dull, creative or nonsense; how the loop is
    run (with or without the KV cache of notebook 03) decides whether it is fast.

    We work with the model that ships with the course: a Llama 3 trained on TinyStories with the loop of
    notebook 07, in `assets/checkpoints/llama3-tinystories/`.

    **Learning goals**

    1. Read a real next-token distribution; see what temperature, top-k and top-p do to it (a widget).
    2. Write `top_p_filter` (nucleus sampling) and `sample_next_token`.
    3. Write the generation loop with a KV cache: one prefill, then one token per step.
    4. Measure the cache's speed-up, and generate stories.
    """),
    versions(),
    code("""
    %matplotlib inline
    import math
    import time
    import warnings

    import matplotlib.pyplot as plt
    import torch
    from ipywidgets import FloatSlider, IntSlider, fixed, interact

    from llama3 import KV_Cache
    from llama3.checks import check_generate_kv, check_sample_next_token, check_top_p
    from llama3.generation import top_k_filter
    from llama3.pretrained import load_pretrained

    with warnings.catch_warnings():  # transformers reads the checkpoint's config.json (ours, not a transformers
        warnings.simplefilter("ignore", FutureWarning)  # config) and warns about its rope_scaling key: harmless
        model, tokenizer = load_pretrained()  # the shipped TinyStories model, in eval mode, and its tokenizer
    a = model.args
    print(f"{model.num_parameters():,} parameters: d_model={a.d_model}, {a.num_layers} layers, {a.heads} heads "
          f"({a.n_kv_heads} K/V), vocab {a.vocab_size}, max_seq_len {a.max_seq_len}")
    """),
    md(r"""
    ## A real next-token distribution

    The logits $z \in \mathbb{R}^V$ of the last position become probabilities with a softmax. **Greedy
    decoding** takes the most likely token, $\arg\max_i z_i$; **sampling** draws a token at random with these
    probabilities. Here is what the model expects after a typical TinyStories opening:
    """),
    code("""
    prompt = "Once upon a time, there was a little"
    ids = tokenizer(prompt, return_tensors="pt").input_ids          # (1, T)
    with torch.no_grad():
        next_logits = model(ids).logits[0, -1]                       # (V,): scores for the next token
    probs = next_logits.softmax(-1)
    top = probs.topk(10)
    print(f"prompt: {prompt!r} ({ids.shape[1]} tokens)")
    for p, i in zip(top.values, top.indices):
        print(f"  {tokenizer.decode(int(i))!r:12} {p.item():.3f}")
    print(f"the 10 most likely tokens hold {top.values.sum().item():.0%} of the probability")
    """),
    md(r"""
    ## Temperature, top-k, top-p

    **Temperature** $\tau > 0$ divides the logits before the softmax:

    $$ p_i(\tau) = \frac{\exp(z_i / \tau)}{\sum_j \exp(z_j / \tau)}. $$

    $\tau < 1$ sharpens the distribution (towards greedy as $\tau \to 0$), $\tau > 1$ flattens it (towards
    uniform). Dividing the *probabilities* by $\tau$ would change nothing once they are renormalised: the
    temperature acts on the logits.

    Sampling from the full distribution gives every one of the $V$ tokens a chance, and over hundreds of steps
    some very unlikely, nonsensical token eventually gets drawn. Two filters cut the tail before sampling:

    - **top-k** keeps the $k$ most likely tokens (Fan et al., 2018);
    - **top-p** or *nucleus* sampling (Holtzman et al., 2020) keeps the smallest set of most likely tokens whose
      probabilities add up to at least $p$. Sort the probabilities in decreasing order,
      $p_{(1)} \ge p_{(2)} \ge \dots$; token $(k)$ is kept when the mass **before** it is below $p$:

    $$ \text{keep } (k) \iff \sum_{j < k} p_{(j)} < p . $$

    So the token that *crosses* $p$ is kept, and the most likely token always is. Unlike top-k, the nucleus
    adapts: after "Once upon a" it holds one token ("time"), after "there was a little" dozens. The filtered
    tokens get logit $-\infty$, hence probability 0 after the softmax, which renormalises the rest. The order
    is: temperature, then top-k, then top-p, then softmax and sampling (as in `transformers`).

    ## Exercise 1: `top_p_filter`

    `top_p_filter(logits, p)`: `logits` `(B, V)`, each row filtered on its own; return logits of the same shape
    with the tokens outside the nucleus set to `-inf` and the others unchanged. `p >= 1` keeps everything.
    Useful: `torch.sort(..., descending=True)` returns the order, and `Tensor.scatter` puts a sorted-order mask
    back into vocabulary order.
    """),
    exercise("top_p", '''
    def top_p_filter(logits, p):
        """Nucleus filtering (Holtzman et al., 2020): keep the smallest set of most likely tokens whose probabilities
        add up to at least p; set the other logits to -inf. logits (B, V)."""
        ### BEGIN SOLUTION
        ### HINT: sort descending; a token stays while the probability BEFORE it is < p; mask back in vocabulary order
        if p >= 1.0:
            return logits
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V) each
        sorted_probs = sorted_logits.float().softmax(-1)
        mass_before = sorted_probs.cumsum(-1) - sorted_probs  # probability of the tokens more likely than this one
        drop_sorted = mass_before >= p                        # the first token has mass_before 0 < p: always kept
        drop = drop_sorted.scatter(-1, order, drop_sorted)    # back to vocabulary order
        return logits.masked_fill(drop, float("-inf"))
        ### END SOLUTION
    '''),
    check("top_p", "check_top_p(top_p_filter)"),
    md(r"""
    ## Exercise 2: `sample_next_token`

    `sample_next_token(logits, temperature=1.0, top_p=1.0, top_k=None, generator=None)`: `logits` `(B, V)` of
    the last position; return the next token ids, shape `(B,)`.

    - `temperature == 0` means greedy: `argmax` (no division by zero, no randomness);
    - otherwise divide by the temperature (in float32), filter with `top_k_filter` (given, from
      `llama3.generation`) when `top_k` is set, then with your `top_p_filter`, softmax, and draw with
      `torch.multinomial(probs, num_samples=1, generator=generator)`. Passing the `generator` on makes a seeded
      generation reproducible.
    """),
    exercise("sample_next_token", '''
    def sample_next_token(logits, temperature=1.0, top_p=1.0, top_k=None, generator=None):
        """logits (B, V) of the last position -> next token ids (B,). temperature=0 is greedy."""
        ### BEGIN SOLUTION
        ### HINT: temperature 0 is argmax; otherwise temper the logits, filter, softmax, draw with the generator
        if temperature == 0:
            return logits.argmax(dim=-1)
        logits = logits.float() / temperature
        if top_k is not None:
            logits = top_k_filter(logits, top_k)
        logits = top_p_filter(logits, top_p)
        probs = logits.softmax(-1)  # filtered tokens have probability 0
        return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)
        ### END SOLUTION
    '''),
    check("sample_next_token", "check_sample_next_token(sample_next_token)"),
    md(r"""
    ## What the knobs do to a real distribution

    `plot_next_token` draws the model's distribution after the prompt (grey, temperature 1, nothing filtered)
    and the distribution that `sample_next_token` actually samples from with your settings (blue), for the 25
    most likely tokens. It uses your filters. Two fixed settings first, then a widget to explore.
    """),
    code('''
    def sampling_distribution(logits, temperature=1.0, top_k=None, top_p=1.0):
        """The probabilities sample_next_token draws from (temperature > 0). logits (V,) -> (V,)."""
        scaled = logits[None].float() / temperature
        if top_k:
            scaled = top_k_filter(scaled, top_k)
        return top_p_filter(scaled, top_p).softmax(-1)[0]


    def plot_next_token(temperature=1.0, top_k=0, top_p=1.0, show=25):
        """Bar chart of the next-token distribution before and after temperature / top-k (0 = off) / top-p."""
        base = next_logits.softmax(-1)
        order = base.argsort(descending=True)[:show]
        sampled = sampling_distribution(next_logits, temperature, top_k, top_p)
        kept = int((sampled > 0).sum())
        fig, ax = plt.subplots(figsize=(11, 3.5))
        ax.bar(range(show), base[order], color="lightgrey", label="model (temperature 1, no filter)")
        ax.bar(range(show), sampled[order], width=0.5, label="sampled from")
        ax.set_xticks(range(show), [repr(tokenizer.decode(int(i))) for i in order], rotation=60, ha="right")
        ax.set_ylabel("probability")
        ax.set_title(f"{prompt!r} -> temperature={temperature}, top_k={top_k or 'off'}, top_p={top_p}")
        ax.legend()
        plt.tight_layout()
        plt.show()
        nonzero = sampled[sampled > 0]
        entropy = -(nonzero * nonzero.log()).sum().item()
        print(f"{kept} of {len(sampled)} tokens can be drawn; entropy {entropy:.2f} nats "
              f"(greedy would be 0, uniform {math.log(len(sampled)):.2f})")
    '''),
    code("""
    plot_next_token(temperature=1.0)                 # the model as it is
    plot_next_token(temperature=0.7, top_p=0.9)      # a common setting for stories
    """, "uses-exercise"),
    md(r"""
    Move the sliders: a low temperature piles the probability onto the top few tokens, a high one spreads it
    over the tail; top-k cuts at a fixed rank, top-p where the cumulative probability reaches $p$ (watch how
    many tokens it keeps as the temperature changes). `top_k = 0` turns top-k off.
    """),
    code("""
    interact(plot_next_token,
             temperature=FloatSlider(value=1.0, min=0.1, max=2.0, step=0.1, description="temperature"),
             top_k=IntSlider(value=0, min=0, max=50, description="top_k (0=off)"),
             top_p=FloatSlider(value=1.0, min=0.05, max=1.0, step=0.05, description="top_p"),
             show=fixed(25));
    """, "nbval-ignore-output", "skip-grade", "uses-exercise"),
    md(r"""
    ## Exercise 3: the generation loop with a KV cache

    Without a cache, step $t$ runs the model over all $t$ tokens so far, although only the last position's
    logits are used: generating $N$ tokens costs $\sum_t t = O(N^2)$ token-passes. With one `KV_Cache` per
    layer (notebook 03), the keys and values of the past are stored, and each step feeds **only the newest
    token**: $O(N)$ token-passes (attention still reads the whole cache, but that is cheap next to the
    matrix multiplications at this size).

    Write `generate_kv(model, ids, max_new_tokens, temperature=0.0, top_p=1.0, top_k=None, generator=None)`:
    `ids` `(B, T)` → `(B, T + max_new_tokens)`, the prompt followed by the new tokens.

    1. Build one `KV_Cache(batch, n_kv_heads, T + max_new_tokens, head_dim, dtype, device)` per layer.
    2. **Prefill**: run the whole prompt once, `model(ids, kv_caches=caches, start_pos=0,
       logits_to_keep=1)`: it fills the caches and gives the logits of the last position.
    3. Then repeat: sample a token with your `sample_next_token`, append it, and feed **only it**,
       `(B, 1)`, at `start_pos` = the number of tokens already in the cache.
    """),
    exercise("generate_kv", '''
    @torch.no_grad()
    def generate_kv(model, ids, max_new_tokens, temperature=0.0, top_p=1.0, top_k=None, generator=None):
        """Continue ids (B, T) by max_new_tokens tokens with a KV cache; returns (B, T + max_new_tokens)."""
        ### BEGIN SOLUTION
        ### HINT: caches per layer; prefill the whole prompt at start_pos 0; then one (B, 1) token per step
        args = model.args
        batch, prompt_len = ids.shape
        dtype = next(model.parameters()).dtype
        caches = [KV_Cache(batch, args.n_kv_heads, prompt_len + max_new_tokens, args.head_dim, dtype, ids.device)
                  for _ in range(args.num_layers)]
        logits = model(ids, kv_caches=caches, start_pos=0, logits_to_keep=1).logits[:, -1]  # prefill: (B, V)
        for step in range(max_new_tokens):
            token = sample_next_token(logits, temperature, top_p, top_k, generator)  # (B,)
            ids = torch.cat([ids, token[:, None]], dim=1)
            if step + 1 < max_new_tokens:  # the last token needs no forward pass
                logits = model(token[:, None], kv_caches=caches, start_pos=prompt_len + step,
                               logits_to_keep=1).logits[:, -1]
        return ids
        ### END SOLUTION
    '''),
    check("generate_kv", "check_generate_kv(generate_kv)"),
    md(r"""
    ## Your loop on the pretrained model

    Greedy decoding with your loop, and with the package's `model.generate_kv` (`eos_token_id=-1` switches off
    its stop at the end-of-story token, so that both produce the same number of tokens). They must agree token
    for token.
    """),
    code("""
    start = tokenizer("Once upon a time", return_tensors="pt").input_ids
    yours = generate_kv(model, start, max_new_tokens=60)
    reference = model.generate_kv(start, max_new_tokens=60, temperature=0, eos_token_id=-1)
    print("shape", tuple(yours.shape), "| your tokens == llama3's:", torch.equal(yours, reference))
    """, "uses-exercise"),
    code("""
    print(tokenizer.decode(yours[0], skip_special_tokens=True))
    """, "uses-exercise", "nbval-ignore-output"),
    md(r"""
    ## The cache's speed-up, measured

    Both of the package's loops accept a `stream` callback, called with each new token as it is sampled. We
    record the time of each token for 240 new tokens, without the cache (`model.generate`) and with it
    (`model.generate_kv`), and time your loop too. Timings vary from machine to machine and run to run; the
    shape of the curves does not: without the cache each token costs more than the one before.
    """),
    code("""
    def token_times(generate_fn, n=240):
        \"\"\"Seconds from the start to each of n new tokens (greedy, no early stop).\"\"\"
        times, t0 = [], time.perf_counter()
        generate_fn(start, max_new_tokens=n, temperature=0, eos_token_id=-1,
                    stream=lambda token: times.append(time.perf_counter() - t0))
        return times


    without_cache = token_times(model.generate)
    with_cache = token_times(model.generate_kv)
    t0 = time.perf_counter()
    generate_kv(model, start, max_new_tokens=240)
    yours_seconds = time.perf_counter() - t0

    plt.figure(figsize=(7, 4))
    plt.plot(range(1, 241), without_cache, label="without cache: generate")
    plt.plot(range(1, 241), with_cache, label="with KV cache: generate_kv")
    plt.xlabel("tokens generated")
    plt.ylabel("seconds since the start")
    plt.title("Quadratic vs linear decoding")
    plt.legend()
    plt.tight_layout()
    plt.show()
    print(f"240 tokens: without cache {without_cache[-1]:.2f} s, with cache {with_cache[-1]:.2f} s "
          f"-> {without_cache[-1] / with_cache[-1]:.1f}x faster; your loop {yours_seconds:.2f} s")
    """, "uses-exercise", "nbval-ignore-output", "skip-grade"),
    md(r"""
    The gap grows with the length: at 240 tokens of a small model it is a few times, for a 1,000-token answer
    of an 8B model it is the difference between usable and not. `model.generate_kv(..., compile=True)` goes
    further: a static-shape decode step under `torch.compile`; `benchmarks/` compares the package's speed with
    `transformers` on the same weights.

    ## Sampling strategies side by side

    The package's `generate_kv` takes text directly and stops at the end-of-story token. Greedy decoding is
    deterministic and tends to repeat itself; sampling at temperature 1 without filters can wander off; a
    moderate temperature with top-p is the usual compromise. Each sample is seeded, so re-running gives the
    same story.
    """),
    code("""
    opening = "One day, a little cat named Tom"
    settings = {"greedy": dict(temperature=0),
                "temperature 1.0, no filter": dict(temperature=1.0, seed=0),
                "temperature 0.7, top-p 0.9": dict(temperature=0.7, top_p=0.9, seed=0),
                "temperature 1.5, top-k 10": dict(temperature=1.5, top_k=10, seed=0)}
    for name, kwargs in settings.items():
        text = model.generate_kv(opening, tokenizer=tokenizer, max_new_tokens=70, **kwargs)
        print(f"--- {name}\\n{text}\\n")
    """, "nbval-ignore-output", "skip-grade"),
    md(r"""
    ## A story from the shipped checkpoint

    The same call that `python -m llama3 generate "Once upon a time"` makes on the command line (which prints
    the tokens as they come).
    """),
    code("""
    story = model.generate_kv("Once upon a time", tokenizer=tokenizer, max_new_tokens=250, temperature=0.8,
                              top_p=0.95, seed=42)
    print(story)
    """, "nbval-ignore-output", "skip-grade"),
    md(r"""
    ## Hand-over: `llama3.generation`

    The package's `top_p_filter`, `top_k_filter` and `sample_next_token` are the functions you wrote;
    `Llama3.generate` and `Llama3.generate_kv` wrap your loop with what an application needs: text or token
    prompts, left-padded batches of prompts, a stop at EOS per sequence, a `seed`, streaming, and checks of the
    arguments with clear errors.
    """),
    code("""
    from llama3.generation import sample_next_token as reference_sample
    from llama3.generation import top_p_filter as reference_top_p

    torch.manual_seed(0)
    logits = 3 * torch.randn(4, 100)
    print("top_p_filter == llama3's:", torch.equal(top_p_filter(logits, 0.8), reference_top_p(logits, 0.8)))
    greedy_same = torch.equal(sample_next_token(logits, 0), reference_sample(logits, 0))
    print("greedy sample_next_token == llama3's:", greedy_same)
    batch = model.generate_kv(["Once upon a time", "The dog was"], tokenizer=tokenizer, max_new_tokens=20,
                              temperature=0)
    print(f"a batch of {len(batch)} prompts, left-padded inside generate_kv")
    """, "uses-exercise"),
    md(r"""
    That completes the course: from rotary embeddings (01) to a model that writes stories. Where to go next:
    train a bigger model with `python -m llama3 train` (notebook 07), load Meta's Llama 3.2 1B into the same
    class (notebook 06 and the README's section *Real Llama 3 weights*), or read `llama3/` from top to bottom:
    every file is one of the notebooks.
    """),
]

if __name__ == "__main__":
    write("08_generation", cells)
