"""The package's stages import downwards only: model <- render <- run <- publish (and the cli on top)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "atlas"
STAGES = ["model", "render", "run", "publish"]  # low to high


def _stage(module: str) -> int | None:
    """The stage index of `atlas.<stage>...`, or None for shared top-level modules."""
    parts = module.split(".")
    return STAGES.index(parts[1]) if len(parts) > 1 and parts[0] == "atlas" and parts[1] in STAGES else None


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith("atlas")}


def test_stages_import_downwards_only():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        own = _stage(module)
        for imported in _imports(path):
            target = _stage(imported)
            if own is None and target is not None and module != "atlas.cli":
                wrong.append(f"{module} (shared) imports {imported}")
            elif own is not None and target is not None and target > own:
                wrong.append(f"{module} imports upwards: {imported}")
    assert not wrong, wrong
