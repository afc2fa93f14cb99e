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
    """Modules of tasks/ this file imports: at the top, inside functions (a lazy import still
    makes a cycle) and under ``if TYPE_CHECKING:`` (a cycle for every reader all the same)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] == "tasks"}


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in TASKS.rglob("*.py") if "migrations" not in p.parts}


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: {m for m in imports(path) if m in found and m not in (name, "tasks")}
            for name, path in found.items()}


# Layers, lowest first: a module may import its own layer or lower ones, never a higher one.
LAYERS: list[set[str]] = [
    {"errors", "metrics", "calibration", "normalize", "console", "process_guard", "k8s", "storage",
     "typed", "observability", "candidates.base"},
    {"candidates.*"},  # the kinds and KINDS: model code, nothing of the pipeline
    {"config"},
    {"db", "airflow_client"},
    {"importer", "extract", "validate", "evaluate", "policy", "report", "registry", "retention",
     "dashboard", "airflow_env", "topology"},
    {"predict", "demo_data"},
    {"pipeline", "services", "demo", "night"},
    {"cli"},
]


def layer_of(module: str) -> int:
    short = module.removeprefix("tasks.")
    for index, members in enumerate(LAYERS):
        if short in members:
            return index
    for index, members in enumerate(LAYERS):
        if any(m.endswith(".*") and (short + ".").startswith(m[:-1]) for m in members):
            return index
    raise AssertionError(f"{module} has no layer: add it to LAYERS in tests/test_structure.py")


def test_every_module_has_a_layer_and_imports_only_downwards():
    upward = [f"{name} (layer {layer_of(name)}) -> {dep} (layer {layer_of(dep)})"
              for name, deps in import_graph().items() if name != "tasks" for dep in deps
              if layer_of(dep) > layer_of(name)]
    assert upward == []


def test_scoring_code_never_reaches_training_code():
    """model.py is what scoring loads (nanoGPT's model.py / train.py split): it never imports a
    kind's training module, and no kind's __init__ imports torch, transformers or sklearn at the
    top (the DAG parses it)."""
    graph = import_graph()
    offenders = [f"{name} -> {dep}" for name, deps in graph.items() if name.endswith(".model")
                 for dep in deps if dep.endswith(".training")]
    assert offenders == []
    heavy = {"torch", "transformers", "sklearn", "scipy", "pandas", "numpy"}
    for kind_init in TASKS.glob("candidates/*/__init__.py"):
        top_level = [node for node in ast.parse(kind_init.read_text()).body
                     if isinstance(node, ast.Import | ast.ImportFrom)]
        names = {alias.name.split(".")[0] for node in top_level if isinstance(node, ast.Import)
                 for alias in node.names}
        names |= {node.module.split(".")[0] for node in top_level if isinstance(node, ast.ImportFrom) and node.module}
        assert not names & heavy, f"{kind_init}: {names & heavy}"


def test_each_kind_is_one_folder_and_tasks_holds_no_model_code():
    for name in KINDS:
        folder = TASKS / "candidates" / name
        assert {p.name for p in folder.glob("*.py")} >= {"__init__.py", "config.py", "model.py"}, name
    top_level = {p.stem for p in TASKS.glob("*.py")}
    assert not top_level & {"train_tfidf", "train_bert", "pretrained"}
    model_libraries = {"torch", "transformers", "sklearn"}
    offenders = [p.name for p in TASKS.glob("*.py") if _all_imports(p) & model_libraries]
    assert offenders == []


def test_no_module_cycles_in_tasks():
    graph = import_graph()
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
                 if "airflow" in _all_imports(p)]
    assert offenders == []


def _all_imports(path: Path) -> set[str]:
    """Top-level package names of everything the file imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
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
