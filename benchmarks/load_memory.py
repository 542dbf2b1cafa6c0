"""Peak memory of loading a checkpoint, against the checkpoint's file size.

Writes a random ~50M-parameter model (the course's TinyStories shape, float32) in the Hugging Face format
(save_hf: config.json + model.safetensors) and in Meta's (params.json + consolidated.00.pth), then loads it in a fresh
process per loader and reads the process's peak resident memory (VmHWM) after one forward pass and a read of every
weight (memory-mapped pages count once read). It prints, for each loader, the growth of peak memory over the memory
after the imports and a warm-up, divided by the file size: 1.0 means the weights exist once.

Loaders compared in the same run:
  llama3.from_hf         safetensors memory-mapped, tensors assigned into a model built on the "meta" device
  llama3.from_meta       torch.load(mmap=True), the same assignment
  transformers           AutoModelForCausalLM.from_pretrained on the same folder (the named alternative)
  naive                  Llama3(args) with a random init, then load_state_dict(torch.load(consolidated.00.pth)):
                         what loading costs without the meta device and memory-mapping (two copies)

Linux only (reads /proc/self/status). Usage: python benchmarks/load_memory.py [--folder DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

LOADERS = ("llama3.from_hf", "llama3.from_meta", "transformers", "naive")


def memory_kib() -> dict[str, int]:
    """VmRSS (resident now), VmHWM (peak resident), RssAnon and RssFile from /proc/self/status, in KiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0])
    return fields


def model_args():
    from llama3 import ModelArgs

    # The course's TinyStories model: 50,258-token GPT-2 vocabulary (+[PAD]), 32 layers of width 256, untied.
    return ModelArgs(vocab_size=50258, d_model=256, heads=4, group_size=2, num_layers=32, max_seq_len=256)


def write_checkpoints(folder: Path) -> tuple[int, int]:
    """Save one seeded random model in both formats; returns (parameters, safetensors file size in bytes)."""
    import torch

    from llama3 import Llama3
    from llama3.convert import atomic_save

    torch.manual_seed(0)
    model = Llama3(model_args())
    model.save_hf(folder / "hf")
    meta = folder / "meta"
    meta.mkdir(exist_ok=True)
    args = model.args
    params = {"dim": args.d_model, "n_layers": args.num_layers, "n_heads": args.heads, "n_kv_heads": args.n_kv_heads,
              "vocab_size": args.vocab_size, "multiple_of": args.multiple_of, "norm_eps": args.norm_eps,
              "rope_theta": args.rope_theta}
    (meta / "params.json").write_text(json.dumps(params))
    atomic_save(model.state_dict_for_saving(), meta / "consolidated.00.pth")
    return model.num_parameters(), (folder / "hf" / "model.safetensors").stat().st_size


def child(loader: str, folder: Path) -> None:
    """Runs in a fresh process: import, measure, load, run one forward pass, measure again; prints JSON."""
    import torch

    from llama3 import Llama3

    if loader == "transformers":
        from transformers import AutoModelForCausalLM
    torch.set_num_threads(1)
    # Warm-up on a tiny model, so that torch's one-off costs are not counted as loading: its kernels, and the
    # "meta" device's Python machinery (about 70 MiB of imported modules, whatever the checkpoint's size).
    from llama3 import ModelArgs

    tiny_args = ModelArgs(vocab_size=64, d_model=32, heads=4, group_size=2, num_layers=1, max_seq_len=16)
    with torch.no_grad():
        Llama3(tiny_args)(torch.zeros(1, 8, dtype=torch.long))
    with torch.device("meta"):
        Llama3(tiny_args)
    before = memory_kib()
    if loader == "llama3.from_hf":
        model = Llama3.from_hf(folder / "hf")
    elif loader == "llama3.from_meta":
        model = Llama3.from_meta(folder / "meta", max_seq_len=256)
    elif loader == "transformers":
        model = AutoModelForCausalLM.from_pretrained(folder / "hf")
    else:
        model = Llama3(model_args())  # random init: the first copy
        model.load_state_dict(torch.load(folder / "meta" / "consolidated.00.pth"))  # a second copy, copied in
    loaded = memory_kib()
    with torch.no_grad():
        model(torch.zeros(1, 8, dtype=torch.long))
        for param in model.parameters():  # the forward reads one embedding row: read every weight, so that
            param.sum()  # every memory-mapped page is resident
    after = memory_kib()
    print(json.dumps({"before": before, "loaded": loaded, "after": after}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=None, help="where to write the checkpoints (default: temp)")
    parser.add_argument("--child", choices=LOADERS, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        child(options.child, options.folder)
        return
    if not Path("/proc/self/status").is_file():
        sys.exit("This benchmark reads /proc/self/status and runs on Linux only.")

    with tempfile.TemporaryDirectory() as tmp:
        folder = options.folder or Path(tmp)
        n_params, file_bytes = write_checkpoints(folder)
        file_mib = file_bytes / 2**20
        print(f"checkpoint: {n_params / 1e6:.1f}M parameters, model.safetensors {file_mib:.0f} MiB (float32)")
        print(f"{'loader':<18} {'peak growth':>12} {'/ file size':>12} {'resident after':>16}  (anon + file-backed)")
        for loader in LOADERS:
            out = subprocess.run([sys.executable, __file__, "--child", loader, "--folder", str(folder)],
                                 capture_output=True, text=True, check=True)
            m = json.loads(out.stdout.strip().splitlines()[-1])
            peak = (m["after"]["VmHWM"] - m["before"]["VmRSS"]) / 1024
            anon = (m["after"]["RssAnon"] - m["before"]["RssAnon"]) / 1024
            mapped = (m["after"]["RssFile"] - m["before"]["RssFile"]) / 1024
            print(f"{loader:<18} {peak:>9.0f} MiB {peak / file_mib:>11.2f}x {anon:>7.0f} + {mapped:.0f} MiB")


if __name__ == "__main__":
    main()
