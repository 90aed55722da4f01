"""The package's shape, checked: layers point one way, no import cycles, small modules, the
`ml` schema owned by `pyml/store/`, and a CLI that starts without the heavy libraries.

These are the rules docs/architecture.md states; a change that breaks one fails here with
the offending module named, rather than slowly eroding the layout.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pyml"
MAX_LINES = 500

# Lower layers never import higher ones (same rank: allowed, cycles are checked apart).
# The first matching prefix wins, so more specific prefixes come first.
RANKS: list[tuple[str, int]] = [
    ("pyml.errors", 0), ("pyml.files", 0), ("pyml.tasks", 0), ("pyml.interrupts", 0),
    ("pyml.engines", 1),
    ("pyml.dbt", 2), ("pyml.data.encode", 2), ("pyml.data.split", 2),
    ("pyml.store", 3), ("pyml.session", 3),
    ("pyml.data", 4),
    ("pyml.modelling", 5),
    ("pyml.verbs", 6), ("pyml.spark", 6),
    ("pyml.api", 7), ("pyml.cli", 7), ("pyml.cliopts", 7), ("pyml.clidocs", 7),
    ("pyml.cli_scaffold", 7), ("pyml.cli_publish", 7), ("pyml.cli_monitor", 7),
    ("pyml.cli_sources", 7),
    ("pyml.serve", 7),
    ("pyml.report", 7), ("pyml.export", 7), ("pyml.sqlgen", 7), ("pyml.demo_data", 7),
]
HEAVY = ("optuna", "sklearn", "scipy", "matplotlib", "fastapi", "uvicorn", "pyspark")


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _rank(module: str) -> int | None:
    if module == "pyml":
        return 0
    for prefix, rank in RANKS:
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return None


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> pyml modules it imports, at module level or inside functions alike
    (`if TYPE_CHECKING:` blocks excluded: they never run)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skip: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skip.update(id(sub) for sub in ast.walk(node))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]], nodes: list[str]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                found.append(sorted(component))

    for v in nodes:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    modules = _modules()
    cycles = _cycles(_imports(modules), sorted(modules))
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_every_module_has_a_layer() -> None:
    assert [m for m in _modules() if _rank(m) is None] == []


def test_layers_point_one_way() -> None:
    modules = _modules()
    upward = []
    for name, targets in sorted(_imports(modules).items()):
        for target in sorted(targets):
            low, high = _rank(name), _rank(target)
            # A package's __init__ may re-export its own modules.
            if target.startswith(name + "."):
                continue
            if low is not None and high is not None and high > low:
                upward.append(f"{name} (layer {low}) imports {target} (layer {high})")
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_modules_stay_small() -> None:
    big = {name: n for name, path in _modules().items()
           if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


# A string in Python source that is SQL on an `ml` table: a statement keyword, and `ml.<name>`
# (or the schema constant spliced in) after FROM / JOIN / INTO / UPDATE / TABLE / EXISTS / ON.
_ML_SQL = re.compile(r"\b(from|join|into|update|table|exists|on)\s+(\{SCHEMA\}|\"?ml\"?)\.",
                     re.IGNORECASE)
_STATEMENT = re.compile(r"\b(select|insert|update|delete|create|alter|drop|comment)\b",
                        re.IGNORECASE)


def test_ml_schema_sql_lives_in_the_store() -> None:
    offenders = []
    for name, path in _modules().items():
        if name.startswith("pyml.store"):
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef
                                    | ast.AsyncFunctionDef)
                      and n.body and isinstance(n.body[0], ast.Expr)}
        for node in ast.walk(tree):
            if id(node) in docstrings:
                continue
            # The schema's name spliced into SQL elsewhere (qualified(SCHEMA, ...)).
            if (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pyml.store")
                    and any(a.name == "SCHEMA" for a in node.names)):
                offenders.append(f"{name}:{node.lineno}")
            parts: list[str] = []
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                parts = [node.value]
            elif isinstance(node, ast.JoinedStr):
                parts = [ast.unparse(node)]
            if any(_ML_SQL.search(p) and _STATEMENT.search(p) for p in parts):
                offenders.append(f"{name}:{node.lineno}")
    assert not offenders, "SQL on ml.* outside pyml/store/:\n" + "\n".join(sorted(set(offenders)))


def test_cli_import_loads_no_heavy_library() -> None:
    code = ("import sys, pyml.cli; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ""
