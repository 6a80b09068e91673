"""The packages' import structure, read from the source with `ast` (nothing is imported).

The direction of the README's "Architecture": `layers` <- `training` <- `zoo`: `layers` imports
neither, `training` never imports `zoo`. Beside it: no module imports an underscore name from
another module of the project (a helper two modules share is public, or lives in one of them),
and `training`'s modules import each other without a cycle, function-level imports included (a
cycle that a late import hides still ties the two modules together).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("layers", "training", "zoo")


def _module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(), filename=str(path)) for name, path in MODULES.items()}


def _imports(name):
    """`(imported module, [names imported from it])` of every import statement in `name`, with
    relative imports resolved; `import a.b` gives `("a.b", [])`."""
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            found.append((base, [alias.name for alias in node.names]))
    return found


def _is_project(module):
    return module.split(".")[0] in PACKAGES


def _project_edges(name):
    """The project modules that `name` imports: `from a import b` is module `a.b` when that is a
    module, else `a` (a name defined in `a`)."""
    edges = set()
    for module, names in _imports(name):
        if not _is_project(module):
            continue
        for imported in names or [None]:
            submodule = f"{module}.{imported}" if imported else None
            edges.add(submodule if submodule in MODULES else module)
    return edges - {name}


def test_the_walk_sees_every_package():
    assert {"layers", "training", "zoo", "layers.detection_contract", "training.detection.task"} <= set(MODULES)


@pytest.mark.parametrize("package, forbidden", [("layers", ("training", "zoo")), ("training", ("zoo",))])
def test_imports_go_one_way(package, forbidden):
    wrong = sorted(
        f"{name} imports {module}"
        for name in MODULES if name.split(".")[0] == package
        for module, _ in _imports(name) if module.split(".")[0] in forbidden
    )
    assert not wrong, wrong


def test_no_module_imports_an_underscore_name_from_another():
    wrong = []
    for name in MODULES:
        bound = {}  # local name -> where it came from, for the project's imports
        for module, names in _imports(name):
            if not _is_project(module):
                continue
            for imported in names:
                if imported.startswith("_"):
                    wrong.append(f"{name}: from {module} import {imported}")
                bound[imported] = f"{module}.{imported}"
            if not names:
                bound[module.split(".")[0]] = module
        # `module._helper` or `ImportedClass._method` through a name bound by such an import.
        for node in ast.walk(TREES[name]):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in bound):
                wrong.append(f"{name}:{node.lineno}: {node.value.id}.{node.attr} ({bound[node.value.id]})")
    assert not wrong, wrong


def _cycles(graph):
    cycles, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for successor in sorted(graph.get(node, ())):
            if state.get(successor) == "open":
                cycles.append(stack[stack.index(successor):] + [successor])
            elif successor not in state:
                visit(successor)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_inside_a_package(package):
    graph = {
        name: {module for module in _project_edges(name) if module.split(".")[0] == package}
        for name in MODULES if name.split(".")[0] == package
    }
    assert not _cycles(graph), _cycles(graph)
