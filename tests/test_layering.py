"""The package's stages import downwards only: model <- render <- run <- analysis <- publish (the cli and the
pipeline on top), and no module imports itself back through others, counting imports inside functions."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "atlas"
STAGES = ["model", "render", "run", "analysis", "publish"]  # low to high
TOP = {"atlas.cli", "atlas.pipeline", "atlas.__main__"}  # may import every stage


def _stage(module: str) -> int | None:
    """The stage index of `atlas.<stage>...`, or None for shared top-level modules."""
    parts = module.split(".")
    return STAGES.index(parts[1]) if len(parts) > 1 and parts[0] == "atlas" and parts[1] in STAGES else None


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its __init__)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:`: annotations only, never executed, so no cycle."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return skipped


def _imports(path: Path, runtime_only: bool = False) -> set[str]:
    """Every atlas name imported anywhere in the file (in functions too): modules and `module.name`; with
    `runtime_only`, not those under `if TYPE_CHECKING:`."""
    names: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_only(tree) if runtime_only else set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith("atlas")}


def import_graph(runtime_only: bool = False) -> dict[str, set[str]]:
    """Module -> the package modules it imports (`from atlas.x import y` is `atlas.x.y` when that is a module);
    `runtime_only` leaves out imports for type annotations only."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name in _imports(path, runtime_only):
            while name not in modules and "." in name:  # `atlas.x.y` names a function of atlas.x
                name = name.rsplit(".", 1)[0]
            if name in modules and name != module and name != "atlas":
                targets.add(name)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as one cycle through them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(_cycle_through(sorted(component), graph))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _cycle_through(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One cycle inside a strongly connected component, from its first module back to it (breadth-first)."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph[node] & members):
            if target == start:
                return paths[node] + [start]
            if target not in paths:
                paths[target] = paths[node] + [target]
                queue.append(target)
    return component


def test_stages_import_downwards_only():
    wrong = []
    for module, targets in import_graph().items():
        own = _stage(module)
        for imported in targets:
            target = _stage(imported)
            if own is None and target is not None and module not in TOP:
                wrong.append(f"{module} (shared) imports {imported}")
            elif own is not None and target is not None and target > own:
                wrong.append(f"{module} imports upwards: {imported}")
            elif own is not None and imported in TOP:
                wrong.append(f"{module} imports the top: {imported}")
    assert not wrong, wrong


def test_no_import_cycles():
    found = cycles(import_graph(runtime_only=True))
    assert not found, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in found)


def test_cycles_are_found():
    """The checker itself: a cycle through a function-level import is reported, a chain is not."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_the_layout_page_names_every_module():
    page = (PACKAGE.parent / "docs" / "layout.md").read_text(encoding="utf-8")
    missing = [path.relative_to(PACKAGE.parent).as_posix() for path in sorted(PACKAGE.rglob("*.py"))
               if f"`{path.relative_to(PACKAGE.parent).as_posix()}`" not in page]
    assert not missing, f"docs/layout.md does not list {missing}"
