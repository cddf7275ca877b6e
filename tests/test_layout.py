"""The package's layout, checked by walking `src/opens1` with `ast` (nothing is imported).

- No import cycle between modules. Imports inside functions count as edges (they hide a
  cycle, they do not break it), and so does a module named in a string (a command table or a
  lazy export imports it later); imports under `if TYPE_CHECKING:` do not (they never run).
- Fewer than 10% of internal imports sit inside functions, and each of those is marked
  `# optional: <package>` (it defers a heavy or optional third-party package).
- No source file over 500 lines.
- `opens1.common` is the bottom: it imports nothing else of ours. `opens1.cli` is the top:
  nothing outside it imports it.

`python tests/test_layout.py` prints the figures.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "opens1"
MAX_LINES = 500
MAX_LOCAL_SHARE = 0.10
OPTIONAL = re.compile(r"#\s*optional:\s*\S+")


@dataclass(frozen=True)
class Edge:
    src: str  # importing module, dotted
    dst: str  # imported module, dotted (the deepest module that exists)
    line: int
    local: bool  # inside a function body
    marked: bool  # carries `# optional: <package>`
    lazy: bool = False  # a module named in a string (a command table, a lazy export)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The deepest known module that `name` (a module or a name inside one) points to."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _targets(node: ast.AST, mod: str, is_pkg: bool) -> list[str]:
    """Dotted names an import statement reaches (for `from x import y`: x.y and x)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = mod.split(".") if is_pkg else mod.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [f"{prefix}.{a.name}" for a in node.names] + [prefix]


def edges() -> list[Edge]:
    known = modules()
    out = []
    for mod, path in known.items():
        text = path.read_text()
        lines = text.splitlines()
        tree = ast.parse(text)
        is_pkg = path.name == "__init__.py"

        def walk(node: ast.AST, local: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and _is_type_checking(child):
                    for c in child.orelse:
                        walk(c, local)
                    continue
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    dsts = {d for d in (_resolve(t, known) for t in _targets(child, mod, is_pkg))
                            if d and d.startswith("opens1") and d != mod}
                    # `from pkg import sub` reaches pkg/__init__ too, but the edge that matters is sub
                    if len(dsts) > 1:
                        dsts = {d for d in dsts if not any(o.startswith(d + ".") for o in dsts)}
                    marked = any(OPTIONAL.search(lines[i]) for i in range(child.lineno - 1, child.end_lineno))
                    out.extend(Edge(mod, d, child.lineno, local, marked) for d in sorted(dsts))
                elif isinstance(child, ast.Constant) and isinstance(child.value, str) and child.value in known \
                        and child.value.startswith("opens1.") and child.value != mod:
                    # importlib.import_module("opens1.x") runs the same import later: an edge all the same
                    out.append(Edge(mod, child.value, child.lineno, True, True, lazy=True))
                walk(child, local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

        walk(tree, False)
    return out


def cycles(es: list[Edge]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for e in es:
        graph.setdefault(e.src, set()).add(e.dst)
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    import sys
    sys.setrecursionlimit(10_000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def _is_ancestor(pkg: str, mod: str) -> bool:
    return mod.startswith(pkg + ".")


def test_no_import_cycles():
    # a package's __init__ re-exporting its own modules is not a cycle of concern when the
    # modules do not import the __init__ back; Tarjan sees every real loop either way
    found = cycles(edges())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_function_local_imports_are_few_and_marked():
    es = edges()
    local = [e for e in es if e.local and not e.lazy]
    unmarked = [f"{e.src}:{e.line} imports {e.dst}" for e in local if not e.marked]
    assert not unmarked, "function-local imports without `# optional: <package>`:\n" + "\n".join(unmarked)
    assert len(local) < MAX_LOCAL_SHARE * len(es), f"{len(local)} of {len(es)} internal imports sit in functions"


def test_no_file_over_500_lines():
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_common_is_the_bottom():
    bad = [f"{e.src}:{e.line} imports {e.dst}" for e in edges()
           if e.src.startswith("opens1.common") and not e.dst.startswith("opens1.common")]
    assert not bad, bad


def test_only_cli_imports_cli():
    bad = [f"{e.src}:{e.line} imports {e.dst}" for e in edges()
           if (e.dst == "opens1.cli" or e.dst.startswith("opens1.cli.")) and not e.src.startswith("opens1.cli")
           and e.src not in ("opens1.__main__",)]
    assert not bad, bad


def test_the_walker_sees_local_and_type_checking_imports(tmp_path):
    # the checker itself: a function-local import is an edge, a TYPE_CHECKING one is not
    src = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import opens1.a\ndef f():\n    import opens1.b  # optional: b\n"
    tree = ast.parse(src)
    seen = [(type(n).__name__, n.lineno) for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert ("Import", 3) in seen and ("Import", 5) in seen
    assert _is_type_checking(tree.body[1]) and OPTIONAL.search(src.splitlines()[4])


if __name__ == "__main__":
    es = edges()
    local = [e for e in es if e.local and not e.lazy]
    print(f"{len(modules())} modules, {len(es)} internal imports, {len(local)} inside functions "
          f"({100 * len(local) / max(1, len(es)):.1f}%), {sum(e.marked for e in local)} marked")
    for c in cycles(es):
        print("cycle:", " -> ".join(c))
    for m, p in modules().items():
        n = len(p.read_text().splitlines())
        if n > MAX_LINES:
            print(f"over {MAX_LINES} lines: {m} {n}")
