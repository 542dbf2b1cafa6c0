"""The command line: ``python -m llama3 {train,eval,generate,grade}``; ``--help`` on each says more."""

from __future__ import annotations

import sys


def _train(argv: list[str]) -> int:
    from llama3.train import main

    return main(argv)


def _grade(argv: list[str]) -> int:
    from llama3.grade import main  # imported only when asked: the grader pulls in the notebook machinery

    return main(argv) or 0


def _eval(argv: list[str]) -> int:
    from llama3.pretrained import eval_main

    return eval_main(argv)


def _generate(argv: list[str]) -> int:
    from llama3.pretrained import generate_main

    return generate_main(argv)


COMMANDS = {
    "train": (_train, "train a model on TinyStories (single process or under torchrun)"),
    "eval": (_eval, "loss, perplexity and bits per byte of a model on a text file"),
    "generate": (_generate, "continue a prompt with the shipped model (or --model FOLDER), streaming the tokens"),
    "grade": (_grade, "grade a course notebook (arguments go to llama3.grade)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    usage = "python -m llama3 {train,eval,generate,grade} [--help]\n\n" + "\n".join(
        f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items())
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: {usage}")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"Unknown command {command!r}.\nusage: {usage}", file=sys.stderr)
        return 2
    return COMMANDS[command][0](rest)


def run() -> int:
    """The console entry point: bad input ends with a one-line message instead of a traceback."""
    try:
        return main()
    except (FileNotFoundError, FileExistsError, ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(run())
