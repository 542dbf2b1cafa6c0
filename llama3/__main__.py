"""The command line: ``python -m llama3 {train,eval,generate,grade}``; ``--help`` on each says more.

Expected errors (bad arguments, missing or unreadable files, a device that does not exist, a full disk) end with
one line, ``error: ...``, and exit status 1 (130 after Ctrl-C); ``--debug`` or ``LLAMA3_DEBUG=1`` shows the
traceback instead. Anything else is a bug, and keeps its traceback.
"""

from __future__ import annotations

import os
import sys

from llama3 import grade, pretrained, train

# Each command is looked up when it runs (not bound here), so that tests can replace a module's main.
COMMANDS = {
    "train": (lambda argv: train.main(argv), "train a model on TinyStories (single process or under torchrun)"),
    "eval": (lambda argv: pretrained.eval_main(argv), "loss, perplexity and bits per byte of a model on a text file"),
    "generate": (lambda argv: pretrained.generate_main(argv),
                 "continue a prompt with the shipped model (or --model FOLDER), streaming the tokens"),
    "grade": (lambda argv: grade.main(argv), "grade a course notebook (arguments go to llama3.grade)"),
}
EXPECTED_ERRORS = (OSError, ValueError, TypeError, RuntimeError)  # OSError covers FileNotFoundError, PermissionError
DEBUG_FLAG = "--debug"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    usage = f"python -m llama3 {{train,eval,generate,grade}} [--help] [{DEBUG_FLAG}]\n\n" + "\n".join(
        f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items())
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: {usage}")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"Unknown command {command!r}.\nusage: {usage}", file=sys.stderr)
        return 2
    return COMMANDS[command][0](rest) or 0


def run(argv: list[str] | None = None) -> int:
    """The console entry point: an expected error ends with a one-line message instead of a traceback, unless
    ``--debug`` is on the command line or ``LLAMA3_DEBUG=1`` is set."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = DEBUG_FLAG in argv or os.environ.get("LLAMA3_DEBUG", "") not in ("", "0")
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    try:
        return main(argv)
    except KeyboardInterrupt:
        if debug:
            raise
        print("\ninterrupted", file=sys.stderr)
        return 130
    except EXPECTED_ERRORS as err:
        if debug:
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"error: {message} (run with {DEBUG_FLAG} or LLAMA3_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(run())
