"""``python -m llama3 train`` in a child process, with one fault injected at a chosen moment (for test_faults.py).

    python -m tests.train_child [FAULT OPTIONS] -- TRAIN FLAGS...

The faults are real: a SIGINT or SIGKILL sent to this process, a file-size limit (RLIMIT_FSIZE) that makes the
kernel refuse writes past it with EFBIG, as a full disk refuses them with ENOSPC. Hooks only choose the moment.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import sys
import time
from pathlib import Path

import torch

from llama3 import train as train_module
from llama3.__main__ import run
from llama3.model import Llama3


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sigint-at-step", type=int, help="send SIGINT to this process during this step")
    parser.add_argument("--sigint-twice", action="store_true", help="send it twice (quit at once)")
    parser.add_argument("--sigkill-in-save-at-step", type=int, help="SIGKILL half-way through this checkpoint write")
    parser.add_argument("--pause-at-step", type=int, help="at this step, touch --ready and wait for --go")
    parser.add_argument("--ready", type=Path)
    parser.add_argument("--go", type=Path)
    parser.add_argument("--file-size-limit", type=int, help="RLIMIT_FSIZE in bytes (SIGXFSZ ignored: EFBIG)")
    parser.add_argument("--record-batches", type=Path, help="save the training inputs of this rank to FILE.rankN")
    args, train_argv = parser.parse_known_args()
    if train_argv[:1] == ["--"]:
        train_argv = train_argv[1:]

    real_step, steps = train_module.train_step, [0]

    def step_with_faults(*a, **kw):
        steps[0] += 1
        if steps[0] == args.sigint_at_step:
            os.kill(os.getpid(), signal.SIGINT)
            if args.sigint_twice:
                os.kill(os.getpid(), signal.SIGINT)
        if steps[0] == args.pause_at_step:
            args.ready.touch()
            deadline = time.monotonic() + 300
            while not args.go.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return real_step(*a, **kw)

    train_module.train_step = step_with_faults

    if args.sigkill_in_save_at_step is not None:
        real_save = torch.save

        def save_then_die(obj, f, *a, **kw):
            if isinstance(obj, dict) and obj.get("step") == args.sigkill_in_save_at_step:
                f.write(b"PK\x03\x04 half a checkpoint")
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, f, *a, **kw)

        train_module.torch.save = save_then_die

    if args.record_batches is not None:
        seen, real_forward = [], Llama3.forward

        def recording_forward(self, tgt, *a, **kw):
            if self.training:
                seen.append(tgt.detach().cpu().clone())
            return real_forward(self, tgt, *a, **kw)

        Llama3.forward = recording_forward

    if args.file_size_limit is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (args.file_size_limit, args.file_size_limit))

    status = run(["train", *train_argv])  # the console entry point: one-line errors
    if args.record_batches is not None:
        rank = os.environ.get("RANK", "0")
        torch.save(seen, f"{args.record_batches}.rank{rank}")
    return status


if __name__ == "__main__":
    sys.exit(main())
