"""Static flags: what a learner-written cell does that an honest answer never needs.

Only cells the learner wrote or changed are read (an unchanged released cell is the instructor's code). The rules
are deliberately narrow so that honest work is never flagged: importing the reference implementation of a graded
component, touching ``llama3.checks`` or the builtins, redefining a checker, reaching into the grader's process
(gc, ctypes, frames, signals, subprocesses) and naming paths outside the notebook's folder. A flag withholds the
exercise's points until an instructor has looked; the runtime checks in the kernel catch what static reading
cannot (an alias built with getattr, a patch applied from inside a constructor).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from llama3.grading.release import Plan, ReleasedNotebook, to_python

# module -> why importing (or naming) it in an exercise is flagged
SUSPECT_MODULES = {
    "gc": "reads the grader's memory (gc)",
    "ctypes": "pokes at memory (ctypes)",
    "subprocess": "starts processes (subprocess)",
    "multiprocessing": "starts processes (multiprocessing)",
    "signal": "handles signals (signal)",
    "builtins": "touches the builtins",
    "importlib": "imports modules by name (importlib)",
    "socket": "opens network connections (socket)",
}
# attribute chains whose use is flagged, matched on the unparsed expression
SUSPECT_CALLS = {
    "os.fork": "starts processes (os.fork)", "os.forkpty": "starts processes (os.forkpty)",
    "os.setsid": "leaves its process group (os.setsid)", "os.setpgrp": "leaves its process group (os.setpgrp)",
    "os.system": "runs shell commands (os.system)", "os.popen": "runs shell commands (os.popen)",
    "os.posix_spawn": "starts processes (os.posix_spawn)", "os.kill": "sends signals (os.kill)",
    "os.killpg": "sends signals (os.killpg)", "os._exit": "ends the kernel process (os._exit)",
    "os.write": "writes to raw file descriptors (os.write)", "os.dup2": "rewires file descriptors (os.dup2)",
    "os.fdopen": "opens raw file descriptors (os.fdopen)", "os.chdir": "leaves its folder (os.chdir)",
    "sys.modules": "edits sys.modules", "sys._getframe": "reads the grader's frames (sys._getframe)",
    "sys.settrace": "traces the grader's code (sys.settrace)", "sys.setprofile": "profiles the grader's code",
    "sys.addaudithook": "hooks the interpreter (sys.addaudithook)", "inspect.currentframe": "reads frames",
    "__import__": "imports modules by name (__import__)", "__builtins__": "touches the builtins",
    "threading.settrace": "traces the grader's code (threading.settrace)",
}
PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent  # the folder that holds llama3/
PATH_LIKE = re.compile(r"^(/[\w.-]+)+/?$|^~/|^\.\.(/|$)")  # '/etc/passwd', '~/x', '../other' (no spaces)


def _expr(node) -> str:
    try:
        return ast.unparse(node)
    except Exception:
        return ""


def cell_flags(source: str, released: ReleasedNotebook) -> list[str]:
    """The flags of one learner-written cell, each one short sentence naming what it does."""
    try:
        tree = ast.parse(to_python(source))
    except SyntaxError:
        return []  # the kernel reports the syntax error; nothing in the cell runs
    graded = released.graded_names
    checkers = {n for c in released.checks for n in _called_names(c.source)}
    flags: list[str] = []

    def flag(text: str) -> None:
        if text not in flags:
            flags.append(text)

    in_fstring = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            for alias in node.names:
                key = (module, alias.name, alias.asname) if module is not None else (alias.name, None, alias.asname)
                full = f"{module}.{alias.name}" if module else alias.name
                if key in released.imports:
                    continue  # the released notebook imports it the same way
                top = (module or alias.name).split(".")[0]
                if top == "llama3" or full.startswith("llama3"):
                    if "checks" in full.split("."):
                        flag(f"imports llama3.checks ({full})")
                    elif alias.name in graded:
                        flag(f"imports the reference implementation {full}")
                    elif module is None or full.split(".")[-1] != alias.name or _is_module_name(full):
                        flag(f"imports the reference module {full}")
                if top in SUSPECT_MODULES:
                    flag(SUSPECT_MODULES[top])
                if alias.name in SUSPECT_MODULES and module in (None, "os", "sys"):
                    flag(SUSPECT_MODULES[alias.name])
                if (alias.asname or alias.name) in checkers:
                    flag(f"rebinds the checker name {alias.asname or alias.name}")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name in checkers:
                flag(f"redefines the checker {node.name}")
        elif isinstance(node, ast.Name):
            if isinstance(node.ctx, (ast.Store, ast.Del)) and node.id in checkers:
                flag(f"redefines the checker {node.id}")
            if node.id in ("__builtins__", "__import__"):
                flag(SUSPECT_CALLS[node.id])
        elif isinstance(node, ast.Attribute):
            text = _expr(node)
            if text in SUSPECT_CALLS:
                flag(SUSPECT_CALLS[text])
            if text.startswith("llama3."):
                if ".checks" in text:
                    flag(f"touches llama3.checks ({text})")
                elif node.attr in graded:
                    flag(f"uses the reference implementation {text}")
            if node.attr in checkers and isinstance(node.ctx, ast.Store):
                flag(f"replaces the checker {text}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in in_fstring:
            value = node.value.strip()
            if PATH_LIKE.match(value) and "\n" not in value and len(value) < 300:
                flag(f"names a path outside its folder ({value[:60]!r})")
    return flags


def _is_module_name(full: str) -> bool:
    """llama3.rope or llama3.checks: a module of the package rather than a name defined in it."""
    parts = full.split(".")
    base = PACKAGE_ROOT.joinpath(*parts)
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _called_names(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


def plan_flags(plan: Plan, released: ReleasedNotebook) -> dict[str | None, list[str]]:
    """Static flags of every learner-written cell, keyed by the check cell that grades it (None: after the last
    check, so no exercise is affected), each flag prefixed with the cell's label."""
    found: dict[str | None, list[str]] = {}
    for cell in plan.cells:
        if cell.kind != "learner":
            continue
        for text in cell_flags(cell.source, released):
            found.setdefault(cell.section, []).append(f"{cell.label}: {text}")
    return found
