"""The layout holds: the CLI is click commands on top of the library, and modules import
each other in one direction (no module-level import cycles). No broker."""

from __future__ import annotations

import ast

from tests.support import ROOT

TASKQ = ROOT / "taskq"


def module_name(path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def module_level_imports(path) -> set[str]:
    """What a module imports when it is imported: not under ``if TYPE_CHECKING:``, not in a function."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.Import):
                names.update(alias.name for alias in inner.names)
            elif isinstance(inner, ast.ImportFrom) and inner.module:
                names.add(inner.module)
                names.update(f"{inner.module}.{alias.name}" for alias in inner.names)
    return names


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in TASKQ.rglob("*.py")}
    return {
        name: {dep for dep in module_level_imports(path) if dep in modules and dep not in (name, "taskq")}
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in graph[node]:
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_module_level_import_cycle():
    found = cycles(import_graph())
    assert not found, f"import cycles: {found}"


def test_app_and_task_do_not_import_each_other():
    graph = import_graph()
    assert not ("taskq.task" in graph["taskq.app"] and "taskq.app" in graph["taskq.task"])


def every_import(path) -> set[str]:
    """What a module imports anywhere, in functions too."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_library_never_imports_the_cli_and_only_the_cli_uses_click():
    offenders = {
        module_name(path): sorted(i for i in every_import(path) if i.split(".")[0] == "click" or i.startswith("taskq.cli"))
        for path in TASKQ.rglob("*.py")
        if not module_name(path).startswith("taskq.cli") and module_name(path) != "taskq.__main__"
    }
    assert not {name: found for name, found in offenders.items() if found}


def test_the_commands_live_in_the_cli_package():
    cli = sorted(path.name for path in (TASKQ / "cli").glob("*.py"))
    assert cli == ["__init__.py", "common.py", "dashboard.py", "dead.py", "ops.py", "result.py", "revoke.py", "scheduler.py", "worker.py"]
    assert not list(TASKQ.glob("cli_*.py")) and not (TASKQ / "dashboard" / "cli.py").exists()


def test_tests_are_unit_or_integration_and_their_helpers_live_in_support():
    """tests/unit (no broker, no process: its conftest enforces that), tests/integration, and
    tests/support for everything that is not a test; a new test file picks one of the two."""
    tests = ROOT / "tests"
    assert sorted(path.name for path in tests.iterdir() if path.name != "__pycache__") == [
        "__init__.py", "integration", "support", "unit",
    ]
    beside_the_tests = [
        str(path.relative_to(ROOT))
        for folder in ("unit", "integration")
        for path in (tests / folder).glob("*.py")
        if not path.name.startswith("test_") and path.name not in ("__init__.py", "conftest.py")
    ]
    assert not beside_the_tests, f"helpers go in tests/support: {beside_the_tests}"
    assert not list((tests / "support").rglob("test_*.py")), "tests/support holds no tests"
