"""Read YAML files and validate them against pydantic models; every failure is one line naming the fix."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from atlas.errors import UserError

M = TypeVar("M", bound=BaseModel)


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a missing file or a syntax error is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; check the path (configs live in configs/)")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}: not valid YAML{at} ({problem}); fix the syntax") from None


def validate(cls: type[M], data: Any, origin: str) -> M:
    """Build `cls` from `data`, or raise one UserError describing the first problem."""
    if data is None:
        data = {}
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()  # a misspelt key also makes a required one "missing": name the misspelling
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        raise UserError(f"{origin}: {describe(cls, first)}") from None


def describe(cls: type[BaseModel], error: dict[str, Any]) -> str:
    """One pydantic error as a sentence, suggesting the closest key for an unknown one."""
    loc = [part for part in error["loc"] if not str(part).startswith(("function-", "tagged-union"))]
    where = ".".join(str(part) for part in loc) or "top level"
    if error["type"] == "extra_forbidden":
        key = str(loc[-1])
        known = sorted(_fields_at(cls, loc[:-1]))
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(known)}"
        return f"unknown key '{where}' ({hint})"
    if error["type"] == "missing":
        return f"missing required key '{where}'; add it"
    value = error.get("input")
    shown = "" if isinstance(value, (dict, list)) else f" (got {value!r})"
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}{shown}"


def _fields_at(cls: type[BaseModel], loc: list[Any]) -> set[str]:
    """Field names of the (nested) model found by following `loc` from `cls`."""
    model: Any = cls
    for part in loc:
        if isinstance(part, int) or not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return set()
        model = _inner_model(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return set(model.model_fields)
    return set()


def _inner_model(annotation: Any) -> Any:
    """The BaseModel inside an annotation such as `Model`, `list[Model]` or `Model | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
