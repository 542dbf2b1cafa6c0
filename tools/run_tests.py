"""The README's test command: the three test parts, each reported even when an earlier one fails.

    python tools/run_tests.py                # tests/, then solutions/ (outputs compared), then notebooks/ (executed)
    python tools/run_tests.py solutions      # one part (or several: tests solutions notebooks)
    python tools/run_tests.py tests -- -k data -x   # arguments after -- go to every pytest run

The parts need different nbval modes (strict for solutions/, lax for notebooks/), and nbval's mode applies to a
whole pytest session, so each part is its own pytest run. They all run whatever happens; the output ends with one
line per part and a total in pytest's own summary format, and the exit status is 0 only when every part passed
(otherwise the first non-zero pytest status).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
NBVAL = ["--nbval-current-env", "--nbval-cell-timeout=300"]
PARTS = {  # name: (what it checks, pytest arguments)
    "tests": ("unit, parity and notebook-machinery tests", []),
    "solutions": ("solution notebooks, outputs compared (nbval)",
                  ["--nbval", *NBVAL, "--nbval-sanitize-with", "tests/nbval_sanitize.cfg", "solutions/"]),
    "notebooks": ("student notebooks, executed (nbval-lax)", ["--nbval-lax", *NBVAL, "notebooks/"]),
}
# pytest's closing line, e.g. "3 failed, 250 passed, 2 skipped, 1 warning in 412.31s (0:06:52)"
SUMMARY = re.compile(r"^=*\s*((?:\d+ [a-z]+(?:, )?)+|no tests ran) in ([\d.]+)s\b.*?=*$")
ORDER = ("failed", "passed", "skipped", "deselected", "xfailed", "xpassed", "warnings", "errors")


def run_part(name: str, extra: list[str]) -> tuple[int, str | None]:
    """Run one part with its output streamed through; return pytest's exit status and its summary line."""
    command = PYTEST + PARTS[name][1] + extra
    print(f"\n+ {' '.join(['python'] + command[1:])}", flush=True)
    summary = None
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1) as proc:
        for line in proc.stdout:
            sys.stdout.write(line)
            if SUMMARY.match(line.strip()):
                summary = line.strip().strip("= ")
    sys.stdout.flush()
    return proc.returncode, summary


def _children_cpu() -> float:
    """CPU seconds (user + system) used so far by finished child processes and theirs (pytest, its kernels): on a
    shared machine, a better measure of what a part costs than its wall time."""
    try:
        import resource  # not on Windows
    except ImportError:
        return float("nan")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def counts(summary: str) -> dict[str, int]:
    """'1 failed, 20 passed, 1 warning in 3.2s' -> {'failed': 1, 'passed': 20, 'warnings': 1}."""
    found: dict[str, int] = {}
    for number, word in re.findall(r"(\d+) ([a-z]+)", summary.split(" in ")[0]):
        word = {"warning": "warnings", "error": "errors"}.get(word, word)
        found[word] = found.get(word, 0) + int(number)
    return found


def total_line(summaries: list[str], seconds: float) -> str:
    """The parts' counts added up, worded as pytest words its own closing line."""
    total: dict[str, int] = {}
    for summary in summaries:
        for word, number in counts(summary).items():
            total[word] = total.get(word, 0) + number
    words = []
    for word in sorted(total, key=lambda w: ORDER.index(w) if w in ORDER else len(ORDER)):
        label = word[:-1] if total[word] == 1 and word in ("warnings", "errors") else word
        words.append(f"{total[word]} {label}")
    return f"{', '.join(words) or 'no tests ran'} in {seconds:.2f}s"


def main(argv: list[str]) -> int:
    names, extra = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    unknown = [n for n in names if n not in PARTS]
    if unknown:
        print(f"unknown part {unknown[0]!r}: choose from {', '.join(PARTS)} (default: all three)", file=sys.stderr)
        return 2
    names = names or list(PARTS)
    start = time.monotonic()
    results = {}
    for name in names:
        part_start, cpu_start = time.monotonic(), _children_cpu()
        code, summary = run_part(name, extra)
        results[name] = (code, summary, time.monotonic() - part_start, _children_cpu() - cpu_start)
    status = next((code for code, *_ in results.values() if code != 0), 0)
    print(f"\n{'=' * 30} test command: {len(names)} part{'s' * (len(names) > 1)} {'=' * 30}")
    for name, (code, summary, seconds, cpu) in results.items():
        verdict = "passed" if code == 0 else f"FAILED (pytest exit {code})"
        print(f"{name + '/':<11} {PARTS[name][0]:<46} {verdict}: {summary or 'no pytest summary'} "
              f"[wall {seconds:.0f} s, CPU {cpu:.0f} s]")
    summaries = [summary for _, summary, *_ in results.values() if summary]
    print(total_line(summaries, time.monotonic() - start))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
