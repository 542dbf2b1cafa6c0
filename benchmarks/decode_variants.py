"""Generation speed under each ``ATEN_CPU_CAPABILITY`` (the SIMD level torch's CPU kernels dispatch to), one table.

    python benchmarks/decode_variants.py                    # native, default, avx2, avx512: 4 runs of bench.py
    python benchmarks/decode_variants.py --capabilities native,avx2 --new-tokens 64

Each capability runs ``bench.py --decode-only`` in a fresh process (the variable is read when torch loads) with a
fresh ``TORCHINDUCTOR_CACHE_DIR``: inductor does not key its C++ kernels on the capability, so a cache filled under
one fails to compile under another. Every ratio is measured within one run, alternating the two sides. Writes
benchmarks/results/cpu-decode-variants-<vendor>.md; the question it answers is whether
``generate_kv(compile=True)`` is ever slower than the default ``generate_kv`` on this CPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_name, cpu_vendor  # noqa: E402


def run_capability(capability: str, new_tokens: int, repeats: int, threads: int, out: Path) -> dict:
    """bench.py --decode-only under ``capability`` ("native": the variable unset); its results JSON."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability != "native":
        env["ATEN_CPU_CAPABILITY"] = capability
    with tempfile.TemporaryDirectory() as cache:
        env["TORCHINDUCTOR_CACHE_DIR"] = cache
        folder = out / capability
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--decode-only", "--new-tokens",
                        str(new_tokens), "--repeats", str(repeats), "--out", str(folder)], env=env, check=True)
    return json.loads(next(folder.glob("cpu-float32*-decode*.json")).read_text())


def ratios(entry: dict, batch: int) -> str:
    tps = entry[f"decode_batch{batch}"]
    base = tps["transformers generate"]
    return f"{tps['llama3 generate_kv'] / base:.2f}× / {tps['llama3 generate_kv compile'] / base:.2f}×"


def render(results: dict[str, dict], new_tokens: int, threads: int) -> str:
    lines = [f"Generation under `ATEN_CPU_CAPABILITY` variants, measured {datetime.date.today()} on {cpu_name()}, "
             f"{threads} thread(s), float32, {new_tokens} new tokens; each row one `bench.py --decode-only` run "
             f"(alternating best-of repeats); produced by `python benchmarks/decode_variants.py`.", "",
             "| model | capability | batch 1: default / compile=True vs transformers | batch 8: default / "
             "compile=True vs transformers | identical greedy tokens | ms per token: eager step / compiled static "
             "step |", "| --- | --- | --- | --- | --- | --- |"]
    for capability, result in results.items():
        for label, entry in result["configs"].items():
            same = all(entry[f"decode_batch{b}"]["identical_greedy_tokens"] for b in (1, 8))
            per_token = entry.get("per_token_ms", {})
            step = (f"{per_token['context16']:.2f} / {per_token['context16_compiled_step']:.2f}"
                    if "context16_compiled_step" in per_token else "")
            lines.append(f"| {label} ({entry['parameters'] / 1e6:.1f}M) | {capability} | {ratios(entry, 1)} | "
                         f"{ratios(entry, 8)} | {'yes' if same else 'NO'} | {step} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capabilities", default="native,default,avx2,avx512")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    opts = parser.parse_args(argv)
    out = Path(opts.out)
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for capability in opts.capabilities.split(","):
            results[capability] = run_capability(capability, opts.new_tokens, opts.repeats, opts.threads,
                                                 Path(scratch))
    table = render(results, opts.new_tokens, opts.threads)
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"cpu-decode-variants-{cpu_vendor()}.md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
