"""The shape of the code base: no import cycles inside tasks/, no Airflow in tasks/, and the
candidate kinds listed in one place only. No database needed."""

from __future__ import annotations

import ast
from pathlib import Path

from tasks.candidates import KINDS
from tasks.config import REPO_ROOT

TASKS = REPO_ROOT / "tasks"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Modules of tasks/ this file imports, at the top or inside functions (a lazy import
    still makes a cycle); imports under ``if TYPE_CHECKING:`` are for the type checker only."""
    tree = ast.parse(path.read_text())
    type_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                 and "TYPE_CHECKING" in ast.unparse(block.test) for node in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] == "tasks"}


def test_no_module_cycles_in_tasks():
    modules = {module_name(p): p for p in TASKS.rglob("*.py") if "migrations" not in p.parts}
    graph = {name: {m for m in imports(path) if m in modules and m != name}
             for name, path in modules.items()}
    # A package imports its own submodules to list them; that is not a cycle back into it.
    graph = {name: {m for m in deps if not (m.startswith(name + "."))} for name, deps in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep):] + [dep] if dep in path else [node, dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == [], " ; ".join(" -> ".join(c) for c in cycles)


def test_task_modules_do_not_import_airflow():
    offenders = [str(p.relative_to(REPO_ROOT)) for p in TASKS.rglob("*.py")
                 if any(name.split(".")[0] == "airflow" for name in _all_imports(p))]
    assert offenders == []


def _all_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_kinds_are_listed_only_in_the_kinds_mapping():
    """No list, tuple or set literal outside tasks/candidates/ names two kinds: code asks KINDS."""
    offenders = []
    files = [*TASKS.rglob("*.py"), *(REPO_ROOT / "dags").glob("*.py"), *(REPO_ROOT / "plugins").glob("*.py")]
    for path in files:
        if "candidates" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.List | ast.Tuple | ast.Set):
                names = {e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in KINDS}
                if len(names) >= 2:
                    offenders.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} {sorted(names)}")
    assert offenders == []
