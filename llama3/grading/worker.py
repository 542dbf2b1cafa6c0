"""The kernel: runs one learner's plan in a sandboxed process and reports each verdict to the grader.

Started by the supervisor (see sandbox.py) with a scrubbed environment in a folder that holds only a copy of the
notebook. It reads the plan (cells to run, released check sources) and a one-time key from stdin, then:

- snapshots the pristine state the checks rely on before any learner code runs: every ``llama3*`` module (the
  checkers and the reference implementation), the builtins and the numerics of torch the checkers compare with;
- runs the cells in order in one namespace, as "Restart & Run All" would (magics neutralised, ``skip-grade``
  cells skipped, matplotlib on Agg);
- before and after each check cell, compares that state with the snapshot, puts back whatever changed (and flags
  it), removes traces and profilers, checks that the names handed to the checker are not the reference objects,
  and runs the RELEASED check source with the pristine checkers and builtins;
- records, through an audit hook (which cannot be removed once added), what learner code does that an honest
  answer never needs: files outside its folder, processes, signals, gc and ctypes;
- sends every event to the grader as a line authenticated with HMAC-SHA256 under the one-time key, on a pipe
  whose number is not on the command line. The grader drops any line without a valid tag or out of sequence,
  and flags the notebook, so learner code that writes to the pipe cannot forge a verdict.

This file is loaded by path (not ``import llama3``) so that a notebook that never imports torch does not pay for it.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import signal
import sys
import threading
import traceback
import types
import warnings

# taken before any learner code runs: the kernel keeps using these even if a cell replaces the builtins
_exec, _compile, _isinstance, _type, _getattr = builtins.exec, builtins.compile, builtins.isinstance, type, getattr
_MISSING = object()
PYTHON_BODY_CELL_MAGICS = {"time", "timeit", "capture", "prun"}
MAX_HINT = 600  # characters of a hint sent to the grader (it shortens them again in graded mode)
# torch's numerics that a checker's verdict hangs on: replacing one (torch.allclose = lambda *a, **k: True) is
# flagged and undone before each check, as for the llama3 modules
TORCH_MODULES = ("torch", "torch.nn.functional", "torch.testing", "math")
TORCH_CLASSES = ("torch.Tensor", "torch.nn.Module")
# the channel encodes with these C functions, taken now: patching json, hmac or repr later cannot forge a message
_repr, _sha256, _write, _bytes = builtins.repr, hashlib.sha256, os.write, bytes
MAX_FLAGS = 30


def short_error(exc: BaseException) -> str:
    """One line that says what went wrong: the message for an assertion, 'Type: message' otherwise."""
    try:
        message = " ".join(str(exc).split())
    except Exception:  # a learner's exception whose __str__ raises
        message = ""
    if _isinstance(exc, AssertionError) and message:
        return message[:MAX_HINT]
    if _isinstance(exc, NotImplementedError):
        return (f"not implemented yet ({message})" if message else "not implemented yet")[:MAX_HINT]
    name = _type(exc).__name__
    return (f"{name}: {message}" if message else name)[:MAX_HINT]


class _ShellShim:
    """Stands in for IPython's shell: magics and shell commands do nothing, except the cell magics whose body is
    plain Python (``%%time``), which run that body once in the notebook's namespace."""

    def __init__(self, namespace: dict):
        self.user_ns = namespace

    def run_line_magic(self, name, line, *args, **kwargs):
        return None

    def run_cell_magic(self, name, line, cell, *args, **kwargs):
        if name in PYTHON_BODY_CELL_MAGICS:
            _exec(_compile(cell, "<cell magic body>", "exec"), self.user_ns)
        return None

    def system(self, *args, **kwargs):
        return None

    getoutput = system

    def __getattr__(self, name):  # anything else a notebook asks of get_ipython() is a harmless no-op
        return lambda *args, **kwargs: None


def _to_python(source: str) -> str:
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:
        if source.lstrip().startswith("%%"):
            return ""
        return "\n".join("pass" if ln.lstrip().startswith(("%", "!")) else ln for ln in source.splitlines())
    try:
        return TransformerManager().transform_cell(source)
    except Exception:
        return source


# --------------------------------------------------------------------------------------------------------------------
# The pristine state and its restoration
# --------------------------------------------------------------------------------------------------------------------


def _resolve(dotted: str):
    obj = sys.modules.get(dotted)
    if obj is not None:
        return obj
    head, _, attr = dotted.rpartition(".")
    parent = sys.modules.get(head)
    return _getattr(parent, attr, None) if parent is not None else None


class Snapshot:
    """What the checks depend on, as it was before any learner code ran; ``restore`` puts it back and says what
    had changed (so that the change is flagged)."""

    def __init__(self, with_reference: bool):
        if with_reference:
            import llama3
            import llama3.checks as checks

            for module in sorted(set(checks._CHECKERS.values())):
                __import__(f"llama3.checks.{module}")
            self.checkers = {name: _getattr(checks, name) for name in checks._CHECKERS}
            self.package = llama3
        else:
            self.checkers, self.package = {}, None
        names = sorted(n for n in sys.modules if n == "llama3" or n.startswith(("llama3.", "llama3_")))
        self.sys_modules = {n: sys.modules[n] for n in names}
        self.sys_modules["builtins"] = builtins
        self.modules: list[tuple[str, types.ModuleType, dict, bool]] = [("builtins", builtins, dict(vars(builtins)),
                                                                          True)]
        for name in names:
            self.modules.append((name, sys.modules[name], dict(vars(sys.modules[name])), True))
        for name in TORCH_MODULES:
            module = sys.modules.get(name)
            if module is not None:
                self.modules.append((name, module, {k: v for k, v in vars(module).items() if not k.startswith("_")},
                                     False))
        # classes and functions of the reference (their methods and code objects can be patched in place)
        self.classes: list[tuple[str, type, dict]] = []
        self.functions: list[tuple[str, types.FunctionType, tuple]] = []
        self.reference: dict[int, str] = {}  # id -> name of every class/function the llama3 package defines
        for name, _module, saved, _ in self.modules[1:]:
            if not name.startswith("llama3"):
                continue
            for attr, value in saved.items():
                if _getattr(value, "__module__", None) != name:
                    continue
                qualified = f"{name}.{attr}"
                if _isinstance(value, type):
                    self.classes.append((qualified, value, dict(vars(value))))
                    self._functions_of(qualified, vars(value))
                    if not name.startswith(("llama3.checks", "llama3.grading", "llama3_")):
                        self.reference[id(value)] = qualified
                elif _isinstance(value, types.FunctionType):
                    self._remember_function(qualified, value)
                    if not name.startswith(("llama3.checks", "llama3.grading", "llama3_")):
                        self.reference[id(value)] = qualified
        for dotted in TORCH_CLASSES:
            cls = _resolve(dotted)
            if _isinstance(cls, type):
                self.classes.append((dotted, cls, dict(vars(cls))))
        # code objects written in llama3's own files (a @torch.no_grad() wrapper's code is torch's, shared by all)
        package = os.path.dirname(os.path.abspath(self.package.__file__)) if self.package else None
        self.reference_codes = {id(f.__code__): q for q, f, _ in self.functions
                                if id(f) in self.reference and package and
                                os.path.abspath(f.__code__.co_filename).startswith(package + os.sep)}
        self.torch_dir = _package_dir("torch")
        self.threads = set(threading.enumerate())

    def _functions_of(self, qualified: str, namespace) -> None:
        for attr, value in namespace.items():
            fn = value.__func__ if _isinstance(value, (staticmethod, classmethod)) else value
            if _isinstance(fn, types.FunctionType):
                self._remember_function(f"{qualified}.{attr}", fn)

    def _remember_function(self, qualified: str, fn: types.FunctionType) -> None:
        # a decorated function (the checkers are wrapped by llama3.checks._common.checker) runs the code of the
        # function it wraps: remember that one too, or patching check.__wrapped__.__code__ would go unseen
        while _isinstance(fn, types.FunctionType):
            self.functions.append((qualified, fn, (fn.__code__, fn.__defaults__, fn.__kwdefaults__, fn.__globals__)))
            fn, qualified = _getattr(fn, "__wrapped__", None), f"{qualified}.__wrapped__"

    def restore(self) -> list[str]:
        """Put back everything that differs from the snapshot; return a description of each difference."""
        changed: list[str] = []
        for name, module in self.sys_modules.items():
            if sys.modules.get(name) is not module:
                changed.append(f"sys.modules[{name!r}] was replaced")
                sys.modules[name] = module
        for name, module, saved, strict in self.modules:
            current = vars(module)
            for key, value in saved.items():
                new = current.get(key, _MISSING)
                if new is value:
                    continue
                if not strict and self._torch_wrapper(value, new):
                    saved[key] = new  # torch wrapped its own function (torch._dynamo does on import): keep it
                    continue
                changed.append(f"{name}.{key} was replaced")
                current[key] = value
            if strict:  # a new global in a checker module can shadow a builtin: remove what was added
                for key in [k for k, v in current.items() if k not in saved and not _isinstance(v, types.ModuleType)]:
                    if name == "builtins" and key == "_":
                        continue
                    changed.append(f"{name}.{key} was added")
                    del current[key]
        for name, cls, saved in self.classes:
            current = vars(cls)
            for key, value in saved.items():
                if current.get(key, _MISSING) is not value:
                    changed.append(f"{name}.{key} was replaced")
                    try:
                        type.__setattr__(cls, key, value)
                    except (TypeError, AttributeError):
                        pass
            for key in [k for k in current if k not in saved]:
                changed.append(f"{name}.{key} was added")
                try:
                    type.__delattr__(cls, key)
                except (TypeError, AttributeError):
                    pass
        for name, fn, (code, defaults, kwdefaults, _globals) in self.functions:
            if fn.__code__ is not code or fn.__defaults__ is not defaults or fn.__kwdefaults__ is not kwdefaults:
                changed.append(f"the code of {name} was replaced")
                fn.__code__, fn.__defaults__, fn.__kwdefaults__ = code, defaults, kwdefaults
        if sys.gettrace() is not None or sys.getprofile() is not None:
            changed.append("a trace or profile function was installed")
            sys.settrace(None)
            sys.setprofile(None)
        threading.settrace(None)  # threading.settrace leaves no trace we can read back; clear it regardless
        threading.setprofile(None)
        alive = [t for t in threading.enumerate() if t not in self.threads and t.is_alive()]
        if alive:
            changed.append(f"{len(alive)} thread(s) started by the notebook still run during the check "
                           f"({', '.join(sorted(t.name for t in alive))[:80]})")
        return changed

    def _torch_wrapper(self, old, new) -> bool:
        """``new`` is torch's own wrapper of ``old`` (functools.wraps, code in torch's files)."""
        code = _getattr(new, "__code__", None)
        return (self.torch_dir is not None and _getattr(new, "__wrapped__", None) is old and code is not None
                and os.path.abspath(code.co_filename).startswith(self.torch_dir + os.sep))

    def identity(self, name: str, value) -> str | None:
        """Why ``value`` (handed to the checker as ``name``) is the reference rather than the learner's work."""
        seen = 0
        while value is not None and seen < 8:  # functools.partial / wraps chains
            seen += 1
            if id(value) in self.reference:
                return f"{name} is llama3's own {self.reference[id(value)]}, not your implementation"
            if _isinstance(value, type):
                for base in value.__mro__[1:]:
                    if id(base) in self.reference:
                        return f"{name} subclasses llama3's {self.reference[id(base)]}"
                return None
            code = _getattr(value, "__code__", None)
            if code is not None and id(code) in self.reference_codes:
                return f"{name} runs the code of llama3's {self.reference_codes[id(code)]}"
            value = _getattr(value, "func", None) or _getattr(value, "__wrapped__", None) or \
                _getattr(value, "__func__", None)
        return None


def _package_dir(name: str) -> str | None:
    module = sys.modules.get(name)
    path = _getattr(module, "__file__", None)
    return os.path.dirname(os.path.abspath(path)) if path else None


# --------------------------------------------------------------------------------------------------------------------
# Audit: what learner code does, seen by an audit hook (one that cannot be removed)
# --------------------------------------------------------------------------------------------------------------------

PROCESS_EVENTS = {"os.fork": "starts a process (fork)", "os.forkpty": "starts a process (forkpty)",
                  "subprocess.Popen": "starts a process", "os.system": "runs a shell command",
                  "os.posix_spawn": "starts a process", "os.spawn": "starts a process", "os.exec": "runs a program",
                  "pty.spawn": "starts a process", "os.kill": "sends a signal", "os.killpg": "sends a signal",
                  "signal.pthread_kill": "sends a signal"}
MEMORY_EVENTS = {"gc.get_objects": "searches the grader's memory (gc.get_objects)",
                 "gc.get_referrers": "searches the grader's memory (gc.get_referrers)",
                 "gc.get_referents": "searches the grader's memory (gc.get_referents)",
                 "ctypes.cdata": "reads raw memory (ctypes)",
                 "ctypes.addressof": "reads raw memory (ctypes)", "sys.addaudithook": "adds an audit hook",
                 "socket.connect": "opens a network connection", "socket.bind": "opens a network socket"}
PATH_EVENTS = {"open", "os.listdir", "os.scandir", "glob.glob", "os.remove", "os.rename", "os.rmdir", "os.mkdir",
               "shutil.rmtree", "os.chdir", "os.symlink", "os.link", "os.truncate", "os.chmod"}


class Audit:
    """Collects one short line per suspicious event while the plan runs; ``take`` hands them over and clears."""

    def __init__(self, workdir: str, read_roots: list[str], channel_fd: int):
        self.channel_fd = channel_fd
        self.workdir = os.path.realpath(workdir)
        self.read_roots = tuple(sorted({os.path.realpath(r) for r in read_roots if r}))
        self.events: list[str] = []
        self.active = False
        sys.addaudithook(self._hook)

    def _outside(self, path, write: bool) -> bool:
        try:
            path = os.fsdecode(path)
            real = os.path.realpath(os.path.join(self.workdir, path)) if path else self.workdir
        except Exception:
            return True
        if real == self.workdir or real.startswith(self.workdir + os.sep):
            return False
        if real in ("/dev/null", "/dev/urandom", "/dev/random", "/dev/shm") or real.startswith("/dev/shm/"):
            return False
        if write:
            return True
        if real.startswith("/proc/"):  # this process's own files and the system's, not another process's
            part = real.split("/")[2]
            return (part.isdigit() and int(part) != os.getpid()) or real.startswith(f"/proc/{os.getpid()}/fd") \
                or real.startswith("/proc/self/fd")
        if real.startswith(("/sys/", "/usr/", "/lib", "/etc/")):
            return False
        return not any(real == r or real.startswith(r + os.sep) for r in self.read_roots)

    def _hook(self, event: str, args: tuple) -> None:
        if not self.active or len(self.events) > 200:
            return
        if event in PROCESS_EVENTS:
            self._add(PROCESS_EVENTS[event])
        elif event in MEMORY_EVENTS:
            self._add(MEMORY_EVENTS[event])
        elif event in PATH_EVENTS and args:
            path = args[0]
            if _isinstance(path, int):  # os.fdopen: only the result channel's descriptor is out of bounds
                if path == self.channel_fd:
                    self._add(f"opens the grader's result channel (file descriptor {path})")
                return
            if not _isinstance(path, (str, bytes, os.PathLike)):
                return
            write = event != "open" and event not in ("os.listdir", "os.scandir", "glob.glob")
            if event == "open" and len(args) > 1:
                mode, flags = args[1], args[2] if len(args) > 2 else 0
                write = (_isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                    (_isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)))
            if self._outside(path, write):
                verb = {"open": "writes" if write else "reads", "os.listdir": "lists", "os.scandir": "lists",
                        "glob.glob": "lists"}.get(event, "changes")
                self._add(f"{verb} a path outside its folder ({os.fsdecode(path)[:80]!r})")

    def _add(self, text: str) -> None:
        if text not in self.events:
            self.events.append(text)

    def take(self) -> list[str]:
        found, self.events = self.events, []
        return found


# --------------------------------------------------------------------------------------------------------------------
# The channel and the run
# --------------------------------------------------------------------------------------------------------------------


def _channel(fd: int, key: bytes):
    """send(dict): one line 'tag payload' on the pipe: payload = repr of the message (a Python literal of str, int,
    bool and lists), tag = HMAC-SHA256(key, sequence number + ':' + payload), computed with functions taken before
    any learner code ran."""
    counter = [0]
    padded = key.ljust(64, b"\0")
    inner, outer = _bytes(b ^ 0x36 for b in padded), _bytes(b ^ 0x5C for b in padded)

    def send(message: dict) -> None:
        payload = _repr(message).encode()
        signed = b"%d:" % counter[0] + payload
        tag = _sha256(outer + _sha256(inner + signed).digest()).hexdigest().encode()
        counter[0] += 1
        data = tag + b" " + payload + b"\n"
        while data:
            data = data[_write(fd, data):]

    return send


def _namespace() -> dict:
    namespace: dict = {"__name__": "__main__", "__builtins__": builtins}
    shell = _ShellShim(namespace)
    namespace["get_ipython"] = lambda: shell
    try:
        from IPython.display import display
    except ImportError:
        def display(*objs, **kwargs):
            print(*map(repr, objs))
    namespace["display"] = display
    return namespace


def _where(error: BaseException, filename: str) -> str:
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename.startswith("<")]
    if frames and frames[-1].filename == filename:
        return f" (line {frames[-1].lineno})"
    if frames and frames[-1].filename.startswith("<cell: "):
        return f" (in {frames[-1].filename[7:-1]}, line {frames[-1].lineno})"
    return ""


def run(plan: dict, send, snapshot: Snapshot, audit: Audit) -> None:
    # this frame's code cannot be changed while it runs: it keeps what the checks rely on as locals and puts back
    # the code of restore and send and the globals of this module before using them
    restore, restore_code, send_code = Snapshot.restore, Snapshot.restore.__code__, send.__code__
    own_globals = restore.__globals__
    own_saved = dict(own_globals)

    def pristine() -> list[str]:
        changed = []
        if restore.__code__ is not restore_code or send.__code__ is not send_code:
            changed.append("the grader's own code was replaced")
            restore.__code__, send.__code__ = restore_code, send_code
        if any(own_globals.get(k, _MISSING) is not v for k, v in own_saved.items()):
            changed.append("the grader's own module was changed")
            own_globals.update(own_saved)
        return changed + restore(snapshot)

    namespace = _namespace()
    warnings.filterwarnings("ignore", message=".*non-interactive.*cannot be shown")
    for index, cell in enumerate(plan["cells"]):
        send({"event": "cell", "index": index})
        if cell["skip"]:
            if cell["kind"] == "check":  # never: released check cells are not skipped
                send({"event": "check", "index": index, "passed": False, "hint": "skipped", "flags": []})
            continue
        filename = f"<cell: {cell['label']}>"
        if cell["kind"] != "check":
            audit.active = True
            try:
                _exec(_compile(_to_python(cell["source"]), filename, "exec"), namespace)
            except BaseException as exc:  # SystemExit from a learner's exit() and KeyboardInterrupt included
                send({"event": "error", "index": index, "error": short_error(exc) + _where(exc, filename)})
            finally:
                audit.active = False
            events = audit.take()
            if events:
                send({"event": "audit", "index": index, "flags": events[:MAX_FLAGS]})
            _close_figures()
            continue
        flags = [f"before this check: {c}" for c in pristine()]
        check_ns = dict(namespace)
        check_ns.update(snapshot.checkers)
        check_ns["__builtins__"] = builtins
        for name in cell["args"]:
            why = snapshot.identity(name, check_ns.get(name))
            if why:
                flags.append(why)
        error = None
        audit.active = True  # learner code runs inside the checker (constructors, forward)
        try:
            _exec(_compile(cell["source"], filename, "exec"), check_ns)
        except BaseException as exc:
            error = exc
        finally:
            audit.active = False
        flags += [f"during this check: {c}" for c in pristine()]
        flags += [f"during this check: {e}" for e in audit.take()]
        send({"event": "check", "index": index, "passed": error is None,
              "hint": "" if error is None else short_error(error), "flags": flags[:MAX_FLAGS]})
        _close_figures()
    send({"event": "done"})


def _close_figures() -> None:
    if "matplotlib.pyplot" in sys.modules:  # figures are not looked at; closing keeps memory flat
        try:
            sys.modules["matplotlib.pyplot"].close("all")
        except Exception:
            pass


def main() -> None:
    fd = int(os.environ.pop("LLAMA3_GRADE_FD"))
    os.set_inheritable(fd, False)  # a program the notebook runs does not get the channel
    plan = json.loads(sys.stdin.buffer.read())
    key = bytes.fromhex(plan.pop("key"))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    sys.stdin = open(0, closefd=False)
    send = _channel(fd, key)
    del key
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file over the size cap fails with OSError, not a kill
    sys.argv = [plan["notebook"]]  # a notebook that parses sys.argv must not see the grader's arguments
    snapshot = Snapshot(plan["reference"])
    audit = Audit(plan["root"], plan["read_roots"] + [p for p in sys.path if p and os.path.isdir(p)
                                                      and os.path.realpath(p) != plan["package_root"]], fd)
    send({"event": "ready"})
    run(plan, send, snapshot, audit)
