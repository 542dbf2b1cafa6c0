"""Speed of llama3 against transformers.LlamaForCausalLM holding the same weights, measured in the same run.

    python benchmarks/bench.py                      # CPU, float32: the README's table
    python benchmarks/bench.py --quick              # fewer tokens and repeats, for a smoke test
    python benchmarks/bench.py --device cuda --dtype bfloat16

Every figure is a ratio of two measurements taken in this run, alternating the two sides and keeping the best of
several repeats (the machine is shared and noisy). Prints a markdown table, writes it with the raw numbers to
benchmarks/results/<device>.{md,json} and a bar plot to benchmarks/results/<device>.png; --update-readme
replaces the table between the <!-- bench:<device>-<dtype>[-amd|-intel]:start/end --> markers in README.md (on the
CPU, one table per vendor: both are kept).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_name, cpu_vendor, update_readme  # noqa: E402
from llama3 import Llama3, ModelArgs  # noqa: E402
from llama3.fast import FastDecoder  # noqa: E402

SEED_CONFIG = dict(vocab_size=50258, d_model=256, heads=4, group_size=2, num_layers=32, max_seq_len=256,
                   pad_token_id=50257)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_of(fns: dict, repeats: int, device) -> dict:
    """Run each function `repeats` times, alternating between them; keep each one's best wall time."""
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def copy_bandwidth(device, nbytes: int = 2**30, repeats: int = 5) -> float:
    """Bytes per second of a large tensor copy (read + write), the memory-bandwidth yardstick."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = best_of({"copy": lambda: dst.copy_(src)}, repeats, device)
    return 2 * nbytes / times["copy"]


def decode_bytes_per_token(model, batch: int, context: int) -> int:
    """Bytes a decode step must read: every weight once (the embedding table only one row per sequence) plus the
    keys and values of the context."""
    args = model.args
    element = model.output.weight.element_size()
    weights = sum(p.numel() for p in model.parameters()) - model.tok_embeddings.weight.numel() * (
        0 if args.tie_embeddings else 1)
    weights += batch * args.d_model
    cache = 2 * args.num_layers * batch * args.n_kv_heads * context * args.head_dim
    return (weights + cache) * element


def bench_decode(model, hf, batch, new_tokens, repeats, device, compile_too=True):
    torch.manual_seed(0)
    prompt = torch.randint(0, model.args.vocab_size - 2, (batch, 16), device=device)
    ones = torch.ones_like(prompt)
    fns = {
        "llama3 generate_kv": lambda: model.generate_kv(prompt, max_new_tokens=new_tokens, temperature=0),
        "transformers generate": lambda: hf.generate(prompt, attention_mask=ones, max_new_tokens=new_tokens,
                                                     min_new_tokens=new_tokens, do_sample=False, pad_token_id=0),
    }
    if compile_too:
        fns["llama3 generate_kv compile"] = lambda: model.generate_kv(prompt, max_new_tokens=new_tokens,
                                                                      temperature=0, compile=True)
        model.generate_kv(prompt, max_new_tokens=4, temperature=0, compile=True)  # pay the compilation once
    with torch.inference_mode():
        ours = model.generate_kv(prompt, max_new_tokens=new_tokens, temperature=0)
        theirs = hf.generate(prompt, attention_mask=ones, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             do_sample=False, pad_token_id=0)
    same = bool(torch.equal(ours, theirs))
    times = best_of(fns, repeats, device)
    return {name: batch * new_tokens / t for name, t in times.items()}, same


def per_token_time(model, context: int, steps: int, repeats: int, device, compile: bool = False) -> float:
    """Seconds per decode step of ``FastDecoder`` at a given context length (prefill excluded). ``compile=True``
    times its torch.compile'd static-shape step, which ``generate_kv(compile=True)`` uses on CUDA only."""
    prompt = torch.randint(0, model.args.vocab_size - 2, (1, context), device=device)

    def run():
        decoder = FastDecoder(model, 1, context + steps, compile=compile)
        with torch.inference_mode():
            token = decoder.prefill(prompt).argmax(-1)
            sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                token = decoder.step(token).argmax(-1)
            sync(device)
            return (time.perf_counter() - start) / steps

    if compile:
        run()  # pay the compilation
    return min(run() for _ in range(repeats))


def bench_training(model, hf, batch, seq, steps, repeats, device, dtype):
    torch.manual_seed(0)
    tgt = torch.randint(0, model.args.vocab_size - 2, (batch, seq), device=device)
    model.train(), hf.train()
    opt_ours = torch.optim.AdamW(model.parameters(), lr=1e-4)
    opt_hf = torch.optim.AdamW(hf.parameters(), lr=1e-4)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else None

    def step(m, opt, call):
        for _ in range(steps):
            if autocast is not None:
                with autocast:
                    loss = call()
            else:
                loss = call()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    # return_logits=False: the head and the loss by chunks, as `python -m llama3 train` runs them (llama3/loss.py)
    fns = {"llama3": lambda: step(model, opt_ours, lambda: model(tgt, labels=tgt, return_logits=False).loss),
           "transformers": lambda: step(hf, opt_hf, lambda: hf(tgt, labels=tgt).loss)}
    times = best_of(fns, repeats, device)
    model.eval(), hf.eval()
    return {name: batch * seq * steps / t for name, t in times.items()}


def bench_attention(device, dtype, lengths, repeats):
    from llama3.attention import MultiHeadGQAttention
    from llama3.rope import RoPE

    rows = []
    for length in lengths:
        args = ModelArgs(vocab_size=8, d_model=256, heads=4, group_size=2, num_layers=1, max_seq_len=length,
                         use_flash=True)
        torch.manual_seed(0)
        flash = MultiHeadGQAttention(args).to(device, dtype).eval()
        manual = MultiHeadGQAttention(ModelArgs(**{**args.to_dict(), "use_flash": False})).to(device, dtype).eval()
        manual.load_state_dict(flash.state_dict())
        rope = RoPE(args.head_dim).to(device)
        x = torch.randn(8, length, 256, device=device, dtype=dtype)
        cos, sin = rope.cos_sin(torch.arange(length, device=device))
        with torch.inference_mode():
            times = best_of({"flash": lambda: flash(x, cos, sin), "manual": lambda: manual(x, cos, sin)},
                            repeats, device)
            err = (flash(x, cos, sin) - manual(x, cos, sin)).abs().max().item()
        rows.append((length, times["manual"] / times["flash"], err))
    return rows


def kv_cache_bytes(args: ModelArgs, batch: int, length: int, element: int) -> int:
    return 2 * args.num_layers * batch * args.n_kv_heads * length * args.head_dim * element


def hardware(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name()
    name = cpu_name()
    capability = os.environ.get("ATEN_CPU_CAPABILITY")
    return (f"{name}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
            + (f", ATEN_CPU_CAPABILITY={capability}" if capability else ""))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--quick", action="store_true", help="fewer tokens and repeats (a smoke test)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens per generate call (default 200)")
    parser.add_argument("--no-compile", action="store_true", help="skip generate_kv(compile=True)")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--decode-only", action="store_true", help="only the generation rows (e.g. to compare "
                        "ATEN_CPU_CAPABILITY=default|avx2|avx512 runs)")
    parser.add_argument("--update-readme", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    opts = parser.parse_args(argv)

    import transformers

    device = torch.device(opts.device)
    dtype = getattr(torch, opts.dtype)
    repeats = opts.repeats or (1 if opts.quick else 3)
    new_tokens = opts.new_tokens or (20 if opts.quick else 200)
    compile_too = not opts.no_compile
    results = {"date": datetime.date.today().isoformat(), "hardware": hardware(device), "device": device.type,
               "dtype": opts.dtype, "versions": {"python": platform.python_version(), "torch": torch.__version__,
                                                 "transformers": transformers.__version__}, "configs": {}}
    rows = []  # (measurement, ours, alternative, ratio, target)

    configs = {"seed config (d256, 32 layers)": ModelArgs(**SEED_CONFIG)}
    try:
        from llama3.pretrained import PRETRAINED_DIR

        if (PRETRAINED_DIR / "config.json").is_file():
            configs["shipped checkpoint"] = PRETRAINED_DIR
    except ImportError:
        pass

    bandwidth = copy_bandwidth(device)
    results["copy_bandwidth_GBps"] = bandwidth / 1e9
    for label, source in configs.items():
        torch.manual_seed(0)
        model = Llama3(source) if isinstance(source, ModelArgs) else Llama3.from_pretrained(source)
        model = model.to(device, dtype).eval()
        hf = model.to_hf().to(device, dtype).eval()
        entry = results["configs"][label] = {"parameters": model.num_parameters()}
        print(f"\n## {label}: {model.num_parameters() / 1e6:.1f} M parameters", flush=True)
        for batch in (1, 8):
            tps, same = bench_decode(model, hf, batch, new_tokens, repeats, device, compile_too)
            entry[f"decode_batch{batch}"] = {**tps, "identical_greedy_tokens": same}
            print(f"decode batch {batch}: " + ", ".join(f"{k} {v:.1f} tok/s" for k, v in tps.items())
                  + f"; identical greedy tokens: {same}", flush=True)
            base = tps["transformers generate"]
            target = "≥ 1.5×" if batch == 1 and label.startswith("seed") else ""
            rows.append((f"{label}: decode tok/s, batch {batch}, generate_kv", tps["llama3 generate_kv"], base,
                         "transformers generate", target))
            if compile_too:
                target = "≥ 2.5×" if batch == 1 and label.startswith("seed") else ""
                rows.append((f"{label}: decode tok/s, batch {batch}, generate_kv(compile=True)",
                             tps["llama3 generate_kv compile"], base, "transformers generate", target))
            if batch == 1:
                bound = bandwidth / decode_bytes_per_token(model, 1, 16 + new_tokens // 2)
                entry["bandwidth_bound_tok_s"] = bound
                best = max(v for k, v in tps.items() if k.startswith("llama3"))
                target = "≥ 50%" if label.startswith("seed") else ""
                rows.append((f"{label}: decode tok/s, batch 1, fastest path vs memory-bandwidth bound", best, bound,
                             f"bound ({decode_bytes_per_token(model, 1, 16) / 1e6:.0f} MB/token at "
                             f"{bandwidth / 1e9:.1f} GB/s)", target))
        if label.startswith("seed"):
            steps = 5 if opts.quick else 20
            short, long = (per_token_time(model, ctx, steps, repeats, device) for ctx in (16, 240))
            entry["per_token_ms"] = {"context16": short * 1e3, "context240": long * 1e3}
            rows.append(("seed config: decode time per token, context 240 vs context 16", long * 1e3, short * 1e3,
                         "context 16 (ms)", "≤ 1.3×"))
            if compile_too and device.type == "cpu":
                compiled = per_token_time(model, 16, steps, repeats, device, compile=True)
                entry["per_token_ms"]["context16_compiled_step"] = compiled * 1e3
                rows.append(("seed config: decode ms per token, FastDecoder's torch.compile'd static step vs its eager "
                             "step (> 1: compiled slower; why compile=True runs the eager step on the CPU)",
                             compiled * 1e3, short * 1e3, "eager step (ms)", ""))
            if opts.decode_only:
                continue
            n = 20 if opts.quick else 200
            prompt = torch.randint(0, 50000, (1, 16), device=device)
            times = best_of({"generate": lambda: model.generate(prompt, max_new_tokens=n, temperature=0),
                             "generate_kv": lambda: model.generate_kv(prompt, max_new_tokens=n, temperature=0)},
                            1, device)
            rows.append((f"seed config: {n} tokens, generate_kv vs generate (no cache), tok/s",
                         n / times["generate_kv"], n / times["generate"], "generate", ""))
            if not opts.skip_training:
                batch, seq = (2, 64) if opts.quick else (8, 256)
                tps = bench_training(model, hf, batch, seq, 1, max(1, repeats - 1), device, dtype)
                entry["training_tok_s"] = tps
                rows.append((f"seed config: training tok/s, batch {batch} × {seq}", tps["llama3"],
                             tps["transformers"], "transformers", "≥ 1.2×"))
            args = model.args
            mha = ModelArgs(**{**args.to_dict(), "group_size": 1})
            element = torch.finfo(dtype).bits // 8
            gqa_bytes, mha_bytes = (kv_cache_bytes(a, 1, args.max_seq_len, element) for a in (args, mha))
            entry["kv_cache_bytes"] = {"gqa": gqa_bytes, "mha": mha_bytes}
            rows.append((f"seed config: KV cache bytes at {args.max_seq_len} tokens, GQA (group 2) vs multi-head",
                         mha_bytes, gqa_bytes, "GQA (ratio = memory saved)", ""))

    lengths = () if opts.decode_only else (128, 256) if opts.quick else (128, 256, 512, 1024)
    for length, speedup, err in bench_attention(device, dtype, lengths, repeats):
        rows.append((f"attention forward, batch 8 × {length}: flash (SDPA) vs manual, max diff {err:.1e}",
                     speedup, 1.0, "manual = 1", ""))
    results["rows"] = [dict(zip(("measurement", "ours", "alternative", "alternative_name", "target"), r))
                       for r in rows]

    table = render(results, rows)
    print("\n" + table)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    key = f"{device.type}-{opts.dtype}" + (f"-{cpu_vendor()}" if device.type == "cpu" else "")
    stem = (key + ("-quick" if opts.quick else "") + ("-decode" if opts.decode_only else "")
            + (f"-{os.environ['ATEN_CPU_CAPABILITY']}" if os.environ.get("ATEN_CPU_CAPABILITY") else ""))
    (out / f"{stem}.md").write_text(table + "\n")
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(rows, out / f"{stem}.png", results)
    if opts.update_readme and not opts.quick:
        update_readme(f"bench:{key}", table)
    return 0


def render(results, rows) -> str:
    v = results["versions"]
    lines = [f"Measured {results['date']} on {results['hardware']}, {results['dtype']}, torch {v['torch']}, "
             f"transformers {v['transformers']}, python {v['python']}; copy bandwidth "
             f"{results['copy_bandwidth_GBps']:.1f} GB/s. Best of alternating repeats; produced by "
             f"`python benchmarks/bench.py`.", "",
             "| measurement | llama3 | alternative | ratio | target |", "| --- | ---: | ---: | ---: | --- |"]
    for name, ours, alt, alt_name, target in rows:
        ratio = ours / alt
        verdict = ""
        if target:
            bound = float(target.strip("≥≤ ×%")) / (100 if target.endswith("%") else 1)
            ok = ratio >= bound if target.startswith("≥") else ratio <= bound
            verdict = f"{target} {'met' if ok else 'MISSED'}"
        shown = f"{ratio:.0%}" if target.endswith("%") else f"{ratio:.2f}×"
        lines.append(f"| {name} | {fmt(ours)} | {fmt(alt)} ({alt_name}) | {shown} | {verdict} |")
    return "\n".join(lines)


def fmt(x) -> str:
    return f"{x:,.0f}" if x >= 1000 else f"{x:.1f}"


def plot(rows, path, results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r[0] for r in rows if not r[0].startswith("seed config: KV")]
    ratios = [r[1] / r[2] for r in rows if not r[0].startswith("seed config: KV")]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(names) + 1.5))
    ax.barh(range(len(names)), ratios, color="tab:blue")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_yticks(range(len(names)), [n if len(n) < 80 else n[:77] + "..." for n in names], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ratio (llama3 / alternative)")
    ax.set_title(f"llama3 vs alternatives, {results['hardware']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
