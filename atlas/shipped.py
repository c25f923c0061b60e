"""What atlas ships inside its package: the gallery's templates, the sweep configs and the figure specs.

pyproject.toml maps the project's top-level `templates/` and `configs/` folders into the package as
`atlas.templates` and `atlas.configs`, so importlib.resources finds them in every install mode (editable,
`pip install .`, a wheel). A config or spec argument that is not a file may name a shipped one.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from atlas.errors import UserError

CONFIG_SUFFIX = ".yaml"


def _folder(package: str) -> Path:
    """A shipped package's folder on disk (atlas is installed unpacked, never run from a zip)."""
    root = files(package)
    if not isinstance(root, Path):
        raise RuntimeError(f"{package} is not a folder on disk ({root!r}); install atlas with pip, unzipped")
    return root


def templates_dir() -> Path:
    """The Jinja2 templates of the gallery, with `static/` beside them."""
    return _folder("atlas.templates")


def shipped_configs() -> dict[str, Path]:
    """The shipped sweep configs by name (`demo`, `full`, ...), sorted."""
    return {path.stem: path for path in sorted(_folder("atlas.configs").glob(f"*{CONFIG_SUFFIX}"))}


def shipped_figure_specs() -> dict[str, Path]:
    """The shipped figure spec files by name (`lecture3`, ...), sorted."""
    return {path.stem: path for path in sorted((_folder("atlas.configs") / "figures").glob(f"*{CONFIG_SUFFIX}"))}


def config_name(path: Path) -> str:
    """How run.json records a config: a shipped config by its name (`demo`; not its path inside the installed
    package, which names a site-packages folder of one machine), any other file by its path."""
    for name, shipped in shipped_configs().items():
        if path.is_file() and path.resolve() == shipped.resolve():
            return name
    return str(path)


def purpose(path: Path) -> str:
    """A shipped file's one-line purpose: its first comment line."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""


def file_or_shipped(arg: str | Path, shipped: dict[str, Path], kind: str) -> Path:
    """An existing file, else the shipped file of that name (`demo` or `demo.yaml`); else one line naming
    both what was looked for as a file and the shipped names."""
    path = Path(arg).expanduser()
    if path.is_file():
        return path
    name = str(arg).removesuffix(CONFIG_SUFFIX)
    if name in shipped:
        return shipped[name]
    found = "a folder, not a file" if path.is_dir() else "no such file"
    raise UserError(f"{arg}: {found} ({path.absolute()}) and not the name of a shipped {kind}; give the path "
                    f"of a YAML file or one of the shipped {kind}s: {', '.join(shipped) or '(none)'}")
