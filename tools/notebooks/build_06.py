"""Build solutions/06_llama3.ipynb: the whole model, its loss, and real weights (llama3/model.py).

    .venv/bin/python tools/notebooks/build_06.py
    nice -n 10 .venv/bin/jupyter nbconvert --to notebook --execute --inplace solutions/06_llama3.ipynb
    .venv/bin/python tools/make_exercises.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbbuild_late import check, code, exercise, md, versions, write  # noqa: E402

cells = [
    md(r"""
    # 06 · Llama 3: the whole model

    Notebook 05 built one `DecoderLayer`. A Llama 3 model is a token embedding, a stack of those layers, a final
    `RMSNorm` and a linear output head, plus the loss it is trained with. That is all: the model you write here
    is the real architecture, and at the end of the notebook it runs with weights converted from a Hugging Face
    `transformers` model and gives the same logits, to about $10^{-7}$.

    **Learning goals**

    1. Write the causal language-modelling loss with the label convention of `transformers`: the shift happens
       inside the loss, `-100` and padding are ignored.
    2. Write `Llama3`: embedding → layers → norm → head, with positions, masks and KV caches handled once for all
       layers.
    3. Count the parameters and see where they live (a figure), from our toy model up to Llama 3 8B.
    4. Load weights from `transformers` into your class and get the same logits.
    """),
    versions(),
    code("""
    %matplotlib inline
    import math
    import tempfile
    import warnings

    import matplotlib.pyplot as plt
    import torch
    import torch.nn.functional as F
    from torch import nn

    from llama3 import DecoderLayer, KV_Cache, ModelArgs, RMSNorm, RoPE, build_attention_mask, load_tokenizer
    from llama3.checks import check_llama3, check_loss
    from llama3.model import CausalLMOutput
    """),
    md(r"""
    ## The idea

    Token ids $x_1, \dots, x_T$ go in; for every position $t$ the model outputs **logits** $z_t \in
    \mathbb{R}^{V}$, an unnormalised score for each of the $V$ tokens of the vocabulary that could come next:

    $$
    h^{(0)} = E[x], \qquad h^{(\ell)} = \operatorname{DecoderLayer}_\ell\big(h^{(\ell-1)}\big)\ (\ell = 1..L),
    \qquad z = W_{\text{out}}\, \operatorname{RMSNorm}\big(h^{(L)}\big).
    $$

    Three things are computed **once per forward pass** and shared by all layers:

    - the rotation angles `cos, sin = rope.cos_sin(positions)` (notebook 01), for positions
      `start_pos, ..., start_pos + T - 1`;
    - the attention mask: `None` for plain causal attention (the fast path), or
      `build_attention_mask(attention_mask, T, start_pos)` (notebook 04) when the batch is padded or when several
      new tokens sit on top of a cache;
    - with a KV cache, layer $i$ gets its own `kv_caches[i]` (notebook 03).

    The final norm matters: the residual stream grows with depth (notebook 05's figure), and the head expects a
    normalised input. Small Llamas (3.2 1B and 3B) **tie** $W_{\text{out}}$ to the embedding matrix $E$ to save
    parameters; `ModelArgs.tie_embeddings` says so.
    """),
    code("""
    tokenizer = load_tokenizer()  # GPT-2's byte-level BPE + "[PAD]", vendored with the course: works offline
    args = ModelArgs(
        vocab_size=len(tokenizer),  # 50,258 tokens
        tokenizer=tokenizer,        # gives pad_token_id
        d_model=64,                 # width of the residual stream
        heads=4,                    # query heads (head_dim 16)
        group_size=2,               # 2 query heads per K/V head
        num_layers=4,               # decoder layers
        max_seq_len=128,            # longest sequence
        multiple_of=32,             # FFN hidden size rounding (notebook 02)
    )
    print(f"vocab_size={args.vocab_size}, pad_token_id={args.pad_token_id}, head_dim={args.head_dim}, "
          f"n_kv_heads={args.n_kv_heads}, hidden_dim={args.hidden_dim}")
    """),
    md(r"""
    ## Exercise 1: the loss

    A language model is trained to predict token $t+1$ from tokens $\le t$. With `labels = input_ids` (what
    `transformers` expects), the logits at position $t$ are scored against the label at position $t+1$: the
    **shift** happens inside the loss. Over the set $\mathcal{C}$ of positions that count,

    $$
    \mathcal{L} = -\frac{1}{|\mathcal{C}|} \sum_{(b,t) \in \mathcal{C}}
    \log \operatorname{softmax}(z_{b,t})_{\,y_{b,t+1}} .
    $$

    A position counts unless its target is `-100` (`transformers`' "ignore" label, e.g. for a prompt you do not
    want to train on) or padding is involved: with an `attention_mask` (1 = real token, 0 = padding), a target
    that is padding is ignored, and so is a prediction made *from* a padding position (under left padding, the
    first real token has no real context). One mean over all counted tokens of the batch, not a mean of row
    means. Here is the shift on a real sentence:
    """),
    code("""
    ids = tokenizer("Once upon a time there was a little robot.")["input_ids"]
    print(f"{'t':>2}  {'input x_t':>12}  {'target y_t+1':>12}")  # GPT-2 tokens carry their leading space
    for t in range(len(ids) - 1):
        print(f"{t:>2}  {tokenizer.decode(ids[t])!r:>12}  {tokenizer.decode(ids[t + 1])!r:>12}")
    """),
    md(r"""
    Write `causal_lm_loss(logits, labels, attention_mask=None)`: `logits` `(B, T, V)`, `labels` and
    `attention_mask` `(B, T)`; return a scalar. `F.cross_entropy(..., ignore_index=-100)` does the averaging
    over counted tokens for you once the ignored targets are set to `-100`. Compute it in float32 (`.float()`):
    the logits may be bfloat16 in a real model.
    """),
    exercise("loss", '''
    def causal_lm_loss(logits, labels, attention_mask=None):
        """Mean cross-entropy of predicting labels[:, t+1] from logits[:, t]; -100 and padding are ignored."""
        ### BEGIN SOLUTION
        ### HINT: position t predicts label t+1; ignore -100 and positions whose target or input is padding
        targets = labels[:, 1:]                                      # (B, T-1): the token after each position
        if attention_mask is not None:
            real = attention_mask.bool()
            counted = real[:, 1:] & real[:, :-1]                     # target real AND predicted from a real token
            targets = targets.masked_fill(~counted, -100)
        vocab = logits.shape[-1]
        return F.cross_entropy(logits[:, :-1].reshape(-1, vocab).float(), targets.reshape(-1), ignore_index=-100)
        ### END SOLUTION
    '''),
    check("loss", "check_loss(causal_lm_loss)"),
    md(r"""
    A quick sanity check you can always do: a model that knows nothing predicts the uniform distribution, and
    its loss is $\log V$. An untrained model should start close to that.
    """),
    code("""
    V = args.vocab_size
    uniform_logits = torch.zeros(1, 8, V)
    labels = torch.tensor([ids[:8]])
    print(f"loss of uniform predictions = {causal_lm_loss(uniform_logits, labels).item():.4f}, "
          f"log V = {math.log(V):.4f}")
    """, "uses-exercise"),
    md(r"""
    ## Exercise 2: `Llama3`

    Write the model with the reference's constructor and forward signature.

    **`__init__(self, args)`** creates, with exactly these names (Meta's checkpoint names, which the checker and
    the converters rely on): `tok_embeddings = nn.Embedding(vocab_size, d_model)`,
    `rope = RoPE(head_dim, rope_theta, rope_scaling)`, `layers = nn.ModuleList` of `num_layers` `DecoderLayer`s,
    `norm = RMSNorm(d_model, eps=norm_eps)` and `output = nn.Linear(d_model, vocab_size, bias=False)`; when
    `args.tie_embeddings`, make `output.weight` the **same** parameter as `tok_embeddings.weight`. The
    initialisation after your block is given (GPT-2's: normal(0, 0.02), with the projections that write into the
    residual stream scaled down by $\sqrt{2L}$).

    **`forward(tgt, attention_mask=None, labels=None, *, kv_caches=None, start_pos=0, position_ids=None,
    logits_to_keep=0)`** returns `CausalLMOutput(logits, loss)`:

    1. if `attention_mask` (shape `(B, start_pos + T)`) has no zeros, drop it (`None`): nothing is padded;
    2. positions: `position_ids` if given; else `torch.arange(start_pos, start_pos + T)`; with padding, count
       from each row's first real token, `(attention_mask.cumsum(-1) - 1).clamp(min=0)[:, start_pos:]`, so that
       a left-padded row is numbered as if it were alone;
    3. `cos, sin = self.rope.cos_sin(positions)`;
    4. the mask: `build_attention_mask(attention_mask, T, start_pos)` when there is padding, or when
       `start_pos > 0 and T > 1` (a chunk on top of a cache); otherwise `None`;
    5. embed, run every layer (`kv_caches[i]` and `start_pos` to layer `i`), final norm;
    6. `logits_to_keep > 0` keeps only the last positions before the head (generation needs one);
    7. the loss when `labels` are given: `self.loss(logits, labels, attention_mask)`; else `None`.
    """),
    exercise("llama3", '''
    class Llama3(nn.Module):
        """The Llama 3 decoder-only language model (Grattafiori et al., 2024, "The Llama 3 Herd of Models")."""

        def __init__(self, args: ModelArgs):
            super().__init__()
            self.args = args
            # names fixed: tok_embeddings, rope, layers, norm, output (tied to tok_embeddings if tie_embeddings)
            ### BEGIN SOLUTION
            ### HINT: the five modules named above; tie the head to the embedding when args.tie_embeddings
            self.tok_embeddings = nn.Embedding(args.vocab_size, args.d_model)
            self.rope = RoPE(args.head_dim, args.rope_theta, args.rope_scaling)
            self.layers = nn.ModuleList(DecoderLayer(args) for _ in range(args.num_layers))
            self.norm = RMSNorm(args.d_model, eps=args.norm_eps)
            self.output = nn.Linear(args.d_model, args.vocab_size, bias=False)
            if args.tie_embeddings:
                self.output.weight = self.tok_embeddings.weight  # one parameter, two uses
            ### END SOLUTION
            self.apply(self._init_weights)
            for name, param in self.named_parameters():  # GPT-2's scaled init for the residual projections
                if name.endswith(("attention.wo.weight", "feed_forward.w2.weight")):
                    nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * args.num_layers))

        @staticmethod
        def _init_weights(module):
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)

        loss = staticmethod(causal_lm_loss)  # Exercise 1

        def forward(self, tgt, attention_mask=None, labels=None, *, kv_caches=None, start_pos=0, position_ids=None,
                    logits_to_keep=0):
            """tgt (B, T) token ids -> CausalLMOutput(logits (B, T, vocab), loss or None)."""
            ### BEGIN SOLUTION
            ### HINT: positions -> cos, sin; mask only when padded or a chunk on a cache; layers; norm; head; loss
            batch, seq = tgt.shape
            if attention_mask is not None and bool(attention_mask.all()):
                attention_mask = None  # nothing is padded: plain causal attention, the fast path
            if position_ids is None:
                if attention_mask is None:
                    position_ids = torch.arange(start_pos, start_pos + seq, device=tgt.device)  # (T,)
                else:  # count from each row's first real token
                    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, start_pos:]  # (B, T)
            cos, sin = self.rope.cos_sin(position_ids)  # (1 or B, T, 1, head_dim/2)
            mask = None
            if attention_mask is not None or (start_pos > 0 and seq > 1):
                mask = build_attention_mask(attention_mask, seq, start_pos).to(tgt.device)  # (B or 1, 1, T, S)

            h = self.tok_embeddings(tgt)  # (B, T, d_model)
            for i, layer in enumerate(self.layers):
                h = layer(h, cos, sin, mask, None if kv_caches is None else kv_caches[i], start_pos)
            h = self.norm(h)
            if logits_to_keep:
                h = h[:, -logits_to_keep:]
            logits = self.output(h)  # (B, T, vocab_size)
            loss = None if labels is None else self.loss(logits, labels, attention_mask)
            return CausalLMOutput(logits=logits, loss=loss)
            ### END SOLUTION

        def num_parameters(self):
            return sum(p.numel() for p in self.parameters())  # parameters() lists a tied weight once
    '''),
    check("llama3", "check_llama3(Llama3)"),
    md(r"""
    ## Shapes, and the loss of an untrained model

    One sentence through your model: logits for every position and every token of the vocabulary. At
    initialisation the logits are nearly equal, so the loss sits close to $\log V$.
    """),
    code("""
    torch.manual_seed(0)
    model = Llama3(args).eval()
    tgt = torch.tensor([ids])                             # (1, T)
    with torch.no_grad():
        out = model(tgt, labels=tgt)
    print("tgt    ", tuple(tgt.shape))
    print("logits ", tuple(out.logits.shape), "(batch, seq, vocab)")
    print(f"loss    {out.loss.item():.3f}   (log V = {math.log(args.vocab_size):.3f})")
    with torch.no_grad():
        last = model(tgt, logits_to_keep=1).logits
    print("logits_to_keep=1 ->", tuple(last.shape), "equal to the last position:",
          torch.allclose(last[:, -1], out.logits[:, -1], atol=1e-6))
    """, "uses-exercise"),
    md(r"""
    ## Where the parameters live

    Count them by part. Building a model on PyTorch's `meta` device allocates no memory, so we can also build
    the real Llama 3.2 1B and Llama 3 8B configurations with **your** class and compare with Meta's published
    counts (1.24 B and 8.03 B).
    """),
    code('''
    def parameter_breakdown(model):
        """Parameters per part of the model (a tied head counts once, with the embedding)."""
        parts = {"embedding": 0, "attention": 0, "feed-forward": 0, "norms": 0, "output head": 0}
        for name, p in model.named_parameters():  # named_parameters() skips the second name of a tied weight
            if name.startswith("tok_embeddings"):
                parts["embedding"] += p.numel()
            elif ".attention." in name:
                parts["attention"] += p.numel()
            elif ".feed_forward." in name:
                parts["feed-forward"] += p.numel()
            elif name.startswith("output"):
                parts["output head"] += p.numel()
            else:
                parts["norms"] += p.numel()
        return parts


    llama_32_1b = ModelArgs(vocab_size=128256, d_model=2048, heads=32, group_size=4, num_layers=16,
                            max_seq_len=131072, ffn_hidden_dim=8192, tie_embeddings=True,
                            rope_scaling={"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                          "original_max_position_embeddings": 8192})
    llama_3_8b = ModelArgs(vocab_size=128256, d_model=4096, heads=32, group_size=4, num_layers=32,
                           max_seq_len=8192, ffn_hidden_dim=14336)
    with torch.device("meta"):  # shapes only, no memory
        big_models = {"Llama 3.2 1B": Llama3(llama_32_1b), "Llama 3 8B": Llama3(llama_3_8b)}
    breakdowns = {"our toy model": parameter_breakdown(model)}
    breakdowns.update({name: parameter_breakdown(m) for name, m in big_models.items()})
    for name, parts in breakdowns.items():
        print(f"{name:14s} {sum(parts.values()):>14,} parameters")
    ''', "uses-exercise"),
    code("""
    fig, ax = plt.subplots(figsize=(10, 3))
    names = list(breakdowns)
    left = [0.0] * len(names)
    for part in ["embedding", "attention", "feed-forward", "norms", "output head"]:
        shares = [100 * breakdowns[n][part] / sum(breakdowns[n].values()) for n in names]
        ax.barh(names, shares, left=left, label=part)
        left = [a + b for a, b in zip(left, shares)]
    ax.set_xlabel("% of the parameters")
    ax.invert_yaxis()
    ax.legend(ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    ax.set_title("Where the parameters live")
    plt.tight_layout()
    plt.show()
    """, "uses-exercise"),
    md(r"""
    Our toy model is almost all vocabulary: 50,258 rows of embedding and head, a few layers of width 64. As the
    width and depth grow, the layers take over; in Llama 3 8B the feed-forward blocks hold most of the
    parameters, and attention is small thanks to grouped-query attention (8 K/V heads for 32 query heads). The
    1B model ties its head to the embedding, which saves 263 M parameters, a fifth of the model.

    ## Decoding with a cache, and why positions are relative

    Notebook 03's cache, one per layer: a prefill of the first tokens, then a chunk, then one token at a time,
    gives the same logits as the whole sentence at once. And because RoPE encodes only the *difference* between
    positions (notebook 01), shifting every position by the same amount leaves the logits unchanged: only
    positions that are inconsistent *with each other* (a new token numbered 0 on top of a cache, say) change
    anything. That is why the checker tests positions through the cache.
    """),
    code("""
    T = tgt.shape[1]
    caches = [KV_Cache(1, args.n_kv_heads, T, args.head_dim) for _ in range(args.num_layers)]
    with torch.no_grad():
        full = model(tgt).logits
        pieces = [model(tgt[:, :5], kv_caches=caches, start_pos=0).logits,   # prefill 5 tokens
                  model(tgt[:, 5:8], kv_caches=caches, start_pos=5).logits]  # a chunk of 3 on top
        for pos in range(8, T):                                              # then one token at a time
            pieces.append(model(tgt[:, pos:pos + 1], kv_caches=caches, start_pos=pos).logits)
        cached = torch.cat(pieces, dim=1)
        shifted = model(tgt, position_ids=torch.arange(100, 100 + T)).logits
    print("cached == full            :", torch.allclose(cached, full, atol=1e-5))
    print("positions + 100 == full   :", torch.allclose(shifted, full, atol=1e-4))
    """, "uses-exercise"),
    md(r"""
    ## Padding

    To run sentences of different lengths in one batch, the shorter ones are padded on the **left** (so every
    row's newest token is in the last column, which generation needs). The mask hides the padding, and the real
    tokens of each row get the same logits as the row alone.
    """),
    code("""
    texts = ["The cat sat on the mat.", "Once upon a time there was a little robot."]
    batch = tokenizer(texts, padding=True, padding_side="left", return_tensors="pt")
    print("input_ids     ", tuple(batch.input_ids.shape))
    print("attention_mask", batch.attention_mask.tolist()[0])
    with torch.no_grad():
        padded = model(batch.input_ids, batch.attention_mask, labels=batch.input_ids)
        alone = model(batch.input_ids[:1, batch.attention_mask[0].bool()]).logits[0]
    real = batch.attention_mask[0].bool()
    print("row 0, real tokens, padded batch == alone:", torch.allclose(padded.logits[0, real], alone, atol=1e-5))
    print(f"loss over real tokens only: {padded.loss.item():.3f}")
    """, "uses-exercise"),
    md(r"""
    ## Loading weights: the same logits as `transformers`

    Checkpoints are dictionaries from parameter names to tensors. Because your class uses Meta's names, a state
    dict written by the reference package loads straight into it. Hugging Face stores the same weights under
    other names (`model.layers.0.self_attn.q_proj.weight` for `layers.0.attention.wq.weight`) and, because it
    pairs RoPE dimensions differently (notebook 01), with the rows of $W_q$ and $W_k$ permuted.
    `llama3.Llama3.from_hf` undoes both. So: build a small random `transformers.LlamaForCausalLM`, convert it,
    load the result into **your** class, and compare logits and loss.
    """),
    code("""
    from transformers import LlamaConfig, LlamaForCausalLM

    from llama3 import Llama3 as ReferenceLlama3

    hf_config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                            rope_theta=500000.0, tie_word_embeddings=False)
    torch.manual_seed(0)
    hf_model = LlamaForCausalLM(hf_config).eval()           # random weights, transformers' own code
    converted = ReferenceLlama3.from_hf(hf_model)          # names mapped, q/k rows un-permuted
    yours = Llama3(converted.args).eval()
    yours.load_state_dict(converted.state_dict())          # Meta's names: loads one to one
    print("converted args:", f"d_model={converted.args.d_model}, heads={converted.args.heads}, "
          f"group_size={converted.args.group_size}, ffn_hidden_dim={converted.args.ffn_hidden_dim}")

    torch.manual_seed(1)
    ids_hf = torch.randint(0, hf_config.vocab_size, (2, 24))
    with torch.no_grad():
        theirs = hf_model(ids_hf, labels=ids_hf)
        ours = yours(ids_hf, labels=ids_hf)
    logits_difference = (ours.logits - theirs.logits).abs().max().item()
    loss_difference = abs(ours.loss.item() - theirs.loss.item())
    print("logits equal (within 1e-5):", logits_difference < 1e-5)
    print("loss equal (within 1e-6):  ", loss_difference < 1e-6)
    """, "uses-exercise"),
    code("""
    print(f"max |yours - transformers| over the logits: {logits_difference:.1e}")
    print(f"|loss difference|: {loss_difference:.1e}")
    """, "uses-exercise", "nbval-ignore-output"),
    md(r"""
    The difference is float32 rounding (the two implementations add numbers in a different order), about
    $10^{-7}$. Saving and loading in the package's own format is one call each way; the folder holds
    `config.json` (the `ModelArgs`) and `model.safetensors`:
    """),
    code("""
    with tempfile.TemporaryDirectory() as folder:
        converted.save_pretrained(folder)
        reloaded = ReferenceLlama3.from_pretrained(folder).eval()
        with torch.no_grad():
            same = torch.equal(reloaded(ids_hf).logits, converted(ids_hf).logits)
    print("save_pretrained -> from_pretrained gives identical logits:", same)
    """, "uses-exercise"),
    md(r"""
    ## Loading Llama 3.2 1B from the hub

    Everything you built is the real Llama 3 architecture, so Meta's weights fit it. If you are online and have
    accepted Meta's licence for [meta-llama/Llama-3.2-1B](https://huggingface.co/meta-llama/Llama-3.2-1B) (then
    `hf auth login` once), set `RUN_HUB_DEMO = True` below: it downloads 2.5 GB, loads the weights into `Llama3`
    (about 2.5 GB of RAM in bfloat16: the file is memory-mapped, not copied) and lets the model finish a
    sentence. The same call loads Llama 3.1 8B (16 GB) or any Llama 3.x checkpoint in the Hugging Face format;
    the README (section *Real Llama 3 weights*) has the details (Meta's own format, memory, parity).
    `add_pad=False` matters: Llama's tokenizer must not get the course's extra `[PAD]` token, whose id would fall
    outside the embedding.
    """),
    code("""
    RUN_HUB_DEMO = False  # True downloads meta-llama/Llama-3.2-1B (2.5 GB, gated: accept the licence, log in first)

    if RUN_HUB_DEMO:
        from huggingface_hub import snapshot_download

        folder = snapshot_download("meta-llama/Llama-3.2-1B", ignore_patterns=["original/*"])
        llama = ReferenceLlama3.from_hf(folder, max_seq_len=4096)  # bfloat16 weights, memory-mapped
        llama_tokenizer = load_tokenizer(folder, add_pad=False)    # Llama 3's 128,256-token tokenizer
        print(f"{llama.num_parameters() / 1e9:.2f}B parameters, {llama.tok_embeddings.weight.dtype}")
        print(llama.generate_kv("The key idea of rotary position embeddings is", tokenizer=llama_tokenizer,
                                max_new_tokens=40, temperature=0))
    else:
        print("Skipped: set RUN_HUB_DEMO = True to download and run Llama 3.2 1B.")
    """, "skip-grade"),
    md(r"""
    ## Hand-over: `llama3.Llama3`

    The package's `Llama3` is the class you wrote, plus conveniences: input validation with clear errors,
    `save_pretrained` / `from_pretrained`, the converters (`from_hf`, `to_hf`, `save_hf`, `from_meta`) and the
    generation loops `generate` and `generate_kv`. Your weights load into it unchanged:
    """),
    code("""
    reference = ReferenceLlama3(args).eval()
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        print("reference == yours:", torch.allclose(reference(tgt).logits, model(tgt).logits, atol=1e-6))
    print(f"{reference.num_parameters():,} parameters")
    """, "uses-exercise"),
    md(r"""
    An untrained model's output is noise. **Notebook 07** trains this model on TinyStories (the loss you wrote
    is what it minimises), and **notebook 08** writes the generation loop with the KV cache and the sampling
    rules (temperature, top-k, top-p) that turn logits into stories.
    """),
]

if __name__ == "__main__":
    write("06_llama3", cells)
