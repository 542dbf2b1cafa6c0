"""The package imports in one direction.

The rule: ``llama3/`` (every ``*.py``, subpackages included) is layered. Components (config, files, norm, rope, ffn,
kv_cache, attention, decoder) come first; then what the model's own methods use, working on state dicts, configs
and any model that keeps the forward contract (convert, tokenizer, generation, fast); then ``model.py``; then
training, grading, the checkers and the command line. Two things follow, and this file checks them by parsing the
sources with ``ast`` (nothing is imported or run):

1. The graph of imports between llama3 modules has no cycle.
2. Every import is at module level. An import inside a function (the usual way to hold a cycle open, and a cost
   hidden from the reader) is allowed only for the optional or heavy third-party packages in
   ``LAZY_IMPORTS_ALLOWED`` below, never for a llama3 module.

Imports under ``if TYPE_CHECKING:`` are for annotations only and count for neither rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "llama3"

# Third-party packages that may be imported inside a function, and why (anything else goes at the top of the file).
LAZY_IMPORTS_ALLOWED = {
    "transformers": "heavy (seconds to import): only the tokenizer and the Hugging Face conversions need it",
    "huggingface_hub": "only hub downloads and save_hf's sharding use it",
    "matplotlib": "optional (the 'course' extra): only plotting needs it",
    "IPython": "optional: only the grader, running notebooks, needs it",
    "nbformat": "optional (comes with Jupyter): only the grader reads notebooks",
}
# Modules that may import a llama3 module inside a function, and why. Not a way to hold a cycle open: the cycle test
# still sees these edges.
LAZY_PACKAGE_IMPORTS_ALLOWED = {
    "llama3.grading.worker": "runs inside the learner's kernel, loaded by file path: the reference package is "
                             "imported (and snapshotted) only when the notebook is graded against it, before any "
                             "learner code, so a notebook that never uses torch does not pay for it",
}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, in_function: bool = False):
    """Yield (import node, whether it sits inside a function), skipping ``if TYPE_CHECKING:`` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), in_function)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, in_function
        yield from _imports(node, in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                    ast.Lambda)))


def imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: set[str]) -> list[str]:
    """The absolute names an import statement loads: ``from llama3 import convert`` loads llama3.convert when that
    is a module, and ``from .x import y`` is resolved against ``module``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[:len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, *([base] if base else [])])
    names = []
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        names.append(candidate if candidate in modules else base)
    return names


def import_graph(sources: dict[str, tuple[str, bool]]):
    """sources: module name -> (source text, is a package __init__). Returns (edges between the given modules,
    function-level imports as (module, line, imported name))."""
    modules = set(sources)
    edges: dict[str, set[str]] = {name: set() for name in modules}
    lazy = []
    for module, (text, is_package) in sources.items():
        for node, in_function in _imports(ast.parse(text)):
            for name in imported_names(node, module, is_package, modules):
                # "import llama3.a.b" loads llama3.a.b: the longest llama3 module it names
                target = next((m for m in sorted(modules, key=len, reverse=True)
                               if name == m or name.startswith(m + ".")), None)
                if target is not None and target != module:
                    edges[module].add(target)
                if in_function and not (target is None and name.split(".")[0] in LAZY_IMPORTS_ALLOWED) \
                        and module not in LAZY_PACKAGE_IMPORTS_ALLOWED:
                    lazy.append((module, node.lineno, name))
    return edges, lazy


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan), as a sorted list of names."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return cycles


def package_sources() -> dict[str, tuple[str, bool]]:
    return {module_name(path): (path.read_text(encoding="utf-8"), path.name == "__init__.py")
            for path in sorted(PACKAGE.rglob("*.py"))}


def test_the_package_has_no_import_cycle():
    edges, _ = import_graph(package_sources())
    cycles = find_cycles(edges)
    assert not cycles, "Import cycles in llama3 (each group imports itself through the others): " + "; ".join(
        " <-> ".join(cycle) for cycle in cycles)


def test_no_import_inside_a_function():
    _, lazy = import_graph(package_sources())
    found = ", ".join(f"{module}:{line} imports {name}" for module, line, name in lazy)
    assert not lazy, (f"Imports inside functions (move them to the top of the module; only optional heavy "
                      f"third-party packages, {sorted(LAZY_IMPORTS_ALLOWED)}, may wait): {found}")


@pytest.mark.parametrize("low", ["llama3.config", "llama3.files", "llama3.convert", "llama3.tokenizer"])
def test_what_the_model_uses_never_reaches_the_model(low):
    """convert and the other modules below model.py work on configs, state dicts and files: following their
    imports never leads back to llama3.model (or to the package's __init__, which imports the model)."""
    edges, _ = import_graph(package_sources())
    seen, todo = set(), [low]
    while todo:
        for nxt in edges[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    assert not seen & {"llama3.model", "llama3"}, f"{low} reaches {sorted(seen & {'llama3.model', 'llama3'})}"


def test_the_checker_finds_a_planted_cycle_and_a_lazy_import():
    """The rules above must be able to fail: a two-module cycle held open by a function-level import, a relative
    import, and an allowed heavy import."""
    sources = {
        "pkg": ("", True),
        "pkg.a": ("from pkg.b import f\nimport transformers\n", False),
        "pkg.b": ("def f():\n    from pkg import a\n    import transformers\n    return a\n", False),
        "pkg.c": ("from . import a\nfrom .b import f\n", False),
        "pkg.d": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import c\n", False),
    }
    edges, lazy = import_graph(sources)
    assert edges["pkg.a"] == {"pkg.b"} and edges["pkg.b"] == {"pkg.a"} and edges["pkg.c"] == {"pkg.a", "pkg.b"}
    assert edges["pkg.d"] == set()
    assert find_cycles(edges) == [["pkg.a", "pkg.b"]]
    assert lazy == [("pkg.b", 2, "pkg.a")]  # transformers inside f is allowed
