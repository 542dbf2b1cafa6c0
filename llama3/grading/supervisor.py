"""The supervisor of one notebook's kernel (standard library only; run as ``python -I -S supervisor.py``).

    supervisor.py STATUS_FD MEMORY_BYTES CPU_SECONDS FILE_BYTES -- KERNEL_ARGV...

It is the leader of a new session, and a child subreaper (``PR_SET_CHILD_SUBREAPER``), so every process the
kernel starts stays its descendant: a ``setsid`` double fork only moves the grandchild to another session, and when
its parent exits Linux hands it to the nearest subreaper, which is this process. The kernel gets the rlimits
(data size, CPU seconds, file size, no core files) and dies with the supervisor (``PR_SET_PDEATHSIG``). When the
kernel exits, or the grader asks (SIGTERM), every descendant is killed and reaped, and the kernel's exit status is
written on STATUS_FD, a pipe the kernel never holds.
"""

import ctypes
import os
import resource
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux: process groups are all the grader has
        return False


def children(pid: int) -> list[int]:
    """The live children of ``pid`` (from /proc: the threads' children lists, or every process's parent)."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(x) for x in f.read().split()]
        return found
    except OSError:
        pass
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
                if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                    found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return found


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        for child in children(todo.pop()):
            if child not in out:
                out.append(child)
                todo.append(child)
    return out


def kill_tree(pid: int, rounds: int = 200) -> None:
    """SIGKILL every descendant of ``pid`` and reap those that are its children, until none is left (a process
    that forks while we kill it leaves orphans, which come back to us as subreaper)."""
    for _ in range(rounds):
        found = descendants(pid)
        if not found:
            return
        for child in found:
            try:
                os.kill(child, signal.SIGSTOP)  # stop first, so nothing forks between the listing and the kill
            except OSError:
                pass
        for child in found:
            try:
                os.kill(child, signal.SIGKILL)
            except OSError:
                pass
        reap()


def reap() -> list[tuple[int, int]]:
    done = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return done
        if pid == 0:
            return done
        done.append((pid, status))


class Stop(Exception):
    """The grader asked us to stop (SIGTERM): the time is up."""


def _stop(*_):
    raise Stop


def main(argv: list[str]) -> int:
    status_fd, memory, cpu, fsize = (int(x) for x in argv[1:5])
    kernel_argv = argv[argv.index("--") + 1:]
    os.set_inheritable(status_fd, False)
    subreaper = _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the grader died: so do we (and, below, the kernel)
    me = os.getpid()
    kernel = os.fork()
    if kernel == 0:
        try:
            if memory > 0:
                resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
            if cpu > 0:
                resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
            if fsize > 0:
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != me:  # the supervisor died before prctl took effect
                os._exit(1)
            os.execv(kernel_argv[0], kernel_argv)
        finally:
            os._exit(127)

    signal.signal(signal.SIGTERM, _stop)
    status = None
    try:
        while status is None:
            pid, code = os.wait()  # the kernel, or an orphan handed to us
            if pid == kernel:
                status = code
    except (ChildProcessError, Stop):
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if status is None:  # asked to stop (timeout): kill the kernel first
        try:
            os.kill(kernel, signal.SIGKILL)
        except OSError:
            pass
    kill_tree(me)
    for pid, code in reap():
        if pid == kernel and status is None:
            status = code
    if status is None:
        status = 9  # killed by SIGKILL, as far as the grader is concerned
    if os.WIFSIGNALED(status):
        report = f"signal {os.WTERMSIG(status)}"
    else:
        report = f"exit {os.WEXITSTATUS(status)}"
    os.write(status_fd, f"{report} subreaper={int(subreaper)}\n".encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
