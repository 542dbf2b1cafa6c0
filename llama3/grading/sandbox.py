"""Run one plan in an isolated kernel: a fresh folder, a scrubbed environment, rlimits, a supervisor that leaves no
process behind, bounded output, and an authenticated result channel.

    grader ──Popen──> supervisor (new session, child subreaper) ──fork+exec──> kernel (rlimits, worker.py)
      ▲  stdin: plan + one-time key (read once by the kernel, then replaced by /dev/null)
      ├─ result pipe (fd number in the environment, not on the command line): HMAC-tagged lines
      ├─ output pipe (stdout + stderr): only the last ``output_kb`` KiB are kept, the rest is counted
      └─ status pipe (the supervisor's; the kernel never holds it): how the kernel ended

What this does not give (use a container for it): a read-only view of the rest of the file system, no network,
a cap on disk space and on the number of processes, and another user id. See the README's threat model.
"""

from __future__ import annotations

import ast
import collections
import hashlib
import hmac
import json
import os
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from llama3.grading.release import Plan

HERE = Path(__file__).resolve().parent
PACKAGE_ROOT = HERE.parent.parent  # the folder that holds llama3/
SUPERVISOR = HERE / "supervisor.py"
WORKER = HERE / "worker.py"
# what the kernel needs from the grader's environment; everything else (HOME, tokens, the instructor's paths) is
# left out. --keep-env adds names.
KEEP_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "LLAMA3_TINYSTORIES", "LLAMA3_DATA_CACHE", "CUDA_VISIBLE_DEVICES",
            "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
DATA_ENV = ("LLAMA3_TINYSTORIES", "LLAMA3_DATA_CACHE")  # folders the kernel may read (the course's data)
MAX_LINE = 1 << 16  # a longer line on the result channel is not the kernel's
_BOOT = ("import importlib.util, sys\n"
         "spec = importlib.util.spec_from_file_location('llama3_grade_worker', {path!r})\n"
         "module = sys.modules['llama3_grade_worker'] = importlib.util.module_from_spec(spec)\n"
         "spec.loader.exec_module(module)\n"
         "module.main()\n")


@dataclass
class Limits:
    """Caps for one notebook's kernel. 0 turns a cap off."""

    timeout: float = 300.0  # wall-clock seconds per notebook
    # RLIMIT_DATA (heap and private writable mappings) rather than RLIMIT_AS: the address space also counts shared
    # libraries and reservations (CUDA's are huge) that use no memory
    memory_mb: int = 6144
    cpu_s: float | None = None  # CPU seconds (RLIMIT_CPU); None: 4 x timeout (torch runs several threads)
    file_mb: int = 64  # largest file the kernel may write (RLIMIT_FSIZE)
    output_kb: int = 256  # stdout + stderr kept for the report (the rest is counted and dropped)
    threads: int | None = None  # OMP/MKL threads per kernel; None: cores / jobs
    keep_env: tuple[str, ...] = ()

    @property
    def cpu_seconds(self) -> int:
        return int(self.cpu_s if self.cpu_s is not None else 4 * self.timeout)


@dataclass
class RunOutcome:
    """What came back from one kernel."""

    messages: list[dict] = field(default_factory=list)  # authenticated events, in order
    tampering: list[tuple[int, str]] = field(default_factory=list)  # (messages received so far, what was wrong)
    output_tail: str = ""
    output_bytes: int = 0
    timed_out: bool = False
    ended: str = ""  # the supervisor's word on the kernel: "exit 0", "signal 24", or "" if it never said
    seconds: float = 0.0


class ChannelReader:
    """Parses HMAC-tagged lines; anything that does not verify is noted as tampering and dropped."""

    TAG = re.compile(rb"[0-9a-f]{64} ")

    def __init__(self, key: bytes, outcome: RunOutcome):
        self.key, self.outcome, self.buffer, self.sequence = key, outcome, b"", 0

    def feed(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self._line(line)
        if len(self.buffer) > MAX_LINE:
            self._problem("an over-long line was written to the result channel")
            self.buffer = self.buffer[-4096:]

    def _verify(self, tag: bytes, payload: bytes, sequence: int) -> bool:
        expected = hmac.new(self.key, b"%d:" % sequence + payload, hashlib.sha256).hexdigest().encode()
        return hmac.compare_digest(expected, tag)

    def _line(self, line: bytes) -> None:
        if line.startswith(b" ") or len(line) < 66:
            if line:
                self._problem("something other than the grader wrote to the result channel")
            return
        for found in (m.start() for m in self.TAG.finditer(line)):
            tag, payload = line[found:found + 64], line[found + 65:]
            for sequence in range(self.sequence, self.sequence + 8):  # a few may have been swallowed by junk
                if self._verify(tag, payload, sequence):
                    if found or sequence != self.sequence:
                        self._problem("something other than the grader wrote to the result channel")
                    self.sequence = sequence + 1
                    try:
                        message = ast.literal_eval(payload.decode("utf-8"))
                    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError):
                        message = None
                    if isinstance(message, dict):
                        self.outcome.messages.append(message)
                    return
        self._problem("a message on the result channel did not carry the grader's key (a forged result)")

    def _problem(self, what: str) -> None:
        problems = self.outcome.tampering
        if len(problems) < 20 and (not problems or problems[-1][1] != what):
            problems.append((len(self.outcome.messages), what))


class OutputTail:
    """Keeps the last ``limit`` bytes of a stream and counts the rest: a print loop cannot grow the grader."""

    def __init__(self, limit: int):
        self.limit, self.chunks, self.kept, self.total = limit, collections.deque(), 0, 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        self.chunks.append(data)
        self.kept += len(data)
        while self.kept > self.limit and self.chunks:
            first = self.chunks[0]
            excess = self.kept - self.limit
            if len(first) <= excess:
                self.chunks.popleft()
                self.kept -= len(first)
            else:
                self.chunks[0] = first[excess:]
                self.kept -= excess

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")


def kernel_env(home: Path, tmp: Path, limits: Limits, token: str, threads: int) -> dict:
    """The kernel's environment: what it needs, and nothing of the instructor's (HOME, tokens, paths)."""
    env = {k: os.environ[k] for k in KEEP_ENV + tuple(limits.keep_env) if k in os.environ}
    env.update(
        HOME=str(home), TMPDIR=str(tmp), PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin",
        PYTHONPATH=str(PACKAGE_ROOT), PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1", MPLBACKEND="Agg",
        MPLCONFIGDIR=str(tmp / "matplotlib"), TQDM_DISABLE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
        LLAMA3_GRADING="1", LLAMA3_GRADE_RUN=token,
        OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
    )
    return env


def _matplotlib_cache(target: Path) -> None:
    """Copy the font list matplotlib built for the instructor, so that each kernel does not rebuild it (seconds)."""
    source = Path(os.environ.get("MPLCONFIGDIR") or Path.home() / ".cache" / "matplotlib")
    target.mkdir(parents=True, exist_ok=True)
    for font_list in source.glob("fontlist-*.json"):
        try:
            shutil.copy(font_list, target / font_list.name)
        except OSError:
            pass


def read_roots() -> list[str]:
    """Folders the kernel may read besides its own: the package's code and assets, the data, Python's own."""
    roots = [str(PACKAGE_ROOT / "llama3"), str(PACKAGE_ROOT / "assets"), sys.prefix, sys.base_prefix,
             sys.exec_prefix, str(Path(sys.executable).resolve().parent.parent)]
    roots += [os.environ[k] for k in DATA_ENV if os.environ.get(k)]
    # the package's own metadata beside it (pip install -e . writes llama3_course.egg-info into the repository):
    # importlib.metadata reads its entry points when transformers or torch look for plugins
    roots += [str(p) for pattern in ("*.egg-info", "*.dist-info") for p in PACKAGE_ROOT.glob(pattern)]
    return roots


def kill_leftovers(token: str) -> int:
    """SIGKILL every process whose environment carries this run's token (a kernel's descendants that outlived a
    killed supervisor), and reap those that are our children. Returns how many were found."""
    marker = f"LLAMA3_GRADE_RUN={token}".encode()
    found = 0
    for _ in range(20):
        pids = []
        for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
            if entry.isdigit() and int(entry) != os.getpid():
                try:
                    with open(f"/proc/{entry}/environ", "rb") as f:
                        if marker in f.read().split(b"\0"):
                            pids.append(int(entry))
                except OSError:
                    pass
        if not pids:
            break
        found += len(pids)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)
        for pid in pids:
            try:
                os.waitpid(pid, os.WNOHANG)
            except (ChildProcessError, OSError):
                pass
    return found


def _remove(path: Path) -> None:
    def retry(func, target, _exc):
        try:
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            func(target)
        except OSError:
            pass

    shutil.rmtree(path, onerror=retry)


def run_plan(plan: Plan, notebook: Path, limits: Limits, *, reference: bool, threads: int = 1) -> RunOutcome:
    """Run ``plan`` in a fresh kernel that sees only a copy of ``notebook``; collect its authenticated events."""
    outcome = RunOutcome()
    key = secrets.token_bytes(32)
    token = secrets.token_hex(16)
    root = Path(tempfile.mkdtemp(prefix="llama3-grade-"))
    work, tmp = root / "work", root / "tmp"
    work.mkdir()
    tmp.mkdir()
    _matplotlib_cache(tmp / "matplotlib")
    shutil.copyfile(notebook, work / notebook.name)
    payload = json.dumps({
        "key": key.hex(), "notebook": notebook.name, "root": str(root.resolve()), "reference": reference,
        "read_roots": read_roots(), "package_root": str(PACKAGE_ROOT.resolve()),
        "cells": [{"kind": c.kind, "source": c.source, "label": c.label, "skip": c.skip, "args": list(c.args)}
                  for c in plan.cells],
    }).encode()
    chan_r, chan_w = os.pipe()
    status_r, status_w = os.pipe()
    env = kernel_env(work, tmp, limits, token, threads)
    env["LLAMA3_GRADE_FD"] = str(chan_w)
    cmd = [sys.executable, "-I", "-S", str(SUPERVISOR), str(status_w), str(limits.memory_mb * 2**20),
           str(limits.cpu_seconds), str(limits.file_mb * 2**20), "--",
           sys.executable, "-c", _BOOT.format(path=str(WORKER))]
    start = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, pass_fds=(chan_w, status_w), start_new_session=True)
    finally:
        os.close(chan_w)
        os.close(status_w)

    def feed_plan():
        try:
            proc.stdin.write(payload)
            proc.stdin.close()
        except OSError:  # the kernel died before reading its plan; the outcome says so
            pass

    writer = threading.Thread(target=feed_plan, daemon=True)
    writer.start()
    try:
        _collect(proc, chan_r, status_r, key, limits, outcome, start)
    finally:
        for fd in (chan_r, status_r):
            os.close(fd)
        proc.stdout.close()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the supervisor's session, if anything is left in it
        except OSError:
            pass
        proc.wait()
        kill_leftovers(token)
        writer.join(timeout=5)
        _remove(root)
    outcome.seconds = time.monotonic() - start
    return outcome


def _collect(proc, chan_r: int, status_r: int, key: bytes, limits: Limits, outcome: RunOutcome,
             start: float) -> None:
    channel = ChannelReader(key, outcome)
    output = OutputTail(limits.output_kb * 1024)
    status = b""
    selector = selectors.DefaultSelector()
    out_fd = proc.stdout.fileno()
    for fd in (out_fd, chan_r, status_r):
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    deadline, hard_deadline, ended_at = start + limits.timeout, None, None
    while selector.get_map():
        now = time.monotonic()
        if now >= deadline and not outcome.timed_out:
            outcome.timed_out = True
            hard_deadline = now + 10
            try:
                proc.send_signal(signal.SIGTERM)  # the supervisor kills the kernel and every descendant
            except OSError:
                pass
        if hard_deadline is not None and now >= hard_deadline:
            break  # the supervisor did not answer; the caller kills the session
        if ended_at is None and proc.poll() is not None:
            ended_at = now
        if ended_at is not None and now - ended_at > 2:
            break  # the supervisor is gone; a pipe still open belongs to an escaped process (killed by the caller)
        wait = min(1.0, max(0.01, (hard_deadline or deadline) - now))
        for key_, _ in selector.select(timeout=wait):
            fd = key_.fd
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                selector.unregister(fd)
            elif fd == chan_r:
                channel.feed(data)
            elif fd == out_fd:
                output.feed(data)
            elif len(status) < 256:
                status += data
    selector.close()
    outcome.output_tail = output.text()
    outcome.output_bytes = output.total
    outcome.ended = status.decode("utf-8", "replace").split(" subreaper")[0].strip()
